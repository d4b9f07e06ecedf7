"""The one render function: optimise images for an objective, every target in one compiled call.

``render`` runs Lucid's loop, ``image = to_image(p)``, ``x' = transform(image)``,
``p += optimiser step of objective(net(x'), image)``, for ``steps`` steps in a
``lax.scan``, vmapped over T targets (each optimising a group of B images) and
mapped ``chunk_size`` targets at a time so that thousands of targets fit in
memory.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxinterp.checks import check_int
from jaxinterp.nets import Net
from jaxinterp.nets.rules import Rules
from jaxinterp.synthesis.objectives import OUTPUT, Objective
from jaxinterp.synthesis.params import Parameterisation
from jaxinterp.synthesis.transforms import STANDARD, Transform, compose

__all__ = ["RenderResult", "render", "activations", "check_layers", "num_targets", "target_keys"]


class RenderResult(NamedTuple):
    """images (T, B, H, W, 3) in [0, 1] from the final parameters; history (T, steps): the objective."""

    images: jax.Array
    history: jax.Array


def check_layers(net: Net, layers: Sequence[str]) -> None:
    """ValueError naming ``objective`` if a layer is neither a split point, a tap nor OUTPUT."""
    for layer in layers:
        if layer != OUTPUT and layer not in net.layers and layer not in net.taps:
            raise ValueError(f"objective: unknown layer {layer!r} of {net.name}; expected one of "
                             f"{list(net.layers)} or {OUTPUT!r}")
    if OUTPUT in layers and net.num_classes < 1:
        raise ValueError(f"objective: {net!r} has no classifier output to read")


def activations(net: Net, params, x: jax.Array, layers: Sequence[str], *,
                rules: Rules | None = None) -> dict[str, jax.Array]:
    """``{layer: net activation at layer}`` for images x (B, H, W, 3) in one pass through the net.

    The layers are split points or taps, read with ``net.apply(..., capture=...)``;
    :data:`OUTPUT` is the net's output.  The pass stops at the last split point
    asked for, unless the output or a tap is asked for.
    """
    inner = tuple(dict.fromkeys(l for l in layers if l != OUTPUT))
    if not inner and OUTPUT not in layers:
        return {}                       # an objective of the image alone: the net does not run
    stop = None
    if OUTPUT not in layers and inner and all(l in net.layers for l in inner):
        stop = max(inner, key=net.layers.index)
    out, acts = net.apply(params, x, stop=stop, rules=rules, capture=inner)
    if OUTPUT in layers:
        acts[OUTPUT] = out
    return acts


def num_targets(targets) -> int:
    """T, the common leading axis of the targets pytree; ValueError if the leaves disagree."""
    sizes = {int(np.shape(a)[0]) if np.ndim(a) else -1 for a in jax.tree.leaves(targets)}
    if not sizes or -1 in sizes or len(sizes) != 1:
        raise ValueError(f"targets: expected a pytree of arrays with one leading axis T, got leading "
                         f"sizes {sorted(sizes)}")
    return sizes.pop()


def target_keys(key: jax.Array, n: int) -> jax.Array:
    """One key per target (n,): ``fold_in(key, t)`` for a single key, or ``key`` itself if it holds n keys.

    Either way a target's key does not depend on how targets are chunked or
    sharded; passing ``fold_in(key, t)[None]`` for target t alone reproduces
    its result in a batch (vmap == loop).
    """
    if not hasattr(key, "shape") or not jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        raise ValueError(f"key: expected a jax.random.key (new-style typed key), got {type(key).__name__}")
    if key.shape == ():
        return jax.vmap(lambda t: jax.random.fold_in(key, t))(jnp.arange(n))
    if key.shape != (n,):
        raise ValueError(f"key: expected one key or {n} keys (one per target), got shape {key.shape}")
    return key


def render(net: Net, params, objective: Callable[[Any], Objective] | Objective, targets=None, *,
           param: Parameterisation | Callable[[Any], Parameterisation], key: jax.Array,
           transforms: Sequence[Transform] = STANDARD, steps: int = 512,
           optimiser: optax.GradientTransformation | None = None, batch: int = 1,
           chunk_size: int | None = None, compute_dtype=None, rules: Rules | None = None,
           project: Callable[[Any], Any] | None = None) -> RenderResult:
    """Maximise ``objective`` over images for every target.

    Args:
      net, params: the net.
      objective: an :class:`Objective` (then ``targets`` is None and T = 1), or
        ``objective(target) -> Objective`` called with one target (a slice of
        ``targets`` along its leading axis, possibly traced).
      targets: a pytree of arrays (T, ...), or None.
      param: a :class:`Parameterisation`, or ``param(target) -> Parameterisation``
        (e.g. a pre-image started at each target's image).
      key: a ``jax.random.key`` (target t uses ``fold_in(key, t)``) or T keys
        (:func:`target_keys`).
      transforms: applied in order to each image before the net, with keys
        drawn independently per step and per image (Lucid's standard set).
      steps: optimiser steps (Lucid: 512).
      optimiser: an optax transformation (default ``optax.adam(0.05)``, Lucid).
      batch: B, images optimised jointly per target (diversity needs B > 1).
      chunk_size: targets per vmapped chunk (None: all at once).
      compute_dtype: dtype the transformed images are cast to before the net
        (``jnp.bfloat16`` runs the net in bf16; the parameters, the optimiser and
        the image stay in float32).
      rules: backward rules of the net (e.g. leaky ReLUs for activation maximisation).
      project: ``project(p) -> p`` applied after each step (a constraint set).

    Returns:
      :class:`RenderResult`: images (T, B, H, W, 3), history (T, steps) of the
      objective (before each step).
    """
    steps = check_int(steps, "steps")
    batch = check_int(batch, "batch")
    if isinstance(objective, Objective):
        if targets is not None:
            raise ValueError("targets: an Objective has no targets; pass objective(target) -> Objective")
        single, targets = objective, jnp.zeros((1,), jnp.int32)
        objective = lambda _: single            # noqa: E731
    elif not callable(objective):
        raise ValueError(f"objective: expected an Objective or a function target -> Objective, "
                         f"got {type(objective).__name__}")
    elif targets is None:
        raise ValueError("targets: objective is a function of the target; pass the targets (T, ...)")
    n = num_targets(targets)
    param_of = param if callable(param) and not isinstance(param, Parameterisation) else (lambda _: param)
    if not isinstance(param, Parameterisation) and not callable(param):
        raise ValueError(f"param: expected a Parameterisation, got {type(param).__name__}")
    transform = compose(*transforms)
    optimiser = optax.adam(0.05) if optimiser is None else optimiser
    project = (lambda p: p) if project is None else project
    first = objective(jax.tree.map(lambda a: a[0], targets))    # only its layers are read
    if not isinstance(first, Objective):
        raise ValueError(f"objective: objective(target) returned {type(first).__name__}, expected an Objective")
    check_layers(net, first.layers)

    def one_target(args):
        k, target = args
        obj, par = objective(target), param_of(target)
        k_init, k = jax.random.split(k)
        p0 = jax.vmap(par.init)(jax.random.split(k_init, batch))

        def energy(p, step):
            images = jax.vmap(par.to_image)(p)
            ks = jax.vmap(lambda b: jax.random.fold_in(jax.random.fold_in(k, step), b))(jnp.arange(batch))
            seen = jax.vmap(transform)(ks, images)
            if compute_dtype is not None:
                seen = seen.astype(compute_dtype)
            acts = activations(net, params, seen, obj.layers, rules=rules)
            return -obj(acts, images).astype(jnp.float32)

        def step(carry, i):
            p, state = carry
            loss, g = jax.value_and_grad(energy)(p, i)
            updates, state = optimiser.update(g, state, p)
            return (project(optax.apply_updates(p, updates)), state), -loss

        (p, _), history = jax.lax.scan(step, (p0, optimiser.init(p0)), jnp.arange(steps))
        return jax.vmap(par.to_image)(p), history

    keys = target_keys(key, n)
    if chunk_size is None or chunk_size >= n:
        images, history = jax.vmap(one_target)((keys, targets))
    else:
        chunk_size = check_int(chunk_size, "chunk_size")
        images, history = jax.lax.map(one_target, (keys, targets), batch_size=int(chunk_size))
    return RenderResult(images, history)
