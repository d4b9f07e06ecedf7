"""The pointing game (Zhang et al., ECCV 2016; the TorchRay benchmark protocol).

A map *points* at its maximum.  For an (image, class) pair the point is a hit
when some ground-truth pixel of the class lies within Euclidean distance
``tolerance`` (15 px by default) of it:

    p* = argmax_p map(p)        (the first maximum in row-major order)
    hit = exists q with mask(q) and ||q - p*||_2 <= tolerance

Conventions (documented choices):

* The map is brought to the mask's resolution with
  :func:`jaxinterp.ops.resize_bilinear` (``torch ... interpolate(mode='bilinear',
  align_corners=False)``, as TorchRay resizes the saliency map to the image)
  *before* the argmax; pixel (i, j) sits at integer coordinates (i, j).
* Ties: ``jnp.argmax`` of the row-major flattened map, i.e. the first maximum
  in row-major order (smallest row, then smallest column).  Maps holding NaN
  or Inf are rejected (ValueError) when their values are known (outside jit).
* An empty mask is a miss (there is nothing to point at).
* Accuracy is computed per class, ``hits_c / count_c`` over the valid pairs of
  class c, then averaged over the classes (TorchRay's mean per-class accuracy).
  The *difficult* subset is given by the caller as a boolean flag per pair
  (the lists of the excitation-backprop paper are data, not code).
* The *centre* baseline points at pixel (H // 2, W // 2) of every image (the
  TorchRay "center" method: a map that is 1 there and 0 elsewhere).

References:
  Zhang, Bargal, Lin, Brandt, Shen, Sclaroff.  Top-down Neural Attention by
  Excitation Backprop.  ECCV 2016.
  Fong, Patrick, Vedaldi.  Understanding Deep Networks via Extremal
  Perturbations and Smooth Masks.  ICCV 2019 (TorchRay benchmark).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp import ops
from jaxinterp.checks import check_maps, check_nonneg, check_int, is_concrete

__all__ = ["argmax_point", "pointing_hits", "pointing_accuracy", "pointing_game",
           "centre_maps", "centre_hits", "DEFAULT_TOLERANCE"]

DEFAULT_TOLERANCE = 15.0


def _check_masks(masks, maps_shape, arg="masks"):
    if not hasattr(masks, "shape"):
        masks = np.asarray(masks)
    if masks.ndim != len(maps_shape):
        raise ValueError(f"{arg}: expected rank {len(maps_shape)} like maps "
                         f"{tuple(maps_shape)}, got shape {tuple(masks.shape)}")
    if tuple(masks.shape[:-2]) != tuple(maps_shape[:-2]):
        raise ValueError(f"{arg}: expected leading dimensions {tuple(maps_shape[:-2])} like maps, "
                         f"got shape {tuple(masks.shape)}")
    if 0 in masks.shape[-2:]:
        raise ValueError(f"{arg}: expected a non-empty image size, got shape {tuple(masks.shape)}")
    return jnp.asarray(masks).astype(bool)


def argmax_point(maps: jax.Array, hw: tuple[int, int] | None = None) -> jax.Array:
    """The (row, column) of the maximum of each map, after resizing it to ``hw``.

    Args:
      maps: float (..., h, w).
      hw: (H, W) to resize to first (bilinear, align_corners=False); None keeps (h, w).

    Returns:
      int32 (..., 2): the first maximum in row-major order of the (resized) map.
    """
    maps = check_maps(maps, ranks=range(2, 8))
    if hw is not None:
        maps = ops.resize_bilinear(maps, tuple(hw))
    h, w = maps.shape[-2:]
    flat = jnp.argmax(maps.reshape(*maps.shape[:-2], h * w), axis=-1).astype(jnp.int32)
    return jnp.stack([flat // w, flat % w], axis=-1)


def _hits_at(points, masks, tolerance):
    h, w = masks.shape[-2:]
    ii = jnp.arange(h, dtype=jnp.float32)[:, None]
    jj = jnp.arange(w, dtype=jnp.float32)[None, :]
    py = points[..., 0, None, None].astype(jnp.float32)
    px = points[..., 1, None, None].astype(jnp.float32)
    d2 = (ii - py) ** 2 + (jj - px) ** 2
    tol = jnp.asarray(tolerance, jnp.float32)
    return jnp.any(masks & (d2 <= tol * tol), axis=(-2, -1))


def pointing_hits(maps: jax.Array, masks: jax.Array, *, tolerance: float = DEFAULT_TOLERANCE) -> jax.Array:
    """Hit or miss of each map in the pointing game.

    Args:
      maps: float (N, h, w) or (N, T, h, w), one map per image (and target).
      masks: bool (N, H, W) or (N, T, H, W), the ground truth of the class each
        map explains, at image resolution.  Maps at another resolution are
        resized to (H, W) bilinearly before the argmax.
      tolerance: radius in pixels (>= 0) of the disc around the maximum.

    Returns:
      bool (N,) or (N, T): ``any(mask(q) and ||q - argmax map||_2 <= tolerance)``.

    Raises:
      ValueError: maps not (N, [T], h, w) float; masks of another rank or leading
        shape; tolerance < 0.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxinterp import evaluation
      >>> maps = jnp.zeros((2, 8, 8)).at[0, 2, 3].set(1.0).at[1, 7, 7].set(1.0)
      >>> masks = jnp.zeros((2, 8, 8), bool).at[:, 1:4, 2:5].set(True)
      >>> evaluation.pointing_hits(maps, masks, tolerance=0).tolist()
      [True, False]
    """
    maps = check_maps(maps)
    masks = _check_masks(masks, maps.shape)
    check_nonneg(tolerance, "tolerance")
    points = argmax_point(maps, masks.shape[-2:])
    return _hits_at(points, masks, tolerance)


def centre_maps(shape: tuple[int, ...]) -> jax.Array:
    """Maps of the centre baseline: 1 at (H // 2, W // 2), 0 elsewhere, float32 ``shape`` (..., H, W)."""
    shape = tuple(int(s) for s in shape)
    if len(shape) < 2 or min(shape) < 1:
        raise ValueError(f"shape: expected a positive shape (..., H, W), got {shape}")
    h, w = shape[-2:]
    one = jnp.zeros((h, w), jnp.float32).at[h // 2, w // 2].set(1.0)
    return jnp.broadcast_to(one, shape)


def centre_hits(masks: jax.Array, *, tolerance: float = DEFAULT_TOLERANCE) -> jax.Array:
    """Pointing-game hits of the centre baseline (the point (H // 2, W // 2)).

    Args:
      masks: bool (N, H, W) or (N, T, H, W).
      tolerance: radius in pixels (>= 0).

    Returns:
      bool (N,) or (N, T).
    """
    if not hasattr(masks, "shape"):
        masks = np.asarray(masks)
    if masks.ndim not in (3, 4) or 0 in masks.shape:
        raise ValueError(f"masks: expected (N, H, W) or (N, T, H, W), got shape {tuple(masks.shape)}")
    check_nonneg(tolerance, "tolerance")
    masks = jnp.asarray(masks).astype(bool)
    h, w = masks.shape[-2:]
    points = jnp.broadcast_to(jnp.array([h // 2, w // 2], jnp.int32), (*masks.shape[:-2], 2))
    return _hits_at(points, masks, tolerance)


def pointing_accuracy(hits: jax.Array, classes: jax.Array, num_classes: int, *,
                      valid: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """Mean per-class accuracy of pointing-game hits.

    ``acc_c = sum_i [class_i = c] valid_i hit_i / sum_i [class_i = c] valid_i`` and the
    result is the mean of ``acc_c`` over the classes that have at least one valid pair.

    Args:
      hits: bool (N,) or (N, T).
      classes: int, same shape, the class of each pair (in [0, num_classes)).
      num_classes: the number of classes C (static).
      valid: optional bool, same shape: pairs to count (padding of images with
        fewer than T classes, or a subset such as 'difficult').  Default all.

    Returns:
      (mean accuracy (), per-class accuracy (C,)); a class without valid pairs
      has accuracy NaN and is left out of the mean.

    Raises:
      ValueError: shape mismatch; classes out of range; with concrete inputs, a
        class in [0, C) with no valid pair at all ("empty class") - pass
        ``valid`` / restrict ``num_classes`` or use it under ``jit`` to get NaN.
    """
    num_classes = check_int(num_classes, "num_classes")
    if not hasattr(hits, "shape"):
        hits = np.asarray(hits)
    if not hasattr(classes, "shape"):
        classes = np.asarray(classes)
    if hits.ndim not in (1, 2):
        raise ValueError(f"hits: expected (N,) or (N, T), got shape {tuple(hits.shape)}")
    if tuple(classes.shape) != tuple(hits.shape):
        raise ValueError(f"classes: expected shape {tuple(hits.shape)} like hits, got {tuple(classes.shape)}")
    if not jnp.issubdtype(classes.dtype, jnp.integer):
        raise ValueError(f"classes: expected integer class indices, got dtype {classes.dtype}")
    if valid is None:
        valid = jnp.ones(hits.shape, bool)
    elif tuple(np.shape(valid)) != tuple(hits.shape):
        raise ValueError(f"valid: expected shape {tuple(hits.shape)} like hits, got {tuple(np.shape(valid))}")
    if is_concrete(classes) and classes.size:
        c = np.asarray(classes)
        if c.min() < 0 or c.max() >= num_classes:
            raise ValueError(f"classes: expected indices in [0, {num_classes}), got range "
                             f"[{c.min()}, {c.max()}]")
    count, mean, per_class = _accuracy(hits, classes, num_classes, valid)
    if is_concrete(count):
        empty = np.flatnonzero(np.asarray(count) == 0)
        if empty.size:
            raise ValueError(f"classes: class(es) {empty.tolist()} of [0, {num_classes}) have no "
                             f"valid pair (empty class); restrict num_classes or the subset")
    return mean, per_class


def pointing_game(maps: jax.Array, masks: jax.Array, classes: jax.Array, num_classes: int, *,
                  tolerance: float = DEFAULT_TOLERANCE, valid: jax.Array | None = None,
                  difficult: jax.Array | None = None) -> dict[str, jax.Array]:
    """The whole pointing game: hits, mean per-class accuracy, the 'difficult' subset, the centre baseline.

    Args:
      maps: float (N, h, w) or (N, T, h, w).
      masks: bool (N, H, W) or (N, T, H, W); maps are resized to (H, W).
      classes: int (N,) or (N, T): the class each map explains.
      num_classes: C (static).
      tolerance: radius in pixels (>= 0), 15 by default.
      valid: optional bool (N,) / (N, T): the pairs to score (padding excluded).
      difficult: optional bool (N,) / (N, T): membership of the 'difficult' subset.

    Returns:
      dict with ``hits`` (bool like classes), ``accuracy`` (), ``per_class`` (C,),
      ``centre_hits``, ``centre_accuracy``, ``centre_per_class``, and when
      ``difficult`` is given the same four accuracies with suffix ``_difficult``
      (classes absent from the subset are NaN and left out of its mean; the
      empty-class check applies to the full set only).
    """
    hits = pointing_hits(maps, masks, tolerance=tolerance)
    masks = jnp.asarray(masks).astype(bool)
    if tuple(np.shape(classes)) != tuple(hits.shape):
        raise ValueError(f"classes: expected shape {tuple(hits.shape)} (one class per map), "
                         f"got {tuple(np.shape(classes))}")
    chits = centre_hits(masks, tolerance=tolerance)
    out = {"hits": hits, "centre_hits": chits}
    out["accuracy"], out["per_class"] = pointing_accuracy(hits, classes, num_classes, valid=valid)
    out["centre_accuracy"], out["centre_per_class"] = pointing_accuracy(chits, classes, num_classes,
                                                                        valid=valid)
    if difficult is not None:
        if tuple(np.shape(difficult)) != tuple(hits.shape):
            raise ValueError(f"difficult: expected shape {tuple(hits.shape)}, "
                             f"got {tuple(np.shape(difficult))}")
        sub = jnp.asarray(difficult).astype(bool)
        if valid is not None:
            sub = sub & jnp.asarray(valid).astype(bool)
        out["accuracy_difficult"], out["per_class_difficult"] = _accuracy(
            hits, classes, num_classes, sub)[1:]
        out["centre_accuracy_difficult"], out["centre_per_class_difficult"] = _accuracy(
            chits, classes, num_classes, sub)[1:]
    return out


def _accuracy(hits, classes, num_classes, valid):
    """(count per class, mean accuracy, per-class accuracy) without checks."""
    cls = jnp.asarray(classes).reshape(-1)
    v = jnp.asarray(valid).astype(bool).reshape(-1)
    h = jnp.asarray(hits).astype(bool).reshape(-1)
    count = jax.ops.segment_sum(v.astype(jnp.float32), cls, num_segments=num_classes)
    good = jax.ops.segment_sum((v & h).astype(jnp.float32), cls, num_segments=num_classes)
    per_class = jnp.where(count > 0, good / jnp.maximum(count, 1.0), jnp.nan)
    return count, jnp.nanmean(per_class), per_class
