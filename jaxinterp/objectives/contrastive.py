"""Contrastive objectives: InfoNCE / NT-Xent (SimCLR) and the GDT loss over a contrast matrix.

All are one function of a contrast matrix C in {+1, -1, 0} over pairs of
embeddings (GDT, Patrick et al. ICCV 2021): with s_ij = <z_i, z_j> / T
(the dot-product critic on L2-normalised embeddings by default),

    loss = sum_{C_ij = +1} w_ij l_ij / sum_{C_ij = +1} w_ij,
    l_ij = -log( exp(s_ij) / sum_{k : C_ik != 0} exp(s_ik) ),

so +1 pairs are pulled together, -1 pairs are the negatives, and 0 pairs
(an embedding with itself, or pairs a design ignores) are left out of the
denominator.  InfoNCE on V views of each sample is the contrast "same sample,
other view: +1; other sample: -1; itself: 0"; with two views this is SimCLR's
NT-Xent (``optax.losses.ntxent``).  With more views every other view of the
same sample is in the denominator too (the GDT / lecture form; optax's ntxent
leaves the other positives out, so for V > 2 the two differ).

Sharded: inside ``jax.shard_map`` with the batch split over ``axis_name``,
each device contrasts its own anchors against the embeddings of all devices
(``lax.all_gather``, whose transpose is a reduce-scatter, so gradients reach
the embeddings of every device), and the loss is summed with ``psum``: value
and gradients equal one device on the whole batch.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp.checks import check_float_array, check_positive_float, is_concrete
from jaxinterp.objectives._common import axis_size, psum
from jaxinterp.ops import l2_normalise

__all__ = ["infonce", "nt_xent", "gdt_loss", "contrast_from_factors", "MODES"]

MODES = ("invariant", "distinctive", "cross")
"""How a transformation factor enters :func:`contrast_from_factors`."""

_MASKED = -1e30


def _gather(z, axis_name):
    return z if axis_name is None else jax.lax.all_gather(z, axis_name, axis=0, tiled=True)


def _offset(n_local: int, axis_name):
    return 0 if axis_name is None else jax.lax.axis_index(axis_name) * n_local


def _contrast_loss(s, contrast, weights, axis_name):
    """Weighted mean of l_ij over the +1 pairs of all devices (module docstring)."""
    keep = contrast != 0
    pos = contrast > 0
    denom = jax.nn.logsumexp(jnp.where(keep, s, _MASKED), axis=1, keepdims=True)
    w = pos.astype(s.dtype) if weights is None else jnp.where(pos, weights.astype(s.dtype), 0.0)
    total = psum(jnp.stack([jnp.sum(w * jnp.where(pos, denom - s, 0.0)), jnp.sum(w)]), axis_name)
    return total[0] / total[1]


def _embed(z, normalise: bool):
    z = z.astype(jnp.float32)
    return l2_normalise(z) if normalise else z


def infonce(z: jax.Array, *, temperature: float = 0.1, normalise: bool = True,
            axis_name: str | None = None) -> jax.Array:
    """Multi-view InfoNCE with a dot-product critic; negatives from the whole (global) batch.

    For N samples with V >= 2 views each (z_nv), every embedding is an anchor
    and every other view of its sample a positive, all views of the other
    samples its negatives (module docstring for the formula).  Averaged over
    the N V (V - 1) positive pairs.

    Args:
      z: float (N, V, D) embeddings, batch first (the axis split under ``shard_map``).
      temperature: T > 0 (default 0.1, SimCLR; docs/references.md, InfoNCE and SimCLR).
      normalise: L2-normalise the embeddings first (default True: cosine critic, SimCLR).
      axis_name: mesh axis of the batch under ``shard_map``, or None.

    Returns:
      float32 scalar.

    Raises:
      ValueError: z not (N, V, D) floating with V >= 2, non-finite; temperature <= 0.

    References:
      Oord, Li and Vinyals, "Representation learning with contrastive predictive
      coding", 2018.  Chen et al., "A simple framework for contrastive learning of
      visual representations", ICML 2020.

    Examples:
      Two identical views of well separated samples give a loss near 0:

      >>> import jax.numpy as jnp
      >>> from jaxinterp import objectives
      >>> z = jnp.repeat(jnp.eye(4)[:, None], 2, axis=1)        # (N, V, D) = (4, 2, 4)
      >>> float(objectives.infonce(z, temperature=0.1)) < 1e-3
      True
    """
    z = check_float_array(z, "z", (3,))
    n, v, _ = z.shape
    if v < 2:
        raise ValueError(f"z: expected at least 2 views (N, V >= 2, D), got shape {tuple(z.shape)}")
    temperature = check_positive_float(temperature, "temperature")
    e = _embed(z, normalise)
    local = e.reshape(n * v, -1)
    every = _gather(e, axis_name).reshape(-1, e.shape[-1])
    ids_l = jnp.repeat(_offset(n, axis_name) + jnp.arange(n), v)
    ids_g = jnp.repeat(jnp.arange(every.shape[0] // v), v)
    rows = _offset(n * v, axis_name) + jnp.arange(n * v)
    same = ids_l[:, None] == ids_g[None, :]
    contrast = jnp.where(same, 1, -1) * (rows[:, None] != jnp.arange(every.shape[0])[None, :])
    s = local @ every.T / temperature
    return _contrast_loss(s, contrast, None, axis_name)


def nt_xent(a: jax.Array, b: jax.Array, *, temperature: float = 0.1, normalise: bool = True,
            axis_name: str | None = None) -> jax.Array:
    """SimCLR's NT-Xent on two views a, b (N, D): :func:`infonce` of ``stack([a, b], 1)``.

    Each of the 2N embeddings has one positive (its other view) and 2N - 2
    negatives; the mean over the 2N anchors.  Equals ``optax.losses.ntxent``
    of the 2N embeddings labelled by sample (with our default temperature 0.1,
    optax's 0.07).
    """
    a = check_float_array(a, "a", (2,))
    b = check_float_array(b, "b", (2,))
    if a.shape != b.shape:
        raise ValueError(f"b: expected the shape of a {tuple(a.shape)}, got {tuple(b.shape)}")
    return infonce(jnp.stack([a, b], axis=1), temperature=temperature, normalise=normalise,
                   axis_name=axis_name)


def gdt_loss(z: jax.Array, contrast: jax.Array, weights: jax.Array | None = None, *,
             temperature: float = 0.07, normalise: bool = True,
             axis_name: str | None = None) -> jax.Array:
    """The GDT contrastive loss for any contrast matrix C in {+1, -1, 0} and pair weights.

    ``loss = sum_{C_ij=+1} w_ij l_ij / sum_{C_ij=+1} w_ij`` with l_ij the
    InfoNCE term of the pair against all k with C_ik != 0 (module docstring).
    The paper writes the sum unnormalised; dividing by the positive weight
    makes the SimCLR contrast give NT-Xent's mean.  Weights weight the
    positive pairs' terms (the denominator is not weighted).

    Args:
      z: float (M, D) embeddings of the M transformed samples (the local M under
        ``shard_map``; the columns of C then index the gathered M x devices).
      contrast: (M, M_total) int or float in {+1, -1, 0}: C[i, j] for anchor i against
        embedding j; M_total = M x devices along ``axis_name`` (rows split, like z).
        E.g. :func:`contrast_from_factors`.  At least one +1.
      weights: None (all 1) or float (M, M_total) >= 0.
      temperature: T > 0 (default 0.07; docs/references.md, GDT).
      normalise: L2-normalise the embeddings first (default True).
      axis_name: mesh axis of the batch under ``shard_map``, or None.

    Returns:
      float32 scalar.

    Raises:
      ValueError: bad shapes, non-finite z, C not in {+1, -1, 0} or without a +1,
        negative or non-finite weights, temperature <= 0.

    References:
      Patrick et al., "On compositions of transformations in contrastive
      self-supervised learning", ICCV 2021.
    """
    z = check_float_array(z, "z", (2,))
    m = z.shape[0]
    total = m * axis_size(axis_name)
    temperature = check_positive_float(temperature, "temperature")
    if not hasattr(contrast, "shape") or tuple(contrast.shape) != (m, total):
        raise ValueError(f"contrast: expected shape ({m}, {total}), "
                         f"got {getattr(contrast, 'shape', type(contrast).__name__)}")
    if is_concrete(contrast):
        c = np.asarray(contrast)
        if not np.all(np.isin(c, (-1, 0, 1))):
            raise ValueError("contrast: expected values in {+1, -1, 0}")
        if axis_name is None and not np.any(c == 1):
            raise ValueError("contrast: has no +1 (positive) pair")
    if weights is not None:
        if not hasattr(weights, "shape") or tuple(weights.shape) != (m, total):
            raise ValueError(f"weights: expected shape ({m}, {total}), "
                             f"got {getattr(weights, 'shape', type(weights).__name__)}")
        if is_concrete(weights):
            w = np.asarray(weights)
            if not np.all(np.isfinite(w)) or np.any(w < 0):
                raise ValueError("weights: expected finite values >= 0")
    e = _embed(z, normalise)
    s = e @ _gather(e, axis_name).T / temperature
    return _contrast_loss(s, jnp.asarray(contrast), None if weights is None else jnp.asarray(weights),
                          axis_name)


def contrast_from_factors(factors: np.ndarray, modes: Sequence[str]) -> np.ndarray:
    """A GDT contrast matrix from the transformation factors of each embedding.

    Embedding i was made by a composition of transformations with integer
    factors ``factors[i]`` (sample index, modality, time shift, reversal...).
    Each factor has a mode (GDT): ``'invariant'`` (ignored: the representation
    should not change), ``'distinctive'`` (the pair is positive only if equal),
    or ``'cross'`` (pairs equal in it are ignored, e.g. modality when only
    cross-modal pairs are contrasted).  Then C_ij = 0 if i = j or a 'cross'
    factor is equal, else +1 if every distinctive factor is equal, else -1.

    Args:
      factors: int (M, F).
      modes: F strings from :data:`MODES`.

    Returns:
      int32 (M, M) NumPy contrast matrix.
    """
    f = np.asarray(factors)
    if f.ndim != 2 or not np.issubdtype(f.dtype, np.integer):
        raise ValueError(f"factors: expected an int array (M, F), got {f.dtype} {f.shape}")
    modes = tuple(modes)
    if len(modes) != f.shape[1] or any(m not in MODES for m in modes):
        raise ValueError(f"modes: expected {f.shape[1]} of {MODES}, got {modes!r}")
    eq = f[:, None, :] == f[None, :, :]
    dist = [i for i, m in enumerate(modes) if m == "distinctive"]
    cross = [i for i, m in enumerate(modes) if m == "cross"]
    c = np.where(eq[..., dist].all(-1), 1, -1).astype(np.int32)
    if cross:
        c[eq[..., cross].any(-1)] = 0
    np.fill_diagonal(c, 0)
    return c
