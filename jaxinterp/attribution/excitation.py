"""Excitation backprop and its contrastive variant (Zhang et al. ECCV 2016, IJCV 2018).

Excitation backprop (EBP) models top-down attention as a probabilistic
winner-take-all process: the target unit holds probability 1 and each unit
passes its probability to its children in proportion to their positive
excitation.  The marginal winning probability (MWP) of the units of a layer is,
for an affine layer z = W x + b with W+ = max(W, 0)::

    P_x = x * W+^T ( P_z / (W+ x) )          (bias ignored; + 1e-20 against 0 / 0)

ReLUs pass P (a unit with x = 0 wins nothing), max-pools give it to the winner,
average pools are affine maps with positive weights, eval batch norms pass P
unchanged and residual sums split it in proportion, P_a = a / (a + b) P.  The
MWP of every layer sums to 1 (with non-negative excitations).  This is the
backward pass of the net under :data:`jaxinterp.nets.relevance_rules.EXCITATION`, whose
cotangent is the probability itself.

Conventions (those of TorchRay 1.0's ``excitation_backprop``): the map at a
split point is the MWP of that activation (its output, not multiplied again by
the activation), summed over channels; at the pixels it is the MWP of the
normalised image x_n = (x - mean) / std, whose first layer sees inputs of both
signs and is not treated specially; batch norms pass the MWP through.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxinterp.checks import check_images, check_layer
from jaxinterp.targets import Unit, check_targets, lift, target_score
from jaxinterp.attribution._lift import (activations_at, check_backprop_args, check_reduce,
                                         check_spatial_layer, finish_maps, reduce_channels, resize_maps)
from jaxinterp.attribution.lrp import _pixel_stats
from jaxinterp.nets import Net
from jaxinterp.nets.relevance_rules import EXCITATION, EXCITATION_NEGATED

__all__ = ["excitation_backprop", "contrastive_excitation_backprop"]


def _mwp(net: Net, params, a1: jax.Array, t, start: str | None) -> jax.Array:
    """The MWP of target t at ``a1`` (an image, or the activation at split point ``start``)."""
    return jax.grad(lambda a: target_score(net, params, a, t, start=start, rules=EXCITATION))(a1)


def excitation_backprop(net: Net, params, x: jax.Array, target, *, layer: str | None = None,
                        resize: bool = True, reduce: str | None = "sum") -> jax.Array:
    """Excitation backprop maps: the marginal winning probability of a target's units.

    The target (a class logit or a :class:`~jaxinterp.targets.Unit`) holds
    probability 1 and passes it down with P_x = x * W+^T(P_z / (W+ x)) through
    every affine map (see the module docstring).  The map is the MWP at the
    activation of split point ``layer`` (TorchRay's ``saliency_layer``, its
    output), summed over channels and bilinearly resized to the image unless
    ``resize=False``; with ``layer=None`` it is the MWP of the normalised pixels.

    Pure and jit-compatible with ``net``, ``layer``, ``resize`` and ``reduce`` static.

    Args:
      net: the net (static).
      params: its params.
      x: images (N, H, W, 3), float RGB in [0, 1].
      target: class indices (N,) or (N, T), or a Unit (its value's gradient, 1 /
        positions for a channel, is the initial probability).
      layer: split point to visualise (None: the pixels).
      resize: resize layer maps to the image size.
      reduce: channel reduction (``'sum'``, TorchRay's) or None to keep channels.

    Returns:
      maps: (N, T, H, W) (or (N, T, h, w) with ``resize=False``; a trailing
      channel axis with ``reduce=None``); each (unreduced) map sums to 1 when
      the excitations are non-negative.

    Raises:
      ValueError naming the argument: ``x``, ``target``, ``layer``, ``reduce``.

    References:
      Zhang, Lin, Brandt, Shen and Sclaroff, "Top-down neural attention by
      excitation backprop", ECCV 2016; IJCV 126, 2018.
    """
    x, targets = check_backprop_args(net, x, target, layer, resize, reduce)

    def one(a1, t):
        return _mwp(net, params, a1, t, layer)

    p = lift(one)(activations_at(net, params, x, layer), targets)
    if layer is None:
        p = p * _pixel_stats(net, x.dtype)[1]  # the pixels' cotangent is P(x_n) / std
    return finish_maps(p, reduce, layer, resize, x.shape[1:3])


def _position(net: Net, name: str) -> int:
    return net.layers.index(name)


def contrastive_excitation_backprop(net: Net, params, x: jax.Array, target, *,
                                    contrast_layer: str, layer: str | None = None,
                                    classifier_layer: str | None = None, relu: bool = True,
                                    resize: bool = True, reduce: str | None = "sum") -> jax.Array:
    """Contrastive excitation backprop: the target's MWP minus that of its dual unit.

    The dual unit has the target's classifier weights negated (the affine map in
    stage ``classifier_layer`` passes probability through max(-W, 0)).  Both MWPs
    are propagated down to ``contrast_layer``, subtracted there, and the
    difference is propagated on down to ``layer`` (or the pixels) with ordinary
    excitation backprop.  The map is the channel reduction of the result, with
    negative values set to 0 when ``relu`` (TorchRay clamps after the channel sum).

    Every EBP rule is linear in the probability it passes, so the result equals
    the difference of the two MWPs taken at ``layer`` and does not depend on
    ``contrast_layer`` except through rounding (as in TorchRay).

    Args:
      net, params, x: as :func:`excitation_backprop`.
      target: class indices (N,) or (N, T) (a Unit has no dual).
      contrast_layer: split point where the two MWPs meet; after ``layer`` (or
        equal to it) and before ``classifier_layer``.
      layer: split point to visualise (None: the pixels).
      classifier_layer: split point of the stage holding the classifier's affine
        map (None: the last split point, the classifier of every zoo net).
      relu: keep the positive part of the (reduced) map.
      resize, reduce: as :func:`excitation_backprop`.

    Returns:
      maps: (N, T, H, W) (see :func:`excitation_backprop`).

    Raises:
      ValueError naming the argument: unknown or misordered ``contrast_layer``,
      ``layer`` or ``classifier_layer``; a Unit ``target``; ``x``; ``reduce``.

    References:
      Zhang, Lin, Brandt, Shen and Sclaroff, "Top-down neural attention by
      excitation backprop", ECCV 2016 (section 3.3, contrastive top-down attention).
    """
    x = check_images(x)
    if isinstance(target, Unit):
        raise ValueError("target: contrastive excitation backprop needs class indices "
                         "(the dual negates the classifier); got a Unit")
    if contrast_layer is None:
        raise ValueError("contrast_layer: expected a split point, got None")
    check_layer(net, layer)
    check_layer(net, contrast_layer, "contrast_layer")
    classifier_layer = net.layers[-1] if classifier_layer is None else classifier_layer
    check_layer(net, classifier_layer, "classifier_layer")
    ic, ik = _position(net, contrast_layer), _position(net, classifier_layer)
    if ik == 0:
        raise ValueError(f"classifier_layer: {classifier_layer!r} is the first split point; "
                         f"expected the stage of the classifier")
    if ic >= ik:
        raise ValueError(f"contrast_layer: {contrast_layer!r} must come before classifier_layer "
                         f"{classifier_layer!r} in {net.name}")
    if layer is not None and _position(net, layer) > ic:
        raise ValueError(f"layer: {layer!r} comes after contrast_layer {contrast_layer!r}; "
                         f"expected layer at or before it")
    targets = check_targets(target, net, x.shape[0], x.shape[1:3])
    check_spatial_layer(net, layer, resize, x.shape[1:3])
    check_reduce(reduce)
    before_classifier = net.layers[ik - 1]

    def dual_score(a, t):
        h = net.apply(params, a[None], start=contrast_layer, stop=before_classifier,
                      rules=EXCITATION)
        h = net.apply(params, h, start=before_classifier, stop=classifier_layer,
                      rules=EXCITATION_NEGATED)
        return net.apply(params, h, start=classifier_layer, rules=EXCITATION)[0, t]

    def one(a1, t):
        ac, pull = jax.vjp(lambda a: net.apply(params, a[None], start=layer, stop=contrast_layer,
                                               rules=EXCITATION)[0], a1)
        contrast = _mwp(net, params, ac, t, contrast_layer) - jax.grad(dual_score)(ac, t)
        return pull(contrast)[0]

    p = lift(one)(activations_at(net, params, x, layer), targets)
    if layer is None:
        p = p * _pixel_stats(net, x.dtype)[1]
    maps = reduce_channels(p, reduce)
    if relu:  # before resizing, as TorchRay
        maps = jnp.maximum(maps, 0)
    if layer is not None and resize:
        maps = resize_maps(maps, x.shape[1:3], channels=reduce is None)
    return maps
