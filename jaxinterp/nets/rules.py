"""Backward rules: how a net differentiates its ReLUs, max-pools, linear maps and sums.

Every zoo net routes five kinds of operation through a static :class:`Rules`
object instead of calling them directly:

* ``rules.relu(x)``                        rectified linear unit;
* ``rules.relu6(x)``                       ReLU clipped at 6 (MobileNet, EfficientNet-Lite);
* ``rules.max_pool(x, window, stride, padding)``  max-pooling (NHWC, -inf padding);
* ``rules.linear(f, x, *weights)``         an affine map ``f(x, *weights)`` of x
  (convolution, dense layer, eval-mode batch norm, average pooling);
* ``rules.add(a, b)``                      a residual sum.

The forward value of every rule is the standard one; a rule changes only the
backward pass, through :func:`jax.custom_vjp`.  ``jax.grad`` of a net applied
with ``rules=GUIDED`` is therefore guided backpropagation, under ``jit`` and
``vmap``, with no hooks.  :data:`STANDARD` (plain autodiff) is the default.

Rule sets provided: :data:`STANDARD`, :data:`GUIDED` (guided backprop),
:data:`DECONVNET` and :data:`BATCH_STATISTICS` here; LRP and excitation backprop in
:mod:`jaxinterp.nets.relevance_rules`, DeepLIFT in :mod:`jaxinterp.nets.deeplift_rules`.

A new rule set is a :meth:`Rules.replace` of an existing one::

    my_rules = STANDARD.replace(name="mine", relu=my_relu)

Rules are frozen dataclasses of module-level functions, hence hashable and
usable as static arguments of ``jax.jit``.

References:
  Zeiler and Fergus, "Visualizing and understanding convolutional networks",
  ECCV 2014 (deconvnet).
  Springenberg et al., "Striving for simplicity: the all convolutional net",
  ICLR workshop 2015 (guided backpropagation).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

__all__ = [
    "Rules",
    "STANDARD",
    "GUIDED",
    "standard_relu",
    "standard_relu6",
    "standard_max_pool",
    "standard_linear",
    "standard_add",
    "guided_relu",
    "guided_relu6",
    "DECONVNET",
    "deconvnet_relu",
    "deconvnet_relu6",
    "BATCH_STATISTICS",
    "batch_statistics_linear",
]


def standard_relu(x: jax.Array) -> jax.Array:
    """ReLU max(x, 0) with the standard derivative 1[x > 0]."""
    return jnp.maximum(x, 0)


def _relu6_value(x: jax.Array) -> jax.Array:
    return jnp.clip(x, 0, 6)


def _relu6_open_interval(x: jax.Array) -> jax.Array:
    """1[0 < x < 6]: where ReLU6 has slope 1 (its derivative, as PyTorch's ``hardtanh``)."""
    return (x > 0) & (x < 6)


def standard_relu6(x: jax.Array) -> jax.Array:
    """ReLU6 min(max(x, 0), 6) with PyTorch's derivative 1[0 < x < 6] (0 at both kinks)."""
    inside = _relu6_open_interval(x)
    return jnp.where(inside, x, lax.stop_gradient(_relu6_value(x)))


def standard_max_pool(x: jax.Array, window: int, stride: int, padding: int = 0) -> jax.Array:
    """Max-pooling of x (N, H, W, C) over window x window cells, padding with -inf.

    Matches ``torch.nn.MaxPool2d(window, stride, padding)`` (floor mode).
    """
    pad = ((0, 0), (padding, padding), (padding, padding), (0, 0))
    return lax.reduce_window(
        x, -jnp.inf, lax.max, (1, window, window, 1), (1, stride, stride, 1), pad
    )


def standard_linear(f: Callable[..., jax.Array], x: jax.Array, *weights) -> jax.Array:
    """Apply the affine map ``f(x, *weights)`` with its ordinary derivative."""
    return f(x, *weights)


def standard_add(a: jax.Array, b: jax.Array) -> jax.Array:
    """Residual sum a + b with the ordinary derivative (the gradient is copied)."""
    return a + b


@jax.custom_vjp
def guided_relu(x: jax.Array) -> jax.Array:
    """ReLU whose backward pass keeps only positive gradients at positive inputs.

    Forward: max(x, 0).  Backward: dL/dx = max(g, 0) * 1[x > 0], with g the
    incoming gradient (Springenberg et al. 2015).
    """
    return jnp.maximum(x, 0)


def _guided_relu_fwd(x):
    return jnp.maximum(x, 0), x


def _guided_relu_bwd(x, g):
    return (jnp.where((x > 0) & (g > 0), g, jnp.zeros_like(g)),)


guided_relu.defvjp(_guided_relu_fwd, _guided_relu_bwd)


@jax.custom_vjp
def guided_relu6(x: jax.Array) -> jax.Array:
    """ReLU6 whose backward pass keeps only positive gradients where its slope is 1.

    Forward: min(max(x, 0), 6).  Backward: dL/dx = max(g, 0) * 1[0 < x < 6].  Guided
    backprop multiplies the incoming gradient, rectified, by the forward derivative;
    a unit clipped at 6 has derivative 0 and passes nothing, as a unit below 0 (what
    Captum's ``GuidedBackprop`` does to a ReLU whose forward is a clamp to [0, 6]).
    """
    return _relu6_value(x)


def _guided_relu6_fwd(x):
    return _relu6_value(x), x


def _guided_relu6_bwd(x, g):
    return (jnp.where(_relu6_open_interval(x) & (g > 0), g, jnp.zeros_like(g)),)


guided_relu6.defvjp(_guided_relu6_fwd, _guided_relu6_bwd)


@jax.custom_vjp
def deconvnet_relu(x: jax.Array) -> jax.Array:
    """ReLU whose backward pass rectifies the incoming gradient and ignores the input's sign.

    Forward: max(x, 0).  Backward: dL/dx = max(g, 0) (Zeiler and Fergus 2014:
    the deconvnet passes the reconstruction through a ReLU, not through the
    forward pass's mask).
    """
    return jnp.maximum(x, 0)


def _deconvnet_relu_fwd(x):
    return jnp.maximum(x, 0), None


def _deconvnet_relu_bwd(_, g):
    return (jnp.maximum(g, 0),)


deconvnet_relu.defvjp(_deconvnet_relu_fwd, _deconvnet_relu_bwd)


@jax.custom_vjp
def deconvnet_relu6(x: jax.Array) -> jax.Array:
    """ReLU6 whose backward pass rectifies the incoming gradient and ignores the input.

    Forward: min(max(x, 0), 6).  Backward: dL/dx = max(g, 0).  The deconvnet keeps
    no switch of a non-linearity from the forward pass (only those of max-pools), so
    the clip at 6 is ignored as the clip at 0 is (what Captum's ``Deconvolution``
    does to a ReLU whose forward is a clamp to [0, 6]).
    """
    return _relu6_value(x)


def _deconvnet_relu6_fwd(x):
    return _relu6_value(x), None


deconvnet_relu6.defvjp(_deconvnet_relu6_fwd, _deconvnet_relu_bwd)


@dataclasses.dataclass(frozen=True)
class Rules:
    """A static set of backward rules used by every net of the zoo.

    Attributes:
      name: a short name, shown in reprs and reports.
      relu: ``relu(x) -> y``.
      relu6: ``relu6(x) -> min(max(x, 0), 6)``.
      max_pool: ``max_pool(x, window, stride, padding) -> y`` on NHWC input.
      linear: ``linear(f, x, *weights) -> f(x, *weights)``; f is affine in x.
      add: ``add(a, b) -> a + b`` for residual connections.
    """

    name: str = "standard"
    relu: Callable[[jax.Array], jax.Array] = standard_relu
    relu6: Callable[[jax.Array], jax.Array] = standard_relu6
    max_pool: Callable[..., jax.Array] = standard_max_pool
    linear: Callable[..., jax.Array] = standard_linear
    add: Callable[[jax.Array, jax.Array], jax.Array] = standard_add

    def replace(self, **changes) -> "Rules":
        """Return a copy with some rules replaced (e.g. ``relu=guided_relu``)."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ValueError(f"changes: unknown rule(s) {sorted(unknown)}; "
                             f"expected some of {[f.name for f in dataclasses.fields(self)]}")
        return dataclasses.replace(self, **changes)


STANDARD = Rules()
"""Plain automatic differentiation."""

GUIDED = STANDARD.replace(name="guided", relu=guided_relu, relu6=guided_relu6)
"""Guided backpropagation (Springenberg et al. 2015): ReLU passes max(g, 0) * 1[x > 0],
ReLU6 max(g, 0) * 1[0 < x < 6]."""

DECONVNET = STANDARD.replace(name="deconvnet", relu=deconvnet_relu, relu6=deconvnet_relu6)
"""Deconvnet (Zeiler and Fergus 2014): ReLU and ReLU6 pass max(g, 0); max-pools route by their switches."""


def batch_statistics_linear(f: Callable[..., jax.Array], x: jax.Array, *weights) -> jax.Array:
    """``rules.linear`` with training-mode batch norm: a norm layer uses the statistics of ``x``.

    For a batch norm (:func:`linear_kind` ``'norm'``: ``f`` is
    :func:`~jaxinterp.nets.layers.batch_norm_eval` with its eps, ``weights`` =
    (scale, bias, mean, var)), the stored mean and variance are ignored and
    :func:`~jaxinterp.nets.layers.batch_norm_train` normalises by the mean and
    biased variance of ``x`` over the batch and spatial axes, as a PyTorch
    ``BatchNorm2d`` in training mode (which, unlike this pure function, also
    updates its running statistics: recompute them for evaluation with
    :func:`jaxinterp.nets.recompute_batch_norm`).  Every other map is ``f(x, *weights)``.
    """
    if linear_kind(f) != "norm":
        return f(x, *weights)
    from jaxinterp.nets import layers as L       # layers imports this module
    scale, bias = weights[:2]
    return L.batch_norm_train(x, scale, bias, f.keywords.get("eps", 1e-5))


BATCH_STATISTICS = STANDARD.replace(name="batch_statistics", linear=batch_statistics_linear)
"""Training-mode forward pass: batch norms normalise by the batch's own statistics.

Ordinary derivatives, through the statistics too (as PyTorch's training mode).  The
output of one example depends on the whole batch, so it does not commute with a vmap
over images; under ``jax.jit`` on a batch sharded over devices the statistics are the
global batch's (synchronised batch norm)."""


# ============================================================================
# The affine maps routed through ``rules.linear``.  A rule that treats weights and
# biases apart (LRP and excitation backprop in :mod:`jaxinterp.nets.relevance_rules`,
# FullGrad's bias probes) identifies the map from ``f`` (:func:`linear_kind`) and splits
# it into a linear part and a bias (:func:`affine_parts`), so that one definition
# serves convolutions, dense layers, eval batch norms and average pools.

__all__ += ["linear_kind", "affine_parts", "AffineParts", "LINEAR_KINDS"]

LINEAR_KINDS = ("conv", "dense", "norm", "pool", "other")
"""What :func:`linear_kind` can return."""


def _base_function(f: Callable) -> Callable:
    while isinstance(f, functools.partial):
        f = f.func
    return f


@functools.lru_cache(maxsize=1)
def _kind_table() -> dict:
    # Imported here: layers imports this module.
    from jaxinterp.nets import layers as L
    return {L.conv2d: "conv", L.dense: "dense", L.batch_norm_eval: "norm",
            L.adaptive_avg_pool: "pool", L.global_avg_pool: "pool"}


def linear_kind(f: Callable) -> str:
    """The kind of an affine map routed through ``rules.linear``.

    ``f`` is one of the zoo's pure functions of :mod:`jaxinterp.nets.layers`,
    possibly wrapped in :func:`functools.partial` (a convolution carries its
    stride and padding, a batch norm its eps, an adaptive pool its output size).

    Returns:
      ``'conv'`` (:func:`~jaxinterp.nets.layers.conv2d`), ``'dense'``
      (:func:`~jaxinterp.nets.layers.dense`), ``'norm'``
      (:func:`~jaxinterp.nets.layers.batch_norm_eval`), ``'pool'`` (adaptive or
      global average pooling) or ``'other'`` (any other affine map).
    """
    return _kind_table().get(_base_function(f), "other")


class AffineParts(NamedTuple):
    """An affine map split as ``f(x, *w) = lin(x, kernel) + bias`` (see :func:`affine_parts`)."""

    kind: str
    lin: Callable
    kernel: jax.Array | None
    bias: jax.Array | None


def affine_parts(f: Callable, x: jax.Array, weights: tuple) -> AffineParts:
    """Split ``f(x, *weights)`` into a linear map ``lin(x, kernel)`` and a bias.

    * conv / dense: ``lin(x, k) = f(x, k)`` (no bias), ``kernel = weights[0]``,
      ``bias = weights[1]`` (None without one);
    * norm: the per-channel affine map ``x * kernel + bias`` of eval batch norm,
      kernel = scale / sqrt(var + eps), bias = b - mean * kernel (read off f);
    * pool: ``lin(x, None) = f(x)``, ``kernel = None`` (all weights positive), no bias;
    * other: ``lin(x, None) = f(x, *weights) - f(0, *weights)``, ``bias = f(0, *weights)``.

    ``lin`` is linear in x; a ``kernel`` of None stands for a fixed map with
    non-negative weights.
    """
    kind = linear_kind(f)
    if kind in ("conv", "dense"):
        return AffineParts(kind, lambda a, k: f(a, k), weights[0],
                           weights[1] if len(weights) > 1 else None)
    if kind == "norm":
        c = x.shape[-1]
        bias = f(jnp.zeros((c,), x.dtype), *weights)
        kernel = f(jnp.ones((c,), x.dtype), *weights) - bias
        return AffineParts(kind, lambda a, k: a * k, kernel, bias)
    if kind == "pool":
        return AffineParts(kind, lambda a, k: f(a), None, None)
    zero = f(jnp.zeros_like(x), *weights)
    return AffineParts(kind, lambda a, k: f(a, *weights) - zero, None, zero)
