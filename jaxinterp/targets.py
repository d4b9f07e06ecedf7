"""Targets, their scores, and the lifting of one-example, one-target functions to batches.

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

from jaxinterp.checks import check_int
from jaxinterp.nets import Net
from jaxinterp.nets.rules import Rules

__all__ = ["Unit", "check_targets", "unit_value", "target_score", "target_scores", "class_score",
           "input_gradient", "lift", "lift_images", "chunked_map", "chunked_sum"]


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


def unit_value(act: jax.Array, t: Unit) -> jax.Array:
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
        return unit_value(act, t)
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
        per_target = jax.vmap(unit_value, in_axes=(None, 0))
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

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxinterp.targets import lift
      >>> x = jnp.arange(6.0).reshape(2, 3)                    # 2 examples
      >>> t = jnp.array([[0, 2], [1, 1]])                       # 2 targets each
      >>> lift(lambda x1, t: x1[t])(x, t).tolist()            # out[n, k] = fn(x[n], t[n, k])
      [[0.0, 2.0], [4.0, 4.0]]
    """
    over_targets = jax.vmap(fn, in_axes=(None, 0))
    return jax.vmap(over_targets, in_axes=(0, 0))


def lift_images(fn: Callable) -> Callable:
    """Lift ``fn(x1, ts) -> (T, ...)`` (one example, all its targets) to batches (N, ...), (N, T)."""
    return jax.vmap(fn, in_axes=(0, 0))


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
    chunk_size = check_int(chunk_size, "chunk_size")
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
    chunk_size = check_int(chunk_size, "chunk_size")
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
