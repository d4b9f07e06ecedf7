"""Random image transforms for robust feature visualisation, one image at a time.

A transform is a pure function ``t(key, x) -> x'`` of one image x (H, W, C);
the renderers call it with a different key for every step and every batch
element (``jax.random.fold_in``), so each image of a batch sees its own
transform.  Output shapes depend only on the input shape (static), so the
transforms vmap and jit.

:data:`STANDARD` is Lucid's / lucent's standard set: pad 12 with grey 0.5,
jitter 8, scale in {0.90, 0.92, ..., 1.10}, rotate by an angle drawn from
{-10, ..., 10} plus five extra zeros (degrees), jitter 4.  The translations and
rotations are lucent's (kornia's ``translate`` and ``get_rotation_matrix2d`` +
``warp_affine``: bilinear, zero fill, centre ((W-1)/2, (H-1)/2)) with one
correction: lucent 0.1.8 calls kornia 0.4.1 with ``align_corners=False``, which
normalises pixel coordinates with one convention and samples with the other,
so every warp is stretched by W / (W - 1) and integer jitters become blurring
sub-pixel shifts.  Here a shift by d pixels is exactly d pixels; the parity
tests check the warps against kornia with ``align_corners=True`` (<= 1e-5).
Two differences: lucent's ``random_scale`` resizes the image to
``ceil(s H) x ceil(s W)`` (padding it back when it shrinks), so the image size
changes from step to step; here the image is scaled about its centre inside a
fixed frame (:func:`affine`), which keeps shapes static under ``vmap`` at the
cost of cropping the outer ``(s - 1) H / 2`` pixels when s > 1 (they are the
grey padding at the default settings); and lucent upsamples renders smaller
than 224 px to 224 before the net (for torchvision models), which here is an
explicit :func:`resize` transform, off by default (any size the net accepts
works).

:func:`roll_jitter` is the random circular shift of DeepDream and of
Mahendran and Vedaldi's pre-images.

References:
  Olah, Mordvintsev and Schubert, "Feature visualization", Distill 2017.
  Mahendran and Vedaldi, "Visualizing deep convolutional neural networks
  using natural pre-images", IJCV 2016.
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp import ops
from jaxinterp.checks import check_int, check_size

__all__ = ["Transform", "pad", "jitter", "roll_jitter", "random_scale", "random_rotate", "resize",
           "affine", "compose", "STANDARD", "LUCID_SCALES", "LUCID_ANGLES", "standard_transforms"]

Transform = Callable[[jax.Array, jax.Array], jax.Array]

LUCID_SCALES = tuple(1 + (i - 5) / 50.0 for i in range(11))
"""0.90, 0.92, ..., 1.10 (lucent ``standard_transforms``)."""
LUCID_ANGLES = tuple(range(-10, 11)) + 5 * (0,)
"""-10..10 degrees and five extra zeros (lucent ``standard_transforms``)."""


def _choices(values, arg: str) -> np.ndarray:
    a = np.asarray(values, np.float32).reshape(-1)
    if a.size == 0 or not np.all(np.isfinite(a)):
        raise ValueError(f"{arg}: expected a non-empty sequence of finite numbers, got {values!r}")
    return a


def pad(width: int = 12, value: float = 0.5) -> Transform:
    """Pad every side by ``width`` pixels of constant ``value`` (lucent ``pad(12, 'constant', 0.5)``)."""
    width = check_int(width, "width", minimum=0)

    def t(key, x):
        return jnp.pad(x, ((width, width), (width, width), (0, 0)), constant_values=value)

    return t


def _shift(x: jax.Array, dy: jax.Array, dx: jax.Array, fill: float) -> jax.Array:
    """out[i, j] = x[i - dy, j - dx], ``fill`` outside (integer dy, dx, traced)."""
    h, w = x.shape[:2]
    ii = jnp.arange(h)[:, None] - dy
    jj = jnp.arange(w)[None, :] - dx
    inside = (ii >= 0) & (ii < h) & (jj >= 0) & (jj < w)
    out = x[jnp.clip(ii, 0, h - 1), jnp.clip(jj, 0, w - 1)]
    return jnp.where(inside[..., None], out, jnp.asarray(fill, x.dtype))


def jitter(d: int = 8, fill: float = 0.0) -> Transform:
    """Translate by (dy, dx), each uniform in {0, ..., d-1}, filling with ``fill`` (lucent ``jitter(d)``)."""
    check_int(d, "d", minimum=2)                                     # lucent's jitter needs d > 1

    def t(key, x):
        dy, dx = jax.random.randint(key, (2,), 0, d)
        return _shift(x, dy, dx, fill)

    return t


def roll_jitter(j: int) -> Transform:
    """Circular shift by (dy, dx), each uniform in {-j, ..., j} (DeepDream; Mahendran and Vedaldi).

    ``j = 0`` is the identity.
    """
    j = check_int(j, "j", minimum=0)

    def t(key, x):
        if j == 0:
            return x
        dy, dx = jax.random.randint(key, (2,), -j, j + 1)
        return jnp.roll(x, (dy, dx), axis=(0, 1))

    return t


def _bilinear_zero(x: jax.Array, sy: jax.Array, sx: jax.Array) -> jax.Array:
    """Sample x (H, W, C) at real coordinates (sy, sx) (any shape), bilinear, zero outside."""
    h, w = x.shape[:2]
    y0, x0 = jnp.floor(sy), jnp.floor(sx)
    out = 0.0
    for oy in (0, 1):
        for ox in (0, 1):
            yi, xi = y0 + oy, x0 + ox
            wgt = (1 - jnp.abs(sy - yi)) * (1 - jnp.abs(sx - xi))
            ok = (yi >= 0) & (yi <= h - 1) & (xi >= 0) & (xi <= w - 1)
            v = x[jnp.clip(yi, 0, h - 1).astype(jnp.int32), jnp.clip(xi, 0, w - 1).astype(jnp.int32)]
            out = out + jnp.where(ok, wgt, 0.0)[..., None].astype(x.dtype) * v
    return out


def affine(x: jax.Array, angle: jax.Array, scale: jax.Array) -> jax.Array:
    """Rotate by ``angle`` degrees (counter-clockwise on screen) and scale by ``scale`` about the centre.

    The map of OpenCV's / kornia's ``get_rotation_matrix2d`` followed by
    ``warp_affine`` (bilinear, zero fill): the output pixel p samples the input
    at ``c + R(-angle) (p - c) / scale`` with c = ((W-1)/2, (H-1)/2) in (x, y).

    Args:
      x: one image (H, W, C).
      angle, scale: scalars (may be traced).
    """
    h, w = x.shape[:2]
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    a = jnp.deg2rad(jnp.asarray(angle, jnp.float32))
    cos, sin = jnp.cos(a), jnp.sin(a)
    py, px = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32) - cy, jnp.arange(w, dtype=jnp.float32) - cx,
                          indexing="ij")
    s = jnp.asarray(scale, jnp.float32)
    # forward (OpenCV): u' = s (cos u + sin v), v' = s (-sin u + cos v), (u, v) = (x, y) - c
    sx = (cos * px - sin * py) / s + cx
    sy = (sin * px + cos * py) / s + cy
    return _bilinear_zero(x, sy, sx)


def random_scale(scales: Sequence[float] = LUCID_SCALES) -> Transform:
    """Scale about the centre by a factor drawn uniformly from ``scales`` (fixed frame: see module doc)."""
    s = _choices(scales, "scales")
    if np.any(s <= 0):
        raise ValueError(f"scales: expected positive factors, got {scales!r}")

    def t(key, x):
        return affine(x, 0.0, jax.random.choice(key, jnp.asarray(s)))

    return t


def random_rotate(angles: Sequence[float] = LUCID_ANGLES) -> Transform:
    """Rotate about the centre by an angle (degrees) drawn uniformly from ``angles`` (lucent)."""
    a = _choices(angles, "angles")

    def t(key, x):
        return affine(x, jax.random.choice(key, jnp.asarray(a)), 1.0)

    return t


def resize(size) -> Transform:
    """Bilinear resize to ``size`` (int or (H, W)); half-pixel centres (``ops.resize_bilinear``)."""
    hw = check_size(size, "size")

    def t(key, x):
        return ops.resize_bilinear(x, hw, axes=(0, 1))

    return t


def compose(*transforms: Transform) -> Transform:
    """Apply ``transforms`` in order, each with its own key split from the one given."""
    for i, t in enumerate(transforms):
        if not callable(t):
            raise ValueError(f"transforms[{i}]: expected a callable t(key, x), got {type(t).__name__}")

    def t(key, x):
        for k, f in zip(jax.random.split(key, max(len(transforms), 1)), transforms):
            x = f(k, x)
        return x

    return t


def standard_transforms() -> tuple[Transform, ...]:
    """Lucid's standard set: pad(12, 0.5), jitter(8), random_scale, random_rotate, jitter(4)."""
    return (pad(12, 0.5), jitter(8), random_scale(), random_rotate(), jitter(4))


STANDARD = standard_transforms()
"""Lucid's / lucent's standard transforms (see :func:`standard_transforms`)."""
