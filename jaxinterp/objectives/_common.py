"""Shared checks and collectives of the objectives (private).

Every objective takes ``axis_name``: None on one device, or the name of the
mesh axis the batch is split over when it runs inside ``jax.shard_map``
(e.g. ``'data'``).  Sums over the batch then go through ``lax.psum`` and the
result equals the single-device one on the full batch.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["is_concrete", "check_float_array", "check_positive_float", "check_fraction",
           "check_positive_int", "psum", "axis_size", "global_count", "l2_normalize"]


def is_concrete(a) -> bool:
    """True for a concrete value (checks on values are skipped for tracers)."""
    return not isinstance(a, jax.core.Tracer)


@jax.jit
def _all_finite(x):
    return jnp.all(jnp.isfinite(x))


def check_float_array(x, arg: str, ndims: tuple[int, ...], finite: bool = True) -> jax.Array:
    """``x`` as a floating jax array of rank in ``ndims``; ValueError naming ``arg`` otherwise.

    On a concrete array the values are also checked to be finite (on its device:
    one scalar comes back to the host, the array does not).
    """
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        raise ValueError(f"{arg}: expected an array, got {type(x).__name__}")
    if x.ndim not in ndims:
        raise ValueError(f"{arg}: expected an array of rank {' or '.join(map(str, ndims))}, "
                         f"got shape {tuple(x.shape)}")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"{arg}: expected a floating dtype, got {x.dtype}")
    if any(d == 0 for d in x.shape):
        raise ValueError(f"{arg}: expected a non-empty array, got shape {tuple(x.shape)}")
    if finite and is_concrete(x) and not bool(_all_finite(x)):
        raise ValueError(f"{arg}: contains NaN or Inf values")
    return x if isinstance(x, jax.Array) else jnp.asarray(x)


def check_positive_float(v, arg: str) -> float:
    """``v`` as a float > 0 (a Python or NumPy number); ValueError naming ``arg`` otherwise."""
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) \
            or not np.isfinite(v) or v <= 0:
        raise ValueError(f"{arg}: expected a finite number > 0, got {v!r}")
    return float(v)


def check_fraction(v, arg: str, closed_right: bool = True) -> float:
    """``v`` in [0, 1] (or [0, 1)); ValueError naming ``arg`` otherwise. Tracers pass unchecked."""
    if not is_concrete(v):
        return v
    if isinstance(v, bool) or not np.isscalar(v) and np.ndim(v) != 0:
        raise ValueError(f"{arg}: expected a number in [0, 1], got {v!r}")
    f = float(np.asarray(v))
    if not (0.0 <= f <= 1.0) or (not closed_right and f == 1.0):
        raise ValueError(f"{arg}: expected a number in [0, 1{']' if closed_right else ')'}, got {v!r}")
    return v


def check_positive_int(v, arg: str, minimum: int = 1) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < minimum:
        raise ValueError(f"{arg}: expected an integer >= {minimum}, got {v!r}")
    return int(v)


def psum(x, axis_name):
    """``lax.psum(x, axis_name)``, or ``x`` when ``axis_name`` is None."""
    return x if axis_name is None else jax.lax.psum(x, axis_name)


def axis_size(axis_name) -> int:
    """Number of devices along ``axis_name`` (1 when None); static inside ``shard_map``."""
    return 1 if axis_name is None else int(jax.lax.axis_size(axis_name))


def global_count(n_local: int, axis_name) -> int:
    """Global batch size: the local size times the devices along ``axis_name``."""
    return n_local * axis_size(axis_name)


def l2_normalize(x: jax.Array, axis: int = -1, eps: float = 1e-12) -> jax.Array:
    """``x / max(||x||, eps)`` along ``axis`` (torch ``F.normalize``'s convention)."""
    norm = jnp.sqrt(jnp.sum(jnp.square(x), axis=axis, keepdims=True))
    return x / jnp.maximum(norm, eps)
