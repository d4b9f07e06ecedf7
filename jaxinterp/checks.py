"""Argument checks shared by every package: each raises a ValueError that names the argument.

The value checks run only on concrete values; under ``jax.jit`` the arguments are
tracers and only shapes and dtypes are checked (no host synchronisation).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["is_concrete", "as_array", "check_images", "check_int", "check_size", "check_positive_float",
           "check_real", "check_scalar", "check_range", "check_fraction", "check_nonneg", "check_areas",
           "check_choice", "check_float_array", "check_maps", "check_layer", "check_baseline"]


def is_concrete(a) -> bool:
    """True when ``a`` holds values (not a tracer), so value checks can run."""
    return not isinstance(a, jax.core.Tracer)


def as_array(a, arg: str):
    """``a`` if it has a shape and a dtype, else ``np.asarray(a)``; ValueError naming ``arg`` if not numeric."""
    if not hasattr(a, "shape") or not hasattr(a, "dtype"):
        try:
            a = np.asarray(a)
        except Exception:  # pragma: no cover - defensive
            raise ValueError(f"{arg}: expected an array, got {type(a).__name__}") from None
        if a.dtype == object:
            raise ValueError(f"{arg}: expected a numeric array, got {type(a).__name__}")
    return a


def check_images(x, arg: str = "x") -> jax.Array:
    """``x`` as an array of images (N, H, W, 3), floating; ValueError naming ``arg`` otherwise."""
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        raise ValueError(f"{arg}: expected an array of images (N, H, W, 3), got {type(x).__name__}")
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"{arg}: expected images of rank 4 (N, H, W, 3), got shape {tuple(x.shape)}")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"{arg}: expected a floating dtype (float32), got {x.dtype}")
    return jnp.asarray(x)


def check_int(value, arg: str, minimum: int = 1) -> int:
    """``value`` as a Python int >= ``minimum`` (default 1: a positive int); ValueError naming ``arg`` otherwise.

    Python and NumPy integers pass; bools, floats and arrays do not.

    Examples:
      >>> from jaxinterp.checks import check_int
      >>> check_int(3, "steps")
      3
      >>> check_int(0, "steps")
      Traceback (most recent call last):
      ...
      ValueError: steps: expected a positive integer, got 0
      >>> check_int(0, "jitter", minimum=0)
      0
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"{arg}: expected {what}, got {value!r}")
    return int(value)


def check_size(value, arg: str, *, pair_only: bool = False) -> tuple[int, int]:
    """An image size (H, W) of positive ints, from a pair or (unless ``pair_only``) one int for a square.

    ValueError naming ``arg`` otherwise.

    Examples:
      >>> from jaxinterp.checks import check_size
      >>> check_size(64, "image_size"), check_size((32, 48), "image_size")
      ((64, 64), (32, 48))
    """
    def positive(v):
        return isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 1

    if not pair_only and positive(value):
        return int(value), int(value)
    if not isinstance(value, (tuple, list)) or len(value) != 2 or not all(positive(v) for v in value):
        want = "(H, W) positive integers" if pair_only else "a positive integer or (H, W) positive integers"
        raise ValueError(f"{arg}: expected {want}, got {value!r}")
    return int(value[0]), int(value[1])


def check_real(value, arg: str, *, minimum: float = -np.inf, maximum: float = np.inf,
               open_min: bool = False, open_max: bool = False) -> float:
    """``value`` as a float in the interval from ``minimum`` to ``maximum`` (ends closed unless ``open_*``).

    Python and NumPy reals pass; bools, arrays and NaN do not.  ValueError naming ``arg``
    otherwise, stating the interval.

    Examples:
      >>> from jaxinterp.checks import check_real
      >>> check_real(0.5, "p", minimum=0, maximum=1, open_min=True)
      0.5
      >>> check_real(0, "p", minimum=0, maximum=1, open_min=True)
      Traceback (most recent call last):
      ...
      ValueError: p: expected a number in (0, 1], got 0
    """
    ok = not isinstance(value, bool) and isinstance(value, (int, float, np.integer, np.floating))
    v = float(value) if ok else np.nan
    ok = ok and (v > minimum if open_min else v >= minimum) and (v < maximum if open_max else v <= maximum)
    if not ok:
        interval = (f"{'(' if open_min else '['}{minimum:g}, {maximum:g}{')' if open_max else ']'}"
                    .replace("[-inf", "(-inf").replace("inf]", "inf)"))
        raise ValueError(f"{arg}: expected a number in {interval}, got {value!r}")
    return v


def check_scalar(value, arg: str, *, minimum: float = -np.inf, maximum: float = np.inf,
                 open_min: bool = False, open_max: bool = False):
    """``value`` unchanged if it is a real scalar in the interval (as :func:`check_real`).

    Unlike :func:`check_real`, 0-d arrays pass, and tracers pass unchecked: a step
    size or a budget may be traced or vmapped over.  ValueError naming ``arg``
    otherwise, stating the interval.

    Examples:
      >>> import numpy as np
      >>> from jaxinterp.checks import check_scalar
      >>> float(check_scalar(np.float32(0.25), "epsilon", minimum=0, open_max=True))
      0.25
      >>> check_scalar(np.ones(3), "epsilon", minimum=0)
      Traceback (most recent call last):
      ...
      ValueError: epsilon: expected a real scalar, got shape (3,) dtype float64
    """
    if isinstance(value, jax.core.Tracer):
        return value
    if isinstance(value, (bool, np.bool_)) or not (isinstance(value, (int, float, np.integer, np.floating))
                                                  or hasattr(value, "dtype")):
        raise ValueError(f"{arg}: expected a real number, got {type(value).__name__}")
    a = np.asarray(value)
    if a.ndim or not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise ValueError(f"{arg}: expected a real scalar, got shape {a.shape} dtype {a.dtype}")
    check_real(a.item(), arg, minimum=minimum, maximum=maximum, open_min=open_min, open_max=open_max)
    return value


def check_range(value, arg: str, *, strict: bool = False, positive: bool = False) -> tuple[float, float]:
    """``value`` as a pair of floats (lo, hi) with lo <= hi (lo < hi if ``strict``; 0 < lo if ``positive``).

    ValueError naming ``arg`` otherwise.

    Examples:
      >>> from jaxinterp.checks import check_range
      >>> check_range((0, 1), "clip", strict=True)
      (0.0, 1.0)
      >>> check_range((1.0, -1.0), "rotation_range")
      Traceback (most recent call last):
      ...
      ValueError: rotation_range: expected (lo, hi) numbers with lo <= hi, got (1.0, -1.0)
    """
    ok = isinstance(value, (tuple, list)) and len(value) == 2 and all(
        not isinstance(v, bool) and isinstance(v, (int, float, np.integer, np.floating)) for v in value)
    ok = ok and (value[0] < value[1] if strict else value[0] <= value[1]) and (not positive or value[0] > 0)
    if not ok:
        raise ValueError(f"{arg}: expected (lo, hi) numbers with {'0 < ' if positive else ''}lo "
                         f"{'<' if strict else '<='} hi, got {value!r}")
    return float(value[0]), float(value[1])


def check_positive_float(value, arg: str) -> float:
    """``value`` as a finite float > 0 (a Python or NumPy number); ValueError naming ``arg`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not np.isfinite(value) or value <= 0:
        raise ValueError(f"{arg}: expected a finite number > 0, got {value!r}")
    return float(value)


def check_fraction(value, arg: str, closed_right: bool = True):
    """``value`` in [0, 1] (or [0, 1)); ValueError naming ``arg`` otherwise.  Tracers pass unchecked."""
    if not is_concrete(value):
        return value
    if isinstance(value, bool) or not np.isscalar(value) and np.ndim(value) != 0:
        raise ValueError(f"{arg}: expected a number in [0, 1], got {value!r}")
    f = float(np.asarray(value))
    if not (0.0 <= f <= 1.0) or (not closed_right and f == 1.0):
        raise ValueError(f"{arg}: expected a number in [0, 1{']' if closed_right else ')'}, got {value!r}")
    return value


def check_nonneg(value, arg: str) -> None:
    """ValueError naming ``arg`` unless every value is finite and >= 0 (skipped for tracers)."""
    if is_concrete(value):
        v = np.asarray(value)
        if not np.all(np.isfinite(v)) or np.any(v < 0):
            raise ValueError(f"{arg}: expected a finite value >= 0, got {value!r}")


def check_areas(areas, n: int, arg: str = "areas"):
    """``areas`` as an array (n, A) of fractions in (0, 1); ValueError naming ``arg``.

    Accepts a number, a sequence or array (A,) shared by all n images, or an
    array (n, A) of per-image areas.  Concrete areas are checked and returned as
    a float64 NumPy array; traced ones are broadcast as they are.
    """
    if isinstance(areas, bool) or not (isinstance(areas, (int, float, tuple, list)) or hasattr(areas, "dtype")):
        raise ValueError(f"{arg}: expected fractions in (0, 1), got {type(areas).__name__}")
    traced = isinstance(areas, jax.core.Tracer)
    a = areas if traced else np.asarray(areas)
    if not jnp.issubdtype(a.dtype, jnp.floating) and not jnp.issubdtype(a.dtype, jnp.integer):
        raise ValueError(f"{arg}: expected fractions in (0, 1), got dtype {a.dtype}")
    if a.ndim > 2 or a.size == 0 or (a.ndim == 2 and a.shape[0] != n):
        raise ValueError(f"{arg}: expected a number, (A,) or ({n}, A) with A >= 1, got shape {tuple(a.shape)}")
    if traced:
        return jnp.broadcast_to(a.reshape(-1, a.shape[-1]) if a.ndim else a.reshape(1, 1), (n, max(a.shape[-1:] or (1,))))
    a = a.astype(np.float64)
    if not (np.all(a > 0) and np.all(a < 1)):
        raise ValueError(f"{arg}: expected fractions in (0, 1), got {a.tolist()}")
    a = a.reshape(1, 1) if a.ndim == 0 else a.reshape(-1, a.shape[-1])
    return np.broadcast_to(a, (n, a.shape[-1]))


def check_choice(value, arg: str, choices):
    """``value`` if it is one of ``choices``; ValueError naming ``arg`` otherwise."""
    if value not in choices:
        raise ValueError(f"{arg}: expected one of {list(choices)}, got {value!r}")
    return value


@jax.jit
def _all_finite(x):
    return jnp.all(jnp.isfinite(x))


def check_float_array(x, arg: str, ndims: tuple[int, ...], finite: bool = True) -> jax.Array:
    """``x`` as a floating, non-empty jax array of rank in ``ndims``; ValueError naming ``arg`` otherwise.

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


def check_maps(maps, arg: str = "maps", ranks=(3, 4)) -> jax.Array:
    """``maps`` as a finite, non-empty floating array of rank in ``ranks`` ((N, H, W) or (N, T, H, W))."""
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


def check_layer(net, layer: str | None, arg: str = "layer") -> str | None:
    """``layer`` if it is None or a split point of ``net`` (a :class:`~jaxinterp.nets.Net`); ValueError naming ``arg``."""
    if layer is not None and layer not in net.layers:
        raise ValueError(f"{arg}: unknown split point {layer!r} of {net.name}; "
                         f"expected one of {list(net.layers)}")
    return layer


def check_baseline(baseline, x: jax.Array) -> jax.Array:
    """``baseline`` broadcast to the images ``x`` (N, H, W, 3); ValueError naming ``baseline``.

    Accepts a scalar grey level, a colour (3,), an image (H, W, 3) or images
    (N, H, W, 3), with values in [0, 1] (checked when concrete).
    """
    if isinstance(baseline, bool) or not (isinstance(baseline, (int, float)) or hasattr(baseline, "dtype")):
        raise ValueError(f"baseline: expected a number or an array, got {type(baseline).__name__}")
    b = baseline if isinstance(baseline, jax.core.Tracer) else np.asarray(baseline)
    if not (jnp.issubdtype(b.dtype, jnp.floating) or jnp.issubdtype(b.dtype, jnp.integer)):
        raise ValueError(f"baseline: expected a real number or array, got dtype {b.dtype}")
    try:
        ok = np.broadcast_shapes(b.shape, x.shape) == tuple(x.shape)
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f"baseline: shape {tuple(b.shape)} does not broadcast to the images' "
                         f"{tuple(x.shape)}; expected a scalar, (3,), (H, W, 3) or (N, H, W, 3)")
    if not isinstance(b, jax.core.Tracer) and b.size:
        lo, hi = float(np.min(b)), float(np.max(b))
        if not (lo >= 0.0 and hi <= 1.0):
            raise ValueError(f"baseline: expected pixel values in [0, 1], got range [{lo:.4g}, {hi:.4g}]")
    return jnp.broadcast_to(jnp.asarray(b, x.dtype), x.shape)
