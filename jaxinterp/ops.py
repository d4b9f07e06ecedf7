"""Numerical helpers shared by several method packages: resizing and blurring images or maps.

Each idea lives here once (docs/design.md, Package layering: a shared numerical
helper lives once, in the lowest place that needs it):

* :func:`resize_bilinear` - bilinear resizing with half-pixel centres, the
  convention of ``torch.nn.functional.interpolate(mode='bilinear',
  align_corners=False)`` (no antialiasing), used to bring layer-resolution
  maps and low-resolution masks to image resolution;
* :func:`gaussian_kernel1d` and :func:`gaussian_blur` - separable Gaussian
  blur of images with replicate ("edge") or constant padding;
* :func:`total_variation` - the TV^beta smoothness penalty of masks and
  images, anisotropic (meaningful perturbations) or isotropic (pre-images);
* :func:`l2_normalise` and :func:`cosine_scores` - unit vectors and the
  cosines of features with a set of directions (SwAV's prototype scores,
  DINO's weight-normalised last layer).

The image functions act on the trailing spatial axes given; all are pure and
compose with ``jit``, ``vmap`` and ``grad``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["resize_bilinear", "gaussian_kernel1d", "gaussian_blur", "total_variation", "l2_normalise",
           "cosine_scores"]


def _interp_matrix(n_in: int, n_out: int, dtype, align_corners: bool = False) -> jax.Array:
    """(n_out, n_in) bilinear interpolation matrix, half-pixel centres (or corners aligned), edge clamped.

    Built in float64 NumPy from the static sizes (a constant of the compiled
    program), then cast to ``dtype``.
    """
    if align_corners:
        src = np.arange(n_out) * ((n_in - 1) / (n_out - 1) if n_out > 1 else 0.0)
    else:
        src = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
    src = np.clip(src, 0.0, n_in - 1)
    lo = np.floor(src).astype(np.int64)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = src - lo
    m = np.zeros((n_out, n_in))
    np.add.at(m, (np.arange(n_out), lo), 1.0 - frac)
    np.add.at(m, (np.arange(n_out), hi), frac)
    return jnp.asarray(m, dtype)


def resize_bilinear(a: jax.Array, hw: tuple[int, int], *, axes: tuple[int, int] = (-2, -1),
                    align_corners: bool = False) -> jax.Array:
    """Bilinear resize of the two spatial axes of ``a`` to ``hw``.

    Matches ``torch.nn.functional.interpolate(..., mode='bilinear',
    align_corners=False)`` (half-pixel centres, source coordinates clamped to the
    border, no antialiasing when shrinking), computed as two small matrix
    products so it is exact to float rounding and cheap on accelerators.

    Args:
      a: any array; ``axes`` name its (height, width) axes (default the last two,
        as in maps (..., H, W); use ``axes=(-3, -2)`` for images (..., H, W, C)).
      hw: output (height, width).
      align_corners: map the corner pixels' centres onto each other instead
        (``align_corners=True``, as ``torch.nn.UpsamplingBilinear2d``; Score-CAM's
        upsampling of activations).

    Returns:
      ``a`` with the spatial axes resized to ``hw``, same dtype.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxinterp import ops
      >>> ops.resize_bilinear(jnp.array([[0.0, 1.0], [2.0, 3.0]]), (4, 4))[0].tolist()
      [0.0, 0.25, 0.75, 1.0]
    """
    ay, ax = (ax % a.ndim for ax in axes)
    h, w = int(hw[0]), int(hw[1])
    if h < 1 or w < 1:
        raise ValueError(f"hw: expected positive (height, width), got {hw}")
    if a.shape[ay] == h and a.shape[ax] == w:
        return a
    my = _interp_matrix(a.shape[ay], h, a.dtype, align_corners)
    mx = _interp_matrix(a.shape[ax], w, a.dtype, align_corners)
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


def _blur_matrix(n: int, sigma: float, truncate: float, edge: bool) -> np.ndarray:
    """(n, n) matrix B of the 1-D blur along an axis of n pixels: y = B x, float64.

    B[i, j] sums the Gaussian taps k[t] (radius r = ceil(truncate sigma)) that
    pixel i reads from input pixel j = i + t - r; a tap past the border reads the
    edge pixel (``edge``) or nothing (constant padding, the fill added outside).
    """
    radius = max(1, int(math.ceil(truncate * sigma)))
    t = np.arange(-radius, radius + 1)
    k = np.exp(-0.5 * (t / sigma) ** 2)
    k /= k.sum()
    rows = np.repeat(np.arange(n), t.size)
    cols = (np.arange(n)[:, None] + t[None, :]).ravel()
    taps = np.tile(k, n)
    if edge:
        cols = np.clip(cols, 0, n - 1)
    else:
        inside = (cols >= 0) & (cols < n)
        rows, cols, taps = rows[inside], cols[inside], taps[inside]
    b = np.zeros((n, n))
    np.add.at(b, (rows, cols), taps)
    return b


def gaussian_blur(x: jax.Array, sigma: float, *, truncate: float = 4.0, fill=None) -> jax.Array:
    """Separable Gaussian blur of images x (..., H, W, C).

    Computed as two matrix products, y = B_H x B_W^T per channel, with the
    banded blur matrices (borders folded in) built once from the static sizes:
    on a CPU this is 10-100x faster than a depthwise convolution with the long
    kernels of large sigmas (161 taps at sigma 20), and it is exact to float
    rounding.  Its cost grows as H^2 W + H W^2, so it suits images up to about
    a thousand pixels a side.

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
    if not sigma > 0:
        raise ValueError(f"sigma: expected a positive standard deviation, got {sigma}")
    h, w, c = x.shape[-3:]
    edge = fill is None
    bh = jnp.asarray(_blur_matrix(h, sigma, truncate, edge), x.dtype)
    bw = jnp.asarray(_blur_matrix(w, sigma, truncate, edge), x.dtype)
    if not edge:
        fill = jnp.broadcast_to(jnp.asarray(fill, x.dtype), (c,))
        x = x - fill
    highest = jax.lax.Precision.HIGHEST
    y = jnp.einsum("ih,...hwc->...iwc", bh, x, precision=highest)
    y = jnp.einsum("jw,...iwc->...ijc", bw, y, precision=highest)
    return y if edge else y + fill


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


def l2_normalise(x: jax.Array, axis: int = -1, eps: float = 1e-12) -> jax.Array:
    """``x / max(||x||, eps)`` along ``axis`` (torch ``F.normalize``'s convention)."""
    norm = jnp.sqrt(jnp.sum(jnp.square(x), axis=axis, keepdims=True))
    return x / jnp.maximum(norm, eps)


def cosine_scores(z: jax.Array, directions: jax.Array) -> jax.Array:
    """Cosines <z / |z|, c_k / |c_k|> of features (..., D) with directions (K, D): (..., K) float32.

    SwAV's prototype scores (:func:`jaxinterp.objectives.prototype_scores`, which
    checks its arguments first) and the output of DINO's projection head, whose
    last layer is weight-normalised with its norm fixed to 1 after an L2-normalised
    bottleneck (:class:`jaxinterp.nets.DinoHead`).  The normalisation is part of the
    function, so gradients flow through it.

    Args:
      z: features (..., D), float.
      directions: (K, D), float (prototypes, or a linear layer's kernel transposed).

    Returns:
      (..., K) float32 cosines in [-1, 1].

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxinterp import ops
      >>> ops.cosine_scores(jnp.array([[3.0, 4.0]]), jnp.array([[1.0, 0.0], [0.0, -2.0]]))
      Array([[ 0.6, -0.8]], dtype=float32)
    """
    return l2_normalise(z.astype(jnp.float32)) @ l2_normalise(directions.astype(jnp.float32)).T
