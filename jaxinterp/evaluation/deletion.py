"""Deletion and insertion curves and their area under the curve (Petsiuk et al., BMVC 2018).

Pixels are visited in *map order*: decreasing map value, ties broken by the
smaller row-major index first (a stable sort of ``-map``).  With ``steps = S``
and ``P = H W`` pixels, after step k (k = 0 .. S) the first

    n_k = floor(k P / S)

pixels in map order are changed (all three colour channels of a pixel together):

* deletion:  ``x_k = where(first n_k, baseline, image)``  (x_0 = image, x_S = baseline);
* insertion: ``x_k = where(first n_k, image, baseline)``  (x_0 = baseline, x_S = image).

The curve is ``c_k = score_fn(x_k)`` and its area is the trapezoidal rule on
the unit interval, ``AUC = (sum_k c_k - (c_0 + c_S) / 2) / S`` (RISE's ``auc``).
A good map has a low deletion AUC and a high insertion AUC.

Baselines: ``'constant'`` (every pixel ``value``, 0 = black, RISE's deletion
default), ``'blur'`` (:func:`jaxinterp.ops.gaussian_blur` of the image with
``sigma``; RISE's insertion default is a blur) or an array of images.

The S + 1 steps are evaluated with ``jax.lax.map(..., batch_size=batch_size)``:
``batch_size`` steps at once, each on all N (x T) images, so memory is bounded
by ``batch_size * N * T`` images whatever S.

References:
  Petsiuk, Das, Saenko.  RISE: Randomized Input Sampling for Explanation of
  Black-box Models.  BMVC 2018.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp import ops
from jaxinterp.checks import check_choice, check_maps, check_int
from jaxinterp.nets import Net

__all__ = ["MODES", "map_order", "curve", "deletion_curve", "insertion_curve", "curve_auc",
           "net_score_fn", "pixels_changed"]

MODES = ("deletion", "insertion")


def map_order(maps: jax.Array) -> jax.Array:
    """Rank of every pixel in map order: 0 for the largest value; ties by row-major index.

    Args:
      maps: float (..., H, W).

    Returns:
      int32 (..., H, W): ``rank[p]`` = position of pixel p in the stable
      descending sort of the flattened map.
    """
    h, w = maps.shape[-2:]
    flat = maps.reshape(*maps.shape[:-2], h * w)
    order = jnp.argsort(-flat, axis=-1, stable=True)
    ranks = jnp.argsort(order, axis=-1, stable=True)
    return ranks.reshape(maps.shape).astype(jnp.int32)


def pixels_changed(num_pixels: int, steps: int) -> np.ndarray:
    """``n_k = floor(k P / S)`` for k = 0 .. S, int64 (S + 1,)."""
    return (np.arange(steps + 1, dtype=np.int64) * num_pixels) // steps


def net_score_fn(net: Net, params, target: jax.Array, *, probability: bool = True) -> Callable:
    """``score_fn(images (B, H, W, 3)) -> (B,)``: the class score of ``target`` of a zoo net.

    Args:
      net, params: the net.
      target: int (N,) or (N, T) classes; flattened row-major to B = N T, which is
        the order in which :func:`curve` passes the images of (N, T) maps.
      probability: softmax probability (RISE) if True, else the logit.
    """
    t = jnp.asarray(target).reshape(-1).astype(jnp.int32)

    def score_fn(images):
        y = net.apply(params, images)
        if probability:
            y = jax.nn.softmax(y, axis=-1)
        return jnp.take_along_axis(y, t[:, None], axis=-1)[:, 0]

    return score_fn


def _baseline(images, baseline, value, sigma):
    if isinstance(baseline, str):
        check_choice(baseline, "baseline", ("constant", "blur"))
        if baseline == "constant":
            return jnp.full_like(images, value)
        if not sigma > 0:
            raise ValueError(f"sigma: expected a positive blur standard deviation, got {sigma!r}")
        return ops.gaussian_blur(images, sigma)
    b = jnp.asarray(baseline)
    if b.shape != images.shape and b.shape != images.shape[1:]:
        raise ValueError(f"baseline: expected 'constant', 'blur' or images of shape "
                         f"{tuple(images.shape)} or {tuple(images.shape[1:])}, got shape {tuple(b.shape)}")
    return jnp.broadcast_to(b.astype(images.dtype), images.shape)


def curve(score_fn, images: jax.Array, maps: jax.Array, *, mode: str = "deletion", steps: int = 64,
          baseline="default", value: float = 0.0, sigma: float = 5.0, batch_size: int | None = 1,
          params=None, target=None, probability: bool = True) -> jax.Array:
    """Deletion or insertion curves of maps (see the module docstring for the formulas).

    Args:
      score_fn: ``score_fn(images (B, H, W, 3)) -> (B,)`` pure and traceable, or a
        :class:`jaxinterp.nets.Net` together with ``params`` and ``target`` (then the
        softmax probability of ``target``, or the logit if ``probability=False``).
      images: float (N, H, W, 3).
      maps: float (N, h, w) or (N, T, h, w); resized to (H, W) with
        :func:`jaxinterp.ops.resize_bilinear` when (h, w) != (H, W).  With T
        targets, ``score_fn`` sees B = N T images, image n target t at row n T + t.
      mode: ``'deletion'`` or ``'insertion'`` (static).
      steps: S >= 1, the number of steps (static); the curve has S + 1 points.
      baseline: ``'constant'``, ``'blur'``, or images (N, H, W, 3) / (H, W, 3);
        ``'default'`` is ``'constant'`` for deletion and ``'blur'`` for insertion (RISE).
      value: the constant baseline's pixel value.
      sigma: the blur's standard deviation in pixels.
      batch_size: steps evaluated together in ``jax.lax.map`` (static); None = all at once.

    Returns:
      float32 (N, S + 1) or (N, T, S + 1).

    Raises:
      ValueError: images not (N, H, W, 3) float; maps of another N; steps or batch_size
        not positive; bad baseline; a Net without params / target.
    """
    mode = check_choice(mode, "mode", MODES)
    steps = check_int(steps, "steps")
    if batch_size is not None:
        batch_size = min(check_int(batch_size, "batch_size"), steps + 1)
    if not hasattr(images, "shape") or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images: expected (N, H, W, 3), got shape {tuple(np.shape(images))}")
    if not jnp.issubdtype(images.dtype, jnp.floating):
        raise ValueError(f"images: expected a floating dtype, got {images.dtype}")
    maps = check_maps(maps)
    if maps.shape[0] != images.shape[0]:
        raise ValueError(f"maps: expected {images.shape[0]} maps like images, got shape {tuple(maps.shape)}")
    if isinstance(score_fn, Net):
        if params is None or target is None:
            raise ValueError("params: a Net as score_fn needs params= and target=")
        if int(np.prod(np.shape(target))) != int(np.prod(maps.shape[:-2])) or np.ndim(target) < 1 \
                or np.shape(target)[0] != maps.shape[0]:
            raise ValueError(f"target: expected shape {tuple(maps.shape[:-2])} like the maps, "
                             f"got {tuple(np.shape(target))}")
        score_fn = net_score_fn(score_fn, params, target, probability=probability)
    elif not callable(score_fn):
        raise ValueError(f"score_fn: expected a callable or a Net, got {type(score_fn).__name__}")
    if isinstance(baseline, str) and baseline == "default":
        baseline = "constant" if mode == "deletion" else "blur"

    images = jnp.asarray(images)
    n, h, w, _ = images.shape
    squeeze = maps.ndim == 3
    if squeeze:
        maps = maps[:, None]
    t = maps.shape[1]
    maps = ops.resize_bilinear(maps, (h, w))
    base = _baseline(images, baseline, value, sigma)
    ranks = map_order(maps)                                             # (N, T, H, W)
    counts = jnp.asarray(pixels_changed(h * w, steps), jnp.int32)       # (S + 1,)

    def one_step(nk):
        changed = (ranks < nk)[..., None]                               # (N, T, H, W, 1)
        x, b = images[:, None], base[:, None]
        xk = jnp.where(changed, b, x) if mode == "deletion" else jnp.where(changed, x, b)
        return score_fn(xk.reshape(n * t, h, w, 3)).reshape(n, t)

    c = jax.lax.map(one_step, counts, batch_size=batch_size)           # (S + 1, N, T)
    c = jnp.moveaxis(c, 0, -1).astype(jnp.float32)
    return c[:, 0] if squeeze else c


def deletion_curve(score_fn, images, maps, **kwargs) -> jax.Array:
    """:func:`curve` with ``mode='deletion'``."""
    return curve(score_fn, images, maps, mode="deletion", **kwargs)


def insertion_curve(score_fn, images, maps, **kwargs) -> jax.Array:
    """:func:`curve` with ``mode='insertion'``."""
    return curve(score_fn, images, maps, mode="insertion", **kwargs)


def curve_auc(curves: jax.Array) -> jax.Array:
    """Trapezoidal area of curves (..., S + 1) on [0, 1]: ``(sum c - (c_0 + c_S) / 2) / S``.

    Args:
      curves: float (..., S + 1), S >= 1.

    Returns:
      float (...).
    """
    if not hasattr(curves, "shape"):
        curves = np.asarray(curves)
    if curves.ndim < 1 or curves.shape[-1] < 2:
        raise ValueError(f"curves: expected (..., S + 1) with S >= 1, got shape {tuple(curves.shape)}")
    c = jnp.asarray(curves)
    s = c.shape[-1] - 1
    return (jnp.sum(c, axis=-1) - 0.5 * (c[..., 0] + c[..., -1])) / s
