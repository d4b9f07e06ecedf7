"""The gradient family: gradient, input x gradient, integrated gradients, SmoothGrad, deconvnet, guided backprop.

All are backward passes of the net from one target score to the input image (or
to the activation at a split point ``layer``), possibly with modified backward
rules (:mod:`jaxinterp.nets.rules`), reduced over channels to a map.  Each is
written for one example and one target and lifted by ``vmap`` over images and
targets (:func:`jaxinterp.attribution._lift.lift`), so T targets per image share
one forward pass and one compiled call.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp import ops
from jaxinterp.checks import check_baseline, check_images, check_int
from jaxinterp.targets import chunked_sum, input_gradient, lift
from jaxinterp.attribution._lift import (activations_at, check_backprop_args, check_reduce, finish_maps,
                                         reduce_channels)
from jaxinterp.nets import Net
from jaxinterp.nets.rules import DECONVNET, GUIDED, Rules

__all__ = ["gradient", "input_x_gradient", "integrated_gradients", "quadrature", "smoothgrad",
           "deconvnet", "guided_backprop", "QUADRATURES"]


def gradient(net: Net, params, x: jax.Array, target, *, reduce: str | None = "max_abs",
             rules: Rules | None = None, layer: str | None = None, resize: bool = True) -> jax.Array:
    """Gradient saliency: the derivative of a target's score with respect to the pixels.

    For image x and target t, with g = d s_t / d x (H, W, 3)::

        reduce='max_abs':  map[i, j] = max_c |g[i, j, c]|      (Simonyan et al., the default)
        reduce='sum':      map[i, j] = sum_c g[i, j, c]        (signed)
        reduce=None:       g itself, (N, T, H, W, 3)

    The signed map is the derivative of s_t along a grey-level change of pixel
    (i, j), so its sign says whether brightening the pixel raises the score.
    With ``rules`` any backward rule set applies (``GUIDED`` is guided
    backpropagation).  With ``layer`` the derivative is taken with respect to
    the activation at that split point (Captum's ``LayerGradient`` /
    TorchRay's ``saliency_layer``), reduced over its channels and bilinearly
    resized to the image unless ``resize=False``.

    Pure and jit-compatible with ``net``, ``reduce``, ``rules``, ``layer`` and
    ``resize`` static.  Range checks on ``target`` run only when it is concrete.

    Args:
      net: the net (static).
      params: its params.
      x: images (N, H, W, 3), float RGB in [0, 1].
      target: class indices (N,) or (N, T), or a :class:`~jaxinterp.targets.Unit`.
      reduce: channel reduction (``'max_abs'``, ``'sum'``, ``'abs_sum'``, ``'l2'``,
        ``'max'``) or None to keep channels.
      rules: backward rules (None = standard autodiff).
      layer: split point to attribute to (None: the input pixels).
      resize: resize layer maps to the image size.

    Returns:
      maps: (N, T, H, W) (or (N, T, h, w) at the layer's resolution; a trailing
      channel axis with ``reduce=None``); T = 1 for (N,) targets.

    Raises:
      ValueError naming the argument: ``x`` not (N, H, W, 3) floating; ``target``
      of the wrong dtype, shape or range; unknown ``layer`` or ``reduce``.

    References:
      Simonyan, Vedaldi and Zisserman, "Deep inside convolutional networks:
      visualising image classification models and saliency maps", ICLR workshop 2014.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from jaxinterp import attribution, nets
      >>> from jaxinterp.targets import Unit
      >>> net = nets.get("smallcnn"); params = net.init(jax.random.key(0))
      >>> x = jax.random.uniform(jax.random.key(1), (2, 64, 64, 3))
      >>> attribution.gradient(net, params, x, jnp.array([3, 7])).shape          # one class per image
      (2, 1, 64, 64)
      >>> unit = Unit("features.5", channel=jnp.array([[0, 1], [2, 3]]))     # two channels per image
      >>> attribution.gradient(net, params, x, unit).shape
      (2, 2, 64, 64)
    """
    x, targets = check_backprop_args(net, x, target, layer, resize, reduce)

    def one(a1, t):
        return input_gradient(net, params, a1, t, start=layer, rules=rules)

    g = lift(one)(activations_at(net, params, x, layer), targets)
    return finish_maps(g, reduce, layer, resize, x.shape[1:3])


def input_x_gradient(net: Net, params, x: jax.Array, target, *, reduce: str | None = "sum",
                     rules: Rules | None = None, layer: str | None = None,
                     resize: bool = True) -> jax.Array:
    """Input x gradient: the input (or a layer's activation) times the gradient of the score.

    map = reduce_c( a * d s_t / d a ), a the image in [0, 1] pixels (or the
    activation at ``layer``).  As Captum's ``InputXGradient`` on a model that
    takes [0, 1] pixels; ``reduce='sum'`` (default) is its attribution summed
    over colour channels.  Options, shapes and errors as :func:`gradient`.

    References:
      Shrikumar et al., "Not just a black box: learning important features
      through propagating activation differences", arXiv 2016.
    """
    x, targets = check_backprop_args(net, x, target, layer, resize, reduce)

    def one(a1, t):
        return a1 * input_gradient(net, params, a1, t, start=layer, rules=rules)

    g = lift(one)(activations_at(net, params, x, layer), targets)
    return finish_maps(g, reduce, layer, resize, x.shape[1:3])


QUADRATURES = ("gausslegendre", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid")
"""Quadrature rules of :func:`integrated_gradients` (Captum's names)."""


def quadrature(method: str, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights of a quadrature rule on [0, 1] with ``steps`` nodes.

    ``sum_i w_i f(alpha_i)`` approximates ``integral_0^1 f``:

    * ``riemann_left``  alpha_i = i / n,           w_i = 1 / n;
    * ``riemann_right`` alpha_i = (i + 1) / n,     w_i = 1 / n;
    * ``riemann_middle`` alpha_i = (i + 1/2) / n,  w_i = 1 / n;
    * ``riemann_trapezoid`` alpha_i = i / (n - 1), w = (1/2, 1, ..., 1, 1/2) / (n - 1);
    * ``gausslegendre`` Gauss-Legendre nodes and weights mapped from [-1, 1].

    Returns:
      (alphas, weights), float64 NumPy arrays (steps,).
    """
    steps = check_int(steps, "steps")
    n = steps
    if method == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(n)
        return 0.5 * (nodes + 1.0), 0.5 * weights
    if method == "riemann_trapezoid":
        if n < 2:
            raise ValueError(f"steps: riemann_trapezoid needs at least 2 steps, got {n}")
        w = np.full(n, 1.0 / (n - 1))
        w[[0, -1]] *= 0.5
        return np.linspace(0.0, 1.0, n), w
    offsets = {"riemann_left": 0.0, "riemann_right": 1.0, "riemann_middle": 0.5}
    if method not in offsets:
        raise ValueError(f"method: expected one of {QUADRATURES}, got {method!r}")
    return (np.arange(n) + offsets[method]) / n, np.full(n, 1.0 / n)


def _baseline_images(x: jax.Array, baseline, blur_sigma: float) -> jax.Array:
    if isinstance(baseline, str):
        if baseline == "zero":
            return jnp.zeros_like(x)
        if baseline == "blur":
            return ops.gaussian_blur(x, blur_sigma)
        raise ValueError(f"baseline: expected 'zero', 'blur' or an array, got {baseline!r}")
    return check_baseline(baseline, x)


def integrated_gradients(net: Net, params, x: jax.Array, target, *, steps: int = 50,
                         method: str = "gausslegendre", baseline="zero", blur_sigma: float = 20.0,
                         reduce: str | None = "sum", rules: Rules | None = None,
                         layer: str | None = None, resize: bool = True,
                         chunk_size: int | None = None) -> jax.Array:
    """Integrated gradients: (a - a0) times the path integral of the gradient from a0 to a.

    IG(a) = (a - a0) * integral_0^1 grad s_t(a0 + alpha (a - a0)) d alpha, with
    the integral replaced by the quadrature ``method`` on ``steps`` nodes
    (:func:`quadrature`; Captum's default Gauss-Legendre, 50 steps).  a is the
    image (or its activation at ``layer``, Captum's ``LayerIntegratedGradients``
    with the baseline's activation as a0), a0 the baseline: ``'zero'`` (black
    image, the default), ``'blur'`` (the image blurred by a Gaussian of
    ``blur_sigma`` pixels; 20 px by default, the largest blur of the extremal
    perturbation pyramid), or a given array.  Completeness holds up to the
    quadrature error: sum IG = s_t(a) - s_t(a0).

    The steps run inside one compiled call, ``chunk_size`` of them vmapped at a
    time (Captum's ``internal_batch_size``): memory is that of ``chunk_size``
    images; the result does not depend on it.  All targets of an image share
    each step's forward pass.

    Args:
      net, params, x, target, reduce, rules, layer, resize: as :func:`gradient`
        (``reduce='sum'`` by default: Captum's attribution summed over channels).
      steps: number of quadrature nodes (> 0).
      method: one of :data:`QUADRATURES`.
      baseline: ``'zero'``, ``'blur'``, or pixel values in [0, 1]: a scalar grey level, a
        colour (3,), an image (H, W, 3) or images (N, H, W, 3).
      blur_sigma: Gaussian standard deviation (pixels) of the ``'blur'`` baseline.
      chunk_size: steps per vmapped chunk (None: all at once).

    Returns:
      maps: (N, T, H, W) as :func:`gradient`.

    References:
      Sundararajan, Taly and Yan, "Axiomatic attribution for deep networks", ICML 2017.

    Examples:
      Completeness: the map sums to the logit's change from the baseline.

      >>> import jax, jax.numpy as jnp
      >>> from jaxinterp import attribution, nets
      >>> net = nets.get("smallcnn"); params = net.init(jax.random.key(0))
      >>> x = jax.random.uniform(jax.random.key(1), (2, 64, 64, 3)); t = jnp.array([3, 7])
      >>> maps = attribution.integrated_gradients(net, params, x, t, steps=64)
      >>> change = (net.apply(params, x) - net.apply(params, jnp.zeros_like(x)))[jnp.arange(2), t]
      >>> bool(jnp.allclose(maps.sum((1, 2, 3)), change, rtol=0.05))
      True
    """
    x, targets = check_backprop_args(net, x, target, layer, resize, reduce)
    alphas, weights = quadrature(method, steps)
    nodes = (jnp.asarray(alphas, x.dtype), jnp.asarray(weights, x.dtype))
    a = activations_at(net, params, x, layer)
    a0 = activations_at(net, params, _baseline_images(x, baseline, blur_sigma), layer)

    def one(pair, t):
        a1, b1 = pair

        def weighted_gradient(node):
            alpha, w = node
            return w * input_gradient(net, params, b1 + alpha * (a1 - b1), t, start=layer, rules=rules)

        return (a1 - b1) * chunked_sum(weighted_gradient, nodes, chunk_size)

    g = lift(one)((a, a0), targets)
    return finish_maps(g, reduce, layer, resize, x.shape[1:3])


SMOOTHGRAD_VARIANTS = ("smoothgrad", "smoothgrad_sq", "vargrad")


def smoothgrad(net: Net, params, x: jax.Array, target, key: jax.Array | None = None, *,
               method: Callable = gradient, samples: int = 50, sigma: float = 0.15,
               noise: jax.Array | None = None, variant: str = "smoothgrad",
               reduce: str | None = "max_abs", chunk_size: int | None = None,
               **method_options) -> jax.Array:
    """SmoothGrad, SmoothGrad^2 and VarGrad around any attribution method.

    With per-channel attributions A(x) = method(x, reduce=None) and noisy copies
    x_s = x + e_s, e_s ~ N(0, sigma^2) (sigma = 0.15 of the [0, 1] input range,
    Smilkov et al.'s default; noisy images are not clipped, as in Captum's
    ``NoiseTunnel``)::

        smoothgrad:     mean_s A(x_s)
        smoothgrad_sq:  mean_s A(x_s)^2
        vargrad:        mean_s A(x_s)^2 - (mean_s A(x_s))^2

    then reduced over channels by ``reduce`` (max |.| by default, as Smilkov et
    al. display gradients).  ``noise`` gives the perturbations e_s themselves,
    (samples, N, H, W, 3) or (samples, H, W, 3) shared by all images, e.g. to
    reproduce another library's run; otherwise they are drawn from ``key``.
    Samples run ``chunk_size`` at a time inside one compiled call.

    Args:
      net, params, x, target: as :func:`gradient`.
      key: PRNG key for the noise (required unless ``noise`` is given).
      method: any attribution method of this package taking ``reduce=None``.
      samples: number of noisy copies (> 0); ignored when ``noise`` is given.
      sigma: noise standard deviation in pixel units (>= 0).
      noise: explicit perturbations, see above.
      variant: one of ``'smoothgrad'``, ``'smoothgrad_sq'``, ``'vargrad'``.
      reduce: channel reduction of the averaged attribution (None keeps channels).
      chunk_size: samples per vmapped chunk (None: all at once).
      **method_options: passed to ``method`` (e.g. ``rules``, ``steps``, ``layer``).

    Returns:
      maps: (N, T, H, W).

    References:
      Smilkov et al., "SmoothGrad: removing noise by adding noise", 2017;
      Adebayo et al., "Local explanation methods for deep neural networks lack
      sensitivity to parameter randomization", 2018 (VarGrad).
    """
    x = check_images(x)
    if variant not in SMOOTHGRAD_VARIANTS:
        raise ValueError(f"variant: expected one of {SMOOTHGRAD_VARIANTS}, got {variant!r}")
    check_reduce(reduce)
    if noise is None:
        if key is None:
            raise ValueError("key: a PRNG key is required to draw the noise (or pass noise=)")
        samples = check_int(samples, "samples")
        if not sigma >= 0:
            raise ValueError(f"sigma: expected a non-negative noise level, got {sigma}")
        noise = sigma * jax.random.normal(key, (samples, *x.shape), x.dtype)
    else:
        noise = jnp.asarray(noise, x.dtype)
        if noise.shape[1:] == x.shape[1:]:
            noise = jnp.broadcast_to(noise[:, None], (noise.shape[0], *x.shape))
        if noise.ndim != 5 or noise.shape[1:] != x.shape or noise.shape[0] < 1:
            raise ValueError(f"noise: expected (samples, {', '.join(map(str, x.shape))}) or "
                             f"(samples, {', '.join(map(str, x.shape[1:]))}), got {noise.shape}")
    num = noise.shape[0]

    def moments(e):
        a = method(net, params, x + e, target, reduce=None, **method_options)
        return a, a * a

    total, total_sq = chunked_sum(moments, noise, chunk_size)
    mean, mean_sq = total / num, total_sq / num
    out = {"smoothgrad": mean, "smoothgrad_sq": mean_sq, "vargrad": mean_sq - mean * mean}[variant]
    return reduce_channels(out, reduce)


def deconvnet(net: Net, params, x: jax.Array, target, *, reduce: str | None = "max_abs",
              layer: str | None = None, resize: bool = True) -> jax.Array:
    """Deconvnet (Zeiler and Fergus 2014): the gradient with ReLUs passing max(g, 0) backwards.

    :func:`gradient` with :data:`jaxinterp.nets.rules.DECONVNET`: ReLUs rectify
    the backward signal regardless of the forward input's sign; max-pools route
    by their switches.  Captum's ``Deconvolution`` with ``reduce=None``.

    References:
      Zeiler and Fergus, "Visualizing and understanding convolutional networks", ECCV 2014.
    """
    return gradient(net, params, x, target, reduce=reduce, rules=DECONVNET, layer=layer, resize=resize)


def guided_backprop(net: Net, params, x: jax.Array, target, *, reduce: str | None = "max_abs",
                    layer: str | None = None, resize: bool = True) -> jax.Array:
    """Guided backpropagation: the gradient with ReLUs passing max(g, 0) * 1[x > 0] backwards.

    :func:`gradient` with :data:`jaxinterp.nets.rules.GUIDED`.  Captum's
    ``GuidedBackprop`` with ``reduce=None``.

    References:
      Springenberg et al., "Striving for simplicity: the all convolutional net", ICLR workshop 2015.
    """
    return gradient(net, params, x, target, reduce=reduce, rules=GUIDED, layer=layer, resize=resize)
