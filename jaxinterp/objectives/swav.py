"""SwAV's swapped-prediction loss (Caron et al. NeurIPS 2020) over multi-crop views."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxinterp.checks import check_float_array, check_positive_float, check_int
from jaxinterp.objectives._common import global_count, psum
from jaxinterp.objectives.sinkhorn import swav_codes
from jaxinterp.ops import cosine_scores

__all__ = ["prototype_scores", "swav_loss"]


def prototype_scores(z: jax.Array, prototypes: jax.Array) -> jax.Array:
    """Cosine scores <z / |z|, c_k / |c_k|> of features (..., D) against prototypes (K, D) -> (..., K).

    SwAV L2-normalises features and prototypes before scoring (forgetting it
    overflows exp(scores / 0.05): docs/references.md, SwAV).  SwAV renormalises the
    prototype weights in place after each step; here the normalisation is part
    of the function (gradients flow through it), which gives the same scores
    (:func:`jaxinterp.ops.cosine_scores` after the argument checks).
    """
    z = check_float_array(z, "z", tuple(range(1, 8)))
    prototypes = check_float_array(prototypes, "prototypes", (2,))
    if prototypes.shape[1] != z.shape[-1]:
        raise ValueError(f"prototypes: expected (K, {z.shape[-1]}), got {tuple(prototypes.shape)}")
    return cosine_scores(z, prototypes)


def swav_loss(scores: jax.Array, *, num_assign: int = 2, temperature: float = 0.1,
              epsilon: float = 0.05, iterations: int = 3, axis_name: str | None = None) -> jax.Array:
    """Swapped prediction: predict each global view's codes from every other view.

    For views v of N images with prototype scores s_v (N, K), codes q_i =
    :func:`swav_codes` (s_i) (Sinkhorn, gradient stopped) of the first
    ``num_assign`` views (the global crops), and

        loss = 1/num_assign sum_i 1/(V-1) sum_{v != i} 1/N sum_n -sum_k q_ink log softmax(s_vn / T)_k.

    Args:
      scores: float (N, V, K): prototype scores of V >= 2 views (:func:`prototype_scores`),
        the 2 global crops first, then the local crops.
      num_assign: views whose codes are targets, 1 <= num_assign <= V (default 2, SwAV).
      temperature: T > 0 of the prediction softmax (default 0.1, SwAV).
      epsilon, iterations: of :func:`swav_codes` (defaults 0.05, 3).
      axis_name: mesh axis of the batch under ``shard_map``, or None.

    Returns:
      float32 scalar.

    References:
      Caron et al., "Unsupervised learning of visual features by contrasting cluster
      assignments", NeurIPS 2020.
    """
    scores = check_float_array(scores, "scores", (3,))
    n, v, _ = scores.shape
    if v < 2:
        raise ValueError(f"scores: expected at least 2 views (N, V >= 2, K), got {tuple(scores.shape)}")
    num_assign = check_int(num_assign, "num_assign")
    if num_assign > v:
        raise ValueError(f"num_assign: {num_assign} is more than the {v} views")
    temperature = check_positive_float(temperature, "temperature")
    logp = jax.nn.log_softmax(scores.astype(jnp.float32) / temperature, axis=-1)   # (N, V, K)
    total = 0.0
    for i in range(num_assign):
        q = swav_codes(scores[:, i], epsilon=epsilon, iterations=iterations, axis_name=axis_name)
        ce = -jnp.einsum("nk,nvk->v", q, logp)                                     # (V,) sums over n
        total = total + (jnp.sum(ce) - ce[i]) / (v - 1)
    return psum(total, axis_name) / (num_assign * global_count(n, axis_name))
