"""Network dissection: how well each unit of a layer, thresholded, segments each concept of a labelled dataset.

For every unit k of a layer, Bau et al. (1) take the threshold T_k that the unit exceeds
on a fraction 0.005 of all positions of all images (the 0.995 quantile of its activations,
:func:`activation_quantiles`); (2) upsample the unit's activation map to the resolution
of the concept masks (bilinear), threshold it at T_k and, for every concept c, (3) sum
the intersections and the unions of that binary map with the concept's mask over the
whole dataset; the dataset-wide ``IoU_{k,c} = sum |M_k n L_c| / sum |M_k u L_c|`` scores
unit k as a detector of concept c (:func:`dissect`).  A unit is a detector of its best
concept when that IoU exceeds 0.04; the number of distinct concepts with a detector
("unique detectors"), per category of concept, measures a layer's interpretability
(:func:`dissection_summary`).

The thresholded map is ``upsampled > T_k`` (the reference code's comparison; the paper
writes >=).  Where a concept is annotated on only some images (Broden labels some
categories on some images), ``annotated`` restricts its union to those images, as the
reference code does per category.

Streaming: both passes run batch by batch through jitted updates
(:func:`activation_range_update`, :func:`activation_histogram_update`,
:func:`dissection_update`) whose states are small (per channel, or per (unit, concept))
and whose batches may be sharded over devices (the sums are integers, so the result
equals one device exactly).

Quantiles (:func:`activation_quantiles`) are estimated in two passes over the dataset:
the first finds each channel's minimum and maximum, the second counts its activations
in ``bins`` equal bins between them (int32 counts, so at most 2^31 - 1 values per
channel).  Order statistic i is estimated by the centre of the bin holding it, within
half a bin width of its true value, and the quantile is interpolated between the two
order statistics around its rank as ``np.quantile`` (method 'linear') does, so the
estimate is within ``(max - min) / (2 bins)`` of the exact quantile, per channel (plus
float32 rounding).

Concepts of the synthetic set (:mod:`jaxinterp.data.synthetic`):
:func:`synthetic_concepts` turns a batch into concept masks, one per class (its object's
mask on the images of that class; category ``'shape'`` for the six shapes, ``'texture'``
for stripes and checker) and one per named colour (pixels whose RGB colour is nearest to
it, Euclidean; category ``'colour'``; Broden's eleven colour names, with the CSS colours
of those names standing in for its colour-naming model).

References:
  Bau, Zhou, Khosla, Oliva, Torralba.  Network Dissection: Quantifying Interpretability
  of Deep Visual Representations.  CVPR 2017.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp import ops
from jaxinterp.analysis.streaming import (as_float_images, as_spatial, check_image_batch, check_stop_layer,
                                          image_batches, place_on, row_batches, valid_rows)
from jaxinterp.checks import check_int, check_real, is_concrete
from jaxinterp.data.synthetic import CLASSES
from jaxinterp.nets import Net

__all__ = ["IOU_THRESHOLD", "TOP_QUANTILE", "COLOURS", "SYNTHETIC_CONCEPTS", "SYNTHETIC_CATEGORIES",
           "activation_range_update", "activation_histogram_update", "activation_quantiles",
           "DissectionCounts", "Dissection", "empty_dissection_counts", "dissection_update", "dissection_iou",
           "dissect", "dissection_summary", "synthetic_concepts"]

IOU_THRESHOLD = 0.04
"""A unit detects its best concept when their IoU exceeds this (Bau et al. 2017)."""

TOP_QUANTILE = 0.005
"""Fraction of a unit's activations above its threshold T_k (Bau et al. 2017)."""

COLOURS = {"black": (0.0, 0.0, 0.0), "blue": (0.0, 0.0, 1.0), "brown": (0.647, 0.165, 0.165),
           "green": (0.0, 0.502, 0.0), "grey": (0.502, 0.502, 0.502), "orange": (1.0, 0.647, 0.0),
           "pink": (1.0, 0.753, 0.796), "purple": (0.502, 0.0, 0.502), "red": (1.0, 0.0, 0.0),
           "white": (1.0, 1.0, 1.0), "yellow": (1.0, 1.0, 0.0)}
"""Broden's eleven colour names and their CSS RGB colours in [0, 1]."""

SYNTHETIC_CONCEPTS = tuple(CLASSES) + tuple(COLOURS)
"""Names of the K = 19 concepts of :func:`synthetic_concepts`: the 8 classes, then the 11 colours."""

SYNTHETIC_CATEGORIES = ("shape",) * 6 + ("texture",) * (len(CLASSES) - 6) + ("colour",) * len(COLOURS)
"""Category of each of :data:`SYNTHETIC_CONCEPTS`."""


def _spatial_activation(net: Net, params, x, layer: str) -> jax.Array:
    return as_spatial(net.apply(params, x, stop=layer)).astype(jnp.float32)


# ----------------------------------------------------------------------------------------------------------------
# Quantiles.


@functools.partial(jax.jit, static_argnames=("net", "layer"))
def activation_range_update(state: tuple[jax.Array, jax.Array], params, x: jax.Array, num_valid=None, *,
                            net: Net, layer: str) -> tuple[jax.Array, jax.Array]:
    """Fold one batch into each channel's running (minimum, maximum) over images and positions.

    Args:
      state: (lo, hi) float32 (C,) so far; (+inf, -inf) at the start.
      params: the net's params.
      x: float32 images (B, H, W, 3) in [0, 1]; may be sharded along B.
      num_valid: only the first ``num_valid`` rows are images (None: all).
      net, layer: the net and the split point (static).

    Returns:
      (lo, hi) float32 (C,).
    """
    a = _spatial_activation(net, params, x, layer)
    valid = valid_rows(a.shape[0], num_valid)[:, None, None, None]
    lo = jnp.min(jnp.where(valid, a, jnp.inf), axis=(0, 1, 2))
    hi = jnp.max(jnp.where(valid, a, -jnp.inf), axis=(0, 1, 2))
    return jnp.minimum(state[0], lo), jnp.maximum(state[1], hi)


def _bin_index(a: jax.Array, lo: jax.Array, hi: jax.Array, bins: int) -> jax.Array:
    """Bin of each value of a (..., C) among ``bins`` equal bins of [lo, hi] (C,), clipped to the end bins."""
    scale = jnp.where(hi > lo, bins / jnp.where(hi > lo, hi - lo, 1.0), 0.0)
    return jnp.clip(jnp.floor((a - lo) * scale), 0, bins - 1).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("net", "layer"))
def activation_histogram_update(counts: jax.Array, params, x: jax.Array, lo: jax.Array, hi: jax.Array,
                                num_valid=None, *, net: Net, layer: str) -> jax.Array:
    """Add one batch's activations to each channel's histogram of equal bins over [lo, hi].

    Value v of channel c goes to bin ``clip(floor((v - lo_c) bins / (hi_c - lo_c)), 0, bins - 1)``
    (bin 0 when hi_c = lo_c).

    Args:
      counts: int32 (C, bins) so far (zeros at the start).
      params, x, num_valid, net, layer: as :func:`activation_range_update`.
      lo, hi: float32 (C,), the range of every channel (:func:`activation_range_update`).

    Returns:
      int32 (C, bins).
    """
    a = _spatial_activation(net, params, x, layer)
    c, bins = counts.shape
    valid = jnp.broadcast_to(valid_rows(a.shape[0], num_valid)[:, None, None, None], a.shape)
    flat = _bin_index(a, lo, hi, bins) + bins * jnp.arange(c, dtype=jnp.int32)
    added = jnp.zeros((c * bins,), jnp.int32).at[flat.reshape(-1)].add(valid.reshape(-1).astype(jnp.int32))
    return counts + added.reshape(c, bins)


@jax.jit
def _histogram_quantile(counts: jax.Array, lo: jax.Array, hi: jax.Array, rank: jax.Array, frac: jax.Array):
    """(1 - frac) v_rank + frac v_{rank+1} per channel, each order statistic v_i (0-based) at its bin's centre."""
    c, bins = counts.shape
    cumulative = jnp.cumsum(counts, axis=1)
    last = cumulative[:, -1:] - 1

    def order_statistic(i):
        b = jax.vmap(lambda cum, j: jnp.searchsorted(cum, j, side="right"))(cumulative, jnp.minimum(i, last[:, 0]))
        return lo + (b.astype(jnp.float32) + 0.5) * (hi - lo) / bins

    return (1 - frac) * order_statistic(rank) + frac * order_statistic(rank + 1)


def activation_quantiles(net: Net, params, batches, layer: str, *, top: float = TOP_QUANTILE, bins: int = 2048,
                         batch_size: int | None = None, sharding: jax.sharding.Sharding | None = None) -> jax.Array:
    """Each channel's (1 - ``top``) quantile over all images and positions of a dataset, streamed.

    Two passes over ``batches`` (the module docstring: range, then a histogram of ``bins``
    bins); the estimate is within ``(max_c - min_c) / (2 bins)`` of
    ``np.quantile(activations[..., c], 1 - top)`` (method 'linear', over all N h w values).

    Args:
      net: a :class:`~jaxinterp.nets.Net` (static).
      params: its params.
      batches: images (N, H, W, 3) float in [0, 1] or uint8, with ``batch_size``; or a
        re-iterable collection of batches (a list, not a one-shot iterator: it is read twice).
      layer: the split point (static).
      top: the fraction above the threshold, in [0, 1) (0.005: the paper's 0.995 quantile).
      bins: histogram bins, >= 1.
      batch_size: images per update for one array of images; None for batches.
      sharding: optional sharding each batch is put on (its device count dividing the batch size).

    Returns:
      float32 (C,): the thresholds T_c.
    """
    check_stop_layer(net, layer)
    top = check_real(top, "top", minimum=0.0, maximum=1.0, open_max=True)
    bins = check_int(bins, "bins")
    if not hasattr(batches, "shape") and hasattr(batches, "__iter__") and iter(batches) is batches:
        raise ValueError("batches: expected an array of images or a re-iterable collection of batches (read "
                         "twice), got a one-shot iterator; pass a list")
    lo = hi = None
    count = 0
    for x, valid, _ in image_batches(batches, batch_size):
        if lo is None:
            shape = net.activation_shape(layer, x.shape[1:3])
            per_image, c = int(np.prod(shape[:-1])), shape[-1]
            lo, hi = jnp.full((c,), jnp.inf, jnp.float32), jnp.full((c,), -jnp.inf, jnp.float32)
        lo, hi = activation_range_update((lo, hi), params, place_on(x, sharding), valid, net=net, layer=layer)
        count += valid * per_image
    counts = jnp.zeros((c, bins), jnp.int32)
    for x, valid, _ in image_batches(batches, batch_size):
        counts = activation_histogram_update(counts, params, place_on(x, sharding), lo, hi, valid, net=net, layer=layer)
    if count > np.iinfo(np.int32).max:
        raise ValueError(f"batches: {count} activations per channel overflow the int32 counts; expected < 2^31")
    position = (1.0 - top) * (count - 1)                   # np.quantile's 'linear' position, in float64
    rank = min(int(np.floor(position)), count - 1)
    return _histogram_quantile(counts, lo, hi, jnp.int32(rank), jnp.float32(position - rank))


# ----------------------------------------------------------------------------------------------------------------
# Dissection.


class DissectionCounts(NamedTuple):
    """Running sums of a dissection (int32).

    Attributes:
      intersection: (C, K), sum over images of |M_k n L_c| (pixels).
      unit_area: (C, K), sum of |M_k| over the images where concept c is annotated.
      concept_area: (K,), sum of |L_c|.
    """

    intersection: jax.Array
    unit_area: jax.Array
    concept_area: jax.Array


class Dissection(NamedTuple):
    """The result of :func:`dissect`.

    Attributes:
      iou: float32 (C, K), sum intersection / sum union (0 where the union is empty).
      best_concept: int32 (C,), each unit's concept of largest IoU (the first among equals).
      best_iou: float32 (C,), its IoU.
      intersection: int32 (C, K), the summed intersections (pixels).
      union: int32 (C, K), the summed unions (pixels).
    """

    iou: jax.Array
    best_concept: jax.Array
    best_iou: jax.Array
    intersection: jax.Array
    union: jax.Array


def empty_dissection_counts(channels: int, concepts: int) -> DissectionCounts:
    """Zero counts for C units and K concepts (static ints)."""
    channels, concepts = check_int(channels, "channels"), check_int(concepts, "concepts")
    zero = jnp.zeros((channels, concepts), jnp.int32)
    return DissectionCounts(zero, zero, jnp.zeros((concepts,), jnp.int32))


def _sum_exact(a: jax.Array) -> jax.Array:
    """A float32 sum of whole numbers < 2^24 as int32."""
    return jnp.round(a).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("net", "layer"))
def dissection_update(counts: DissectionCounts, params, x: jax.Array, concept_masks: jax.Array,
                      thresholds: jax.Array, num_valid=None, annotated=None, *, net: Net,
                      layer: str) -> DissectionCounts:
    """Add one batch's intersections and areas to the running counts of a dissection.

    ``M_k = resize_bilinear(A_k, (Hm, Wm)) > T_k`` for unit k's activation map A_k; for each
    concept c with mask L_c (on the images where c is annotated): intersection += |M_k n L_c|,
    unit_area += |M_k|, concept_area += |L_c|.  The per-batch sums are float32 sums of 0 / 1
    products (exact below 2^24 pixels per batch, checked), kept as int32.

    Args:
      counts: :class:`DissectionCounts` (C, K) so far (:func:`empty_dissection_counts`).
      params: the net's params.
      x: float32 images (B, H, W, 3) in [0, 1]; may be sharded along B.
      concept_masks: bool (B, K, Hm, Wm) (or integers, non-zero meaning inside); may be sharded along B.
      thresholds: float (C,), T_k (:func:`activation_quantiles`).
      num_valid: only the first ``num_valid`` rows are images (None: all).
      annotated: bool (B, K): where each concept is labelled (None: everywhere).
      net, layer: the net and a split point with activations (N, h, w, C) (static).

    Returns:
      The updated :class:`DissectionCounts`.
    """
    b, k, hm, wm = concept_masks.shape
    if b * hm * wm >= 2 ** 24:
        raise ValueError(f"concept_masks: a batch of {b} x {hm} x {wm} pixels (>= 2^24) would not be counted "
                         "exactly in float32; use a smaller batch_size")
    a = _spatial_activation(net, params, x, layer)
    c = a.shape[-1]
    if counts.intersection.shape != (c, k):
        raise ValueError(f"counts: expected ({c}, {k}) counts for {c} units and {k} concepts, "
                         f"got {counts.intersection.shape}")
    valid = valid_rows(b, num_valid).astype(jnp.float32)
    labelled = valid[:, None] if annotated is None else jnp.asarray(annotated).astype(jnp.float32) * valid[:, None]
    up = ops.resize_bilinear(a, (hm, wm), axes=(1, 2))
    on = (up > jnp.asarray(thresholds, jnp.float32)).astype(jnp.float32).reshape(b, hm * wm, c)
    masks = (concept_masks != 0).astype(jnp.float32).reshape(b, k, hm * wm) * labelled[:, :, None]
    highest = jax.lax.Precision.HIGHEST
    intersection = jnp.einsum("bpc,bkp->ck", on, masks, precision=highest)
    unit_area = jnp.einsum("bc,bk->ck", jnp.sum(on, axis=1), labelled, precision=highest)
    concept_area = jnp.sum(masks, axis=(0, 2))
    return DissectionCounts(counts.intersection + _sum_exact(intersection), counts.unit_area + _sum_exact(unit_area),
                            counts.concept_area + _sum_exact(concept_area))


def dissection_iou(counts: DissectionCounts) -> Dissection:
    """IoU of every (unit, concept) from the summed counts, and each unit's best concept.

    ``union = unit_area + concept_area - intersection``; ``iou = intersection / union`` (0 where
    the union is 0).

    Args:
      counts: :class:`DissectionCounts` (C, K).

    Returns:
      :class:`Dissection`.
    """
    union = counts.unit_area + counts.concept_area[None, :] - counts.intersection
    iou = jnp.where(union > 0, counts.intersection / jnp.maximum(union, 1), 0.0).astype(jnp.float32)
    best = jnp.argmax(iou, axis=1).astype(jnp.int32)
    return Dissection(iou, best, jnp.take_along_axis(iou, best[:, None], axis=1)[:, 0], counts.intersection, union)


def _check_masks(concept_masks, n: int, arg: str = "concept_masks"):
    if not hasattr(concept_masks, "shape") or not hasattr(concept_masks, "dtype"):
        raise ValueError(f"{arg}: expected an array (N, K, H, W) of bool masks, got {type(concept_masks).__name__}")
    shape = tuple(concept_masks.shape)
    if len(shape) != 4 or shape[0] != n or min(shape) < 1:
        raise ValueError(f"{arg}: expected masks ({n}, K, H, W) with K, H, W >= 1, got shape {shape}")
    if not (concept_masks.dtype == bool or jnp.issubdtype(concept_masks.dtype, jnp.integer)):
        raise ValueError(f"{arg}: expected bool (or 0 / 1 integer) masks, got dtype {concept_masks.dtype}")


def dissect(net: Net, params, images, concept_masks, layer: str, thresholds, *, annotated=None,
            batch_size: int = 32, sharding: jax.sharding.Sharding | None = None) -> Dissection:
    """Network dissection of ``layer`` over a dataset with concept masks (Bau et al. 2017).

    The images and masks are read ``batch_size`` at a time (the last batch padded, one compiled
    :func:`dissection_update`); the IoUs are dataset-wide sums (:func:`dissection_iou`).  With
    arrays and no ``sharding`` it also works under ``jax.jit`` (the batch loop is unrolled).
    Memory per batch: the upsampled, thresholded maps, ``batch_size Hm Wm C`` float32 (and
    ``batch_size Hm Wm`` must stay below 2^24 for exact counts).

    Args:
      net: a :class:`~jaxinterp.nets.Net` (static).
      params: its params.
      images: (N, H, W, 3) float in [0, 1] or uint8 (NumPy, a memmap or jax).
      concept_masks: bool (N, K, Hm, Wm), concept c's pixels in image n, at any resolution
        (activations are upsampled to it); names and categories of the K concepts are the
        caller's (:func:`dissection_summary`).
      layer: a split point with activations (N, h, w, C) (static).
      thresholds: float (C,), the units' thresholds T_k (:func:`activation_quantiles`).
      annotated: optional bool (N, K): the images on which each concept is labelled.
      batch_size: images per update (static).
      sharding: optional sharding each batch (images, masks) is put on.

    Returns:
      :class:`Dissection`: iou (C, K), best_concept (C,), best_iou (C,), intersection and union (C, K).
    """
    check_stop_layer(net, layer)
    check_image_batch(images, "images")
    n = images.shape[0]
    _check_masks(concept_masks, n)
    shape = net.activation_shape(layer, images.shape[1:3])
    if len(shape) != 3:
        raise ValueError(f"layer: expected a split point with activations (N, h, w, C), {layer!r} of {net.name} "
                         f"gives {(None, *shape)}")
    c, k = shape[-1], concept_masks.shape[1]
    if not hasattr(thresholds, "shape"):
        thresholds = np.asarray(thresholds)
    if tuple(thresholds.shape) != (c,) or not jnp.issubdtype(thresholds.dtype, jnp.floating):
        raise ValueError(f"thresholds: expected float ({c},), one per unit of {layer!r}, got "
                         f"{tuple(thresholds.shape)} {thresholds.dtype}")
    if annotated is not None and tuple(np.shape(annotated)) != (n, k):
        raise ValueError(f"annotated: expected bool ({n}, {k}), got shape {tuple(np.shape(annotated))}")
    batch_size = check_int(batch_size, "batch_size")
    arrays = (images, concept_masks) + (() if annotated is None else (annotated,))
    counts = empty_dissection_counts(c, k)
    for rows, valid, _ in row_batches(arrays, batch_size):
        x, masks = place_on(as_float_images(rows[0]), sharding), place_on(jnp.asarray(rows[1]), sharding)
        labelled = None if annotated is None else place_on(jnp.asarray(rows[2]).astype(bool), sharding)
        counts = dissection_update(counts, params, x, masks, thresholds, valid, labelled, net=net, layer=layer)
    return dissection_iou(counts)


def dissection_summary(iou: jax.Array, concept_names: tuple[str, ...], categories: tuple[str, ...],
                       iou_threshold: float = IOU_THRESHOLD) -> dict:
    """Detectors and unique detected concepts, overall and per category of concept.

    Unit k detects its best concept ``c_k = argmax_c IoU_{k,c}`` (the first among equals) when
    ``IoU_{k,c_k} > iou_threshold``.  A concept is detected when some unit detects it; the
    number of detected concepts is the paper's number of unique detectors.

    Args:
      iou: float (C, K), :attr:`Dissection.iou`.
      concept_names: K distinct names (static).
      categories: K category names, one per concept (static).
      iou_threshold: the detection threshold, in [0, 1] (static; 0.04, the paper's).

    Returns:
      dict with ``best_concept`` int32 (C,), ``best_iou`` (C,), ``is_detector`` bool (C,),
      ``detected`` bool (K,), ``num_detectors`` and ``num_unique_concepts`` int32 (),
      ``detectors`` {category: int32 () units detecting a concept of it}, ``unique_concepts``
      {category: int32 () concepts of it detected}, ``units_per_concept`` {name: int32 ()}.
    """
    if not hasattr(iou, "shape"):
        iou = np.asarray(iou)
    if len(iou.shape) != 2 or min(iou.shape) < 1 or not jnp.issubdtype(iou.dtype, jnp.floating):
        raise ValueError(f"iou: expected float IoUs (C, K), got shape {tuple(iou.shape)} dtype {iou.dtype}")
    k = iou.shape[1]
    concept_names, categories = tuple(concept_names), tuple(categories)
    if len(concept_names) != k or len(set(concept_names)) != k or not all(isinstance(s, str) for s in concept_names):
        raise ValueError(f"concept_names: expected {k} distinct names, one per concept, got {len(concept_names)}")
    if len(categories) != k or not all(isinstance(s, str) for s in categories):
        raise ValueError(f"categories: expected {k} category names, one per concept, got {len(categories)}")
    iou_threshold = check_real(iou_threshold, "iou_threshold", minimum=0.0, maximum=1.0)
    iou = jnp.asarray(iou, jnp.float32)
    best = jnp.argmax(iou, axis=1).astype(jnp.int32)
    best_iou = jnp.take_along_axis(iou, best[:, None], axis=1)[:, 0]
    is_detector = best_iou > iou_threshold
    detects = is_detector[:, None] & (best[:, None] == jnp.arange(k))           # (C, K) unit detects concept
    units_per_concept = jnp.sum(detects, axis=0, dtype=jnp.int32)
    detected = units_per_concept > 0
    out = {"best_concept": best, "best_iou": best_iou, "is_detector": is_detector, "detected": detected,
           "num_detectors": jnp.sum(is_detector, dtype=jnp.int32),
           "num_unique_concepts": jnp.sum(detected, dtype=jnp.int32), "detectors": {}, "unique_concepts": {},
           "units_per_concept": {name: units_per_concept[i] for i, name in enumerate(concept_names)}}
    for category in dict.fromkeys(categories):                                  # in order of first appearance
        member = np.array([cat == category for cat in categories])
        out["detectors"][category] = jnp.sum(jnp.where(member, units_per_concept, 0), dtype=jnp.int32)
        out["unique_concepts"][category] = jnp.sum(detected & member, dtype=jnp.int32)
    return out


def synthetic_concepts(batch: dict) -> jax.Array:
    """Concept masks of a batch of the synthetic set: one per class, then one per named colour.

    Concept ``c < 8`` (class ``CLASSES[c]``) is the object's mask on the images of label c
    and empty on the others; concept ``8 + j`` is the pixels whose colour is nearest (RGB,
    Euclidean; the first among equals) to ``COLOURS``' j-th colour, so every pixel has exactly
    one colour.  Names and categories: :data:`SYNTHETIC_CONCEPTS`, :data:`SYNTHETIC_CATEGORIES`.

    Args:
      batch: a dict of :func:`jaxinterp.data.synthetic.generate` with ``image`` (N, H, W, 3),
        ``label`` (N,) and ``mask`` (N, H, W) (other keys are ignored).

    Returns:
      bool (N, 19, H, W).
    """
    if not isinstance(batch, dict) or not {"image", "label", "mask"} <= set(batch):
        got = sorted(batch) if isinstance(batch, dict) else type(batch).__name__
        raise ValueError(f"batch: expected a dict with 'image', 'label' and 'mask' (synthetic.generate), got {got}")
    image, label, mask = batch["image"], batch["label"], batch["mask"]
    check_image_batch(image, "batch")
    n, h, w, _ = image.shape
    if tuple(np.shape(label)) != (n,) or tuple(np.shape(mask)) != (n, h, w):
        raise ValueError(f"batch: expected 'label' ({n},) and 'mask' ({n}, {h}, {w}), got "
                         f"{tuple(np.shape(label))} and {tuple(np.shape(mask))}")
    if is_concrete(label):
        lab = np.asarray(label)
        if lab.size and (lab.min() < 0 or lab.max() >= len(CLASSES)):
            raise ValueError(f"batch: expected labels in [0, {len(CLASSES)}), got range [{lab.min()}, {lab.max()}]")
    classes = jnp.asarray(label)[:, None] == jnp.arange(len(CLASSES))               # (N, 8)
    objects = classes[:, :, None, None] & jnp.asarray(mask, bool)[:, None]
    palette = jnp.asarray(list(COLOURS.values()), jnp.float32)
    distance = jnp.sum((as_float_images(image)[:, :, :, None, :] - palette) ** 2, axis=-1)   # (N, H, W, 11)
    nearest = jnp.argmin(distance, axis=-1)
    colours = nearest[:, None] == jnp.arange(len(COLOURS))[None, :, None, None]
    return jnp.concatenate([objects, colours], axis=1)
