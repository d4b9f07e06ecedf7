"""The Net facade: a static, hashable description of a network with pure ``init`` / ``apply``.

A zoo model is a Flax NNX module that lists its *stages*: named functions
``(x, rules) -> x`` executed in order.  The names of the stages are the split
points (``'features.29'``, ``'layer3'``, ``'blocks.11'``), following
torchvision / timm naming.  The facade splits the module once (``nnx.split``)
into a static graph and a params pytree (a nested dict of arrays), so

    params = net.init(key)
    y = net.apply(params, x)                 # logits
    a = net.apply(params, x, stop="layer3")  # activation at a split point
    y = net.apply(params, a, start="layer3") # the rest of the net

is a pure function of (params, x) that composes with jit, grad and vmap
(``jax.vmap(net.apply, (0, None))`` over a stack of params works), and
``apply(apply(x, stop=l), start=l) == apply(x)`` for every split point l.

Besides split points a net may expose *taps*: values computed inside a stage
that are not on the main path (the ViT's attention probabilities and keys).
A tap can be a ``stop`` but never a ``start``.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxinterp.checks import check_int
from jaxinterp.nets import layers as L
from jaxinterp.nets.rules import STANDARD, Rules

__all__ = ["Net", "get", "names", "register", "batch_norm_layers", "recompute_batch_norm"]

Params = dict
Stage = tuple[str, Callable[[jax.Array, Rules], jax.Array]]

_REGISTRY: dict[str, tuple[type, dict[str, Any]]] = {}


def register(name: str, module_cls: type, **defaults) -> None:
    """Register an NNX model class under ``name`` with default constructor arguments.

    The class is built as ``module_cls(**config, rngs=nnx.Rngs(params=key))`` and must
    provide ``stages() -> list[(name, fn(x, rules))]`` and the class attributes
    ``MEAN``, ``STD`` (input normalisation) and ``INPUT_SIZE`` (default (H, W));
    optionally ``ALIASES`` ({alias: stage}) and ``taps() -> {name: (stage, fn(x, rules))}``.
    """
    _REGISTRY[name] = (module_cls, defaults)


def names() -> tuple[str, ...]:
    """Names accepted by :func:`get`."""
    return tuple(sorted(_REGISTRY))


def get(name: str, **config) -> "Net":
    """The net called ``name`` (see :func:`names`), with optional constructor overrides.

    Args:
      name: e.g. ``'smallcnn'``, ``'alexnet'``, ``'vgg16'``, ``'resnet50'``, ``'vit_s16'``.
      **config: constructor arguments, e.g. ``num_classes=20``.

    Returns:
      A frozen, hashable :class:`Net`.

    Examples:
      >>> import jax
      >>> from jaxinterp import nets
      >>> net = nets.get("smallcnn")
      >>> params = net.init(jax.random.key(0))
      >>> x = jax.numpy.zeros((2, 64, 64, 3))             # RGB in [0, 1], NHWC
      >>> net.apply(params, x).shape
      (2, 8)
      >>> feats = net.apply(params, x, stop="features.5")  # up to a split point
      >>> feats.shape
      (2, 16, 16, 64)
      >>> net.apply(params, feats, start="features.5").shape   # exactly the rest
      (2, 8)
    """
    if name not in _REGISTRY:
        raise ValueError(f"name: unknown net {name!r}; expected one of {list(names())}")
    cls, defaults = _REGISTRY[name]
    unknown = set(config) - set(defaults)
    if unknown:
        raise ValueError(f"config: {name} takes no argument(s) {sorted(unknown)}; "
                         f"expected some of {sorted(defaults)}")
    merged = {**defaults, **config}
    return Net(name, tuple(sorted(merged.items())))


# -- pure init / apply of any NNX module ---------------------------------------------------------------
# The zoo's nets and the networks outside the zoo (nets.dip_skip, nets.decoder, nets.dino_head) are
# NNX modules whose params travel as plain nested dicts: built once per configuration as a graph
# without weights (``nnx.eval_shape``, ``nnx.split``), merged with a params dict on every call.


@functools.lru_cache(maxsize=None)
def module_graph(cls: type, config: tuple = ()) -> tuple[Any, Params]:
    """(graphdef, abstract params) of ``cls(**dict(config), rngs=...)``, built once without allocating weights.

    Args:
      cls: an ``nnx.Module`` class taking ``rngs`` as a keyword.
      config: its other constructor arguments as sorted (key, value) pairs (hashable).

    Returns:
      The graph (static structure) and the params as a nested dict of ``jax.ShapeDtypeStruct``.
    """
    abstract = nnx.eval_shape(lambda: cls(**dict(config), rngs=nnx.Rngs(params=0)))
    graphdef, state = nnx.split(abstract)
    return graphdef, nnx.to_pure_dict(state)


@functools.lru_cache(maxsize=None)
def module_init(cls: type, config: tuple = ()) -> Callable[[jax.Array], Params]:
    """A jitted ``key -> params`` of ``cls(**dict(config), rngs=nnx.Rngs(params=key))``.

    Compiled once per (class, config), so repeated inits are cheap; the params are
    ``nnx.to_pure_dict`` of the module's state (every variable, a nested dict of arrays).
    """
    def init(key):
        module = cls(**dict(config), rngs=nnx.Rngs(params=key))
        return nnx.to_pure_dict(nnx.state(module))

    return jax.jit(init)


def module_merge(cls: type, config: tuple, params: Params) -> nnx.Module:
    """The module ``cls(**dict(config))`` holding ``params`` (``nnx.merge`` with the cached graph).

    The arrays are not copied: under ``jit`` or ``vmap`` they are the tracers of ``params``.
    """
    return nnx.merge(module_graph(cls, config)[0], params)


def check_params_tree(params, expected: Params, owner: str, source: str, *, arg: str = "params") -> None:
    """ValueError naming ``arg`` unless the tree and leaf shapes of ``params`` are those of ``expected``.

    Args:
      params: the params given.
      expected: the params' structure (e.g. :func:`module_graph`'s abstract params).
      owner: what the params are for, in the messages (e.g. ``"Net('smallcnn')"``).
      source: where right params come from, in the messages (e.g. ``"the output of net.init"``).
      arg: the name of the argument, in the messages.
    """
    if jax.tree.structure(params) != jax.tree.structure(expected):
        raise ValueError(f"{arg}: structure does not match {owner}; expected {source}")
    for (path, a), b in zip(jax.tree.leaves_with_path(params), jax.tree.leaves(expected)):
        shape = tuple(getattr(a, "shape", ()))
        if shape != tuple(b.shape):
            raise ValueError(f"{arg}: {jax.tree_util.keystr(path)} has shape {shape}, "
                             f"expected {tuple(b.shape)} for {owner}")


def _graph(name: str, config: tuple) -> tuple[Any, Any]:
    """(graphdef, abstract params) of a net of the zoo."""
    return module_graph(_REGISTRY[name][0], config)


def _init_fn(name: str, config: tuple) -> Callable[[jax.Array], Params]:
    """A jitted ``key -> params`` of a net of the zoo (compiled once per net)."""
    return module_init(_REGISTRY[name][0], config)


@dataclasses.dataclass(frozen=True)
class Net:
    """A network of the zoo: static, hashable, usable as a ``jax.jit`` static argument.

    Attributes:
      name: the zoo name.
      config: constructor arguments as sorted (key, value) pairs.
    """

    name: str
    config: tuple = ()

    # -- static description -------------------------------------------------

    @property
    def module_cls(self) -> type:
        return _REGISTRY[self.name][0]

    @property
    def num_classes(self) -> int:
        """Width of the final output (0 for a headless net, which returns features)."""
        return dict(self.config).get("num_classes", 0)

    @property
    def mean(self) -> tuple[float, float, float]:
        """The RGB colour the net's input normalisation maps to zero (its "neutral" colour)."""
        return tuple(float(v) for v in self.module_cls.MEAN)

    @property
    def input_size(self) -> tuple[int, int]:
        """The (H, W) the net was designed for (any size the stages accept works)."""
        return self.module_cls.INPUT_SIZE

    @functools.cached_property
    def _stage_names(self) -> tuple[str, ...]:
        graphdef, abstract = _graph(self.name, self.config)
        return tuple(n for n, _ in nnx.merge(graphdef, abstract).stages())

    @functools.cached_property
    def _aliases(self) -> dict[str, str]:
        return dict(getattr(self.module_cls, "ALIASES", {}))

    @functools.cached_property
    def layers(self) -> tuple[str, ...]:
        """Split points in forward order (an alias follows the stage it names)."""
        by_target: dict[str, list[str]] = {}
        for alias, target in self._aliases.items():
            by_target.setdefault(target, []).append(alias)
        out = []
        for n in self._stage_names:
            out.append(n)
            out.extend(by_target.get(n, []))
        return tuple(out)

    @functools.cached_property
    def taps(self) -> tuple[str, ...]:
        """Values exposed inside a stage (valid for ``stop`` only), e.g. ViT attention."""
        graphdef, abstract = _graph(self.name, self.config)
        module = nnx.merge(graphdef, abstract)
        return tuple(module.taps()) if hasattr(module, "taps") else ()

    # -- params ---------------------------------------------------------------

    def init(self, key: jax.Array) -> Params:
        """Random params (torchvision / timm initialisers) as a nested dict of float32 arrays.

        Args:
          key: a ``jax.random.key``.

        Returns:
          params: nested dict; leaves are arrays in JAX layout (HWIO kernels).
        """
        return _init_fn(self.name, self.config)(key)

    def abstract_params(self) -> Params:
        """The params' structure as ``jax.ShapeDtypeStruct`` leaves (no allocation)."""
        return _graph(self.name, self.config)[1]

    # -- forward --------------------------------------------------------------

    def apply(self, params: Params, x: jax.Array, *, start: str | None = None,
              stop: str | None = None, rules: Rules | None = None,
              capture: tuple[str, ...] | None = None):
        """Run the net, or the part of it between two split points.

        Args:
          params: from :meth:`init` or :func:`jaxinterp.nets.load`.
          x: if ``start`` is None, images (N, H, W, 3), float RGB in [0, 1] (the net
            normalises inside); otherwise the activation at split point ``start``.
          start: run from just after this split point (None: from the image).
          stop: return the activation at this split point or tap (None: the output).
          rules: backward rules (:mod:`jaxinterp.nets.rules`); None = STANDARD.
          capture: split points or taps to read on the way, in one forward pass;
            each must come after ``start`` and no later than ``stop``.

        Returns:
          The output (N, num_classes), or the activation at ``stop`` (NHWC for conv
          layers, (N, tokens, D) for ViT blocks).  With ``capture``, the pair
          ``(that, {name: activation})``.

        Examples:
          >>> import jax
          >>> from jaxinterp import nets
          >>> net = nets.get("smallcnn")
          >>> params = net.init(jax.random.key(0))
          >>> x = jax.numpy.zeros((2, 64, 64, 3))
          >>> logits, acts = net.apply(params, x, capture=("features.2", "features.5"))
          >>> logits.shape, acts["features.5"].shape
          ((2, 8), (2, 16, 16, 64))
        """
        rules = STANDARD if rules is None else rules
        if not isinstance(rules, Rules):
            raise ValueError(f"rules: expected a jaxinterp.nets.rules.Rules, got {type(rules).__name__}")
        i0, i1, tap = self._span(start, stop)
        self._check_input(x, start)
        self.check_params(params)
        graphdef, _ = _graph(self.name, self.config)
        module = nnx.merge(graphdef, params)
        stages = module.stages()
        after, before = self._capture_points(capture, i0, i1, tap)
        taps = module.taps() if before or tap is not None else {}
        captured = {}
        if start is None:
            x = L.normalise(x, module.MEAN, module.STD)
        for i in range(i0, i1):
            for name in before.get(i, ()):
                captured[name] = taps[name][1](x, rules)
            x = stages[i][1](x, rules)
            for name in after.get(i, ()):
                captured[name] = x
        for name in before.get(i1, ()):
            captured[name] = taps[name][1](x, rules)
        if tap is not None:
            x = taps[tap][1](x, rules)
        return x if capture is None else (x, captured)

    def _capture_points(self, capture, i0: int, i1: int, tap: str | None):
        """``capture`` as {stage index: names read after it} and {stage index: taps read before it}."""
        if capture is None:
            return {}, {}
        if isinstance(capture, str) or not isinstance(capture, (tuple, list)) \
                or not all(isinstance(c, str) for c in capture):
            raise ValueError(f"capture: expected a tuple of split point or tap names, got {capture!r}")
        after, before = {}, {}
        for name in capture:
            if name in self.taps:
                graphdef, abstract = _graph(self.name, self.config)
                k = self._index(nnx.merge(graphdef, abstract).taps()[name][0], "capture")
                ok = i0 <= k < i1 or (k == i1 and tap is not None)
                before.setdefault(k, []).append(name)
            else:
                k = self._index(name, "capture")
                ok = i0 <= k < i1
                after.setdefault(k, []).append(name)
            if not ok:
                raise ValueError(f"capture: {name!r} does not lie between start and stop in {self.name}")
        return after, before

    def _index(self, name: str, arg: str) -> int:
        target = self._aliases.get(name, name)
        try:
            return self._stage_names.index(target)
        except ValueError:
            raise ValueError(f"{arg}: unknown split point {name!r} of {self.name}; "
                             f"expected one of {list(self.layers)}") from None

    def _span(self, start, stop) -> tuple[int, int, str | None]:
        """Stage index range [i0, i1) to run and the tap to read at the end (or None)."""
        i0 = 0 if start is None else self._index(start, "start") + 1
        tap = None
        if stop is None:
            i1 = len(self._stage_names)
        elif stop in self.taps:
            graphdef, abstract = _graph(self.name, self.config)
            stage = nnx.merge(graphdef, abstract).taps()[stop][0]
            i1, tap = self._index(stage, "stop"), stop
        else:
            i1 = self._index(stop, "stop") + 1
        if i1 < i0:
            raise ValueError(f"start: split point {start!r} comes after stop {stop!r} "
                             f"in {self.name}; expected start before stop")
        return i0, i1, tap

    def check_params(self, params) -> None:
        """ValueError naming ``params`` unless its tree and leaf shapes are those of ``net.init``."""
        check_params_tree(params, self.abstract_params(), repr(self),
                          f"the output of net.init or nets.load({self.name!r}, ...)")

    def _check_input(self, x, start) -> None:
        if not hasattr(x, "shape") or not hasattr(x, "dtype"):
            raise ValueError(f"x: expected an array, got {type(x).__name__}")
        if not jnp.issubdtype(x.dtype, jnp.floating):
            raise ValueError(f"x: expected a floating dtype (float32), got {x.dtype}")
        if start is not None:
            return
        if x.ndim != 4:
            raise ValueError(f"x: expected images of rank 4 (N, H, W, 3), got shape {x.shape}")
        if x.shape[-1] != 3:
            raise ValueError(f"x: expected 3 RGB channels last (N, H, W, 3), got shape {x.shape}")
        if not isinstance(x, jax.core.Tracer) and x.size:
            lo, hi = float(np.min(np.asarray(x))), float(np.max(np.asarray(x)))
            if not (lo >= 0.0 and hi <= 1.0):
                raise ValueError(f"x: expected pixel values in [0, 1], got range [{lo:.4g}, {hi:.4g}]")

    def activation_shape(self, layer: str | None = None,
                         image_size: tuple[int, int] | None = None) -> tuple[int, ...]:
        """Shape of the activation at ``layer`` (or the output) for one image, without compute.

        Traced once per (net, layer, image size) and remembered: methods ask for it
        while they are traced, and tracing a whole net costs about a second.
        """
        if layer is not None and not isinstance(layer, str):
            raise ValueError(f"layer: expected a split point name (str) or None, got {layer!r}")
        if image_size is None:
            hw = self.input_size
        else:
            try:
                hw = tuple(int(s) for s in image_size)
            except (TypeError, ValueError):
                hw = ()
            if len(hw) != 2 or min(hw) < 1:
                raise ValueError(f"image_size: expected (H, W) positive ints, got {image_size!r}")
        return _activation_shape(self, layer, hw)

    def __repr__(self) -> str:
        cfg = ", ".join(f"{k}={v!r}" for k, v in self.config)
        return f"Net({self.name!r}{', ' + cfg if cfg else ''})"


def count_params(params: Params) -> int:
    """Number of scalars in a params pytree."""
    return int(sum(np.prod(a.shape) for a in jax.tree.leaves(params)))


@functools.lru_cache(maxsize=None)
def _activation_shape(net: Net, layer: str | None, hw: tuple[int, int]) -> tuple[int, ...]:
    x = jax.ShapeDtypeStruct((1, *hw, 3), jnp.float32)
    out = jax.eval_shape(lambda p, x: net.apply(p, x, stop=layer), net.abstract_params(), x)
    return tuple(out.shape[1:])


@functools.partial(jax.jit, static_argnums=(0, 3))
def _activation(net: Net, params: Params, x: jax.Array, stop: str) -> jax.Array:
    return net.apply(params, x, stop=stop)


def batch_norm_layers(net: Net) -> tuple[str, ...]:
    """The split points of ``net`` that are batch norms, in forward order (() for none)."""
    graphdef, abstract = _graph(net.name, net.config)
    return tuple(name for name, fn in nnx.merge(graphdef, abstract).stages() if isinstance(fn, L.BatchNorm))


def _count_batch_norms(params) -> int:
    if not isinstance(params, dict):
        return 0
    if {"scale", "bias", "mean", "var"} <= set(params):
        return 1
    return sum(_count_batch_norms(v) for v in params.values())


def recompute_batch_norm(net: Net, params: Params, images, *, batch_size: int = 256) -> Params:
    """``params`` whose batch norms hold the population statistics of ``images`` ("precise BN").

    A net trained with :data:`~jaxinterp.nets.rules.BATCH_STATISTICS` (batch norms on
    each batch's statistics) needs stored statistics for inference.  Instead of
    PyTorch's running averages, updated during training, they are recomputed from
    data after it, as the precise BN of Wu and Johnson (2021): in forward order, each
    batch norm's mean and biased variance over all ``images`` (and positions) of its
    input, computed with the batch norms before it already updated.  Then
    ``net.apply(new, images)`` equals ``net.apply(params, images, rules=BATCH_STATISTICS)``
    on all the images as one batch, but each image's output depends on it alone.

    Args:
      net: a net whose batch norms are all split points (``nets.get('smallcnn',
        batch_norm=True)``; not resnet50, whose norms sit inside its blocks).
      params: its params.
      images: (N, H, W, 3) float in [0, 1] or uint8 in [0, 255] (numpy, a memmap or jax;
        read ``batch_size`` at a time).
      batch_size: images per forward pass, >= 1.

    Returns:
      params with every batch norm's ``mean`` and ``var`` replaced (float32).

    References:
      Wu and Johnson, "Rethinking 'Batch' in BatchNorm", arXiv 2105.07576, 2021.
    """
    stages = batch_norm_layers(net)
    if not stages or _count_batch_norms(params) != len(stages):
        raise ValueError(f"net: expected a net whose batch norms are all split points; {net!r} has "
                         f"{_count_batch_norms(params)} batch norms, {len(stages)} of them split points")
    shape = getattr(images, "shape", None)
    dtype = getattr(images, "dtype", None)
    if shape is None or len(shape) != 4 or shape[0] < 1 or not (dtype == np.uint8 or np.issubdtype(dtype, np.floating)):
        raise ValueError(f"images: expected float or uint8 images (N >= 1, H, W, 3), got {shape} {dtype}")
    batch_size = check_int(batch_size, "batch_size")
    params = jax.tree.map(lambda a: a, params)             # new dicts, same leaves
    for name in stages:
        before = net.layers[net.layers.index(name) - 1]
        total, sq, count = 0.0, 0.0, 0
        for i in range(0, shape[0], batch_size):
            x = np.asarray(images[i:i + batch_size])
            x = x.astype(np.float32) / np.float32(255) if x.dtype == np.uint8 else x.astype(np.float32)
            a = np.asarray(_activation(net, params, jnp.asarray(x), before), np.float64)
            a = a.reshape(-1, a.shape[-1])
            total, sq, count = total + a.sum(0), sq + np.square(a).sum(0), count + a.shape[0]
        mean = total / count
        node = params
        for part in name.split("."):
            node = node[part]
        node["mean"] = jnp.asarray(mean, jnp.float32)
        node["var"] = jnp.asarray(np.maximum(sq / count - np.square(mean), 0.0), jnp.float32)
    return params
