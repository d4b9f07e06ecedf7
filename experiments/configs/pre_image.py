"""Config of experiments/pre_image.py: pre-images and caricatures (Mahendran and Vedaldi).

``get_config()`` inverts 2 held-out synthetic images per variant and 4 bundled
photographs at five depths of the trained smallcnn (64 px, IJCV and CVPR
energies, 350 steps: 300 + 50 at a tenth of the rate), draws caricatures at two
layers, and inverts the same photographs through vgg16 with random weights at
64 px; ``get_config('local')`` is a CPU run of seconds (2 photographs, 32 px,
2 layers, 10 steps, no vgg16).
"""

import ml_collections


def get_config(variant: str = "full") -> ml_collections.ConfigDict:
    """Fields.

    pretrained: the trained smallcnn (zoo.pretrained) or random weights (False).
    image_size: side of the images (the smallcnn trains at 64 px).
    held_out, photos: held-out synthetic images per variant and bundled photographs inverted.
    layers: smallcnn split points inverted (one shard each, both variants).
    variants: of 'ijcv' (C / ||Phi0||^2 data term, alpha 6 and TV^2 priors) and 'cvpr'
      (TV weight 1 / 10 / 100 by depth).
    steps, lr, C: passed to jaxinterp.synthesis.pre_image (IJCV: 350 steps; C: its default).
    caricature_layers, caricature_steps: caricatures (jaxinterp.synthesis.caricature).
    vgg16_layers, vgg16_size: vgg16 (random weights) split points inverted, IJCV variant (empty: none).
    seed, out, cache_dir.
    """
    if variant not in ("full", "local"):
        raise ValueError(f"variant: expected 'full' or 'local', got {variant!r}")
    full = variant == "full"
    c = ml_collections.ConfigDict()
    c.pretrained = True
    c.image_size = 64 if full else 32
    c.held_out = 2 if full else 0
    c.photos = ["chelsea", "coffee", "astronaut", "rocket"] if full else ["chelsea", "coffee"]
    c.layers = (["features.1", "features.4", "features.7", "features.10", "classifier"] if full
                else ["features.1", "features.7"])
    c.variants = ["ijcv", "cvpr"]
    c.steps = 350 if full else 10
    c.lr = 0.01
    c.C = 100.0
    c.caricature_layers = ["features.4", "features.10"] if full else ["features.4", "features.7"]
    c.caricature_steps = 350 if full else 10
    c.vgg16_layers = ["features.8", "features.15", "features.22", "features.29"] if full else []
    c.vgg16_size = 64
    c.seed = 0
    c.out = "runs/pre_image"
    c.cache_dir = ml_collections.config_dict.placeholder(str)
    return c
