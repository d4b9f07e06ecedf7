"""The DeepLIFT family: DeepLIFT (rescale rule), DeepLIFT-SHAP and gradient SHAP.

DeepLIFT explains the change of a score from a reference image x0 to the image
x by multipliers: through each non-linearity the ratio of the output change to
the input change (the rescale rule), through linear maps their weights.  It is
computed as the gradient of the net applied to the pair (x, x0), stacked as a
batch of two inside the per-example function, under the backward rules
:data:`jaxinterp.nets.deeplift_rules.DEEPLIFT` (forward values stay the standard
ones).  DeepLIFT-SHAP averages DeepLIFT over a distribution of references;
gradient SHAP averages gradients at random points between random references and
the (optionally noisy) image.  All follow Captum 0.9's conventions
(``DeepLift``, ``DeepLiftShap``, ``GradientShap`` with ``multiply_by_inputs=True``).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxinterp.checks import check_baseline, check_images, check_int, check_nonneg, is_concrete
from jaxinterp.targets import Unit, chunked_sum, input_gradient, lift, unit_value
from jaxinterp.attribution._lift import activations_at, check_backprop_args, finish_maps
from jaxinterp.nets import Net
from jaxinterp.nets.deeplift_rules import DEEPLIFT

__all__ = ["deeplift", "deeplift_shap", "gradient_shap", "gradient_shap_samples", "ShapSamples"]


def _pair_score(net: Net, params, pair: jax.Array, t, start: str | None) -> jax.Array:
    """Sum of target t's scores on the input and on the reference, pair (2, ...), under DEEPLIFT rules.

    Both halves are differentiated, as in Captum: the reference half's cotangent
    carries its own share of a max-pool's output change (:mod:`~jaxinterp.nets.deeplift_rules`).
    """
    if isinstance(t, Unit):
        act = net.apply(params, pair, start=start, stop=t.layer, rules=DEEPLIFT)
        return unit_value(act[0], t) + unit_value(act[1], t)
    return jnp.sum(net.apply(params, pair, start=start, rules=DEEPLIFT)[:, t])


def _deeplift_one(net: Net, params, a1: jax.Array, b1: jax.Array, t, start: str | None) -> jax.Array:
    """(a1 - b1) times DeepLIFT's multipliers of one example a1 against the reference b1 (same shape)."""
    multipliers = jax.grad(lambda p: _pair_score(net, params, p, t, start))(jnp.stack([a1, b1]))[0]
    return (a1 - b1) * multipliers


def deeplift(net: Net, params, x: jax.Array, target, *, baseline=0.0, reduce: str | None = "sum",
             layer: str | None = None, resize: bool = True) -> jax.Array:
    """DeepLIFT with the rescale rule: (a - a0) times the multipliers of the score from a0 to a.

    For image x and reference x0 (the baseline), with a, a0 the images or their
    activations at ``layer``::

        DL(a) = (a - a0) * m,   m = d s_t / d a under the rescale rule

    where every ReLU (ReLU6, max-pool) passes the multiplier (f(u) - f(u0)) / (u - u0)
    instead of its derivative (its derivative where |u - u0| < 1e-10, Captum's eps)
    and affine maps and residual sums their ordinary derivative.  Completeness
    (summation to delta): sum DL = s_t(x) - s_t(x0) exactly for nets whose
    non-linearities are all routed through the rules (tested on the small CNN, VGG16
    and ResNet-50).
    Max-pools use Captum's rule, with contributions of overlapping windows
    added (:mod:`jaxinterp.nets.deeplift_rules`; Captum's ``max_unpool`` keeps one of
    them, so on overlapping pools, e.g. ResNet's stem, it breaks completeness and
    differs from ours).  Non-linearities that are not routed (the ViT's GELU,
    softmax and layer norms) keep their gradient, as in Captum for modules it
    does not hook.  ``layer`` gives Captum's ``LayerDeepLift``: the activations'
    attributions at that split point, the multipliers from the net's tail.

    As Captum's ``DeepLift`` (``multiply_by_inputs=True``) on a model taking [0, 1]
    pixels; ``reduce='sum'`` (default) sums its attribution over channels.  Pure and
    jit-compatible with ``net``, ``reduce``, ``layer`` and ``resize`` static.

    Args:
      net, params, x, target, layer, resize: as :func:`~jaxinterp.attribution.gradient`.
      baseline: the reference in pixels, in [0, 1]: a scalar grey level (black, 0,
        by default), a colour (3,), an image (H, W, 3) or images (N, H, W, 3).
      reduce: channel reduction (see :data:`~jaxinterp.attribution.REDUCTIONS`), None keeps channels.

    Returns:
      maps: (N, T, H, W) (layer maps as :func:`~jaxinterp.attribution.gradient`;
      a trailing channel axis with ``reduce=None``).

    Raises:
      ValueError naming ``x``, ``target``, ``layer``, ``reduce`` or ``baseline``.

    References:
      Shrikumar, Greenside and Kundaje, "Learning important features through
      propagating activation differences", ICML 2017.
      Ancona et al., "Towards better understanding of gradient-based attribution
      methods for deep neural networks", ICLR 2018 (the rescale rule as a modified gradient).
    """
    x, targets = check_backprop_args(net, x, target, layer, resize, reduce)
    a = activations_at(net, params, x, layer)
    a0 = activations_at(net, params, check_baseline(baseline, x), layer)

    def one(pair, t):
        return _deeplift_one(net, params, pair[0], pair[1], t, layer)

    return finish_maps(lift(one)((a, a0), targets), reduce, layer, resize, x.shape[1:3])


def _check_baseline_images(baselines, x: jax.Array) -> jax.Array:
    """Reference images (B, H, W, 3) in [0, 1] of the images' size; ValueError naming ``baselines``."""
    baselines = check_images(baselines, "baselines")
    if baselines.shape[1:] != x.shape[1:]:
        raise ValueError(f"baselines: expected images (B, {x.shape[1]}, {x.shape[2]}, 3) of the "
                         f"images' size, got {tuple(baselines.shape)}")
    return baselines.astype(x.dtype)


def deeplift_shap(net: Net, params, x: jax.Array, target, *, baselines: jax.Array,
                  reduce: str | None = "sum", layer: str | None = None, resize: bool = True,
                  chunk_size: int | None = None) -> jax.Array:
    """DeepLIFT-SHAP: the mean of DeepLIFT attributions over a distribution of references.

    DLS(a) = (1 / B) sum_b (a - a0_b) * m(a, a0_b), with a0_b the activation of
    reference b (:func:`deeplift` for each).  It sums to s_t(x) - mean_b s_t(x0_b).
    As Captum's ``DeepLiftShap``.  The references run inside one compiled call,
    ``chunk_size`` of them vmapped at a time; the result does not depend on it.

    Args:
      net, params, x, target, reduce, layer, resize: as :func:`deeplift`.
      baselines: reference images (B, H, W, 3) in [0, 1], shared by all images.
      chunk_size: references per vmapped chunk (None: all at once).

    Returns:
      maps: (N, T, H, W) as :func:`deeplift`.

    Raises:
      ValueError naming ``x``, ``target``, ``layer``, ``reduce``, ``baselines`` or ``chunk_size``.

    References:
      Lundberg and Lee, "A unified approach to interpreting model predictions", NeurIPS 2017.
    """
    x, targets = check_backprop_args(net, x, target, layer, resize, reduce)
    refs = activations_at(net, params, _check_baseline_images(baselines, x), layer)
    a = activations_at(net, params, x, layer)

    def one(a1, t):
        total = chunked_sum(lambda b1: _deeplift_one(net, params, a1, b1, t, layer), refs, chunk_size)
        return total / refs.shape[0]

    return finish_maps(lift(one)(a, targets), reduce, layer, resize, x.shape[1:3])


class ShapSamples(NamedTuple):
    """The random draws of :func:`gradient_shap`, per image and sample.

    Attributes:
      baseline_index: int (N, S), the reference of each sample.
      alpha: (N, S) in [0, 1], the point alpha x' + (1 - alpha) x0 on the line.
      noise: (N, S, H, W, 3), added to the image: x' = x + noise.
    """

    baseline_index: jax.Array
    alpha: jax.Array
    noise: jax.Array


def gradient_shap_samples(key: jax.Array, x: jax.Array, num_baselines: int, *, n_samples: int = 5,
                          stdevs: float = 0.0) -> ShapSamples:
    """Draw gradient SHAP's samples: a uniform reference, a uniform alpha, N(0, stdevs^2) pixel noise.

    Args:
      key: PRNG key.
      x: the images (N, H, W, 3) (their shape and dtype).
      num_baselines: the number B of references to draw from.
      n_samples: samples S per image.
      stdevs: standard deviation of the noise, in pixels (Captum's default 0).

    Returns:
      :class:`ShapSamples` with (N, S) leading axes.

    Raises:
      ValueError naming ``n_samples``, ``num_baselines`` or ``stdevs``.
    """
    n_samples = check_int(n_samples, "n_samples")
    num_baselines = check_int(num_baselines, "num_baselines")
    check_nonneg(stdevs, "stdevs")
    k_index, k_alpha, k_noise = jax.random.split(key, 3)
    n = x.shape[0]
    return ShapSamples(
        jax.random.randint(k_index, (n, n_samples), 0, num_baselines),
        jax.random.uniform(k_alpha, (n, n_samples), x.dtype),
        stdevs * jax.random.normal(k_noise, (n, n_samples, *x.shape[1:]), x.dtype))


def _check_samples(samples: ShapSamples, x: jax.Array, num_baselines: int) -> ShapSamples:
    """The draws as arrays of x's dtype; ValueError naming ``samples`` (index range checked when concrete)."""
    index, alpha, noise = (jnp.asarray(v) for v in samples)
    n = x.shape[0]
    if index.ndim != 2 or index.shape[0] != n or not jnp.issubdtype(index.dtype, jnp.integer):
        raise ValueError(f"samples: baseline_index must be integers ({n}, S), got {index.dtype} {index.shape}")
    if is_concrete(index) and index.size and not 0 <= int(index.min()) <= int(index.max()) < num_baselines:
        raise ValueError(f"samples: baseline_index must lie in [0, {num_baselines}), got range "
                         f"[{int(index.min())}, {int(index.max())}]")
    if alpha.shape != index.shape or noise.shape != (*index.shape, *x.shape[1:]):
        raise ValueError(f"samples: expected alpha {index.shape} and noise {(*index.shape, *x.shape[1:])}, "
                         f"got {alpha.shape} and {noise.shape}")
    return ShapSamples(index, alpha.astype(x.dtype), noise.astype(x.dtype))


def gradient_shap(net: Net, params, x: jax.Array, target, *, baselines: jax.Array,
                  key: jax.Array | None = None, n_samples: int = 5, stdevs: float = 0.0,
                  samples: ShapSamples | None = None, reduce: str | None = "sum",
                  chunk_size: int | None = None) -> jax.Array:
    """Gradient SHAP: expected gradients at random points between random references and the image.

    For each of S samples of an image x: a reference x0 drawn uniformly from
    ``baselines``, a noisy image x' = x + e with e ~ N(0, stdevs^2) per pixel, and
    alpha ~ U[0, 1]; then::

        GS(x) = (1 / S) sum_s (x'_s - x0_s) * grad s_t(alpha_s x'_s + (1 - alpha_s) x0_s)

    a Monte-Carlo estimate of SHAP values (Lundberg and Lee's expected gradients
    with noise), as Captum's ``GradientShap`` (``NoiseTunnel`` over
    ``InputBaselineXGradient``).  The draws come from ``key``
    (:func:`gradient_shap_samples`) or are given as ``samples``, e.g. to reproduce
    another library's draws.  Samples run ``chunk_size`` at a time inside one
    compiled call.  Noisy images are not clipped.

    Args:
      net, params, x, target, reduce: as :func:`deeplift`.
      baselines: reference images (B, H, W, 3) in [0, 1].
      key: PRNG key for the draws (required unless ``samples`` is given).
      n_samples: samples per image (ignored with ``samples``).
      stdevs: noise standard deviation in pixels (ignored with ``samples``).
      samples: explicit :class:`ShapSamples`.
      chunk_size: samples per vmapped chunk (None: all at once).

    Returns:
      maps: (N, T, H, W) (a trailing channel axis with ``reduce=None``).

    Raises:
      ValueError naming ``x``, ``target``, ``reduce``, ``baselines``, ``key``, ``samples``,
      ``n_samples``, ``stdevs`` or ``chunk_size``.

    References:
      Lundberg and Lee, "A unified approach to interpreting model predictions", NeurIPS 2017.
      Erion et al., "Improving performance of deep learning models with axiomatic
      attribution priors and expected gradients", Nature Machine Intelligence 2021.
    """
    x, targets = check_backprop_args(net, x, target, None, False, reduce)
    refs = _check_baseline_images(baselines, x)
    if samples is None:
        if key is None:
            raise ValueError("key: a PRNG key is required to draw the samples (or pass samples=)")
        samples = gradient_shap_samples(key, x, refs.shape[0], n_samples=n_samples, stdevs=stdevs)
    samples = _check_samples(samples, x, refs.shape[0])

    def one(example, t):
        x1, draws = example

        def sample_term(draw):
            index, alpha, noise = draw
            noisy, ref = x1 + noise, refs[index]
            point = alpha * noisy + (1 - alpha) * ref
            return (noisy - ref) * input_gradient(net, params, point, t)

        return chunked_sum(sample_term, draws, chunk_size) / draws.alpha.shape[0]

    return finish_maps(lift(one)((x, samples), targets), reduce, None, False, x.shape[1:3])
