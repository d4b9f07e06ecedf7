"""The conductance family: layer conductance, neuron conductance and internal influence.

All integrate along the straight path x(alpha) = x0 + alpha (x - x0) from a
baseline x0 to the image x, as integrated gradients does, with its quadrature
rules (:func:`jaxinterp.attribution.gradient.quadrature`), but attribute to or
through a hidden layer: the net is cut at the split point ``layer`` into a head
a = h(x) and a tail s_t(a).  The steps run inside one compiled call,
``chunk_size`` of them vmapped at a time.  The conventions are Captum 0.9's
(``LayerConductance``, ``NeuronConductance``, ``InternalInfluence``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxinterp.checks import check_baseline, is_concrete
from jaxinterp.targets import chunked_sum, input_gradient, lift
from jaxinterp.attribution._lift import check_backprop_args, finish_maps
from jaxinterp.attribution.gradient import quadrature
from jaxinterp.nets import Net

__all__ = ["layer_conductance", "neuron_conductance", "internal_influence"]


def _check_layer_given(layer) -> str:
    if layer is None:
        raise ValueError("layer: a split point of the net is required")
    return layer


def _head(net: Net, params, layer: str):
    """One image (H, W, 3) -> its activation at ``layer`` (no batch axis)."""
    return lambda x1: net.apply(params, x1[None], stop=layer)[0]


def layer_conductance(net: Net, params, x: jax.Array, target, *, layer: str, baseline=0.0,
                      steps: int = 50, method: str = "gausslegendre", reduce: str | None = "sum",
                      resize: bool = True, chunk_size: int | None = None) -> jax.Array:
    """Layer conductance: the flow of the score's change through each unit of ``layer``.

    Cond(a_j) = integral_0^1 d s_t / d a_j (x(alpha)) * d a_j(x(alpha)) / d alpha  d alpha,
    the integrated gradients of the input summed through unit j (Dhamdhere et al.).
    As Captum's ``LayerConductance`` the integral is the sum over the ``steps + 1``
    nodes alpha_0 < ... < alpha_steps of the quadrature ``method`` (its weights unused)::

        Cond(a_j) = sum_k  d s_t / d a_j (x(alpha_k)) * (a_j(x(alpha_{k+1})) - a_j(x(alpha_k)))

    so summed over all units of the layer it approximates s_t(x(alpha_steps)) -
    s_t(x(alpha_0)): s_t(x) - s_t(x0) for ``'riemann_trapezoid'``, whose nodes
    include 0 and 1 (Gauss-Legendre nodes, Captum's default, stop short of both ends).

    Args:
      net, params, x, target: as :func:`~jaxinterp.attribution.gradient` (units
        as targets must come after ``layer``).
      layer: the split point whose units are attributed (required).
      baseline: pixel baseline in [0, 1]: a scalar (black, 0, by default), a colour
        (3,), an image (H, W, 3) or images (N, H, W, 3).
      steps: number of path segments (> 0); ``steps + 1`` nodes.
      method: one of :data:`~jaxinterp.attribution.QUADRATURES` (the nodes).
      reduce, resize: the layer map's channel reduction and resizing, as
        ``gradient(layer=...)``; ``reduce=None, resize=False`` gives Captum's
        per-unit conductance (N, T, h, w, C).
      chunk_size: segments per vmapped chunk (None: all at once).

    Returns:
      maps: (N, T, H, W) (or (N, T, h, w) with ``resize=False``; a trailing channel
      axis with ``reduce=None``).

    Raises:
      ValueError naming ``x``, ``target``, ``layer``, ``baseline``, ``steps``, ``method``,
      ``reduce`` or ``chunk_size``.

    References:
      Dhamdhere, Sundararajan and Yan, "How important is a neuron?", ICLR 2019.
    """
    x, targets = check_backprop_args(net, x, target, _check_layer_given(layer), resize, reduce)
    alphas = jnp.asarray(quadrature(method, steps + 1)[0], x.dtype)
    head = _head(net, params, layer)

    def one(pair, t):
        x1, b1 = pair

        def segment(ends):
            lo, hi = ends
            a_lo = head(b1 + lo * (x1 - b1))
            grad = input_gradient(net, params, a_lo, t, start=layer)
            return grad * (head(b1 + hi * (x1 - b1)) - a_lo)

        return chunked_sum(segment, (alphas[:-1], alphas[1:]), chunk_size)

    maps = lift(one)((x, check_baseline(baseline, x)), targets)
    return finish_maps(maps, reduce, layer, resize, x.shape[1:3])


def internal_influence(net: Net, params, x: jax.Array, target, *, layer: str, baseline=0.0,
                       steps: int = 50, method: str = "gausslegendre", reduce: str | None = "sum",
                       resize: bool = True, chunk_size: int | None = None) -> jax.Array:
    """Internal influence: the gradient at ``layer`` integrated along the path from the baseline.

    II(a_j) = integral_0^1 d s_t / d a_j (x(alpha)) d alpha, approximated by the
    quadrature ``method`` on ``steps`` nodes (weights included), as Captum's
    ``InternalInfluence``: integrated gradients at a layer without the
    multiplication by the activation's change.

    Args:
      as :func:`layer_conductance`; ``steps`` is the number of quadrature nodes.

    Returns:
      maps: as :func:`layer_conductance`.

    Raises:
      as :func:`layer_conductance`.

    References:
      Leino et al., "Influence-directed explanations for deep convolutional
      networks", ITC 2018.
    """
    x, targets = check_backprop_args(net, x, target, _check_layer_given(layer), resize, reduce)
    alphas, weights = quadrature(method, steps)
    nodes = (jnp.asarray(alphas, x.dtype), jnp.asarray(weights, x.dtype))
    head = _head(net, params, layer)

    def one(pair, t):
        x1, b1 = pair

        def weighted_gradient(node):
            alpha, w = node
            return w * input_gradient(net, params, head(b1 + alpha * (x1 - b1)), t, start=layer)

        return chunked_sum(weighted_gradient, nodes, chunk_size)

    maps = lift(one)((x, check_baseline(baseline, x)), targets)
    return finish_maps(maps, reduce, layer, resize, x.shape[1:3])


def _check_neuron(net: Net, layer: str, neuron, image_size) -> tuple:
    """The neuron's index tuple; bounds checked on concrete entries; ValueError naming ``neuron``."""
    shape = net.activation_shape(layer, image_size)
    if not isinstance(neuron, (tuple, list)) or len(neuron) != len(shape):
        raise ValueError(f"neuron: expected a tuple of {len(shape)} indices into the activation "
                         f"{shape} of {layer!r}, got {neuron!r}")
    for i, n in zip(neuron, shape):
        if not is_concrete(i):
            continue
        if not jnp.issubdtype(jnp.asarray(i).dtype, jnp.integer) or jnp.ndim(i) or not 0 <= int(i) < n:
            raise ValueError(f"neuron: expected {len(shape)} integer indices within the activation "
                             f"{shape} of {layer!r}, got {neuron!r}")
    return tuple(neuron)


def neuron_conductance(net: Net, params, x: jax.Array, target, *, layer: str, neuron, baseline=0.0,
                       steps: int = 50, method: str = "gausslegendre", reduce: str | None = "sum",
                       chunk_size: int | None = None) -> jax.Array:
    """Neuron conductance: the part of each pixel's integrated gradient that flows through one neuron.

    For the neuron a_n = h_n(x) at ``layer``::

        NC(x_i) = (x_i - x0_i) * integral_0^1 d s_t / d a_n (x(alpha)) * d a_n / d x_i (x(alpha)) d alpha

    with the quadrature ``method`` on ``steps`` nodes, as Captum's
    ``NeuronConductance`` (whose default method is ``'riemann_trapezoid'``; ours is
    Gauss-Legendre, as integrated gradients').  Summed over the neurons of a
    layer it gives the input's integrated gradients.

    Args:
      net, params, x, target, layer, baseline, steps, method, chunk_size: as
        :func:`internal_influence`.
      neuron: tuple of int indices into one example's activation at ``layer``,
        (y, x, channel) for a (h, w, C) activation (NHWC: Captum's
        ``neuron_selector`` (channel, y, x) reordered), (j,) for a vector; Python
        ints (bounds checked) or int scalars that may be traced (``vmap`` over neurons).
      reduce: channel reduction of the pixel attributions (None keeps them).

    Returns:
      maps: (N, T, H, W) (a trailing channel axis with ``reduce=None``).

    Raises:
      ValueError naming ``x``, ``target``, ``layer``, ``neuron``, ``baseline``, ``steps``,
      ``method``, ``reduce`` or ``chunk_size``.

    References:
      Dhamdhere, Sundararajan and Yan, "How important is a neuron?", ICLR 2019.
    """
    x, targets = check_backprop_args(net, x, target, _check_layer_given(layer), False, reduce)
    neuron = _check_neuron(net, layer, neuron, x.shape[1:3])
    alphas, weights = quadrature(method, steps)
    nodes = (jnp.asarray(alphas, x.dtype), jnp.asarray(weights, x.dtype))
    head = _head(net, params, layer)

    def one(pair, t):
        x1, b1 = pair

        def weighted_gradient(node):
            alpha, w = node
            a, head_vjp = jax.vjp(head, b1 + alpha * (x1 - b1))
            through = input_gradient(net, params, a, t, start=layer)[neuron]
            return w * head_vjp(jnp.zeros_like(a).at[neuron].set(through))[0]

        return (x1 - b1) * chunked_sum(weighted_gradient, nodes, chunk_size)

    maps = lift(one)((x, check_baseline(baseline, x)), targets)
    return finish_maps(maps, reduce, None, False, x.shape[1:3])
