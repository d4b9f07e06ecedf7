"""Config of experiments/channel_diffing.py: channel extremal perturbations and activation diffing.

``get_config()``: 800 steps (the paper's optimisation), areas 0.05, 0.1 and 0.2 of
the channels of the trained smallcnn's ``features.8`` (8 x 8 x 128), 256 held-out
synthetic images per variant, 350 pre-image steps (IJCV's 300 + 50);
``get_config('local')``: 8 images per variant, 100 + 2 x 100 steps, minutes on a CPU.
"""

import ml_collections


def get_config(variant: str = "full") -> ml_collections.ConfigDict:
    """Fields.

    dataset, data_dir, images, batch_size, pretrained, net, weights, image_size,
      difficult_list, max_targets, cache_dir: as experiments/pointing_game.py.
    layer: the split point whose channels are masked.
    areas: fractions of its channels kept (the first one is inverted).
    steps: channel_extremal's steps; pre_image_steps: each pre-image's.
    out.
    """
    if variant not in ("full", "local"):
        raise ValueError(f"variant: expected 'full' or 'local', got {variant!r}")
    full = variant == "full"
    c = ml_collections.ConfigDict()
    c.dataset = "synthetic"
    c.data_dir = ml_collections.config_dict.placeholder(str)
    c.images = 256 if full else 8
    c.batch_size = 32 if full else 8
    c.pretrained = True
    c.net = "smallcnn"
    c.weights = ml_collections.config_dict.placeholder(str)
    c.image_size = 224
    c.difficult_list = ml_collections.config_dict.placeholder(str)
    c.max_targets = 4
    c.layer = "features.8"
    c.areas = [0.05, 0.1, 0.2]
    c.steps = 800 if full else 100
    c.pre_image_steps = 350 if full else 100
    c.out = "runs/channel_diffing"
    c.cache_dir = ml_collections.config_dict.placeholder(str)
    return c
