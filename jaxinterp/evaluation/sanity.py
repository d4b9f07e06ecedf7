"""Sanity checks for saliency maps (Adebayo et al., NeurIPS 2018).

* Model-parameter randomisation: the parameterised layers of a zoo net are
  re-initialised (fresh weights from ``net.init(key)``) from the top down,
  cumulatively (*cascading*) or one at a time (*independent*); a map that does
  not change is not explaining the model.
* Class selectivity: the map for the target class against the map for a random
  other class of the same image.
* Shift invariance: the map of a translated image against the translated map.

Maps are compared with :mod:`jaxinterp.evaluation.similarity` (Spearman by
default).  A *layer* is a module of the params pytree: the leaves sharing all
but the last key (``features.3`` holds ``kernel`` and ``bias``; ``layer1.0.bn1``
holds the batch-norm leaves; a top-level leaf such as a ViT's ``pos_embed``
is a layer of its own), named with the torchvision state-dict prefix
(:func:`jaxinterp.nets.weights.to_state_dict`).  Layers are ordered by the
forward pass: the first use of any of their leaves in the traced computation of
``net.apply`` (ties: natural order of the name).

These helpers take a method as a callable ``method(net, params, x, target) ->
maps (N, T, H, W)`` (e.g. ``functools.partial(jaxinterp.attribution.gradient,
...)``); evaluation itself knows nothing of how maps are made.

References:
  Adebayo, Gilmer, Muelly, Goodfellow, Hardt, Kim.  Sanity Checks for Saliency
  Maps.  NeurIPS 2018.
"""

from __future__ import annotations

import functools
import re
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp.evaluation.similarity import spearman
from jaxinterp.nets import Net

__all__ = ["parameter_layers", "randomise_layers", "cascading_randomisation",
           "independent_randomisation", "class_selectivity", "shift_invariance"]


def _natural(name: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def _key_name(k) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(k, attr):
            return str(getattr(k, attr))
    return str(k)


def _first_uses(jaxpr, env: dict, counter: list, first: dict) -> None:
    """Record, for each var in ``env`` (var -> leaf index), the order of its first use."""
    for eqn in jaxpr.eqns:
        inner = None
        for pname in ("jaxpr", "call_jaxpr", "fun_jaxpr"):
            sub = eqn.params.get(pname)
            if sub is not None:
                inner = getattr(sub, "jaxpr", sub)
                break
        if inner is not None and len(inner.invars) == len(eqn.invars):
            sub_env = {iv: env[ov] for ov, iv in zip(eqn.invars, inner.invars)
                       if not isinstance(ov, jax.extend.core.Literal) and ov in env}
            _first_uses(inner, sub_env, counter, first)
            continue
        for v in eqn.invars:
            if not isinstance(v, jax.extend.core.Literal) and v in env and env[v] not in first:
                first[env[v]] = counter[0]
        counter[0] += 1


@functools.lru_cache(maxsize=32)
def parameter_layers(net: Net) -> tuple[tuple[str, tuple[tuple[str, ...], ...]], ...]:
    """The parameterised layers of ``net`` in forward order.

    Args:
      net: a zoo net (static).

    Returns:
      tuple of ``(layer name, leaf paths)``, one per module holding parameters,
      where a leaf path is the tuple of keys into the params dict and the name
      joins the module's keys with '.' (torchvision state-dict prefix).
    """
    if not isinstance(net, Net):
        raise ValueError(f"net: expected a jaxinterp.nets.Net, got {type(net).__name__}")
    abstract = net.abstract_params()
    leaves = jax.tree.leaves_with_path(abstract)
    paths = [tuple(_key_name(k) for k in p) for p, _ in leaves]
    h, w = net.input_size
    x = jax.ShapeDtypeStruct((1, h, w, 3), jnp.float32)
    closed = jax.make_jaxpr(lambda p, x: net.apply(p, x))(abstract, x)
    invars = closed.jaxpr.invars[:len(paths)]
    first: dict = {}
    _first_uses(closed.jaxpr, {v: i for i, v in enumerate(invars)}, [0], first)
    groups: dict[str, list] = {}
    for i, p in enumerate(paths):
        groups.setdefault(".".join(p[:-1]) if len(p) > 1 else p[0], []).append(i)
    never = 1 << 60
    order = sorted(groups, key=lambda g: (min(first.get(i, never) for i in groups[g]), _natural(g)))
    return tuple((g, tuple(paths[i] for i in groups[g])) for g in order)


def _placed_like(new, old):
    """``new`` with the placement of ``old``: a committed array's sharding is kept.

    jit caches compilations per committed-ness and sharding of the arguments, so a
    randomised layer placed differently from the original would recompile every
    method at every stage; it also keeps replicated / sharded params so.
    """
    if isinstance(old, jax.Array) and isinstance(new, jax.Array) and old.committed:
        return jax.device_put(new, old.sharding)
    return new


def _replace(params, fresh, paths):
    def setp(tree, src, path):
        for k in path[:-1]:
            tree, src = tree[k], src[k]
        tree[path[-1]] = _placed_like(src[path[-1]], tree[path[-1]])

    out = _copy_dicts(params)
    for p in paths:
        setp(out, fresh, p)
    return out


def _copy_dicts(tree):
    if isinstance(tree, dict):
        return {k: _copy_dicts(v) for k, v in tree.items()}
    return tree


def randomise_layers(net: Net, params, key: jax.Array, layers) -> dict:
    """``params`` with the named layers re-initialised from ``net.init(key)``; others untouched.

    Args:
      net: the zoo net.
      params: its params.
      key: a ``jax.random.key``.
      layers: iterable of layer names from :func:`parameter_layers`.

    Returns:
      a params pytree of the same structure.
    """
    table = dict(parameter_layers(net))
    layers = list(layers)
    for name in layers:
        if name not in table:
            raise ValueError(f"layers: unknown parameterised layer {name!r} of {net.name}; "
                             f"expected some of {list(table)}")
    net.check_params(params)
    fresh = net.init(key)
    return _replace(params, fresh, [p for name in layers for p in table[name]])


def cascading_randomisation(net: Net, params, key: jax.Array) -> list[tuple[str, dict]]:
    """Cascading randomisation: layers re-initialised from the top down, cumulatively.

    Stage i (i = 0 .. L-1) re-initialises the top i + 1 parameterised layers
    (the logits layer first) with the fresh weights of ``net.init(key)``, so the
    fresh values of a layer are the same at every stage.  The unrandomised
    model is not included.

    Args:
      net: a zoo net; params: its params; key: a ``jax.random.key``.

    Returns:
      list of L ``(name of the last layer randomised, params)``.
    """
    layers = parameter_layers(net)
    net.check_params(params)
    fresh = net.init(key)
    out, done = [], []
    for name, paths in reversed(layers):
        done.extend(paths)
        out.append((name, _replace(params, fresh, done)))
    return out


def independent_randomisation(net: Net, params, key: jax.Array) -> list[tuple[str, dict]]:
    """Independent randomisation: one parameterised layer re-initialised at a time, top down.

    Args:
      net: a zoo net; params: its params; key: a ``jax.random.key``.

    Returns:
      list of L ``(layer name, params with only that layer re-initialised)``.
    """
    layers = parameter_layers(net)
    net.check_params(params)
    fresh = net.init(key)
    return [(name, _replace(params, fresh, paths)) for name, paths in reversed(layers)]


def _check_target(target, n, num_classes):
    if not hasattr(target, "shape"):
        target = np.asarray(target)
    if not jnp.issubdtype(target.dtype, jnp.integer) or target.ndim not in (1, 2) or target.shape[0] != n:
        raise ValueError(f"target: expected int classes ({n},) or ({n}, T), got "
                         f"{target.dtype} {tuple(target.shape)}")
    return jnp.asarray(target)


def class_selectivity(method: Callable, net: Net, params, x: jax.Array, target: jax.Array,
                      key: jax.Array, *, similarity: Callable = spearman) -> tuple[jax.Array, jax.Array]:
    """Similarity of the map for the target class and for a random other class.

    The other class is ``(target + u) mod C`` with u uniform in [1, C - 1] (one
    draw per image and target from ``key``), so it always differs from the target.

    Args:
      method: ``method(net, params, x, target) -> maps (N, T, H, W)``.
      net, params: a classifier with C >= 2 classes.
      x: images (N, H, W, 3).
      target: int (N,) or (N, T).
      key: a ``jax.random.key``.
      similarity: ``f(a, b) -> (...)`` over the trailing (H, W) axes.

    Returns:
      (similarity (N, T), the other classes int32 (N, T)).
    """
    c = net.num_classes
    if c < 2:
        raise ValueError(f"net: class selectivity needs a classifier with >= 2 classes, got {c}")
    target = _check_target(target, x.shape[0], c).reshape(x.shape[0], -1)
    u = jax.random.randint(key, target.shape, 1, c)
    other = ((target + u) % c).astype(jnp.int32)
    m_t = method(net, params, x, target)
    m_o = method(net, params, x, other)
    return similarity(m_t, m_o), other


def _shift(a, dy, dx, axes):
    return jnp.roll(a, (dy, dx), axis=axes)


def shift_invariance(method: Callable, net: Net, params, x: jax.Array, target: jax.Array,
                     shift: tuple[int, int], *, similarity: Callable = spearman) -> jax.Array:
    """Similarity of the map of the translated image and the translated map.

    The image is translated circularly by ``shift = (dy, dx)`` pixels
    (``jnp.roll``); the map of the original image is rolled the same way, and
    both are compared on the region that did not wrap around (rows
    ``dy:`` if dy >= 0 else ``:H + dy``, likewise columns).  Maps at another
    resolution than the image are not rescaled: the shift must then be a
    multiple of the stride, which the caller handles by passing upsampled maps.

    Args:
      method: ``method(net, params, x, target) -> maps (N, T, H, W)``.
      net, params: the net.
      x: images (N, H, W, 3).
      target: int (N,) or (N, T).
      shift: (dy, dx) ints with |dy| < H, |dx| < W (static).
      similarity: ``f(a, b) -> (...)``.

    Returns:
      similarity (N, T).
    """
    if len(tuple(shift)) != 2 or not all(isinstance(s, (int, np.integer)) for s in shift):
        raise ValueError(f"shift: expected two ints (dy, dx), got {shift!r}")
    dy, dx = int(shift[0]), int(shift[1])
    h, w = x.shape[1:3]
    if abs(dy) >= h or abs(dx) >= w:
        raise ValueError(f"shift: expected |dy| < {h} and |dx| < {w}, got {shift!r}")
    target = _check_target(target, x.shape[0], net.num_classes)
    m = method(net, params, x, target)
    ms = method(net, params, _shift(x, dy, dx, (1, 2)), target)
    if m.shape[-2:] != (h, w):
        raise ValueError(f"method: expected maps at the image resolution {(h, w)}, "
                         f"got shape {tuple(m.shape)}")
    m = _shift(m, dy, dx, (-2, -1))
    rows = slice(dy, None) if dy >= 0 else slice(None, h + dy)
    cols = slice(dx, None) if dx >= 0 else slice(None, w + dx)
    return similarity(m[..., rows, cols], ms[..., rows, cols])
