"""Data: bundled photographs and synthetic ground-truth sets.

    from jaxinterp.data import images, synthetic
    x = images.batch(size=224)                          # (N, 224, 224, 3) float32 in [0, 1]
    ex = synthetic.generate(jax.random.key(0), 512)     # objects in clutter, with masks and boxes
    s = images.pointing_set(224)                        # real photographs, hand-drawn ImageNet boxes
    imagenet_classes()[967]                             # 'espresso'
"""

from jaxinterp.data import images, synthetic
from jaxinterp.data.imagenet import imagenet_class_index, imagenet_classes

# jaxinterp.data.tfds (TFDS / grain pipelines) needs the data extra and is imported on its own.

__all__ = ["images", "synthetic", "imagenet_classes", "imagenet_class_index"]
