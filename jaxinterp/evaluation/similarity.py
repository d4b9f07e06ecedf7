"""Similarity of two maps: Spearman rank correlation, SSIM, HOG distance (Adebayo et al. 2018).

All functions compare maps over their two trailing (H, W) axes and broadcast
over leading axes: ``f(a (..., H, W), b (..., H, W)) -> (...)``.

References:
  Adebayo, Gilmer, Muelly, Goodfellow, Hardt, Kim.  Sanity Checks for Saliency
  Maps.  NeurIPS 2018.
  Wang, Bovik, Sheikh, Simoncelli.  Image Quality Assessment: From Error
  Visibility to Structural Similarity.  IEEE TIP 2004.
  Dalal, Triggs.  Histograms of Oriented Gradients for Human Detection.  CVPR 2005.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp.checks import check_maps, check_int

__all__ = ["rankdata", "spearman", "ssim", "hog_descriptor", "hog_distance"]


def _pair(a, b):
    a = check_maps(a, "a", ranks=range(2, 8))
    b = check_maps(b, "b", ranks=range(2, 8))
    if a.shape[-2:] != b.shape[-2:]:
        raise ValueError(f"b: expected the spatial size {tuple(a.shape[-2:])} of a, "
                         f"got shape {tuple(b.shape)}")
    try:
        np.broadcast_shapes(a.shape, b.shape)
    except ValueError:
        raise ValueError(f"b: shape {tuple(b.shape)} does not broadcast with a {tuple(a.shape)}") from None
    dt = jnp.promote_types(a.dtype, b.dtype)
    return a.astype(dt), b.astype(dt)


def rankdata(x: jax.Array) -> jax.Array:
    """Average ranks (1-based) along the last axis, ties get the mean of their ranks (scipy ``'average'``).

    ``rank(x_i) = (#{x_j < x_i} + #{x_j <= x_i} + 1) / 2``.

    Args:
      x: float (..., D).

    Returns:
      float (..., D), same dtype as ``x`` (float32 for ints).
    """
    x = jnp.asarray(x)
    dt = x.dtype if jnp.issubdtype(x.dtype, jnp.floating) else jnp.float32
    s = jnp.sort(x, axis=-1)
    ss = jax.vmap(lambda si, xi: (jnp.searchsorted(si, xi, side="left"),
                                  jnp.searchsorted(si, xi, side="right")))
    flat_s, flat_x = s.reshape(-1, s.shape[-1]), x.reshape(-1, x.shape[-1])
    lo, hi = ss(flat_s, flat_x)
    r = (lo + hi + 1).astype(dt) / 2
    return r.reshape(x.shape)


def spearman(a: jax.Array, b: jax.Array) -> jax.Array:
    """Spearman rank correlation of maps over their (H, W) pixels.

    ``rho = pearson(rank(a), rank(b))`` with average ranks for ties, as
    ``scipy.stats.spearmanr``; a constant map gives NaN (0 / 0), as scipy.

    Args:
      a, b: float (..., H, W), broadcastable.

    Returns:
      float (...).
    """
    a, b = _pair(a, b)
    shape = np.broadcast_shapes(a.shape, b.shape)
    a, b = jnp.broadcast_to(a, shape), jnp.broadcast_to(b, shape)
    ra = rankdata(a.reshape(*shape[:-2], -1))
    rb = rankdata(b.reshape(*shape[:-2], -1))
    ra = ra - ra.mean(-1, keepdims=True)
    rb = rb - rb.mean(-1, keepdims=True)
    saa, sbb = jnp.sum(ra * ra, -1), jnp.sum(rb * rb, -1)
    # The covariance by polarisation, (|ra|^2 + |rb|^2 - |ra - rb|^2) / 2: float32 sums of
    # ~D^3 / 12 differ by ~1e-5 between XLA's fusions, and sum(ra * rb) taken apart from
    # sum(ra * ra) left identical maps at 0.99998 under jit; here they give 1 to second order.
    cov = 0.5 * (saa + sbb - jnp.sum(jnp.square(ra - rb), -1))
    return cov / jnp.sqrt(saa * sbb)


def _gauss(sigma, truncate, dtype):
    r = int(truncate * sigma + 0.5)
    t = np.arange(-r, r + 1, dtype=np.float64)
    k = np.exp(-0.5 * (t / sigma) ** 2)
    return jnp.asarray(k / k.sum(), dtype)


def _filter_valid(x, k):
    """Separable 'valid' correlation of x (B, H, W) with the 1-D kernel k along H then W."""
    r = k.shape[0]
    h, w = x.shape[-2:]
    ho, wo = h - r + 1, w - r + 1
    y = sum(k[i] * x[:, i:i + ho, :] for i in range(r))
    return sum(k[i] * y[:, :, i:i + wo] for i in range(r))


def ssim(a: jax.Array, b: jax.Array, *, data_range: float, sigma: float = 1.5, truncate: float = 3.5,
         k1: float = 0.01, k2: float = 0.03) -> jax.Array:
    """Mean structural similarity (Wang et al. 2004) with a Gaussian window, as scikit-image.

    Equals ``skimage.metrics.structural_similarity(a, b, gaussian_weights=True,
    sigma=1.5, use_sample_covariance=False, data_range=data_range)``: local
    moments ``mu = G * x``, ``sigma_xy = G * (x y) - mu_x mu_y`` with the normalised
    Gaussian G of radius ``int(truncate sigma + 0.5)`` (11 taps for sigma 1.5),

        S = (2 mu_a mu_b + C1)(2 s_ab + C2) / ((mu_a^2 + mu_b^2 + C1)(s_a + s_b + C2)),
        C1 = (k1 L)^2, C2 = (k2 L)^2, L = data_range,

    averaged over the positions where the window lies inside the map (skimage
    crops the border of width radius, so its padding mode does not matter).

    Args:
      a, b: float (..., H, W), broadcastable, H and W >= the window (11).
      data_range: L > 0 (e.g. max - min of the maps' common range).

    Returns:
      float (...).
    """
    a, b = _pair(a, b)
    if not data_range > 0:
        raise ValueError(f"data_range: expected a positive value range, got {data_range!r}")
    if not sigma > 0:
        raise ValueError(f"sigma: expected a positive value, got {sigma!r}")
    k = _gauss(sigma, truncate, a.dtype)
    r = k.shape[0]
    if min(a.shape[-2:]) < r:
        raise ValueError(f"a: expected maps of at least {r} x {r} pixels for the SSIM window, "
                         f"got shape {tuple(a.shape)}")
    shape = np.broadcast_shapes(a.shape, b.shape)
    a = jnp.broadcast_to(a, shape).reshape(-1, *shape[-2:])
    b = jnp.broadcast_to(b, shape).reshape(-1, *shape[-2:])
    mu_a, mu_b = _filter_valid(a, k), _filter_valid(b, k)
    s_a = _filter_valid(a * a, k) - mu_a ** 2
    s_b = _filter_valid(b * b, k) - mu_b ** 2
    s_ab = _filter_valid(a * b, k) - mu_a * mu_b
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    s = ((2 * mu_a * mu_b + c1) * (2 * s_ab + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (s_a + s_b + c2))
    return s.mean(axis=(-2, -1)).reshape(shape[:-2])


def hog_descriptor(maps: jax.Array, *, cell: int = 8, bins: int = 9, eps: float = 1e-12) -> jax.Array:
    """A simple histogram-of-oriented-gradients descriptor of maps.

    * gradients by central differences, ``gy[i, j] = m[i+1, j] - m[i-1, j]``,
      ``gx[i, j] = m[i, j+1] - m[i, j-1]``, with edge-replicate padding;
    * magnitude ``sqrt(gx^2 + gy^2)``, unsigned orientation
      ``theta = atan2(gy, gx) mod pi`` in [0, pi);
    * each pixel adds its magnitude to bin ``min(floor(theta bins / pi), bins - 1)``
      of its cell (cells of ``cell x cell`` pixels, a remainder at the bottom /
      right that does not fill a cell is dropped);
    * the concatenated histograms are L2-normalised over the whole map,
      ``d / sqrt(||d||^2 + eps)`` (no block normalisation).

    Args:
      maps: float (..., H, W) with H, W >= cell.
      cell: cell size in pixels (static).
      bins: orientation bins over [0, pi) (static).

    Returns:
      float (..., H // cell, W // cell, bins).
    """
    maps = check_maps(maps, ranks=range(2, 8))
    cell = check_int(cell, "cell")
    bins = check_int(bins, "bins")
    h, w = maps.shape[-2:]
    if h < cell or w < cell:
        raise ValueError(f"maps: expected at least {cell} x {cell} pixels (one cell), "
                         f"got shape {tuple(maps.shape)}")
    lead = maps.shape[:-2]
    m = maps.reshape(-1, h, w)
    p = jnp.pad(m, ((0, 0), (1, 1), (1, 1)), mode="edge")
    gy = p[:, 2:, 1:-1] - p[:, :-2, 1:-1]
    gx = p[:, 1:-1, 2:] - p[:, 1:-1, :-2]
    mag = jnp.sqrt(gx * gx + gy * gy)
    theta = jnp.mod(jnp.arctan2(gy, gx), math.pi)
    idx = jnp.minimum(jnp.floor(theta * (bins / math.pi)).astype(jnp.int32), bins - 1)
    hc, wc = h // cell, w // cell
    onehot = jax.nn.one_hot(idx, bins, dtype=maps.dtype) * mag[..., None]
    onehot = onehot[:, :hc * cell, :wc * cell].reshape(-1, hc, cell, wc, cell, bins)
    d = onehot.sum(axis=(2, 4))
    norm = jnp.sqrt(jnp.sum(d * d, axis=(1, 2, 3), keepdims=True) + eps)
    return (d / norm).reshape(*lead, hc, wc, bins)


def hog_distance(a: jax.Array, b: jax.Array, *, cell: int = 8, bins: int = 9) -> jax.Array:
    """L2 distance between the :func:`hog_descriptor` of two maps, in [0, 2].

    Args:
      a, b: float (..., H, W), broadcastable.

    Returns:
      float (...): ``||hog(a) - hog(b)||_2``.
    """
    a, b = _pair(a, b)
    da = hog_descriptor(a, cell=cell, bins=bins)
    db = hog_descriptor(b, cell=cell, bins=bins)
    return jnp.sqrt(jnp.sum((da - db) ** 2, axis=(-3, -2, -1)))
