"""Layer-wise relevance propagation (Bach et al. 2015; Montavon et al. 2019).

LRP redistributes a target's score layer by layer down to the pixels.  Here it
is a modified gradient: under the rules of :func:`jaxinterp.nets.relevance_rules.lrp_rules`
the backward pass of the net carries g with relevance ``R = a * g`` at every
activation a, so one ``jax.grad`` gives the relevance everywhere, under ``jit``
and ``vmap``.  For an affine layer z = W x + b and s = R_z / (z' + eps sign z')::

    epsilon:      R_x = x * W^T s                        z' = z
    gamma:        z > 0: R_x = x+ * U^T s + x- * D^T s   z' = U x+ + D x- + b + gamma b+
                  z < 0: R_x = x+ * D^T s + x- * U^T s   z' = D x+ + U x- + b + gamma b-
                  with U = W + gamma W+ and D = W + gamma W- (the generalised gamma rule)
    alpha1beta0:  R_x = x+ * W+^T s + x- * W-^T s        z' = W+ x+ + W- x- + b+
    zB (pixels):  R_x = x * W^T s - l W+^T s - h W-^T s  z' = W x - W+ l - W- h

ReLUs and dropout pass relevance; max-pools give it to the winner; residual sums
split it in proportion to the summands (R_a = a / (a + b) R); batch norms use
epsilon (or ``'identity'``).  A :class:`~jaxinterp.nets.relevance_rules.Composite` picks a
rule per kind of layer.

Conventions (those of Captum 0.9's ``LRP``): the relevance starts at the target's
score (the logit, not 1); the stabiliser is ``eps * sign(z)`` with sign(0) = +1,
default eps = 1e-9, and the denominator includes the bias; max-pools, average
pools and batch norms use the epsilon rule by default.  The nets normalise
pixels inside (``x_n = (x - mean) / std``), so the input relevance is that of the
normalised image, ``R = x_n * dS/dx_n`` for the linear rules (what Captum returns
for a model that takes normalised input), reported on the pixel grid.
With ``rule='epsilon'`` the maps equal Captum's ``LRP`` on the same torchvision
VGG-16 (float64: 3e-15 relative, biases included).

The gamma rule is the generalised one of zennit (Montavon et al. 2019; Andeol et
al. 2021): it favours the contributions of the output's own sign, so for inputs
of one sign and z > 0 it is Montavon's (W + gamma W+) rule, while for inputs of
both signs (the first convolution, on normalised pixels, when no ``first`` rule
is set) and for negative outputs (a negative target logit) its denominator keeps
the sign of z and |z'| >= |z|: each output's relevance is split over its inputs
with fractions that sum to 1 (up to eps), never amplified.  The plain
(W + gamma W+) rule on such layers divides by denominators of either sign and
magnitude (on VGG-16's first convolution z / z' ranged from -5e3 to 2e4).  At the
pixels, ``rule='gamma'`` therefore applies the generalised gamma rule; the
composites set ``first='zB'`` (or another rule) as Montavon et al. recommend.

Where the papers and Captum differ we follow the papers: Captum's ``GammaRule``
keeps the bias b in the denominator (ours b + gamma b+, Montavon et al. 2019;
equal for b <= 0), and its ``Alpha1_Beta0_Rule`` clamps the weights only
(W+ x + b), which differs from sum_j (x_j w_jk)+ + b+ (Bach et al. 2015) for
inputs of both signs (the first layer) or positive biases.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxinterp.targets import lift, target_score
from jaxinterp.attribution._lift import activations_at, check_backprop_args, finish_maps
from jaxinterp.nets import Net
from jaxinterp.nets.relevance_rules import (EPSILON_GAMMA_BOX, EPSILON_PLUS, Composite, as_composite,
                                            lrp_input_rules, lrp_rules)

__all__ = ["lrp", "Composite", "EPSILON_GAMMA_BOX", "EPSILON_PLUS"]


# -- helpers (also used by excitation.py) -----------------------------------------------


def _pixel_stats(net: Net, dtype) -> tuple[jax.Array, jax.Array]:
    """The per-channel (mean, std) the net normalises its pixels with."""
    cls = net.module_cls
    return jnp.asarray(cls.MEAN, dtype), jnp.asarray(cls.STD, dtype)


@functools.lru_cache(maxsize=None)
def _first_stage_maps(net: Net, hw: tuple[int, int]) -> int:
    """How many affine maps the net's first stage routes through ``rules.linear``."""
    rules = lrp_input_rules("epsilon")
    jaxpr = jax.make_jaxpr(lambda p, x: net.apply(p, x, stop=net.layers[0], rules=rules))(
        net.abstract_params(), jax.ShapeDtypeStruct((1, *hw, 3), jnp.float32))
    return sum(1 for e in jaxpr.eqns if e.primitive.name.startswith("custom_vjp_call"))


def _input_bounds(net: Net) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel bounds of the normalised input for pixels in [0, 1]."""
    cls = net.module_cls
    low = tuple(-m / s for m, s in zip(cls.MEAN, cls.STD))
    high = tuple((1 - m) / s for m, s in zip(cls.MEAN, cls.STD))
    return low, high


# -- LRP ------------------------------------------------------------------------------


def lrp(net: Net, params, x: jax.Array, target, *, rule: str | Composite = "epsilon",
        eps: float = 1e-9, gamma: float = 0.25, layer: str | None = None, resize: bool = True,
        reduce: str | None = "sum") -> jax.Array:
    """Layer-wise relevance propagation maps.

    The relevance of the target's score (its logit, or a unit's value) is
    propagated down the net with the rule ``rule`` gives each layer (see the
    module docstring for the equations).  At the pixels the map is the relevance
    of the normalised image x_n = (x - mean) / std, summed over colour channels
    (``reduce='sum'``); with ``layer`` it is the relevance ``a * g`` of the
    activation a at that split point, bilinearly resized to the image unless
    ``resize=False``.  With zero biases and eps -> 0 the epsilon rule conserves
    relevance: the map sums to the score.

    ``rule`` strings apply to convolutions and dense layers (other layers use
    epsilon); a :class:`Composite` sets each kind, including ``first``, the rule
    of the net's first stage (e.g. ``'zB'`` with the bounds of normalised
    [0, 1] pixels).  :data:`EPSILON_GAMMA_BOX` is Montavon et al.'s recipe.

    Pure and jit-compatible with ``net``, ``rule``, ``eps``, ``gamma``, ``layer``,
    ``resize`` and ``reduce`` static; ``jax.vmap`` over params or images works.

    Args:
      net: the net (static).  LRP is defined for nets whose non-linearities are
        ReLUs and max-pools (the CNNs of the zoo); elsewhere (a ViT's attention,
        GELU and layer norms) the unrouted operations keep ordinary gradients.
      params: its params.
      x: images (N, H, W, 3), float RGB in [0, 1].
      target: class indices (N,) or (N, T), or a :class:`~jaxinterp.targets.Unit`.
      rule: ``'epsilon'``, ``'gamma'``, ``'alpha1beta0'`` or a :class:`Composite`.
      eps: stabiliser of every denominator, > 0 (Captum's 1e-9).
      gamma: weight of the positive weights in the gamma rule, >= 0.
      layer: split point whose relevance is returned (None: the pixels).
      resize: resize layer maps to the image size.
      reduce: channel reduction (``'sum'`` conserves relevance) or None to keep channels.

    Returns:
      maps: (N, T, H, W) (or (N, T, h, w) at the layer's resolution; a trailing
      channel axis with ``reduce=None``), in the dtype of x.

    Raises:
      ValueError naming the argument: ``x`` not (N, H, W, 3) floating;
      bad ``target``; unknown ``rule`` (or a Composite field), ``layer`` or
      ``reduce``; ``eps`` <= 0; ``gamma`` < 0; a non-spatial ``layer`` with ``resize``.

    References:
      Bach et al., "On pixel-wise explanations for non-linear classifier decisions
      by layer-wise relevance propagation", PLoS ONE 2015.
      Montavon et al., "Layer-wise relevance propagation: an overview", in
      Explainable AI, LNCS 11700, 2019.
      Montavon et al., "Explaining nonlinear classification decisions with deep
      Taylor decomposition", Pattern Recognition 2017 (zB).
    """
    x, targets = check_backprop_args(net, x, target, layer, resize, reduce)
    composite = as_composite(rule)
    body = lrp_rules(composite, eps, gamma)

    if layer is not None:
        def one(a1, t):
            return a1 * jax.grad(lambda a: target_score(net, params, a, t, start=layer,
                                                        rules=body))(a1)

        return finish_maps(lift(one)(activations_at(net, params, x, layer), targets),
                       reduce, layer, resize, x.shape[1:3])

    first = net.layers[0]
    count = _first_stage_maps(net, tuple(x.shape[1:3]))
    if count != 1:
        raise ValueError(f"net: LRP's input rule needs exactly one affine map in the first stage "
                         f"{first!r} of {net.name}, found {count}")
    head = lrp_input_rules(composite, eps, gamma,
                           _input_bounds(net) if composite.first == "zB" else None)
    _, std = _pixel_stats(net, x.dtype)

    def one(x1, t):
        a0, pull = jax.vjp(lambda v: net.apply(params, v[None], stop=first, rules=head)[0], x1)
        g0 = jax.grad(lambda a: target_score(net, params, a, t, start=first, rules=body))(a0)
        # The head's cotangent is the relevance of the normalised input divided by std.
        return pull(g0)[0] * std

    return finish_maps(lift(one)(x, targets), reduce, None, resize, x.shape[1:3])

