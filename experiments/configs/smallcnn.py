"""Config of experiments/train_smallcnn.py: the smallcnn on the synthetic 'easy' set.

``get_config()`` is the recipe the library caches (jaxinterp.train.zoo.RECIPES);
``get_config('local')`` is a seconds-long smoke run for a laptop.
"""

import ml_collections

from jaxinterp.train import zoo


def get_config(variant: str = "full") -> ml_collections.ConfigDict:
    """Fields: steps, out (runs root), cache_dir (None = $JAXINTERP_CACHE or ~/.cache/jaxinterp)."""
    if variant not in ("full", "local"):
        raise ValueError(f"variant: expected 'full' or 'local', got {variant!r}")
    config = ml_collections.ConfigDict()
    config.steps = zoo.RECIPES["smallcnn"]["steps"] if variant == "full" else 20
    config.out = "runs/train_smallcnn"
    config.cache_dir = ml_collections.config_dict.placeholder(str)
    return config
