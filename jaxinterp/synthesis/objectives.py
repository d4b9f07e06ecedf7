"""Objectives of feature visualisation that add and scale (Lucid's algebra, as pure functions).

An :class:`Objective` is a scalar to MAXIMISE, computed from a group of B
images x (B, H, W, 3) and the activations the net produces for them at the
layers it names (``acts[layer]``: (B, h, w, C); :data:`OUTPUT` names the net's
output (B, classes)).  Objectives combine with ``+``, ``-``, scalar ``*`` and
``/``: ``channel('layer4', 7) + 100 * diversity('layer4') - 0.05 * tv()``.

Rewards (higher is better): :func:`neuron`, :func:`channel`,
:func:`direction`, :func:`inner_product`, :func:`diversity`,
:func:`class_logit`, :func:`deepdream`, :func:`feature_matching`,
:func:`caricature`.  Penalties (>= 0, to subtract): :func:`alignment`,
:func:`tv`, :func:`alpha`, :func:`l1`, :func:`l2`, :func:`blur`.

Targets (channel, neuron position, class, direction, Phi0) may be traced
values: build the objective inside the function the renderer vmaps, and one
compiled call renders every target.

Conventions: lucent's objectives are losses (its ``channel`` is minus the
mean); here every reward is the quantity itself, so Lucid's
``obj - 1e2 * diversity`` (a loss) reads ``obj + 100 * diversity`` here.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Mapping

import jax
import jax.numpy as jnp

from jaxinterp.synthesis import regularisers

__all__ = ["Objective", "OUTPUT", "neuron", "channel", "direction", "inner_product", "diversity",
           "alignment", "class_logit", "deepdream", "feature_matching", "caricature", "tv", "alpha",
           "l1", "l2", "blur"]

OUTPUT = "output"
"""The name of the net's output in ``acts`` (``net.apply`` with no ``stop``)."""


def _number(v) -> bool:
    return isinstance(v, (int, float)) or (hasattr(v, "shape") and jnp.ndim(v) == 0)


@dataclasses.dataclass(frozen=True)
class Objective:
    """A scalar to maximise: ``fn(acts, x) -> ()`` with ``acts`` a dict layer -> (B, ...) and x (B, H, W, 3).

    Attributes:
      fn: the function.
      layers: the split points (or :data:`OUTPUT`) whose activations ``fn`` reads.
      name: a description for reports.
    """

    fn: Callable[[Mapping[str, jax.Array], jax.Array], jax.Array]
    layers: tuple[str, ...] = ()
    name: str = ""

    def __call__(self, acts: Mapping[str, jax.Array], x: jax.Array) -> jax.Array:
        return self.fn(acts, x)

    def __add__(self, other):
        if isinstance(other, Objective):
            layers = self.layers + tuple(l for l in other.layers if l not in self.layers)
            return Objective(lambda a, x: self(a, x) + other(a, x), layers, f"{self.name} + {other.name}")
        if _number(other):
            return Objective(lambda a, x: self(a, x) + other, self.layers, f"{self.name} + {other}")
        return NotImplemented

    __radd__ = __add__

    def __mul__(self, k):
        if not _number(k):
            return NotImplemented
        return Objective(lambda a, x: k * self(a, x), self.layers, f"{k} * ({self.name})")

    __rmul__ = __mul__

    def __neg__(self):
        return -1 * self

    def __sub__(self, other):
        return self + (-1 * other)

    def __rsub__(self, other):
        return (-1 * self) + other

    def __truediv__(self, k):
        if not _number(k):
            return NotImplemented
        return self * (1.0 / k)


def _check_layer(layer) -> str:
    if not isinstance(layer, str) or not layer:
        raise ValueError(f"layer: expected a split point name (str), got {layer!r}")
    return layer


def neuron(layer: str, channel, y=None, x=None) -> Objective:
    """Activation of one neuron (channel at row y, column x; the centre when both None), mean over the group."""
    layer = _check_layer(layer)

    def fn(acts, _):
        a = acts[layer]
        yy = a.shape[1] // 2 if y is None else y
        xx = a.shape[2] // 2 if x is None else x
        return jnp.mean(a[:, yy, xx, channel])

    return Objective(fn, (layer,), f"neuron {layer}:{channel}")


def channel(layer: str, channel) -> Objective:
    """Mean activation of a channel over positions and the group (Lucid ``channel``)."""
    layer = _check_layer(layer)
    return Objective(lambda acts, _: jnp.mean(acts[layer][..., channel]), (layer,), f"channel {layer}:{channel}")


def direction(layer: str, vector) -> Objective:
    """Cosine similarity of the activation vectors with ``vector`` (C,), mean over positions and the group."""
    layer = _check_layer(layer)

    def fn(acts, _):
        a = acts[layer]
        v = jnp.asarray(vector, a.dtype)
        num = jnp.sum(a * v, axis=-1)
        den = jnp.maximum(jnp.linalg.norm(a, axis=-1) * jnp.linalg.norm(v), 1e-8)
        return jnp.mean(num / den)

    return Objective(fn, (layer,), f"direction {layer}")


def inner_product(layer: str, weights) -> Objective:
    """``<a, weights>`` summed over the activation (weights broadcast to (h, w, C)), mean over the group.

    Mahendran and Vedaldi's activation maximisation: the inner product with a
    one-hot neuron, or any direction in the representation.
    """
    layer = _check_layer(layer)

    def fn(acts, _):
        a = acts[layer]
        return jnp.mean(jnp.sum((a * jnp.asarray(weights, a.dtype)).reshape(a.shape[0], -1), axis=1))

    return Objective(fn, (layer,), f"inner product {layer}")


def diversity(layer: str) -> Objective:
    """Minus the mean cosine similarity of the group's Gram matrices (Lucid ``diversity``; weight 100).

    ``-(1/B) sum_{i != j} <G_i / ||G_i||, G_j / ||G_j||>`` with G_i the (C, C) Gram
    matrix of image i's activation; higher when the B images differ in style.
    """
    layer = _check_layer(layer)

    def fn(acts, _):
        a = acts[layer]
        b = a.shape[0]
        f = a.reshape(b, -1, a.shape[-1])
        g = jnp.einsum("bpc,bpd->bcd", f, f).reshape(b, -1)
        g = g / jnp.maximum(jnp.linalg.norm(g, axis=1, keepdims=True), 1e-12)
        sim = g @ g.T
        return -(jnp.sum(sim) - jnp.trace(sim)) / b

    return Objective(fn, (layer,), f"diversity {layer}")


def alignment(layer: str, decay_ratio: float = 2.0) -> Objective:
    """Penalty ``sum_{d=1..4} sum_i mean((a_i - a_{i+d})^2) / decay_ratio^d`` (Lucid ``alignment``).

    Neighbouring images of the group are pulled together at ``layer`` (for
    interpolations); subtract it.
    """
    layer = _check_layer(layer)

    def fn(acts, _):
        a = acts[layer]
        total = 0.0
        for d in range(1, 5):
            if d < a.shape[0]:
                diff = (a[:-d] - a[d:]).reshape(a.shape[0] - d, -1)
                total = total + jnp.sum(jnp.mean(diff ** 2, axis=1)) / decay_ratio ** d
        return total

    return Objective(fn, (layer,), f"alignment {layer}")


def class_logit(c) -> Objective:
    """The unnormalised class score (logit) S_c, mean over the group (Simonyan et al. 2014)."""
    return Objective(lambda acts, _: jnp.mean(acts[OUTPUT][:, c]), (OUTPUT,), f"class {c}")


def deepdream(layer: str) -> Objective:
    """``mean(a^2)`` at ``layer`` (Lucid's DeepDream objective)."""
    layer = _check_layer(layer)
    return Objective(lambda acts, _: jnp.mean(acts[layer] ** 2), (layer,), f"deepdream {layer}")


def feature_matching(layer: str, phi0) -> Objective:
    """``-||Phi(x) - Phi0||^2 / ||Phi0||^2``, mean over the group: the pre-image's data term.

    ``phi0``: the target activation (h, w, C) (or broadcastable to each image's).
    """
    layer = _check_layer(layer)

    def fn(acts, _):
        a = acts[layer]
        p = jnp.broadcast_to(jnp.asarray(phi0, a.dtype), a.shape[1:])
        num = jnp.sum(((a - p) ** 2).reshape(a.shape[0], -1), axis=1)
        return -jnp.mean(num) / jnp.maximum(jnp.sum(p * p), 1e-12)

    return Objective(fn, (layer,), f"feature matching {layer}")


def caricature(layer: str, phi0) -> Objective:
    """``<Phi(x), max(Phi0, 0)> / ||Phi0||^2`` (Mahendran and Vedaldi's caricature), mean over the group."""
    layer = _check_layer(layer)

    def fn(acts, _):
        a = acts[layer]
        p = jnp.broadcast_to(jnp.asarray(phi0, a.dtype), a.shape[1:])
        dot = jnp.sum((a * jnp.maximum(p, 0)).reshape(a.shape[0], -1), axis=1)
        return jnp.mean(dot) / jnp.maximum(jnp.sum(p * p), 1e-12)

    return Objective(fn, (layer,), f"caricature {layer}")


def tv(beta: float = 2.0, *, variation: float = regularisers.V_PIXEL) -> Objective:
    """Penalty: the normalised TV^beta of the images (:func:`regularisers.tv_norm`), mean over the group."""
    return Objective(lambda _, x: jnp.mean(regularisers.tv_norm(x, beta, variation=variation)), (), f"tv{beta}")


def alpha(alpha_: float = 6.0, *, mean=0.0, bound: float = regularisers.B_PIXEL) -> Objective:
    """Penalty: the normalised alpha-norm of the images (:func:`regularisers.alpha_norm`), mean over the group."""
    return Objective(lambda _, x: jnp.mean(regularisers.alpha_norm(x, alpha_, mean=mean, bound=bound)), (),
                     f"alpha{alpha_}")


def l1(centre=0.5) -> Objective:
    """Penalty: mean |x - centre| (Lucid ``L1``)."""
    return Objective(lambda _, x: jnp.mean(regularisers.l1(x, centre=centre)), (), "l1")


def l2(centre=0.5) -> Objective:
    """Penalty: sum (x - centre)^2 per image, mean over the group (Simonyan et al.'s L2)."""
    return Objective(lambda _, x: jnp.mean(regularisers.l2(x, centre=centre)), (), "l2")


def blur() -> Objective:
    """Penalty: lucent's ``blur_input_each_step`` (:func:`regularisers.blur_penalty`), mean over the group.

    lucent sums over the batch instead, so its value is B times this one.
    """
    return Objective(lambda _, x: jnp.mean(regularisers.blur_penalty(x)), (), "blur")
