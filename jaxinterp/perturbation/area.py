"""The area constraint of extremal perturbations by rank statistics ("vecsort").

Fong, Patrick and Vedaldi (ICCV 2019, Sec. 3.1) constrain a mask m to have
area a by comparing its *sorted* values with those of an ideal binary mask
of that area: with n values,

    r_a = (0, ..., 0, 1, ..., 1)     floor(n (1 - a)) zeros, then ones,
    R_a(m) = || vecsort(m) - r_a ||^2 / n,

so R_a(m) = 0 exactly when m is binary with a fraction a of ones, whatever
their positions.  The energy adds ``lambda * R_a(m)``; the gradient of a sort
is a permutation, so the constraint costs one sort per step.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["check_areas", "area_zeros", "area_reference", "vecsort_penalty"]


def check_areas(areas, n: int):
    """``areas`` as an array (n, A) of fractions in (0, 1); ValueError naming ``areas``.

    Accepts a number, a sequence or array (A,) shared by all n images, or an
    array (n, A) of per-image areas.  Concrete areas are checked and returned as
    a float64 NumPy array; traced ones are broadcast as they are.
    """
    if isinstance(areas, bool) or not (isinstance(areas, (int, float, tuple, list)) or hasattr(areas, "dtype")):
        raise ValueError(f"areas: expected fractions in (0, 1), got {type(areas).__name__}")
    traced = isinstance(areas, jax.core.Tracer)
    a = areas if traced else np.asarray(areas)
    if not jnp.issubdtype(a.dtype, jnp.floating) and not jnp.issubdtype(a.dtype, jnp.integer):
        raise ValueError(f"areas: expected fractions in (0, 1), got dtype {a.dtype}")
    if a.ndim > 2 or a.size == 0 or (a.ndim == 2 and a.shape[0] != n):
        raise ValueError(f"areas: expected a number, (A,) or ({n}, A) with A >= 1, got shape {tuple(a.shape)}")
    if traced:
        return jnp.broadcast_to(a.reshape(-1, a.shape[-1]) if a.ndim else a.reshape(1, 1), (n, max(a.shape[-1:] or (1,))))
    a = a.astype(np.float64)
    if not (np.all(a > 0) and np.all(a < 1)):
        raise ValueError(f"areas: expected fractions in (0, 1), got {a.tolist()}")
    a = a.reshape(1, 1) if a.ndim == 0 else a.reshape(-1, a.shape[-1])
    return np.broadcast_to(a, (n, a.shape[-1]))


def area_zeros(n: int, area):
    """floor(n (1 - area)): the zeros of the reference, exactly (float64) for concrete ``area``.

    A traced ``area`` is computed in float32, which can be one off when n (1 - a)
    lies within float32 rounding of an integer.
    """
    if isinstance(area, jax.core.Tracer):
        return jnp.floor(n * (1.0 - area.astype(jnp.float32))).astype(jnp.int32)
    return np.floor(n * (1.0 - np.asarray(area, np.float64))).astype(np.int32)


def area_reference(n: int, area, dtype=jnp.float32) -> jax.Array:
    """r_a (..., n): zeros in the first floor(n (1 - area)) places, ones after, for areas (...,)."""
    zeros = jnp.asarray(area_zeros(n, area))
    return (jnp.arange(n) >= zeros[..., None]).astype(dtype)


def vecsort_penalty(mask: jax.Array, reference: jax.Array, *, ties: str = "index") -> jax.Array:
    """R(m) = mean((sort(m) - r)^2) over the mask's last two axes.

    Args:
      mask: (..., H, W) (any trailing two axes; n values per mask).
      reference: (n,) sorted reference, e.g. :func:`area_reference`, or (..., n).
      ties: how the gradient treats equal mask values.  ``'index'`` (default):
        the gradient of a sort, which sends sorted place k's gradient to the
        k-th of the tied values in index order (TorchRay's ``torch.sort`` does
        the same, so its optimisation is reproduced).  ``'average'``: tied
        values share their places' gradient equally (the symmetric
        subgradient); use it when many values start equal and the index order
        must not decide which are pushed down, e.g. channel masks initialised
        to 1 (:func:`jaxinterp.perturbation.channel_extremal`).

    Returns:
      (...,) the penalty per mask (without lambda).
    """
    lead = mask.shape[:-2]
    flat = mask.reshape(*lead, -1)
    if flat.shape[-1] != reference.shape[-1]:
        raise ValueError(f"reference: expected {flat.shape[-1]} values (one per mask pixel), "
                         f"got {reference.shape[-1]}")
    if ties == "index":
        return jnp.mean((jnp.sort(flat, axis=-1) - reference) ** 2, axis=-1)
    if ties == "average":
        reference = jnp.broadcast_to(reference, flat.shape)
        return _tie_averaged(flat.reshape(-1, flat.shape[-1]), reference.reshape(-1, flat.shape[-1])).reshape(lead)
    raise ValueError(f"ties: expected 'index' or 'average', got {ties!r}")


@jax.custom_vjp
def _tie_averaged(flat, reference):
    return jnp.mean((jnp.sort(flat, axis=-1) - reference) ** 2, axis=-1)


def _tie_averaged_fwd(flat, reference):
    return _tie_averaged(flat, reference), (flat, reference)


def _tie_averaged_bwd(res, g):
    flat, reference = res
    n = flat.shape[-1]

    def one(v, r):
        order = jnp.argsort(v)
        s = v[order]
        group = jnp.cumsum(jnp.concatenate([jnp.zeros(1, jnp.int32), (s[1:] != s[:-1]).astype(jnp.int32)]))
        total = jax.ops.segment_sum(s - r, group, num_segments=n)
        count = jax.ops.segment_sum(jnp.ones_like(s), group, num_segments=n)
        per_place = (total / jnp.maximum(count, 1))[group]
        return jnp.zeros_like(v).at[order].set(2.0 * per_place / n)

    grads = jax.vmap(one)(flat, jnp.broadcast_to(reference, flat.shape))
    return grads * g[:, None], None


_tie_averaged.defvjp(_tie_averaged_fwd, _tie_averaged_bwd)
