"""Config of experiments/feature_vis.py: every channel of a layer of the smallcnn, and its classes.

``get_config()`` renders all 128 channels of 'features.10' of the trained
smallcnn with Lucid's defaults (Fourier parameterisation, standard transforms,
Adam 0.05, 512 steps) at the net's training size (64 px) and its 8 classes,
and compares each render with 512 held-out synthetic images per variant and
the bundled photographs; ``get_config('local')`` is a CPU run of seconds
(16 channels of 'features.4', 32 px, 8 steps, no transforms, photographs only).
"""

import ml_collections


def get_config(variant: str = "full") -> ml_collections.ConfigDict:
    """Fields.

    pretrained: the trained smallcnn (zoo.pretrained) or random weights (False).
    layer: the split point whose channels are rendered.
    channels: how many of its channels (the first ones; None = all).
    shard_size: channels per shard (one compiled call; the last shard is padded).
    classes: render the net's classes too.
    image_size, steps, lr, param ('fourier', 'pixel', 'laplacian'), transforms
      ('standard' = Lucid's set, 'none'), batch (images per target), diversity:
      passed to jaxinterp.synthesis.activation_maximisation.
    leaky: optimise through leaky ReLUs (0.05; Mahendran and Vedaldi, IJCV 2016).  Lucid
      does not; we do by default because a channel that is zero on the starting
      image has zero gradient through plain ReLUs and its render stays blank (half
      of the smallcnn's 'features.4' channels at 32 px).  The activations in
      metrics.json are always measured with plain ReLUs.
    held_out: held-out synthetic images per variant (easy, difficult) for the
      best natural activation (0: none).
    photos: bundled photographs (jaxinterp.data.images) added to the held-out set.
    show: channels shown in the figure.
    seed, out, cache_dir.
    """
    if variant not in ("full", "local"):
        raise ValueError(f"variant: expected 'full' or 'local', got {variant!r}")
    full = variant == "full"
    c = ml_collections.ConfigDict()
    c.pretrained = True
    c.layer = "features.10" if full else "features.4"
    c.channels = ml_collections.config_dict.placeholder(int) if full else 16
    c.shard_size = 32 if full else 8
    c.classes = True
    c.image_size = 64 if full else 32
    c.steps = 512 if full else 8
    c.lr = 0.05
    c.param = "fourier"
    c.transforms = "standard" if full else "none"
    c.batch = 1
    c.diversity = 0.0
    c.leaky = True
    c.held_out = 512 if full else 0
    c.photos = ["astronaut", "chelsea", "coffee", "hubble_deep_field", "ihc", "motorcycle", "retina", "rocket"]
    c.show = 64 if full else 16
    c.seed = 0
    c.out = "runs/feature_vis"
    c.cache_dir = ml_collections.config_dict.placeholder(str)
    return c
