"""Shared plumbing of the attribution methods: input checks and the vmap lifting.

Every attribution method is written for ONE example and ONE target,
``fn(x1, t) -> map``, with x1 (H, W, 3) and t an int32 scalar, and lifted here
to a batch of images (N, H, W, 3) with targets (N, T)::

    maps = lift(fn)(x, targets)          # (N, T, *map.shape)

The lifting is two nested ``jax.vmap``s (over targets inside, over examples
outside), so a method compiles once for all images and targets, and the
per-target function sees an unbatched x1: work that does not depend on the
target (the forward pass) is not repeated per target.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from jaxinterp.nets import Net
from jaxinterp.nets.rules import Rules

__all__ = ["class_score", "lift", "check_images", "check_targets"]


def class_score(net: Net, params, x1: jax.Array, t: jax.Array, rules: Rules | None = None) -> jax.Array:
    """The logit of class ``t`` for one image.

    Args:
      net: the net (static).
      params: its params.
      x1: one image (H, W, 3), float RGB in [0, 1].
      t: class index, int scalar (may be traced).
      rules: backward rules (None = standard autodiff).

    Returns:
      The scalar logit ``net.apply(params, x1[None])[0, t]``.
    """
    return net.apply(params, x1[None], rules=rules)[0, t]


def lift(fn: Callable[[jax.Array, jax.Array], jax.Array]) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """Lift a per-example, per-target function to batches of examples and targets.

    Args:
      fn: ``fn(x1, t) -> out`` with x1 one example (H, W, C) and t an int scalar.

    Returns:
      ``batched(x, targets) -> outs`` with x (N, H, W, C), targets (N, T) int and
      outs (N, T, *out.shape), ``outs[n, k] == fn(x[n], targets[n, k])``.
    """
    over_targets = jax.vmap(fn, in_axes=(None, 0))
    return jax.vmap(over_targets, in_axes=(0, 0))


def check_images(x) -> jax.Array:
    """``x`` as an array of images (N, H, W, 3), floating; ValueError otherwise."""
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        raise ValueError(f"x: expected an array of images (N, H, W, 3), got {type(x).__name__}")
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"x: expected images of rank 4 (N, H, W, 3), got shape {tuple(x.shape)}")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"x: expected a floating dtype (float32), got {x.dtype}")
    return jnp.asarray(x)


def check_targets(target, n: int, num_classes: int) -> jax.Array:
    """Class targets as an int32 array (N, T); ValueError naming ``target`` otherwise.

    Args:
      target: int class indices, (N,) (one target per example) or (N, T).
      n: the number of examples N.
      num_classes: targets must lie in [0, num_classes); checked when concrete.

    Returns:
      targets: int32 (N, T), T = 1 for (N,) input.
    """
    target = jnp.asarray(target)
    if not jnp.issubdtype(target.dtype, jnp.integer):
        raise ValueError(f"target: expected integer class indices, got dtype {target.dtype}")
    if target.ndim not in (1, 2) or target.shape[0] != n or (target.ndim == 2 and not target.shape[1]):
        raise ValueError(f"target: expected shape ({n},) or ({n}, T) with T >= 1, "
                         f"got {tuple(target.shape)}")
    if not isinstance(target, jax.core.Tracer) and target.size:
        lo, hi = int(target.min()), int(target.max())
        if lo < 0 or hi >= num_classes:
            raise ValueError(f"target: expected class indices in [0, {num_classes}), "
                             f"got range [{lo}, {hi}]")
    return target.reshape(n, -1).astype(jnp.int32)
