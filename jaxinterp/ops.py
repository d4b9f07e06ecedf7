"""Numerical helpers shared by several method packages: resizing and blurring images or maps.

Each idea lives here once (ARCHITECTURE.md, "one place for each idea"):

* :func:`resize_bilinear` - bilinear resizing with half-pixel centres, the
  convention of ``torch.nn.functional.interpolate(mode='bilinear',
  align_corners=False)`` (no antialiasing), used to bring layer-resolution
  maps and low-resolution masks to image resolution;
* :func:`gaussian_kernel1d` and :func:`gaussian_blur` - separable Gaussian
  blur of images with replicate ("edge") or constant padding;
* :func:`total_variation` - the TV^beta smoothness penalty of masks and
  images, anisotropic (meaningful perturbations) or isotropic (pre-images).

All functions act on the trailing spatial axes given, are pure, and compose with
``jit``, ``vmap`` and ``grad``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["resize_bilinear", "gaussian_kernel1d", "gaussian_blur", "total_variation"]


def _interp_matrix(n_in: int, n_out: int, dtype) -> jax.Array:
    """(n_out, n_in) bilinear interpolation matrix, half-pixel centres, edge clamped.

    Built in float64 NumPy from the static sizes (a constant of the compiled
    program), then cast to ``dtype``.
    """
    src = np.clip((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0.0, n_in - 1)
    lo = np.floor(src).astype(np.int64)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = src - lo
    m = np.zeros((n_out, n_in))
    np.add.at(m, (np.arange(n_out), lo), 1.0 - frac)
    np.add.at(m, (np.arange(n_out), hi), frac)
    return jnp.asarray(m, dtype)


def resize_bilinear(a: jax.Array, hw: tuple[int, int], *, axes: tuple[int, int] = (-2, -1)) -> jax.Array:
    """Bilinear resize of the two spatial axes of ``a`` to ``hw``.

    Matches ``torch.nn.functional.interpolate(..., mode='bilinear',
    align_corners=False)`` (half-pixel centres, source coordinates clamped to the
    border, no antialiasing when shrinking), computed as two small matrix
    products so it is exact to float rounding and cheap on accelerators.

    Args:
      a: any array; ``axes`` name its (height, width) axes (default the last two,
        as in maps (..., H, W); use ``axes=(-3, -2)`` for images (..., H, W, C)).
      hw: output (height, width).

    Returns:
      ``a`` with the spatial axes resized to ``hw``, same dtype.
    """
    ay, ax = (ax % a.ndim for ax in axes)
    h, w = int(hw[0]), int(hw[1])
    if h < 1 or w < 1:
        raise ValueError(f"hw: expected positive (height, width), got {hw}")
    if a.shape[ay] == h and a.shape[ax] == w:
        return a
    my = _interp_matrix(a.shape[ay], h, a.dtype)
    mx = _interp_matrix(a.shape[ax], w, a.dtype)
    a = jnp.moveaxis(jnp.tensordot(my, a, axes=([1], [ay])), 0, ay)
    return jnp.moveaxis(jnp.tensordot(mx, a, axes=([1], [ax])), 0, ax)


def gaussian_kernel1d(sigma: float, *, truncate: float = 4.0) -> jax.Array:
    """Normalised 1-D Gaussian kernel of standard deviation ``sigma`` (pixels), radius ceil(truncate sigma)."""
    if not sigma > 0:
        raise ValueError(f"sigma: expected a positive standard deviation, got {sigma}")
    radius = max(1, int(math.ceil(truncate * sigma)))
    t = jnp.arange(-radius, radius + 1, dtype=jnp.float32)
    k = jnp.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


def gaussian_blur(x: jax.Array, sigma: float, *, truncate: float = 4.0, fill=None) -> jax.Array:
    """Separable Gaussian blur of images x (..., H, W, C).

    Args:
      x: images (..., H, W, C).
      sigma: standard deviation in pixels (static, > 0).
      truncate: kernel radius in units of sigma (radius ceil(truncate sigma)).
      fill: border handling.  None (default): replicate the edge pixels
        (scipy ``mode='nearest'``).  A number or a colour (C,): pad with that
        constant (``fill=0`` is zero padding; the net's normalisation mean is
        zero padding of the normalised image, TorchRay's convention).

    Returns:
      The blurred images, same shape and dtype.
    """
    k = gaussian_kernel1d(sigma, truncate=truncate).astype(x.dtype)
    r = (k.shape[0] - 1) // 2
    lead, (h, w, c) = x.shape[:-3], x.shape[-3:]
    y = x.reshape(-1, h, w, c)
    pad = ((0, 0), (r, r), (r, r), (0, 0))
    if fill is None:
        y = jnp.pad(y, pad, mode="edge")
    else:
        fill = jnp.broadcast_to(jnp.asarray(fill, x.dtype), (c,))
        y = jnp.pad(y - fill, pad)
    dn = ("NHWC", "HWIO", "NHWC")
    for kernel in (k.reshape(-1, 1, 1, 1), k.reshape(1, -1, 1, 1)):
        y = jax.lax.conv_general_dilated(y, jnp.tile(kernel, (1, 1, 1, c)), (1, 1), "VALID",
                                         dimension_numbers=dn, feature_group_count=c,
                                         precision=jax.lax.Precision.HIGHEST)
    if fill is not None:
        y = y + fill
    return y.reshape(*lead, h, w, c)


def total_variation(a: jax.Array, beta: float = 2.0, *, isotropic: bool = True,
                    channels: bool = True) -> jax.Array:
    """TV^beta of images or masks with forward differences, summed over positions.

    * isotropic (Mahendran and Vedaldi's image prior):
      ``sum_u (||a[u + e_y] - a[u]||^2 + ||a[u + e_x] - a[u]||^2) ** (beta / 2)``,
      the norms over the colour channels, the difference past the last row or
      column taken as zero (replicate padding);
    * anisotropic (Fong and Vedaldi's mask prior):
      ``sum |a[u + e_y] - a[u]|^beta + sum |a[u + e_x] - a[u]|^beta`` over the
      neighbour pairs inside the array.

    Args:
      a: images (..., H, W, C) if ``channels`` else masks (..., H, W).
      beta: the exponent (> 0).
      isotropic: see above.
      channels: whether the last axis holds channels.

    Returns:
      (...) the total variation.
    """
    x = a if channels else a[..., None]
    dy = jnp.concatenate([x[..., 1:, :, :] - x[..., :-1, :, :], jnp.zeros_like(x[..., :1, :, :])], axis=-3)
    dx = jnp.concatenate([x[..., :, 1:, :] - x[..., :, :-1, :], jnp.zeros_like(x[..., :, :1, :])], axis=-2)
    if isotropic:
        sq = jnp.sum(dy * dy + dx * dx, axis=-1)
        # (sq + 0) ** (beta / 2) has an infinite gradient at 0 for beta < 2: guard it.
        safe = jnp.where(sq > 0, sq, 1.0)
        return jnp.sum(jnp.where(sq > 0, safe ** (beta / 2), 0.0), axis=(-2, -1))
    return jnp.sum(jnp.abs(dy) ** beta + jnp.abs(dx) ** beta, axis=(-3, -2, -1))
