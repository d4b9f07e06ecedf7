"""Gradient saliency (Simonyan et al. 2014)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxinterp.attribution._lift import check_images, check_targets, class_score, lift
from jaxinterp.nets import Net
from jaxinterp.nets.rules import Rules

__all__ = ["gradient"]


def gradient(net: Net, params, x: jax.Array, target, *, signed: bool = False,
             rules: Rules | None = None) -> jax.Array:
    """Gradient saliency maps: the derivative of a class logit with respect to the pixels.

    For image x and class t, with g = d y_t / d x (H, W, 3) the gradient of the logit::

        signed=False:  map[i, j] = max_c |g[i, j, c]|      (Simonyan et al.)
        signed=True:   map[i, j] = sum_c g[i, j, c]

    The signed map is the derivative of y_t along a grey-level change of pixel
    (i, j) (all three channels moved together), so its sign says whether
    brightening the pixel raises the logit.  With ``rules=GUIDED`` this is
    guided backpropagation; any :mod:`jaxinterp.nets.rules` set applies.

    Pure and jit-compatible with ``net``, ``signed`` and ``rules`` static::

        jax.jit(gradient, static_argnames=("net", "signed", "rules"))

    Range checks on ``target`` run only when it is concrete (not under jit).

    Args:
      net: the net (static).
      params: its params.
      x: images (N, H, W, 3), float RGB in [0, 1].
      target: int class indices in [0, net.num_classes), (N,) or (N, T).
      signed: return the channel-summed signed gradient instead of max_c |g|.
      rules: backward rules (None = standard autodiff).

    Returns:
      maps: (N, T, H, W) in the dtype of x; T = 1 for (N,) targets.

    Raises:
      ValueError: ``x`` not of shape (N, H, W, 3) or not floating; ``target``
        not integer, not of shape (N,) / (N, T), or out of range.

    References:
      Simonyan, Vedaldi and Zisserman, "Deep inside convolutional networks:
      visualising image classification models and saliency maps", ICLR workshop 2014.
    """
    x = check_images(x)
    targets = check_targets(target, x.shape[0], net.num_classes)

    def one(x1, t):
        g = jax.grad(class_score, argnums=2)(net, params, x1, t, rules)
        return jnp.sum(g, axis=-1) if signed else jnp.max(jnp.abs(g), axis=-1)

    return lift(one)(x, targets)
