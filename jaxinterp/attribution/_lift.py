"""Plumbing of the backprop attribution methods: channel reductions, layer maps, the common checks.

Targets, their scores and the lifting of one-example functions to batches are
in :mod:`jaxinterp.targets`; argument checks in :mod:`jaxinterp.checks`.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from jaxinterp import ops
from jaxinterp.checks import check_images, check_layer
from jaxinterp.nets import Net
from jaxinterp.targets import check_targets

__all__ = ["REDUCTIONS", "check_reduce", "reduce_channels", "resize_maps", "check_backprop_args",
           "check_spatial_layer", "activations_at", "finish_maps"]


def _max_abs(g):
    return jnp.max(jnp.abs(g), axis=-1)


REDUCTIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "sum": lambda g: jnp.sum(g, axis=-1),
    "max_abs": _max_abs,
    "abs_sum": lambda g: jnp.sum(jnp.abs(g), axis=-1),
    "l2": lambda g: jnp.sqrt(jnp.sum(g * g, axis=-1)),
    "max": lambda g: jnp.max(g, axis=-1),
}
"""Channel reductions of per-channel attributions (..., C) -> (...):
``sum`` (signed, Captum's convention summed over channels), ``max_abs`` (Simonyan
et al.), ``abs_sum``, ``l2``, ``max``."""


def check_reduce(reduce: str | None) -> None:
    """ValueError naming ``reduce`` unless it is None or a key of :data:`REDUCTIONS`."""
    if reduce is not None and reduce not in REDUCTIONS:
        raise ValueError(f"reduce: expected one of {sorted(REDUCTIONS)} or None, got {reduce!r}")


def reduce_channels(g: jax.Array, reduce: str | None) -> jax.Array:
    """Reduce the last (channel) axis of ``g`` with a named reduction; None keeps it."""
    check_reduce(reduce)
    return g if reduce is None else REDUCTIONS[reduce](g)


def resize_maps(maps: jax.Array, hw: tuple[int, int], *, channels: bool = False) -> jax.Array:
    """Bilinearly resize maps (..., h, w) - or (..., h, w, C) with ``channels`` - to (H, W)."""
    return ops.resize_bilinear(maps, hw, axes=(-3, -2) if channels else (-2, -1))


def check_backprop_args(net: Net, x, target, layer: str | None, resize: bool,
                        reduce: str | None) -> tuple[jax.Array, object]:
    """The checks every backprop method makes; returns (images, targets as (N, T) pytrees).

    ValueError naming the argument for bad ``x``, ``layer`` (unknown, or not
    spatial when ``resize``), ``target`` (also a unit before ``layer``) or ``reduce``.
    """
    x = check_images(x)
    check_layer(net, layer)
    targets = check_targets(target, net, x.shape[0], x.shape[1:3], after=layer)
    check_spatial_layer(net, layer, resize, x.shape[1:3])
    check_reduce(reduce)
    return x, targets


def check_spatial_layer(net: Net, layer: str | None, resize: bool, image_size) -> None:
    """ValueError naming ``layer`` if its maps are to be resized but its activation is not (h, w, C)."""
    if layer is not None and resize and len(net.activation_shape(layer, image_size)) != 3:
        raise ValueError(f"layer: activation of {layer!r} has shape "
                         f"{net.activation_shape(layer, image_size)}, not (h, w, C); pass resize=False")


def activations_at(net: Net, params, x: jax.Array, layer: str | None) -> jax.Array:
    """The images themselves (layer None) or their activations at split point ``layer``."""
    return x if layer is None else net.apply(params, x, stop=layer)


def finish_maps(maps: jax.Array, reduce: str | None, layer: str | None, resize: bool, hw) -> jax.Array:
    """Reduce the channels of (N, T, ..., C) attributions; resize layer maps to the image's (H, W)."""
    maps = reduce_channels(maps, reduce)
    if layer is not None and resize:
        maps = resize_maps(maps, hw, channels=reduce is None)
    return maps
