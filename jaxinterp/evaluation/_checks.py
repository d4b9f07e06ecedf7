"""Argument checks shared by the evaluation metrics (private)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def is_concrete(a) -> bool:
    """True when ``a`` holds values (not a tracer), so value checks can run."""
    return not isinstance(a, jax.core.Tracer)


def as_array(a, arg: str):
    if not hasattr(a, "shape") or not hasattr(a, "dtype"):
        try:
            a = np.asarray(a)
        except Exception:  # pragma: no cover - defensive
            raise ValueError(f"{arg}: expected an array, got {type(a).__name__}") from None
        if a.dtype == object:
            raise ValueError(f"{arg}: expected a numeric array, got {type(a).__name__}")
    return a


def check_maps(maps, arg: str = "maps", ranks=(3, 4)):
    """``maps`` as a floating array of rank in ``ranks`` ((N, H, W) or (N, T, H, W))."""
    maps = as_array(maps, arg)
    if maps.ndim not in ranks:
        want = " or ".join({3: "(N, H, W)", 4: "(N, T, H, W)", 2: "(H, W)"}.get(r, f"rank {r}")
                           for r in ranks)
        raise ValueError(f"{arg}: expected maps {want}, got shape {tuple(maps.shape)}")
    if not jnp.issubdtype(maps.dtype, jnp.floating):
        raise ValueError(f"{arg}: expected a floating dtype, got {maps.dtype}")
    if 0 in maps.shape:
        raise ValueError(f"{arg}: expected non-empty maps, got shape {tuple(maps.shape)}")
    if is_concrete(maps) and not np.all(np.isfinite(np.asarray(maps))):   # host check: no op in a trace
        raise ValueError(f"{arg}: expected finite values, got NaN or Inf")
    return jnp.asarray(maps)


def check_nonneg(value, arg: str) -> None:
    if is_concrete(value):
        v = np.asarray(value)
        if not np.all(np.isfinite(v)) or np.any(v < 0):
            raise ValueError(f"{arg}: expected a finite value >= 0, got {value!r}")


def check_positive_int(value, arg: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{arg}: expected a positive integer, got {value!r}")
    return int(value)


def check_choice(value, arg: str, choices) -> str:
    if value not in choices:
        raise ValueError(f"{arg}: expected one of {list(choices)}, got {value!r}")
    return value
