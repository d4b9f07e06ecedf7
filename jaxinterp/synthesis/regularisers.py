"""Image priors of feature visualisation and pre-images, as penalties (>= 0) of images x (..., H, W, 3).

Mahendran and Vedaldi (IJCV 2016) normalise each term so that the weights mean
the same for every image size and layer:

    R_alpha(x) = 1 / (H W B^alpha)  sum_u ||x_u - mean||^alpha         (alpha = 6)
    R_TV(x)    = 1 / (H W V^beta)   sum_u ||grad x_u||^beta             (beta = 2)

with B the typical pixel norm (80 on the 0..255 scale of mean-subtracted
pixels, :data:`B_PIXEL`) and V = B / 6.5 (:data:`V_PIXEL`) its typical
variation.  Here pixels are in [0, 1], so B = 80 / 255.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxinterp import ops

__all__ = ["B_PIXEL", "V_PIXEL", "alpha_norm", "tv_norm", "l1", "l2", "blur_penalty", "lucent_blur"]

B_PIXEL = 80.0 / 255.0
"""Mahendran and Vedaldi's B = 80 (0..255 scale), on the [0, 1] scale."""
V_PIXEL = B_PIXEL / 6.5
"""Mahendran and Vedaldi's V = B / 6.5."""


def _spatial_size(x: jax.Array) -> int:
    return x.shape[-3] * x.shape[-2]


def alpha_norm(x: jax.Array, alpha: float = 6.0, *, mean=0.0, bound: float = B_PIXEL) -> jax.Array:
    """``1 / (H W bound^alpha) sum_u ||x_u - mean||^alpha`` over the colour vectors x_u: (..., H, W, 3) -> (...)."""
    d = x - jnp.asarray(mean, x.dtype)
    sq = jnp.sum(d * d, axis=-1)
    safe = jnp.where(sq > 0, sq, 1.0)
    total = jnp.sum(jnp.where(sq > 0, safe ** (alpha / 2), 0.0), axis=(-2, -1))
    return total / (_spatial_size(x) * bound ** alpha)


def tv_norm(x: jax.Array, beta: float = 2.0, *, variation: float = V_PIXEL) -> jax.Array:
    """``1 / (H W variation^beta) TV^beta(x)``, isotropic over the colour vectors (``ops.total_variation``)."""
    return ops.total_variation(x, beta) / (_spatial_size(x) * variation ** beta)


def l1(x: jax.Array, *, centre=0.5) -> jax.Array:
    """Mean |x - centre| per image: (..., H, W, 3) -> (...) (Lucid's L1, centred on grey)."""
    return jnp.mean(jnp.abs(x - centre), axis=(-3, -2, -1))


def l2(x: jax.Array, *, centre=0.5) -> jax.Array:
    """Sum of (x - centre)^2 per image (Simonyan et al.'s L2 prior on the mean-free image)."""
    return jnp.sum((x - centre) ** 2, axis=(-3, -2, -1))


def lucent_blur(x: jax.Array) -> jax.Array:
    """The 3x3 blur of lucent's ``blur_input_each_step`` on images (..., H, W, C).

    Per channel, a 3x3 kernel of 0.5 with 1 in the centre, divided by the same
    convolution of ones (zero padding), so border pixels average what is inside.
    """
    k = jnp.asarray([[0.5, 0.5, 0.5], [0.5, 1.0, 0.5], [0.5, 0.5, 0.5]], x.dtype)

    def conv(a):
        lead, (h, w, c) = a.shape[:-3], a.shape[-3:]
        y = jnp.moveaxis(a.reshape(-1, h, w, c), -1, 1).reshape(-1, 1, h, w)
        y = jax.lax.conv_general_dilated(y, k[None, None], (1, 1), ((1, 1), (1, 1)),
                                         precision=jax.lax.Precision.HIGHEST)
        return jnp.moveaxis(y.reshape(-1, c, h, w), 1, -1).reshape(*lead, h, w, c)

    return conv(x) / conv(jnp.ones_like(x))


def blur_penalty(x: jax.Array) -> jax.Array:
    """``0.5 sum (x - blur(x))^2`` per image (lucent's ``blur_input_each_step``, as a penalty)."""
    b = jax.lax.stop_gradient(lucent_blur(x))
    return 0.5 * jnp.sum((x - b) ** 2, axis=(-3, -2, -1))
