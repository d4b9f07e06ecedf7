"""FullGrad (Srinivas and Fleuret 2019): the input gradient plus the bias gradients of every layer.

A ReLU net's output is exactly ``f(x) = grad_x f . x + sum_l sum_c b_lc . sum_p g_lcp``
with ``g_l`` the gradient of f with respect to the output of the affine layer
l and ``b_l`` its bias (the full-gradient decomposition).  The saliency map
post-processes every term (absolute value, min-max scaling, bilinear
resizing) and sums them.

The bias gradients are read without hooks: the net is run with a rule set whose
``rules.linear`` adds a zero "bias probe" to the output of every convolution
with a bias and every batch norm, and ``jax.grad`` with respect to the probes
gives ``g_l`` at each layer's resolution.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxinterp import ops
from jaxinterp.checks import check_images
from jaxinterp.nets import Net
from jaxinterp.nets.rules import STANDARD, affine_parts, linear_kind
from jaxinterp.targets import check_targets, lift, target_score

__all__ = ["fullgrad", "bias_gradients"]

SCALE_EPS = 1e-7
"""pytorch-grad-cam's ``scale_cam_image``: (m - min m) / (max (m - min m) + 1e-7)."""


def _has_bias(f, weights) -> bool:
    """A convolution with a bias or a batch norm: the layers whose bias FullGrad reads."""
    kind = linear_kind(f)
    return kind == "norm" or (kind == "conv" and len(weights) > 1 and weights[1] is not None)


def bias_gradients(net: Net, params, x1: jax.Array, t) -> tuple[jax.Array, list[tuple[jax.Array, jax.Array]]]:
    """The gradient of a target's score with respect to the image and to the output of every biased layer.

    For one image x1 (H, W, 3) and one target t (a class index or a
    :class:`~jaxinterp.targets.Unit` with scalar fields).  The biased layers are
    the convolutions with a bias and the batch norms (pytorch-grad-cam's
    ``Conv2d`` / ``BatchNorm2d`` with a bias), in forward order; a batch norm's
    effective bias is ``beta - mean * gamma / sqrt(var + eps)``
    (:func:`jaxinterp.nets.rules.affine_parts`).

    Returns:
      (dx, layers): dx (H, W, 3) = d s_t / d x1, and one (bias (C,), gradient
      (h, w, C)) pair per biased layer, the gradient being d s_t / d y at the
      layer's output y.
    """
    shapes = []

    def record(f, a, *weights):
        y = f(a, *weights)
        if _has_bias(f, weights):
            shapes.append(jax.ShapeDtypeStruct(y.shape, y.dtype))
        return y

    recording = STANDARD.replace(name="fullgrad_shapes", linear=record)
    jax.eval_shape(lambda a: target_score(net, params, a, t, rules=recording), x1)

    def score(a, probes):
        remaining, biases = iter(probes), []

        def probed(f, z, *weights):
            y = f(z, *weights)
            if not _has_bias(f, weights):
                return y
            biases.append(affine_parts(f, z, weights).bias)
            return y + next(remaining)

        rules = STANDARD.replace(name="fullgrad_probes", linear=probed)
        return target_score(net, params, a, t, rules=rules), biases

    probes = [jnp.zeros(s.shape, s.dtype) for s in shapes]
    (dx, dprobes), biases = jax.grad(score, argnums=(0, 1), has_aux=True)(x1, probes)
    return dx, [(b, g[0]) for b, g in zip(biases, dprobes)]


def _scaled_sum(m: jax.Array, hw) -> jax.Array:
    """|m| (h, w, C) min-max scaled per channel, summed over channels, resized to ``hw``: (H, W)."""
    m = jnp.abs(m)
    m = m - jnp.min(m, axis=(0, 1))
    m = m / (jnp.max(m, axis=(0, 1)) + SCALE_EPS)
    return ops.resize_bilinear(jnp.sum(m, axis=-1), hw)


def fullgrad(net: Net, params, x: jax.Array, target) -> jax.Array:
    """FullGrad saliency: psi(x * grad_x s_t) + sum over biased layers and channels of psi(b * grad_y s_t).

    For image x and target t, with y_l the output of biased layer l (every
    convolution with a bias and every batch norm, b_l its bias or a batch
    norm's effective bias, :func:`bias_gradients`)::

        map = sum_c psi(x_c * d s_t / d x_c) + sum_l sum_c psi(b_lc * d s_t / d y_lc)
        psi(m) = resize((|m| - min |m|) / (max (|m| - min |m|) + 1e-7))

    psi takes the absolute value, min-max scales each channel's map and resizes it
    bilinearly to the image (half-pixel centres, as cv2): pytorch-grad-cam
    1.5.7's ``FullGrad``, which then min-max scales the sum for display; the map
    here is the sum, unscaled, as the paper's S_f.  x is in [0, 1] pixels (the
    net normalises inside, as a torch model fed [0, 1] pixels to pytorch-grad-cam).
    Dense layers are not biased layers here (as pytorch-grad-cam; the paper's
    decomposition also has them, but they have no spatial map).

    Pure and jit-compatible with ``net`` static; one backward pass per image and
    target, all in one compiled call.

    Args:
      net, params: the net.
      x: images (N, H, W, 3), float RGB in [0, 1].
      target: class indices (N,) or (N, T), or a :class:`~jaxinterp.targets.Unit`
        (then only the layers before it contribute).

    Returns:
      maps: (N, T, H, W), >= 0.

    Raises:
      ValueError naming the argument: ``x`` not (N, H, W, 3) floating; ``target``
      of the wrong dtype, shape or range.

    References:
      Srinivas and Fleuret, "Full-gradient representation for neural network
      visualization", NeurIPS 2019.
    """
    x = check_images(x)
    targets = check_targets(target, net, x.shape[0], x.shape[1:3])
    hw = x.shape[1:3]

    def one(x1, t):
        dx, layers = bias_gradients(net, params, x1, t)
        total = _scaled_sum(x1 * dx, hw)
        for b, g in layers:
            total = total + _scaled_sum(b * g, hw)
        return total

    return lift(one)(x, targets)
