"""Config of experiments/sanity.py: cascading model-parameter randomisation (Adebayo et al. 2018).

``get_config()``: 64 held-out synthetic images (32 per variant), full-quality
options; ``get_config('local')``: 16 images and fewer samples for IG / SmoothGrad.
"""

import ml_collections

from jaxinterp.demo.methods import smallcnn_methods
from jaxinterp.evaluation.benchmark import SANITY_METHODS as DEFAULT_METHODS, method_slug  # shared with the demo


def get_config(variant: str = "full") -> ml_collections.ConfigDict:
    """Fields.

    images: held-out synthetic images per variant (easy and difficult).
    batch_size: images per method call.
    pretrained: the trained smallcnn (False: random init, for tests).
    methods: method slugs (see python -m experiments.pointing_game --list); empty = all.  The full
      config: every attribution method of the table, those after the peers included.
    quick: fewer samples for IG / SmoothGrad.
    threshold: a method *fails* when its mean Spearman rank correlation of |maps|
      is still above this after all layers are randomised.
    seed: key of the fresh weights (cascading randomisation).
    out, cache_dir.
    """
    if variant not in ("full", "local"):
        raise ValueError(f"variant: expected 'full' or 'local', got {variant!r}")
    c = ml_collections.ConfigDict()
    c.images = 32 if variant == "full" else 8
    c.batch_size = 64 if variant == "full" else 16
    c.pretrained = True
    # full: every attribution method of the table (not extremal perturbations: 800 steps per map and stage)
    c.methods = ([method_slug(t) for t, _, _ in smallcnn_methods(False)] if variant == "full"
                 else list(DEFAULT_METHODS))
    c.quick = variant == "local"
    c.threshold = 0.5
    c.seed = 1
    c.out = "runs/sanity"
    c.cache_dir = ml_collections.config_dict.placeholder(str)
    return c
