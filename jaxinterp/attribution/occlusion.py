"""Occlusion (Zeiler and Fergus 2014): the score drop when a sliding window is greyed out."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp.checks import check_baseline, check_images, check_int
from jaxinterp.targets import check_targets, chunked_map, lift_images, target_scores
from jaxinterp.nets import Net

__all__ = ["occlusion"]


def _pair(value, arg: str) -> tuple[int, int]:
    """An int or a pair of ints as a (height, width) pair of positive ints; ValueError naming ``arg``."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{arg}: expected an int or a pair (height, width), got {value!r}")
        return check_int(value[0], arg), check_int(value[1], arg)
    v = check_int(value, arg)
    return v, v


def _windows(size: int, window: int, stride: int) -> np.ndarray:
    """(n, size) 0/1 matrix: row a marks the pixels [a stride, a stride + window) (cut at the border)."""
    n = math.ceil((size - window) / stride) + 1
    start = np.arange(n)[:, None] * stride
    pixels = np.arange(size)[None, :]
    return ((pixels >= start) & (pixels < start + window)).astype(np.float64)


def occlusion(net: Net, params, x: jax.Array, target, *, window, stride, baseline=0.0,
              chunk_size: int | None = 256) -> jax.Array:
    """Occlusion maps: how much the score drops when a window around each pixel is replaced.

    A window of ``window`` = (wh, ww) pixels slides over the image with step
    ``stride`` = (sh, sw), starting at the top-left corner, until every pixel is
    covered: ceil((H - wh) / sh) + 1 positions vertically (likewise
    horizontally), the last ones cut at the border if they overhang.  For each
    window position w the pixels inside it (all 3 channels) are replaced with the
    baseline, giving x_w, and::

        map_t(i, j) = mean over the windows w covering (i, j) of [s_t(x) - s_t(x_w)]

    with s_t the class logit (or the unit's value).  These are the conventions
    of Captum's ``Occlusion`` (an image (3, H, W) with ``sliding_window_shapes=
    (3, wh, ww)``, ``strides=(3, sh, sw)``, ``baselines=baseline``): its
    per-channel attributions are equal across channels and equal this map.

    Windows are scored ``chunk_size`` at a time: the occluded images of a
    chunk go through the net in one batched forward pass that gives the scores
    of all T targets, so memory is that of one chunk and the result does not
    depend on ``chunk_size`` (beyond float rounding in batched convolutions).

    Pure and jit-compatible with ``net``, ``window``, ``stride`` and
    ``chunk_size`` static::

        jax.jit(occlusion, static_argnames=("net", "window", "stride", "chunk_size"))

    Args:
      net: the net (static).
      params: its params.
      x: images (N, H, W, 3), float RGB in [0, 1].
      target: int class indices (N,) or (N, T), or a :class:`Unit` (N,) / (N, T).
      window: occluding window, int or (wh, ww), at most (H, W) (no default,
        as in Captum; Zeiler and Fergus used grey squares).
      stride: step between windows, int or (sh, sw), at most the window along
        any dimension the window does not fill (otherwise some pixels would
        never be occluded; Captum's rule).
      baseline: replacement value in pixel space: a grey level (default 0.0,
        black; 0.5 for grey), a colour (3,), or images (H, W, 3) / (N, H, W, 3).
      chunk_size: number of windows per forward pass (default 256; None: all
        windows of an image at once).

    Returns:
      maps: (N, T, H, W) in the dtype of x; T = 1 for (N,) targets.

    Raises:
      ValueError: bad ``x`` or ``target``; ``window`` not positive or larger
        than the image; ``stride`` not positive or larger than ``window``;
        ``baseline`` of the wrong shape or outside [0, 1]; ``chunk_size`` < 1.

    References:
      Zeiler and Fergus, "Visualizing and understanding convolutional
      networks", ECCV 2014.
    """
    x = check_images(x)
    n, h, w = x.shape[:3]
    (wh, ww), (sh, sw) = _pair(window, "window"), _pair(stride, "stride")
    if wh > h or ww > w:
        raise ValueError(f"window: ({wh}, {ww}) is larger than the images ({h}, {w})")
    if (sh > wh and wh < h) or (sw > ww and ww < w):
        raise ValueError(f"stride: ({sh}, {sw}) is larger than the window ({wh}, {ww}); "
                         f"some pixels would never be occluded")
    if chunk_size is not None:
        check_int(chunk_size, "chunk_size")
    targets = check_targets(target, net, n, (h, w))
    base = check_baseline(baseline, x)

    rows, cols = _windows(h, wh, sh), _windows(w, ww, sw)
    count = jnp.asarray(np.outer(rows.sum(0), cols.sum(0)), x.dtype)
    rows, cols = jnp.asarray(rows, x.dtype), jnp.asarray(cols, x.dtype)
    nx = cols.shape[0]

    def one(xb, ts):
        x1, b1 = xb
        s0 = target_scores(net, params, x1[None], ts)[0]

        def occluded_scores(k):
            inside = rows[k // nx][:, None, None] * cols[k % nx][None, :, None] > 0
            return target_scores(net, params, jnp.where(inside, b1, x1)[None], ts)[0]

        scores = chunked_map(occluded_scores, jnp.arange(rows.shape[0] * nx), chunk_size)
        drop = (s0 - scores).reshape(rows.shape[0], nx, -1)
        total = jnp.einsum("abt,ai,bj->tij", drop, rows, cols, precision=jax.lax.Precision.HIGHEST)
        return total / count

    return lift_images(one)((x, base), targets)
