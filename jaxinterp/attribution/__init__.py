"""Attribution: which pixels a net's output depends on.

Every method is written for one example and one target and lifted with
``jax.vmap`` (:func:`jaxinterp.attribution._lift.lift`); public entry points take
images (N, H, W, 3) with targets (N,) or (N, T) and return maps (N, T, H, W).
"""

from jaxinterp.attribution._lift import class_score, lift
from jaxinterp.attribution.gradient import gradient

__all__ = ["gradient", "class_score", "lift"]
