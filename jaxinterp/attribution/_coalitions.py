"""Plumbing of the feature-mask methods: segments, coalitions of features and their scores.

An image's *features* are the segments of an integer map (H, W) of feature ids
in [0, F) (superpixels, a grid, ...).  A *coalition* is a 0/1 vector z (F,):
the image with the features of z set to 1 kept and the others replaced by the
baseline.  Every method of :mod:`jaxinterp.attribution.features` and
:mod:`jaxinterp.attribution.surrogates` scores coalitions ``chunk_size`` at a
time inside one compiled call and turns the scores into one value per
feature, which is then painted onto the feature's pixels.

F is static: one number for the whole batch (by default the largest id + 1).
An image with fewer features has *absent* ids (no pixel): switching them
changes nothing, so their values are 0 and they do not change the others'.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp.checks import as_array, check_baseline, check_images, check_int, is_concrete
from jaxinterp.nets import Net
from jaxinterp.targets import check_targets, chunked_map, target_scores

__all__ = ["check_segments", "check_binary", "prepare", "coalition_image", "coalition_map",
           "coalition_scores", "present_features", "paint", "wide_dtype"]


def check_segments(segments, x: jax.Array, num_features: int | None) -> tuple[jax.Array, int]:
    """Feature ids (N, H, W) as int32 and the static number of features F; ValueError naming the argument.

    Ids must be >= 0 (and < ``num_features`` when given); both are checked when
    ``segments`` is concrete.  With ``num_features`` None, F = max id + 1, which
    needs concrete segments (not under ``jax.jit``).
    """
    segments = as_array(segments, "segments")
    if tuple(segments.shape) != tuple(x.shape[:3]):
        raise ValueError(f"segments: expected feature ids of shape {tuple(x.shape[:3])} (N, H, W), "
                         f"got {tuple(segments.shape)}")
    if not jnp.issubdtype(segments.dtype, jnp.integer):
        raise ValueError(f"segments: expected integer feature ids, got dtype {segments.dtype}")
    concrete = is_concrete(segments)
    if concrete:
        lo, hi = int(np.min(segments)), int(np.max(segments))
        if lo < 0:
            raise ValueError(f"segments: expected feature ids >= 0, got {lo}")
    if num_features is None:
        if not concrete:
            raise ValueError("num_features: needed when segments are traced (under jax.jit); "
                             "pass the largest number of features per image")
        num_features = hi + 1
    num_features = check_int(num_features, "num_features")
    if concrete and hi >= num_features:
        raise ValueError(f"num_features: {num_features}, but segments has feature id {hi}")
    return jnp.asarray(segments, jnp.int32), num_features


def check_binary(a, arg: str, num_features: int, what: str = "coalitions") -> jax.Array:
    """0/1 rows (S, F) as an int32 array; ValueError naming ``arg`` (values checked when concrete)."""
    a = as_array(a, arg)
    if a.ndim != 2 or a.shape[1] != num_features or not a.shape[0]:
        raise ValueError(f"{arg}: expected {what} (S, {num_features}) with S >= 1, "
                         f"got shape {tuple(a.shape)}")
    if is_concrete(a) and not np.all((np.asarray(a) == 0) | (np.asarray(a) == 1)):
        raise ValueError(f"{arg}: expected 0/1 values")
    return jnp.asarray(a).astype(jnp.int32)


def prepare(net: Net, x, target, segments, num_features, baseline, chunk_size):
    """The common checks: (images, targets (N, T) pytree, baseline (N, H, W, 3), segments (N, H, W), F)."""
    x = check_images(x)
    n, h, w = x.shape[:3]
    segments, num_features = check_segments(segments, x, num_features)
    if chunk_size is not None:
        check_int(chunk_size, "chunk_size")
    targets = check_targets(target, net, n, (h, w))
    return x, targets, check_baseline(baseline, x), segments, num_features


def coalition_image(x1: jax.Array, b1: jax.Array, seg1: jax.Array, z: jax.Array) -> jax.Array:
    """The image (H, W, 3) showing x1 on the features with z = 1 and the baseline b1 elsewhere."""
    return jnp.where((z[seg1] > 0)[..., None], x1, b1)


def coalition_map(fn: Callable, x1, b1, seg1, coalitions: jax.Array, chunk_size: int | None):
    """``stack([fn(coalition_image(x1, b1, seg1, z)) for z in coalitions])``, ``chunk_size`` at a time."""
    return chunked_map(lambda z: fn(coalition_image(x1, b1, seg1, z)), coalitions, chunk_size)


def coalition_scores(net: Net, params, x1, b1, seg1, ts, coalitions: jax.Array,
                     chunk_size: int | None) -> jax.Array:
    """Scores (S, T) of the T targets ``ts`` on the S coalition images of one image."""
    return coalition_map(lambda a: target_scores(net, params, a[None], ts)[0], x1, b1, seg1,
                         coalitions, chunk_size)


def present_features(seg1: jax.Array, num_features: int) -> jax.Array:
    """(F,) bool: which feature ids have at least one pixel in the map (H, W)."""
    return jnp.zeros(num_features, bool).at[seg1.ravel()].set(True)


def paint(values: jax.Array, seg1: jax.Array) -> jax.Array:
    """Per-feature values (T, F) painted onto their pixels: (T, H, W)."""
    return values[:, seg1]


def wide_dtype(dtype) -> jnp.dtype:
    """float64 when jax's x64 mode is on, else ``dtype``: the precision of the regressions."""
    return jnp.promote_types(dtype, jnp.result_type(float))
