"""Config of experiments/extremal.py: extremal perturbation masks over a dataset.

``get_config()`` is the paper's protocol (800 steps, VOC's four areas) on 512
held-out synthetic images per variant; ``get_config('local')`` is a CPU run of
minutes (16 images per variant, 100 steps, three areas).
"""

import ml_collections


def get_config(variant: str = "full") -> ml_collections.ConfigDict:
    """Fields.

    dataset: 'synthetic' (held-out ground-truth images, easy + difficult, true class
      as target), 'voc07' or 'coco14' (through TFDS from data_dir, the classes present
      in each image as targets).
    images, batch_size, pretrained, net, weights, image_size, difficult_list,
      max_targets: as experiments/pointing_game.py.
    areas: the areas optimised (VOC: 0.025, 0.05, 0.1, 0.2; COCO: 0.018, 0.025, 0.05, 0.1).
    steps, variant, perturbation: passed to jaxinterp.perturbation.extremal.
    smooth: sigma of the pointing-game saliency (fraction of the image side).
    tolerance: pointing-game radius in px (None: 15 px scaled to the image size).
    out, cache_dir.
    """
    if variant not in ("full", "local"):
        raise ValueError(f"variant: expected 'full' or 'local', got {variant!r}")
    c = ml_collections.ConfigDict()
    c.dataset = "synthetic"
    c.data_dir = ml_collections.config_dict.placeholder(str)
    c.images = 512 if variant == "full" else 16
    c.batch_size = 32 if variant == "full" else 16
    c.pretrained = True
    c.net = "smallcnn"
    c.weights = ml_collections.config_dict.placeholder(str)
    c.image_size = 224
    c.difficult_list = ml_collections.config_dict.placeholder(str)
    c.max_targets = 4
    c.areas = [0.025, 0.05, 0.1, 0.2] if variant == "full" else [0.05, 0.1, 0.2]
    c.steps = 800 if variant == "full" else 100
    c.variant = "preserve"
    c.perturbation = "blur"
    c.smooth = 0.09
    c.tolerance = ml_collections.config_dict.placeholder(float)
    c.out = "runs/extremal"
    c.cache_dir = ml_collections.config_dict.placeholder(str)
    return c
