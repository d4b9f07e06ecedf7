"""DeepLIFT's rescale rule as backward rules: multipliers from a pair (input, reference).

:data:`DEEPLIFT` is a :class:`~jaxinterp.nets.rules.Rules` set for a net applied
to a batch of exactly two examples, the input x and its reference x0 stacked on
the leading axis (N = 2).  Forward values are the standard ones; every routed
non-linearity y = f(a) replaces its derivative, in the backward pass of both
halves, by the multiplier of Shrikumar et al. (2017)::

    m = (f(a) - f(a0)) / (a - a0)      where |a - a0| >= eps,
    m = f'(a)                          (the half's own derivative) elsewhere,

with a, a0 the two halves of the layer's input and eps = :data:`DEEPLIFT_EPS`
(Captum's ``DeepLift`` default, 1e-10, compared with ``|a - a0| < eps`` as Captum
does).  Affine maps and residual sums keep their ordinary derivative (they are
linear: the multiplier of a linear map is its weight).

Max-pooling follows Captum's dedicated handler (``captum/attr/_core/deep_lift.py``,
``maxpool``): with p = pool(a), p0 = pool(a0), m = max(p, p0) and the incoming
cotangents g (input half) and g0 (reference half), the difference of the
pooled outputs, split as (m - p0) + (p - m), is routed back to the argmax of
each half's window::

    num = route_a(g * (m - p0)) + route_a0(g0 * (p - m))
    multiplier at the window inputs = num / (a - a0)   (both halves)

where |a - a0| < eps the input half's ordinary max-pool gradient is used for both
halves (Captum reads ``grad_input[0]``, the first example's gradient).  Routing is
the max-pool's ordinary backward pass, a scatter-add, so windows that overlap and
share their argmax add their shares and completeness holds exactly.  Captum
routes with ``max_unpool2d``, which writes one of the shares and drops the other:
the two agree on non-overlapping pools (VGG's 2 x 2, stride 2) and differ on
overlapping ones (ResNet's 3 x 3, stride 2), where Captum's attributions do not
sum to the change of the score (on a random resnet50 at 32 px: Captum's delta 9.7
for a change of -18.3; with its unpooling made to add, it equals ours to 1e-13).
Captum's hooks also lose its max-pool rule when the pool's input is the output
tensor of a hooked ReLU module, as in a plain torchvision VGG: the ReLU records
the pool's ordinary gradient before the pool's hook replaces it
(tests/parity/test_captum_deeplift_parity.py inserts a copy before each pool).

The pair is the net's batch, so these rules must only be used with a batch of
two; :func:`jaxinterp.attribution.deeplift` builds the pair inside its
per-example function (under ``vmap`` the rules still see N = 2).

References:
  Shrikumar, Greenside and Kundaje, "Learning important features through
  propagating activation differences", ICML 2017.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp

from jaxinterp.nets.rules import STANDARD, standard_max_pool, standard_relu, standard_relu6

__all__ = ["DEEPLIFT", "DEEPLIFT_EPS", "rescale_relu", "rescale_relu6", "rescale_max_pool"]

DEEPLIFT_EPS = 1e-10
"""Below this |a - a0| a multiplier falls back to the ordinary derivative (Captum's ``eps``)."""


def _check_pair(a: jax.Array) -> None:
    if a.shape[0] != 2:
        raise ValueError(f"x: DeepLIFT rules need the pair (input, reference) as a batch of 2, "
                         f"got a batch of {a.shape[0]}")


def _rescale_backward(f: Callable, a: jax.Array, g: jax.Array) -> jax.Array:
    """g times the rescale multiplier of the elementwise f at the pair a (2, ...)."""
    y, vjp = jax.vjp(f, a)
    d_in, d_out = a[0] - a[1], y[0] - y[1]
    small = jnp.abs(d_in) < DEEPLIFT_EPS
    ratio = d_out / jnp.where(small, 1, d_in)
    return jnp.where(small, vjp(g)[0], g * ratio)


def _rescaled(f: Callable) -> Callable:
    """The elementwise non-linearity f with the rescale rule as its backward pass."""

    @jax.custom_vjp
    def rule(a):
        return f(a)

    def fwd(a):
        _check_pair(a)
        return f(a), a

    def bwd(a, g):
        return (_rescale_backward(f, a, g),)

    rule.defvjp(fwd, bwd)
    return rule


rescale_relu = _rescaled(standard_relu)
"""ReLU with DeepLIFT's rescale multiplier (max(a, 0) - max(a0, 0)) / (a - a0) on a pair."""

rescale_relu6 = _rescaled(standard_relu6)
"""ReLU6 with the rescale multiplier on a pair.  Captum hooks no ``ReLU6`` (it takes its gradient)."""


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def rescale_max_pool(a: jax.Array, window: int, stride: int, padding: int = 0) -> jax.Array:
    """Max-pooling of the pair a (2, H, W, C) with Captum's DeepLIFT max-pool multipliers (module docstring)."""
    return standard_max_pool(a, window, stride, padding)


def _rescale_max_pool_fwd(a, window, stride, padding):
    _check_pair(a)
    return standard_max_pool(a, window, stride, padding), a


def _rescale_max_pool_bwd(window, stride, padding, a, g):
    p, route = jax.vjp(lambda v: standard_max_pool(v, window, stride, padding), a)
    top = jnp.maximum(p[0], p[1])
    routed = route(g * jnp.stack([top - p[1], p[0] - top]))[0]
    d_in = a[0] - a[1]
    small = jnp.abs(d_in) < DEEPLIFT_EPS
    multiplied = (routed[0] + routed[1]) / jnp.where(small, 1, d_in)
    ordinary = route(g)[0][0]
    return (jnp.broadcast_to(jnp.where(small, ordinary, multiplied), a.shape),)


rescale_max_pool.defvjp(_rescale_max_pool_fwd, _rescale_max_pool_bwd)

DEEPLIFT = STANDARD.replace(name="deeplift", relu=rescale_relu, relu6=rescale_relu6,
                            max_pool=rescale_max_pool)
"""DeepLIFT rescale rules on a pair (input, reference) batch; affine maps and sums keep their gradient."""
