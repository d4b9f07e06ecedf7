"""Data: bundled photographs and synthetic ground-truth sets.

    from jaxinterp.data import images, synthetic
    x = images.batch(size=224)                          # (N, 224, 224, 3) float32 in [0, 1]
    ex = synthetic.generate(jax.random.key(0), 512)     # objects in clutter, with masks and boxes
"""

from jaxinterp.data import images, synthetic

# jaxinterp.data.tfds (TFDS / grain pipelines) needs the data extra and is imported on its own.

__all__ = ["images", "synthetic"]
