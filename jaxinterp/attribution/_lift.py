"""Shared plumbing of the attribution methods: targets, scores, lifting, channel reductions, chunks.

Targets
-------
A target is what the map explains, either

* a class: int indices (N,) or (N, T) into the net's output; or
* a :class:`Unit` anywhere in the net: ``Unit(layer, channel)`` (the channel's
  mean over positions) or ``Unit(layer, channel, y, x)`` (one neuron), with
  int arrays (N,) or (N, T).  For token activations (N, tokens, D) of a ViT,
  ``y`` indexes the token and ``x`` is left None.

:func:`check_targets` turns either into a pytree whose leaves are int32 (N, T).

Lifting
-------
Every method is written for ONE example and ONE target, ``fn(x1, t) -> map``
with x1 (H, W, 3), and lifted to a batch by :func:`lift`: two nested
``jax.vmap``s (targets inside, examples outside).  Work that does not depend on
the target (the forward pass) is then done once per image, and T targets per
image cost one compiled call.  Perturbation methods, whose cost is forward
passes, are instead written per image for all of its targets at once
(``fn(x1, ts) -> maps (T, ...)``) and lifted by :func:`lift_images`.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp import ops
from jaxinterp.nets import Net
from jaxinterp.nets.rules import Rules

__all__ = ["Unit", "REDUCTIONS", "check_images", "check_targets", "check_layer", "check_positive",
           "check_reduce", "check_spatial_layer", "check_backprop_args", "check_baseline",
           "target_score", "target_scores", "class_score", "input_gradient", "lift", "lift_images",
           "reduce_channels", "resize_maps", "activations_at", "finish_maps", "chunked_map",
           "chunked_sum"]


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Unit:
    """A unit of a net as a target: a channel (mean over positions) or one neuron.

    Attributes:
      layer: split point or tap of the net (static).
      channel: int array (N,) or (N, T): the channel (last axis of the activation).
      y, x: int arrays like ``channel`` or None.  Both None: the channel's mean
        over all positions; both given: the neuron at row y, column x; only y:
        token y of a (tokens, D) activation.
    """

    layer: str = dataclasses.field(metadata=dict(static=True))
    channel: jax.Array
    y: jax.Array | None = None
    x: jax.Array | None = None


def check_images(x) -> jax.Array:
    """``x`` as an array of images (N, H, W, 3), floating; ValueError otherwise."""
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        raise ValueError(f"x: expected an array of images (N, H, W, 3), got {type(x).__name__}")
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"x: expected images of rank 4 (N, H, W, 3), got shape {tuple(x.shape)}")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"x: expected a floating dtype (float32), got {x.dtype}")
    return jnp.asarray(x)


def check_layer(net: Net, layer: str | None, arg: str = "layer") -> str | None:
    """``layer`` if it is None or a split point of ``net``; ValueError naming ``arg`` otherwise."""
    if layer is not None and layer not in net.layers:
        raise ValueError(f"{arg}: unknown split point {layer!r} of {net.name}; "
                         f"expected one of {list(net.layers)}")
    return layer


def check_positive(value, arg: str) -> int:
    """``value`` as a positive int; ValueError naming ``arg`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{arg}: expected a positive integer, got {value!r}")
    return int(value)


def _int_targets(a, n: int, arg: str, bound: int | None) -> jax.Array:
    if not isinstance(a, jax.core.Tracer):
        a = np.asarray(a)
    if not jnp.issubdtype(a.dtype, jnp.integer):
        raise ValueError(f"{arg}: expected integer indices, got dtype {a.dtype}")
    if a.ndim not in (1, 2) or a.shape[0] != n or (a.ndim == 2 and not a.shape[1]):
        raise ValueError(f"{arg}: expected shape ({n},) or ({n}, T) with T >= 1, got {tuple(a.shape)}")
    if bound is not None and not isinstance(a, jax.core.Tracer) and a.size:
        lo, hi = int(a.min()), int(a.max())
        if lo < 0 or hi >= bound:
            raise ValueError(f"{arg}: expected indices in [0, {bound}), got range [{lo}, {hi}]")
    return jnp.asarray(a).reshape(n, -1).astype(jnp.int32)


def check_targets(target, net: Net, n: int, image_size: tuple[int, int] | None = None,
                  after: str | None = None):
    """Targets as a pytree of int32 (N, T) arrays: class indices or a :class:`Unit`.

    Args:
      target: int class indices (N,) or (N, T), or a :class:`Unit`.
      net: the net (the number of classes and the unit's layer shape come from it).
      n: the number of examples N.
      image_size: (H, W) of the images, for the bounds of unit positions.
      after: the split point the method attributes to; a unit must come after it.

    Returns:
      int32 (N, T) indices, or a Unit whose given fields are int32 (N, T).

    Raises:
      ValueError naming ``target`` (or ``target.channel`` ...): wrong dtype, shape,
      unknown layer, or an index out of range (range checked when concrete).
    """
    if not isinstance(target, Unit):
        if net.num_classes < 1:
            raise ValueError(f"target: {net!r} has no classifier head; pass a Unit(layer, channel)")
        return _int_targets(target, n, "target", net.num_classes)
    if target.layer not in net.layers and target.layer not in net.taps:
        raise ValueError(f"target: unknown unit layer {target.layer!r} of {net.name}; "
                         f"expected one of {list(net.layers)}")
    if after is not None:
        try:
            hw = net.input_size if image_size is None else tuple(image_size)
            jax.eval_shape(lambda p, x: net.apply(p, net.apply(p, x, stop=after), start=after,
                                                  stop=target.layer),
                           net.abstract_params(), jax.ShapeDtypeStruct((1, *hw, 3), jnp.float32))
        except ValueError:
            raise ValueError(f"target: unit layer {target.layer!r} does not come after the "
                             f"attributed layer {after!r} in {net.name}") from None
    if target.x is not None and target.y is None:
        raise ValueError("target: a Unit with x needs y as well")
    shape = net.activation_shape(target.layer, image_size)
    spatial = shape[:-1]
    if target.x is not None and len(spatial) != 2:
        raise ValueError(f"target: layer {target.layer!r} has activation shape {shape}; "
                         f"(y, x) positions need (h, w, C)")
    if target.y is not None and target.x is None and len(spatial) != 1:
        raise ValueError(f"target: layer {target.layer!r} has activation shape {shape}; "
                         f"a token index y without x needs (tokens, D)")
    channel = _int_targets(target.channel, n, "target.channel", shape[-1])
    fields = {"channel": channel}
    for i, name in enumerate(("y", "x")):
        value = getattr(target, name)
        if value is not None:
            fields[name] = _int_targets(value, n, f"target.{name}", spatial[i])
            if fields[name].shape != channel.shape:
                raise ValueError(f"target.{name}: shape {fields[name].shape} differs from "
                                 f"target.channel's {channel.shape}")
    return Unit(target.layer, **fields)


def _unit_value(act: jax.Array, t: Unit) -> jax.Array:
    """The scalar value of unit t (unbatched fields) in one example's activation (..., C)."""
    a = jnp.take(act, t.channel, axis=-1)
    if t.y is None:
        return jnp.mean(a)
    if t.x is None:
        return a[t.y]
    return a[t.y, t.x]


def target_score(net: Net, params, a1: jax.Array, t, *, start: str | None = None,
                 rules: Rules | None = None) -> jax.Array:
    """Scalar score of one target for one example.

    Args:
      net, params: the net.
      a1: one image (H, W, 3) if ``start`` is None, else one example's activation
        at split point ``start`` (no batch axis).
      t: an int class index or a :class:`Unit` with scalar fields.
      start: split point that ``a1`` comes from.
      rules: backward rules of the net.

    Returns:
      The class logit, or the unit's value.
    """
    if isinstance(t, Unit):
        act = net.apply(params, a1[None], start=start, stop=t.layer, rules=rules)[0]
        return _unit_value(act, t)
    return net.apply(params, a1[None], start=start, rules=rules)[0, t]


def target_scores(net: Net, params, a: jax.Array, ts, *, start: str | None = None) -> jax.Array:
    """Scores of T targets for a batch of B inputs of one example, from one forward pass each.

    Args:
      a: images (B, H, W, 3), or activations at ``start`` (B, ...).
      ts: int class indices (T,) or a :class:`Unit` with (T,) fields.

    Returns:
      scores (B, T).
    """
    if isinstance(ts, Unit):
        act = net.apply(params, a, start=start, stop=ts.layer)
        per_target = jax.vmap(_unit_value, in_axes=(None, 0))
        return jax.vmap(per_target, in_axes=(0, None))(act, ts)
    return jnp.take(net.apply(params, a, start=start), ts, axis=-1)


def class_score(net: Net, params, x1: jax.Array, t, rules: Rules | None = None) -> jax.Array:
    """The score of target ``t`` (class index or :class:`Unit`) for one image x1 (H, W, 3)."""
    return target_score(net, params, x1, t, rules=rules)


def input_gradient(net: Net, params, a1: jax.Array, t, *, start: str | None = None,
                   rules: Rules | None = None) -> jax.Array:
    """d score(t) / d a1 for one example: a1 an image (H, W, 3) or the activation at ``start``."""
    return jax.grad(lambda a: target_score(net, params, a, t, start=start, rules=rules))(a1)


def lift(fn: Callable) -> Callable:
    """Lift ``fn(x1, t) -> out`` (one example, one target) to ``(x (N, ...), targets (N, T)) -> (N, T, ...)``.

    ``targets`` may be any pytree of (N, T) arrays (class indices or a :class:`Unit`).
    """
    over_targets = jax.vmap(fn, in_axes=(None, 0))
    return jax.vmap(over_targets, in_axes=(0, 0))


def lift_images(fn: Callable) -> Callable:
    """Lift ``fn(x1, ts) -> (T, ...)`` (one example, all its targets) to batches (N, ...), (N, T)."""
    return jax.vmap(fn, in_axes=(0, 0))


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


def check_baseline(baseline, x: jax.Array) -> jax.Array:
    """``baseline`` broadcast to the images ``x`` (N, H, W, 3); ValueError naming ``baseline``.

    Accepts a scalar grey level, a colour (3,), an image (H, W, 3) or images
    (N, H, W, 3), with values in [0, 1] (checked when concrete).
    """
    if isinstance(baseline, bool) or not (isinstance(baseline, (int, float)) or hasattr(baseline, "dtype")):
        raise ValueError(f"baseline: expected a number or an array, got {type(baseline).__name__}")
    b = baseline if isinstance(baseline, jax.core.Tracer) else np.asarray(baseline)
    if not (jnp.issubdtype(b.dtype, jnp.floating) or jnp.issubdtype(b.dtype, jnp.integer)):
        raise ValueError(f"baseline: expected a real number or array, got dtype {b.dtype}")
    try:
        ok = np.broadcast_shapes(b.shape, x.shape) == tuple(x.shape)
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f"baseline: shape {tuple(b.shape)} does not broadcast to the images' "
                         f"{tuple(x.shape)}; expected a scalar, (3,), (H, W, 3) or (N, H, W, 3)")
    if not isinstance(b, jax.core.Tracer) and b.size:
        lo, hi = float(np.min(b)), float(np.max(b))
        if not (lo >= 0.0 and hi <= 1.0):
            raise ValueError(f"baseline: expected pixel values in [0, 1], got range [{lo:.4g}, {hi:.4g}]")
    return jnp.broadcast_to(jnp.asarray(b, x.dtype), x.shape)


def _pad_to_multiple(xs, size: int):
    n = jax.tree.leaves(xs)[0].shape[0]
    pad = (-n) % size
    return jax.tree.map(lambda a: jnp.concatenate([a, jnp.zeros((pad, *a.shape[1:]), a.dtype)]), xs), n, pad


def chunked_map(f: Callable, xs, chunk_size: int | None):
    """``jnp.stack([f(x) for x in xs])`` computed ``chunk_size`` at a time (vmap inside, loop outside).

    With ``chunk_size`` None (or >= the number of items) every item is done in one
    vmapped call.  The result does not depend on the chunking.
    """
    n = jax.tree.leaves(xs)[0].shape[0]
    if chunk_size is None or chunk_size >= n:
        return jax.vmap(f)(xs)
    chunk_size = check_positive(chunk_size, "chunk_size")
    return jax.lax.map(f, xs, batch_size=chunk_size)


def chunked_sum(f: Callable, xs, chunk_size: int | None):
    """``sum_i f(xs[i])`` (a pytree of arrays) accumulated ``chunk_size`` items at a time.

    Memory is that of one vmapped chunk; items are padded to a multiple of the
    chunk and padded items are masked out, so the value does not depend on the
    chunking beyond float rounding of the summation order.
    """
    n = jax.tree.leaves(xs)[0].shape[0]
    if chunk_size is None or chunk_size >= n:
        return jax.tree.map(lambda a: jnp.sum(a, axis=0), jax.vmap(f)(xs))
    chunk_size = check_positive(chunk_size, "chunk_size")
    xs, n, pad = _pad_to_multiple(xs, chunk_size)
    valid = jnp.arange(n + pad) < n
    chunks = jax.tree.map(lambda a: a.reshape(-1, chunk_size, *a.shape[1:]), (xs, valid))

    def body(acc, chunk):
        x, ok = chunk
        out = jax.vmap(f)(x)
        out = jax.tree.map(lambda o: jnp.sum(jnp.where(ok.reshape(-1, *[1] * (o.ndim - 1)), o, 0), 0), out)
        return jax.tree.map(jnp.add, acc, out), None

    first = jax.eval_shape(f, jax.tree.map(lambda a: a[0], xs))
    zero = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), first)
    return jax.lax.scan(body, zero, chunks)[0]
