"""Layer-wise relevance propagation (LRP) and excitation backprop as backward rules.

Both are :class:`~jaxinterp.nets.rules.Rules` sets: the forward pass is the standard
one, and the backward pass of every affine map routed through ``rules.linear``
redistributes relevance (LRP) or marginal winning probability (excitation backprop)
instead of the gradient.  A rule identifies the map with
:func:`~jaxinterp.nets.rules.linear_kind` and splits it into a linear part and a bias
with :func:`~jaxinterp.nets.rules.affine_parts`, so one definition serves convolutions,
dense layers, eval batch norms and average pools.

* LRP: :func:`lrp_rules` / :func:`lrp_input_rules` (cached factories) build the rule
  set of a rule name or of a :class:`Composite`, one rule per kind of layer
  (:data:`EPSILON_GAMMA_BOX`, :data:`EPSILON_PLUS`); :func:`jaxinterp.attribution.lrp`
  runs them.
* Excitation backprop: :data:`EXCITATION` and its contrastive dual
  :data:`EXCITATION_NEGATED`; :func:`jaxinterp.attribution.excitation_backprop` runs them.

References:
  Bach et al., "On pixel-wise explanations for non-linear classifier decisions by
  layer-wise relevance propagation", PLoS ONE 2015.
  Montavon et al., "Layer-wise relevance propagation: an overview", in Explainable AI,
  Springer 2019.
  Kohlbrenner et al., "Towards best practice in explaining neural network decisions
  with LRP", IJCNN 2020.
  Zhang et al., "Top-down neural attention by excitation backprop", ECCV 2016.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import jax
import jax.numpy as jnp

from jaxinterp.checks import check_real
from jaxinterp.nets.rules import (STANDARD, AffineParts, Rules, affine_parts, linear_kind, standard_max_pool,
                                  standard_relu)

__all__ = [
    "Composite", "as_composite", "LRP_RULES", "EPSILON_GAMMA_BOX", "EPSILON_PLUS",
    "lrp_rules", "lrp_input_rules", "lrp_linear", "lrp_input_linear", "lrp_max_pool",
    "lrp_add", "lrp_relu6", "epsilon_gate", "stabilise",
    "EXCITATION", "EXCITATION_NEGATED", "EBP_STABILISER",
    "excitation_linear", "excitation_linear_negated", "excitation_add", "excitation_relu6",
]


def _linear_map(parts: AffineParts, which: str, gamma: float = 0.0) -> Callable:
    """x -> lin(x, K) with K = W ('all'), W+ ('pos'), W- ('neg'), W + gamma W+ ('gamma+') or W + gamma W- ('gamma-')."""
    k = parts.kernel
    if k is None:  # a map with non-negative weights: W+ = W, W- = 0
        scale = {"all": 1.0, "pos": 1.0, "neg": 0.0, "gamma+": 1.0 + gamma, "gamma-": 1.0}[which]
        return lambda a: scale * parts.lin(a, None)
    k = {"all": k, "pos": jnp.maximum(k, 0), "neg": jnp.minimum(k, 0),
         "gamma+": k + gamma * jnp.maximum(k, 0), "gamma-": k + gamma * jnp.minimum(k, 0)}[which]
    return lambda a: parts.lin(a, k)


def _bias(parts: AffineParts, which: str, gamma: float = 0.0):
    b = parts.bias
    if b is None:
        return 0.0
    return {"all": b, "pos": jnp.maximum(b, 0), "gamma+": b + gamma * jnp.maximum(b, 0),
            "gamma-": b + gamma * jnp.minimum(b, 0)}[which]


def _transpose(m: Callable, x: jax.Array, s: jax.Array) -> jax.Array:
    """J_m^T s for a linear map m (evaluated at x; the point does not matter)."""
    return jax.vjp(m, x)[1](s)[0]


def stabilise(z: jax.Array, eps: float) -> jax.Array:
    """z + eps * sign(z) with sign(0) = +1: Captum's LRP stabiliser (``lrp_rules.py``)."""
    return z + eps * jnp.where(z >= 0, 1, -1).astype(z.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def epsilon_gate(z: jax.Array, eps: float) -> jax.Array:
    """Identity forward; backward multiplies the cotangent by z / (z + eps sign z).

    Placed after a standard op, it turns its ordinary VJP into the LRP-epsilon
    rule: ``J^T (g * z / stabilise(z, eps))``.
    """
    return z


def _epsilon_gate_fwd(z, eps):
    return z, z


def _epsilon_gate_bwd(eps, z, g):
    return (g * z / stabilise(z, eps),)


epsilon_gate.defvjp(_epsilon_gate_fwd, _epsilon_gate_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _affine_with_backward(backward: Callable, f: Callable, x: jax.Array, *weights) -> jax.Array:
    """f(x, *weights) whose VJP w.r.t. x is ``backward(f, x, weights, f(x, *weights), g)``.

    The weights receive zero cotangents: a modified backward pass defines no
    meaningful derivative with respect to the parameters.
    """
    return f(x, *weights)


def _affine_with_backward_fwd(backward, f, x, *weights):
    y = f(x, *weights)
    return y, (x, weights, y)


def _affine_with_backward_bwd(backward, f, res, g):
    x, weights, y = res
    return (backward(f, x, weights, y, g), *(jnp.zeros_like(w) for w in weights))


_affine_with_backward.defvjp(_affine_with_backward_fwd, _affine_with_backward_bwd)


# ----------------------------------------------------------------------------
# LRP.

LRP_RULES = ("epsilon", "gamma", "alpha1beta0", "identity", "zB")
"""Names of the LRP rules of a :class:`Composite` (see :func:`lrp_linear`)."""

_ALLOWED = {
    "conv": ("epsilon", "gamma", "alpha1beta0"),
    "dense": ("epsilon", "gamma", "alpha1beta0"),
    "norm": ("epsilon", "gamma", "alpha1beta0", "identity"),
    "pool": ("epsilon", "gamma", "alpha1beta0"),
    "first": ("epsilon", "gamma", "alpha1beta0", "zB"),
}


@dataclasses.dataclass(frozen=True)
class Composite:
    """Which LRP rule each kind of affine map uses (a "composite" of rules).

    Attributes:
      conv: rule of convolutions: ``'epsilon'``, ``'gamma'`` or ``'alpha1beta0'``.
      dense: rule of dense layers (same choices).
      norm: rule of eval batch norms: those, or ``'identity'`` (relevance passes unchanged).
      pool: rule of average pools (same choices as conv; for non-negative inputs all
        three agree up to the stabiliser).
      first: rule of the net's first stage (the convolution on the normalised
        image in every CNN of the zoo), also ``'zB'``; None = the rule of its kind.

    Max-pools, residual sums and ReLU6 are not configurable: max-pools pass all relevance
    to the winner through the epsilon stabiliser (Captum's ``EpsilonRule`` on
    ``MaxPool2d``), residual sums split it in proportion to the summands (the
    epsilon rule on ``a + b``), ReLU6 passes it unchanged (:func:`lrp_relu6`).  Any other
    affine map uses the epsilon rule.
    """

    conv: str = "epsilon"
    dense: str = "epsilon"
    norm: str = "epsilon"
    pool: str = "epsilon"
    first: str | None = None

    def __post_init__(self):
        for name, allowed in _ALLOWED.items():
            value = getattr(self, name)
            if name == "first" and value is None:
                continue
            if value not in allowed:
                raise ValueError(f"rule.{name}: expected one of {list(allowed)}"
                                 f"{' or None' if name == 'first' else ''}, got {value!r}")

    def rule_for(self, kind: str) -> str:
        """The rule applied to an affine map of ``kind`` (see :func:`linear_kind`)."""
        return getattr(self, kind) if kind in ("conv", "dense", "norm", "pool") else "epsilon"


EPSILON_GAMMA_BOX = Composite(conv="gamma", dense="epsilon", norm="epsilon", pool="epsilon",
                              first="zB")
"""Montavon et al. (2019): LRP-gamma on convolutions, LRP-epsilon on dense layers
and the zB (box) rule on the pixel layer (zennit's ``EpsilonGammaBox``)."""

EPSILON_PLUS = Composite(conv="alpha1beta0", dense="epsilon", norm="epsilon", pool="epsilon")
"""Kohlbrenner et al. (2020): LRP-alpha1beta0 (z+) on convolutions, LRP-epsilon on
dense layers (zennit's ``EpsilonPlus``)."""


def _lrp_backward(rule: str, eps: float, gamma: float, relevance: bool, bounds, f, x, weights,
                  z, g):
    """One affine layer z = f(x, W) + b of LRP, from the output cotangent g.

    The relevance at the output is R_z = z * g.  With s = R_z / stabilise(z', eps)
    for a rule's denominator z', the relevance at the input is

      epsilon:     R_x = x * W^T s,                         z' = W x + b
      gamma:       R_x = x+ * W^T_up s+ + x- * W^T_dn s+ + x+ * W^T_dn s- + x- * W^T_up s-,
                   W_up = W + gamma W+, W_dn = W + gamma W-, s+ = s on outputs z > 0 with
                   z' = W_up x+ + W_dn x- + b + gamma b+, s- = s on z < 0 with
                   z' = W_dn x+ + W_up x- + b + gamma b-  (the generalised gamma rule)
      alpha1beta0: R_x = x+ * W+^T s + x- * W-^T s,         z' = W+ x+ + W- x- + b+
      identity:    R_x = R_z                                (same shapes in and out)
      zB:          R_x = x * W^T s - l * W+^T s - h * W-^T s,  z' = W x - W+ l - W- h

    Returns R_x when ``relevance`` (the input layer), otherwise the modified
    gradient g_x with R_x = x * g_x (zB has no such form and needs ``relevance``).
    """
    parts = affine_parts(f, x, weights)
    if parts.kind == "other" or rule == "epsilon":
        s = g * z / stabilise(z, eps)
        c = _transpose(lambda a: f(a, *weights), x, s)
        return x * c if relevance else c
    if rule == "identity":
        return g * z if relevance else g * z / stabilise(x, eps)
    xp, xn = jnp.maximum(x, 0), jnp.minimum(x, 0)
    if rule == "gamma":
        up, down = _linear_map(parts, "gamma+", gamma), _linear_map(parts, "gamma-", gamma)
        r = g * z
        sp = jnp.where(z > 0, r, 0) / stabilise(up(xp) + down(xn) + _bias(parts, "gamma+", gamma), eps)
        sn = jnp.where(z < 0, r, 0) / stabilise(down(xp) + up(xn) + _bias(parts, "gamma-", gamma), eps)
        cp = _transpose(up, x, sp) + _transpose(down, x, sn)          # coefficients of x+
        cn = _transpose(down, x, sp) + _transpose(up, x, sn)          # and of x-
        return xp * cp + xn * cn if relevance else jnp.where(x > 0, cp, cn)
    mp, mn = _linear_map(parts, "pos"), _linear_map(parts, "neg")
    if rule == "alpha1beta0":
        s = g * z / stabilise(mp(xp) + mn(xn) + _bias(parts, "pos"), eps)
        cp, cn = _transpose(mp, x, s), _transpose(mn, x, s)
        return xp * cp + xn * cn if relevance else jnp.where(x > 0, cp, cn)
    if rule == "zB":
        if not relevance:
            raise ValueError("rule: 'zB' applies only to the input layer (Composite.first)")
        low = jnp.broadcast_to(jnp.asarray(bounds[0], x.dtype), x.shape)
        high = jnp.broadcast_to(jnp.asarray(bounds[1], x.dtype), x.shape)
        m = _linear_map(parts, "all")
        s = g * z / stabilise(m(x) - mp(low) - mn(high), eps)
        return x * _transpose(m, x, s) - low * _transpose(mp, x, s) - high * _transpose(mn, x, s)
    raise ValueError(f"rule: unknown LRP rule {rule!r}; expected one of {list(LRP_RULES)}")


def lrp_linear(f: Callable, x: jax.Array, *weights, composite: Composite, eps: float,
               gamma: float) -> jax.Array:
    """``f(x, *weights)`` whose backward pass is the LRP rule the composite gives its kind.

    The cotangent is a modified gradient g (relevance R = activation * g); see
    :func:`_lrp_backward` for the equations.  The epsilon rule is the ordinary
    VJP of f after an :func:`epsilon_gate` (so its weights get the gated
    ordinary cotangents); the other rules give the weights zero cotangents.
    """
    rule = composite.rule_for(linear_kind(f))
    if rule == "epsilon":
        return epsilon_gate(f(x, *weights), eps)
    backward = functools.partial(_lrp_backward, rule, eps, gamma, False, None)
    return _affine_with_backward(backward, f, x, *weights)


def lrp_input_linear(f: Callable, x: jax.Array, *weights, composite: Composite, eps: float,
                     gamma: float, bounds: tuple | None = None) -> jax.Array:
    """``f(x, *weights)`` whose backward pass returns the relevance R_x itself (input layer).

    Used for the net's first stage only (:func:`lrp_input_rules`): from the
    modified gradient g at its output it returns R_x, not a gradient, so the
    cotangent reaching the image is the relevance of the normalised pixels.  The
    rule is ``composite.first``, or the composite's rule for f's kind when that is
    None.  ``bounds = (low, high)`` per input channel are needed by ``'zB'``.
    """
    rule = composite.first or composite.rule_for(linear_kind(f))
    backward = functools.partial(_lrp_backward, rule, eps, gamma, True, bounds)
    return _affine_with_backward(backward, f, x, *weights)


def lrp_max_pool(x: jax.Array, window: int, stride: int, padding: int = 0, *,
                 eps: float) -> jax.Array:
    """Max-pooling whose backward pass is LRP-epsilon: winner-take-all, gated by p / (p + eps sign p).

    As Captum's ``EpsilonRule`` on ``MaxPool2d``: the relevance of an output
    goes to the (first) maximal input of its window.
    """
    return epsilon_gate(standard_max_pool(x, window, stride, padding), eps)


def lrp_add(a: jax.Array, b: jax.Array, *, eps: float) -> jax.Array:
    """Residual sum whose backward pass splits relevance in proportion: R_a = a / (a + b) R.

    In gradient form g_a = g_b = g z / (z + eps sign z), z = a + b: the epsilon
    rule on the sum (Captum's ``EpsilonRule`` on its ``Addition_Module``).
    """
    return epsilon_gate(a + b, eps)


@jax.custom_vjp
def lrp_relu6(x: jax.Array) -> jax.Array:
    """ReLU6 whose backward pass conserves relevance: R_x = R_y.

    Forward: y = min(max(x, 0), 6).  Backward, in gradient form (R = activation * g):
    g_x = g * y / x for x > 0, else 0; that is g below the clip and g * 6 / x above it.
    A ReLU's ordinary derivative already passes relevance unchanged (R_x = x g = y g
    where x > 0); ReLU6's would drop the relevance of every clipped unit (derivative 0
    above 6), so the clip passes it as the activation rule of zennit (``Pass``) does.
    """
    return jnp.clip(x, 0, 6)


def _lrp_relu6_fwd(x):
    return jnp.clip(x, 0, 6), x


def _lrp_relu6_bwd(x, g):
    above = x > 6
    ratio = jnp.where(above, 6 / jnp.where(above, x, 1), 1).astype(g.dtype)
    return (jnp.where(x > 0, g * ratio, jnp.zeros_like(g)),)


lrp_relu6.defvjp(_lrp_relu6_fwd, _lrp_relu6_bwd)


def _check_lrp_hyper(eps, gamma) -> tuple[float, float]:
    if isinstance(eps, jax.core.Tracer) or isinstance(gamma, jax.core.Tracer):
        raise ValueError("eps, gamma: expected static Python floats (mark them static under jit)")
    return (check_real(eps, "eps", minimum=0, open_min=True, open_max=True),
            check_real(gamma, "gamma", minimum=0, open_max=True))


def as_composite(rule) -> Composite:
    """A :class:`Composite` from a rule name (used on conv and dense layers) or a Composite."""
    if isinstance(rule, Composite):
        return rule
    if rule in ("epsilon", "gamma", "alpha1beta0"):
        return Composite(conv=rule, dense=rule)
    raise ValueError(f"rule: expected 'epsilon', 'gamma', 'alpha1beta0' or a Composite, got {rule!r}")


@functools.lru_cache(maxsize=None)
def _lrp_rules(composite: Composite, eps: float, gamma: float) -> Rules:
    return Rules(
        name=f"lrp({composite}, eps={eps:g}, gamma={gamma:g})",
        relu=standard_relu,
        relu6=lrp_relu6,
        max_pool=functools.partial(lrp_max_pool, eps=eps),
        linear=functools.partial(lrp_linear, composite=composite, eps=eps, gamma=gamma),
        add=functools.partial(lrp_add, eps=eps),
    )


def lrp_rules(rule: str | Composite = "epsilon", eps: float = 1e-9, gamma: float = 0.25) -> Rules:
    """The LRP backward rules for every layer of a net but the first.

    ``jax.grad`` of a score under these rules is the modified gradient g of LRP:
    the relevance of any routed activation a is ``a * g``.  ReLUs keep their
    ordinary derivative (relevance passes), ReLU6 passes relevance through its clip
    (:func:`lrp_relu6`), max-pools and residual sums use the epsilon rule, affine maps
    the rule the composite gives their kind.  Equal
    arguments give the same object (cached), so jit caches are reused.

    Args:
      rule: ``'epsilon'``, ``'gamma'``, ``'alpha1beta0'`` (on conv and dense layers,
        epsilon elsewhere) or a :class:`Composite`.
      eps: the stabiliser, > 0 (Captum's default 1e-9).
      gamma: the gamma rule's weight on positive weights, >= 0.

    Raises:
      ValueError naming ``rule``, ``eps`` or ``gamma``.
    """
    eps, gamma = _check_lrp_hyper(eps, gamma)
    return _lrp_rules(as_composite(rule), eps, gamma)


@functools.lru_cache(maxsize=None)
def _lrp_input_rules(composite: Composite, eps: float, gamma: float, bounds) -> Rules:
    return Rules(
        name=f"lrp_input({composite}, eps={eps:g}, gamma={gamma:g})",
        linear=functools.partial(lrp_input_linear, composite=composite, eps=eps, gamma=gamma,
                                 bounds=bounds),
    )


def lrp_input_rules(rule: str | Composite = "epsilon", eps: float = 1e-9, gamma: float = 0.25,
                    bounds: tuple | None = None) -> Rules:
    """Rules for the net's first stage, whose affine map returns the input relevance R_x.

    The backward pass of the affine map maps the modified gradient g at its
    output to the relevance of its input (not to a gradient), with the rule
    ``Composite.first`` (or the rule of the map's kind).  Only for a first stage
    holding one affine map, as in every CNN of the zoo.

    Args:
      rule: as :func:`lrp_rules`.
      eps, gamma: as :func:`lrp_rules`.
      bounds: ``(low, high)``, sequences of per-channel bounds of the (normalised)
        input, required when the first rule is ``'zB'``.

    Raises:
      ValueError naming ``rule``, ``eps``, ``gamma`` or ``bounds``.
    """
    eps, gamma = _check_lrp_hyper(eps, gamma)
    composite = as_composite(rule)
    if composite.first == "zB" and bounds is None:
        raise ValueError("bounds: the zB rule needs (low, high) input bounds")
    if bounds is not None:
        bounds = (tuple(float(v) for v in bounds[0]), tuple(float(v) for v in bounds[1]))
    return _lrp_input_rules(composite, eps, gamma, bounds)


# ----------------------------------------------------------------------------
# Excitation backprop.

EBP_STABILISER = 1e-20
"""Added to excitation backprop's denominators so that 0 / 0 gives 0 (TorchRay's value)."""


def _excitation_backward(negate: bool, f, x, weights, z, p):
    """Marginal winning probability at the input of one affine layer (Zhang et al. 2016).

    With W+ = max(W, 0) (of -W when ``negate``), bias ignored::

        conv / dense:  P_x = x * W+^T ( P / (W+ x + 1e-20) )
        pool:          P_x = x * W^T  ( P / (W x + 1e-20) )      (all weights positive)
        norm:          P_x = P                                   (passes unchanged)

    The cotangent is the probability itself, not a gradient.
    """
    parts = affine_parts(f, x, weights)
    if negate and parts.kind not in ("conv", "dense"):
        raise ValueError(f"classifier_layer: the contrastive dual negates a conv or dense "
                         f"classifier; this stage holds a {parts.kind!r} map")
    if parts.kind == "norm":
        return p
    if parts.kind == "other":
        raise ValueError(f"rules: excitation backprop has no rule for the affine map {f!r}; "
                         f"expected a conv, dense, batch norm or average pool of jaxinterp.nets.layers")
    if parts.kernel is None:
        m = lambda a: parts.lin(a, None)  # noqa: E731
    else:
        k = -parts.kernel if negate else parts.kernel
        kp = jnp.maximum(k, 0)
        m = lambda a: parts.lin(a, kp)  # noqa: E731
    s = p / (m(x) + EBP_STABILISER)
    return x * _transpose(m, x, s)


def excitation_linear(f: Callable, x: jax.Array, *weights) -> jax.Array:
    """``f(x, *weights)`` whose backward pass is excitation backprop (see :func:`_excitation_backward`)."""
    return _affine_with_backward(functools.partial(_excitation_backward, False), f, x, *weights)


def excitation_linear_negated(f: Callable, x: jax.Array, *weights) -> jax.Array:
    """As :func:`excitation_linear` with the weights negated in the backward pass (the dual unit)."""
    return _affine_with_backward(functools.partial(_excitation_backward, True), f, x, *weights)


@jax.custom_vjp
def excitation_add(a: jax.Array, b: jax.Array) -> jax.Array:
    """Residual sum a + b; backward splits the probability in proportion: P_a = a / (a + b) P."""
    return a + b


def _excitation_add_fwd(a, b):
    return a + b, (a, b)


def _excitation_add_bwd(res, p):
    a, b = res
    s = p / (a + b + EBP_STABILISER)
    return a * s, b * s


excitation_add.defvjp(_excitation_add_fwd, _excitation_add_bwd)


@jax.custom_vjp
def excitation_relu6(x: jax.Array) -> jax.Array:
    """ReLU6 whose backward pass gives the winning probability to every active unit: P_x = P 1[x > 0].

    Excitation backprop passes the probability of a neuron to its inputs through the
    affine maps, in proportion to the activations; a non-linearity only decides which
    neurons are active (output > 0).  A unit clipped at 6 is active, so it passes its
    probability on (the ordinary derivative, 0 above 6, would silence the most
    strongly excited units).
    """
    return jnp.clip(x, 0, 6)


def _excitation_relu6_fwd(x):
    return jnp.clip(x, 0, 6), x


def _excitation_relu6_bwd(x, p):
    return (jnp.where(x > 0, p, jnp.zeros_like(p)),)


excitation_relu6.defvjp(_excitation_relu6_fwd, _excitation_relu6_bwd)

EXCITATION = STANDARD.replace(name="excitation", linear=excitation_linear, add=excitation_add,
                              relu6=excitation_relu6)
"""Excitation backprop (Zhang et al. 2016): affine maps pass the marginal winning
probability through their positive weights, ReLUs and max-pools keep their
ordinary derivative (the winner takes all), ReLU6 passes it wherever its input is
positive (:func:`excitation_relu6`), batch norms pass it unchanged,
residual sums split it in proportion.  ``jax.grad`` of a score under these rules
returns the probability itself at the input of the differentiated function."""

EXCITATION_NEGATED = EXCITATION.replace(name="excitation_negated", linear=excitation_linear_negated)
"""Excitation backprop with every affine map's weights negated in the backward pass;
applied to the classifier stage only, it gives the dual unit of contrastive EBP."""
