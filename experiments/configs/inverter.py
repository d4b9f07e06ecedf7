"""Config of experiments/inverter.py: learned inverters (Dosovitskiy and Brox 2016) at several depths.

``get_config()`` trains a decoder for each of five split points of the trained
smallcnn (after the first ReLU, the three max-pools and global pooling) on 8192
synthetic 'easy' images, 3000 steps each, and tests on 256 held-out images;
``get_config('local')`` is a CPU run of under a minute (two layers, small
decoders, 60 steps), which shows the ordering but not good reconstructions.
"""

import ml_collections


def get_config(variant: str = "full") -> ml_collections.ConfigDict:
    """Fields.

    layers: split points of the smallcnn to invert, shallow to deep.
    train_images, test_images: the training set (drawn once, sampled with replacement)
      and the held-out set (from the zoo's held-out key, never used in training).
    size: image side (the smallcnn is trained at 64).
    steps, batch_size, lr, steps_per_call: passed to train_inverter (paper: Adam,
      batch 64, lr 0.001).
    widths, num_convs, fc_width: the decoders (jaxinterp.nets.inverter_init).
    shown: held-out images in the figure.
    pretrained: the trained (cached) smallcnn; False = a random one (tests).
    seed: the training data and the inverters' key.
    out, cache_dir.
    """
    if variant not in ("full", "local"):
        raise ValueError(f"variant: expected 'full' or 'local', got {variant!r}")
    local = variant == "local"
    c = ml_collections.ConfigDict()
    c.layers = ["features.2", "features.5"] if local else \
        ["features.1", "features.2", "features.5", "features.8", "avgpool"]
    c.train_images = 256 if local else 8192
    c.test_images = 16 if local else 256
    c.size = 64
    c.steps = 60 if local else 3000
    c.batch_size = 8 if local else 64
    c.lr = 3e-3 if local else 1e-3
    c.steps_per_call = 30 if local else 100
    c.widths = [16, 16] if local else [64, 64, 32, 32]
    c.num_convs = 1 if local else 2
    c.fc_width = 256
    c.shown = 6
    c.pretrained = True
    c.seed = 0
    c.out = "runs/inverter"
    c.cache_dir = ml_collections.config_dict.placeholder(str)
    return c
