"""Weak localisation: a box from a thresholded map, IoU >= 0.5, the threshold chosen on held-out data.

The map is thresholded and the box is the tightest box enclosing the selected
pixels: all of them (``component='all'``, the default; Fong & Vedaldi's
protocol) or only those of the largest 8-connected component
(``component='largest'``, CAM's "bounding box that covers the largest connected
component" of the map thresholded at 20% of its maximum: ``method='value'``,
threshold 0.2).  Components are labelled inside one compiled call
(:func:`largest_component`: min-label propagation over a 3 x 3 window with
pointer jumping in a ``lax.while_loop``); among equally large components the
one whose first pixel comes first in row-major order wins (scipy.ndimage.label's
lowest label).  Three thresholding rules (alpha is the threshold):

* ``'value'``:  select ``m >= alpha * max(m)`` (CAM, Grad-CAM; alpha in [0, 1]);
* ``'mean'``:   select ``m >= alpha * mean(m)`` (alpha >= 0);
* ``'energy'``: with ``m+ = max(m, 0)``, select the fewest top-valued pixels
  whose sum is at least ``alpha * sum(m+)`` (Fong & Vedaldi 2017; alpha in
  [0, 1]); pixels tied with the last one selected are selected too.

Boxes are ``(y0, x0, y1, x1)`` int32 *inclusive* pixel indices, area
``(y1 - y0 + 1) (x1 - x0 + 1)``; an empty selection gives the empty box
``(0, 0, -1, -1)`` (area 0, IoU 0 with anything).  A prediction is correct when
its IoU with some ground-truth box is >= ``iou_threshold`` (0.5).

References:
  Zhou, Khosla, Lapedriza, Oliva, Torralba.  Learning Deep Features for
  Discriminative Localization.  CVPR 2016.
  Fong, Vedaldi.  Interpretable Explanations of Black Boxes by Meaningful
  Perturbation.  ICCV 2017 (value, energy and mean thresholds, threshold
  chosen on a held-out split).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp import ops
from jaxinterp.checks import check_choice, check_maps, check_nonneg, is_concrete

__all__ = ["THRESHOLD_METHODS", "COMPONENTS", "largest_component", "threshold_mask", "map_to_box",
           "box_iou", "localisation_hits",
           "localisation_accuracy", "best_threshold", "EMPTY_BOX"]

THRESHOLD_METHODS = ("value", "energy", "mean")
COMPONENTS = ("all", "largest")
EMPTY_BOX = (0, 0, -1, -1)


def _check_alpha(alpha, method):
    if is_concrete(alpha):
        a = np.asarray(alpha)
        if not np.all(np.isfinite(a)) or np.any(a < 0) or (method != "mean" and np.any(a > 1)):
            rng = "[0, inf)" if method == "mean" else "[0, 1]"
            raise ValueError(f"threshold: expected values in {rng} for method {method!r}, got {alpha!r}")


def _mask_one(m, alpha, method):
    """bool (H, W) selection of one map m (H, W) at scalar threshold alpha."""
    if method == "value":
        return m >= alpha * jnp.max(m)
    if method == "mean":
        return m >= alpha * jnp.mean(m)
    p = jnp.maximum(m, 0.0).reshape(-1)
    s = -jnp.sort(-p)                         # descending
    cum = jnp.cumsum(s)
    k = jnp.sum(cum < alpha * cum[-1])        # pixels before reaching the energy (0-based index of the last)
    k = jnp.minimum(k, s.shape[0] - 1)
    return jnp.maximum(m, 0.0) >= s[k]


def threshold_mask(maps: jax.Array, threshold, *, method: str = "value") -> jax.Array:
    """The selected pixels of each map at ``threshold`` (see the module docstring).

    Args:
      maps: float (..., H, W).
      threshold: alpha, a scalar or an array broadcastable to ``maps.shape[:-2]``.
      method: ``'value'``, ``'energy'`` or ``'mean'`` (static).

    Returns:
      bool (..., H, W).
    """
    check_choice(method, "method", THRESHOLD_METHODS)
    maps = check_maps(maps, ranks=range(2, 8))
    _check_alpha(threshold, method)
    lead = maps.shape[:-2]
    alpha = jnp.broadcast_to(jnp.asarray(threshold, maps.dtype), lead).reshape(-1)
    flat = maps.reshape(-1, *maps.shape[-2:])
    out = jax.vmap(lambda m, a: _mask_one(m, a, method))(flat, alpha)
    return out.reshape(maps.shape)


def _box_of_mask(mask):
    rows = jnp.any(mask, axis=-1)
    cols = jnp.any(mask, axis=-2)
    h, w = mask.shape[-2:]
    ar_h = jnp.arange(h)
    ar_w = jnp.arange(w)
    y0 = jnp.min(jnp.where(rows, ar_h, h), axis=-1)
    y1 = jnp.max(jnp.where(rows, ar_h, -1), axis=-1)
    x0 = jnp.min(jnp.where(cols, ar_w, w), axis=-1)
    x1 = jnp.max(jnp.where(cols, ar_w, -1), axis=-1)
    box = jnp.stack([y0, x0, y1, x1], axis=-1).astype(jnp.int32)
    empty = ~jnp.any(rows, axis=-1)
    return jnp.where(empty[..., None], jnp.array(EMPTY_BOX, jnp.int32), box)


def _component_labels(mask):
    """Label of each pixel of one mask (H, W): the smallest row-major index in its 8-connected component.

    Background pixels get H W.  Each step takes the minimum label over the 3 x 3
    neighbourhood (inside the mask) and over the label of the pixel a label points
    to (pointer jumping: a label is always the index of a pixel of the same
    component, so this only speeds up convergence); it stops when nothing changes.
    """
    h, w = mask.shape
    big = h * w
    idx = jnp.arange(big, dtype=jnp.int32).reshape(h, w)
    lab0 = jnp.where(mask, idx, big)

    def step(lab):
        pooled = jax.lax.reduce_window(lab, jnp.int32(big), jax.lax.min, (3, 3), (1, 1),
                                       ((1, 1), (1, 1)))
        flat = lab.reshape(-1)
        jump = jnp.take(flat, jnp.minimum(flat, big - 1)).reshape(h, w)
        return jnp.where(mask, jnp.minimum(pooled, jump), big)

    def body(carry):
        lab, _ = carry
        new = step(lab)
        return new, jnp.any(new != lab)

    lab, _ = jax.lax.while_loop(lambda c: c[1], body, (lab0, jnp.any(mask)))
    return lab


def _largest_one(mask):
    h, w = mask.shape
    lab = _component_labels(mask)
    sizes = jax.ops.segment_sum(mask.reshape(-1).astype(jnp.int32), lab.reshape(-1), num_segments=h * w + 1)
    best = jnp.argmax(sizes[:h * w])         # first maximum: the component starting first in row-major order
    return mask & (lab == best)


def largest_component(masks: jax.Array) -> jax.Array:
    """The largest 8-connected component of each mask.

    Args:
      masks: bool (..., H, W).

    Returns:
      bool (..., H, W): the pixels of the largest component (8-connectivity, as
      ``scipy.ndimage.label(mask, structure=np.ones((3, 3)))``); ties: the component
      whose first pixel in row-major order comes first; all False for an empty mask.
    """
    if not hasattr(masks, "shape"):
        masks = np.asarray(masks)
    if masks.ndim < 2 or 0 in masks.shape[-2:]:
        raise ValueError(f"masks: expected (..., H, W) with H, W >= 1, got shape {tuple(masks.shape)}")
    masks = jnp.asarray(masks).astype(bool)
    flat = masks.reshape(-1, *masks.shape[-2:])
    return jax.vmap(_largest_one)(flat).reshape(masks.shape)


def map_to_box(maps: jax.Array, threshold, *, method: str = "value",
               size: tuple[int, int] | None = None, component: str = "all") -> jax.Array:
    """The box enclosing the thresholded map (all its pixels, or its largest connected component).

    Args:
      maps: float (..., h, w).
      threshold: alpha, scalar or broadcastable to ``maps.shape[:-2]``.
      method: ``'value'``, ``'energy'`` or ``'mean'`` (static).
      size: (H, W) of the image: maps are first resized to it with
        :func:`jaxinterp.ops.resize_bilinear` (align_corners=False); None keeps (h, w).
      component: ``'all'`` (box of every selected pixel) or ``'largest'`` (box of the
        largest 8-connected component, CAM) (static).

    Returns:
      int32 (..., 4) boxes (y0, x0, y1, x1), inclusive; (0, 0, -1, -1) when nothing is selected.
    """
    check_choice(component, "component", COMPONENTS)
    maps = check_maps(maps, ranks=range(2, 8))
    if size is not None:
        maps = ops.resize_bilinear(maps, tuple(size))
    sel = threshold_mask(maps, threshold, method=method)
    if component == "largest":
        sel = largest_component(sel)
    return _box_of_mask(sel)


def _check_boxes(b, arg):
    if not hasattr(b, "shape"):
        b = np.asarray(b)
    if b.ndim < 1 or b.shape[-1] != 4:
        raise ValueError(f"{arg}: expected boxes (..., 4) as (y0, x0, y1, x1), got shape {tuple(b.shape)}")
    return jnp.asarray(b)


def box_iou(a: jax.Array, b: jax.Array) -> jax.Array:
    """Intersection over union of inclusive pixel boxes (y0, x0, y1, x1), broadcasting.

    ``area = (y1 - y0 + 1)(x1 - x0 + 1)`` (0 when y1 < y0 or x1 < x0);
    ``IoU = |A n B| / (|A| + |B| - |A n B|)``, 0 when the union is empty.

    Args:
      a, b: int or float (..., 4), broadcastable.

    Returns:
      float32 (...).
    """
    a = _check_boxes(a, "a").astype(jnp.float32)
    b = _check_boxes(b, "b").astype(jnp.float32)

    def area(y0, x0, y1, x1):
        return jnp.maximum(y1 - y0 + 1, 0) * jnp.maximum(x1 - x0 + 1, 0)

    inter = area(jnp.maximum(a[..., 0], b[..., 0]), jnp.maximum(a[..., 1], b[..., 1]),
                 jnp.minimum(a[..., 2], b[..., 2]), jnp.minimum(a[..., 3], b[..., 3]))
    union = area(*jnp.moveaxis(a, -1, 0)) + area(*jnp.moveaxis(b, -1, 0)) - inter
    return jnp.where(union > 0, inter / jnp.maximum(union, 1.0), 0.0)


def _prep_gt(maps, gt_boxes, gt_valid):
    gt = _check_boxes(gt_boxes, "gt_boxes")
    lead = maps.shape[:-2]
    if gt.ndim == len(lead) + 1:
        gt = gt[..., None, :]
    if tuple(gt.shape[:-2]) != tuple(lead) or gt.shape[-2] < 1:
        raise ValueError(f"gt_boxes: expected shape {tuple(lead)} + (4,) or {tuple(lead)} + (K, 4) "
                         f"with K >= 1, got {tuple(np.shape(gt_boxes))}")
    if gt_valid is None:
        gt_valid = jnp.ones(gt.shape[:-1], bool)
    elif tuple(np.shape(gt_valid)) != tuple(gt.shape[:-1]):
        raise ValueError(f"gt_valid: expected shape {tuple(gt.shape[:-1])}, got {tuple(np.shape(gt_valid))}")
    return gt, jnp.asarray(gt_valid).astype(bool)


def localisation_hits(maps: jax.Array, gt_boxes: jax.Array, threshold, *, method: str = "value",
                      size: tuple[int, int] | None = None, iou_threshold: float = 0.5,
                      gt_valid: jax.Array | None = None, component: str = "all") -> jax.Array:
    """Correct localisation: IoU(box of thresholded map, some ground-truth box) >= iou_threshold.

    Args:
      maps: float (N, h, w) or (N, T, h, w).
      gt_boxes: (N, [T], 4) or (N, [T], K, 4) inclusive boxes at image resolution.
      threshold: alpha (scalar or broadcastable to (N, [T])).
      method: ``'value'``, ``'energy'`` or ``'mean'``.
      size: image (H, W) to resize the maps to (None: the maps' own size).
      iou_threshold: in [0, 1], 0.5 by default.
      gt_valid: optional bool (N, [T], K): which of the K boxes exist (padding).
      component: ``'all'`` or ``'largest'`` (see :func:`map_to_box`).

    Returns:
      bool (N,) or (N, T).
    """
    maps = check_maps(maps)
    check_nonneg(iou_threshold, "iou_threshold")
    gt, valid = _prep_gt(maps, gt_boxes, gt_valid)
    box = map_to_box(maps, threshold, method=method, size=size, component=component)
    iou = box_iou(box[..., None, :], gt)
    return jnp.any(valid & (iou >= iou_threshold), axis=-1)


def localisation_accuracy(maps, gt_boxes, threshold, *, method="value", size=None,
                          iou_threshold=0.5, gt_valid=None, valid=None, component="all") -> jax.Array:
    """Fraction of correct localisations over the valid (N, [T]) pairs (1 - localisation error).

    Same arguments as :func:`localisation_hits`, plus ``valid`` bool (N, [T]) (default all).

    Returns:
      float32 ().
    """
    hits = localisation_hits(maps, gt_boxes, threshold, method=method, size=size,
                             iou_threshold=iou_threshold, gt_valid=gt_valid, component=component)
    if valid is None:
        return jnp.mean(hits.astype(jnp.float32))
    if tuple(np.shape(valid)) != tuple(hits.shape):
        raise ValueError(f"valid: expected shape {tuple(hits.shape)}, got {tuple(np.shape(valid))}")
    v = jnp.asarray(valid).astype(jnp.float32)
    return jnp.sum(hits * v) / jnp.maximum(jnp.sum(v), 1.0)


def best_threshold(maps: jax.Array, gt_boxes: jax.Array, thresholds: jax.Array, held_out: jax.Array, *,
                   method: str = "value", size: tuple[int, int] | None = None,
                   iou_threshold: float = 0.5, gt_valid: jax.Array | None = None,
                   component: str = "all") -> dict[str, jax.Array]:
    """Choose the threshold on the held-out images, report the accuracy on the others.

    ``k* = argmax_k acc(held-out, thresholds[k])`` (the first, i.e. smallest index,
    among equals), then ``accuracy = acc(not held-out, thresholds[k*])``.

    Args:
      maps, gt_boxes, method, size, iou_threshold, gt_valid, component: as :func:`localisation_hits`.
      thresholds: float (K,) candidate alphas.
      held_out: bool (N,): the images used to choose the threshold; the rest are the test split.

    Returns:
      dict with ``index`` int32 (), ``threshold`` (), ``held_out_accuracy`` (K,),
      ``test_accuracy_per_threshold`` (K,) and ``accuracy`` () (test split, chosen threshold).

    Raises:
      ValueError: thresholds not 1-D non-empty; held_out not (N,) bool-like; with
        concrete values, an empty held-out or test split.
    """
    maps = check_maps(maps)
    thresholds = jnp.asarray(thresholds)
    if thresholds.ndim != 1 or thresholds.shape[0] < 1:
        raise ValueError(f"thresholds: expected a non-empty 1-D array, got shape {tuple(thresholds.shape)}")
    _check_alpha(thresholds, check_choice(method, "method", THRESHOLD_METHODS))
    if tuple(np.shape(held_out)) != (maps.shape[0],):
        raise ValueError(f"held_out: expected shape ({maps.shape[0]},), got {tuple(np.shape(held_out))}")
    if is_concrete(held_out):
        h = np.asarray(held_out).astype(bool)
        if h.all() or not h.any():
            raise ValueError("held_out: expected both a non-empty held-out split and a non-empty test split")
    ho = jnp.asarray(held_out).astype(bool)
    ho = jnp.broadcast_to(ho.reshape(ho.shape + (1,) * (maps.ndim - 3)), maps.shape[:-2]).astype(jnp.float32)
    gt, gv = _prep_gt(maps, gt_boxes, gt_valid)
    if size is not None:
        maps = ops.resize_bilinear(maps, tuple(size))  # once, not per threshold

    def accs(alpha):
        hits = localisation_hits(maps, gt, alpha, method=method,
                                 iou_threshold=iou_threshold, gt_valid=gv,
                                 component=component).astype(jnp.float32)
        return (jnp.sum(hits * ho) / jnp.maximum(jnp.sum(ho), 1.0),
                jnp.sum(hits * (1 - ho)) / jnp.maximum(jnp.sum(1 - ho), 1.0))

    acc_ho, acc_test = jax.lax.map(accs, thresholds)
    k = jnp.argmax(acc_ho).astype(jnp.int32)
    return {"index": k, "threshold": thresholds[k], "held_out_accuracy": acc_ho,
            "test_accuracy_per_threshold": acc_test, "accuracy": acc_test[k]}
