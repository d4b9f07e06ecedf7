"""Config of experiments/pointing_game.py: the pointing game of every attribution method.

``get_config()`` is the full run (512 held-out synthetic images per variant,
full-quality method options); ``get_config('local')`` is a minutes-long CPU run
(64 images per variant, fewer samples for IG / SmoothGrad / RISE).
"""

import ml_collections


def get_config(variant: str = "full") -> ml_collections.ConfigDict:
    """Fields.

    dataset: 'synthetic' (the ground-truth set, easy + difficult variants, true
      class as target, object mask as ground truth), 'voc07' (VOC 2007 test) or
      'coco14' (COCO 2014 val) read through jaxinterp.data.tfds from data_dir.
    images: synthetic images per variant (synthetic) / images read (tfds, 0 = all).
    batch_size: images per batch (and per resumable shard).
    pretrained: use the trained smallcnn of the zoo (False: random init, for tests).
    net, weights, image_size: the net for tfds datasets (a zoo name and an
      .npz / .safetensors / .pth state dict converted by jaxinterp.nets.weights).
    difficult_list: tfds only: a text file of image indices (one a line) forming
      the 'difficult' subset; None = no difficult column.
    methods: method slugs to run (empty = all; see --list).
    method_options: slug -> options overriding the smallcnn defaults (e.g. the
      Grad-CAM layer of another net).
    max_targets: tfds only: classes explained per image (padding beyond those present).
    quick: fewer samples for sampling methods (as ``jaxinterp demo --quick``).
    tolerance: pointing-game radius in pixels; None = TorchRay's 15 px at 224 px scaled
      to the image size (15 * size / 224: 4.3 px for the 64 px synthetic images,
      15 px for tfds datasets at image_size 224).
    curve_steps: deletion / insertion steps (0 = skip those columns).
    out, cache_dir, seed.
    """
    if variant not in ("full", "local"):
        raise ValueError(f"variant: expected 'full' or 'local', got {variant!r}")
    c = ml_collections.ConfigDict()
    c.dataset = "synthetic"
    c.data_dir = ml_collections.config_dict.placeholder(str)
    c.images = 512 if variant == "full" else 64
    c.batch_size = 64 if variant == "full" else 32
    c.pretrained = True
    c.net = "smallcnn"
    c.weights = ml_collections.config_dict.placeholder(str)
    c.image_size = 224
    c.difficult_list = ml_collections.config_dict.placeholder(str)
    c.methods = []
    c.method_options = {}
    c.max_targets = 8
    c.quick = variant == "local"
    c.tolerance = ml_collections.config_dict.placeholder(float)
    c.curve_steps = 16
    c.out = "runs/pointing_game"
    c.cache_dir = ml_collections.config_dict.placeholder(str)
    c.seed = 0
    return c
