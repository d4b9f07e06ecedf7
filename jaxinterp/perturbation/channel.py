"""Extremal perturbations of intermediate activations: which channels of a layer carry the decision.

Fong, Patrick and Vedaldi (ICCV 2019, Sec. 4.3) apply the same objective to
the channels of a split point l instead of the pixels: a mask m in [0, 1]^C
(one value per channel, no smoothness) scales the activation,
Phi_l(x) -> m * Phi_l(x) (preserve; (1 - m) * Phi_l(x) for delete), the rest of
the net computes the reward, and the vecsort constraint asks for a fraction
a of the channels:

    m_a = argmax_m  reward(m * Phi_l(x)) - lambda R_a(m).

The preserved channels can then be visualised by inverting the masked
activation to an image ("activation diffing"), which needs the feature
inversion of the synthesis package.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from jaxinterp.checks import check_areas, check_images, check_layer
from jaxinterp.targets import check_targets
from jaxinterp.nets import Net
from jaxinterp.perturbation.area import area_penalty, area_zeros
from jaxinterp.perturbation.extremal import (check_optimiser, kept_versions, lambda_schedule, optimise_masks,
                                             reward_function, signed_rewards, variant_signs)

__all__ = ["channel_extremal"]


def channel_extremal(net: Net, params, x: jax.Array, target, *, layer: str, areas=(0.1,),
                     variant: str = "preserve", reward: str | Callable = "simple",
                     reward_layer: str | None = None, steps: int = 800, lr: float = 0.01,
                     momentum: float = 0.9, dampening: float = 0.9, lambda_start: float = 300.0,
                     lambda_growth: float = 1.0035) -> tuple[jax.Array, jax.Array]:
    """Channel masks of split point ``layer`` for every image, target and area, in one compiled loop.

    For each (image, target, area a), mask m (C,) initialised to 1 minimises

        lambda_t R_a(m) - reward,     lambda_t = lambda_start * lambda_growth^t,

    with reward the target's score of the rest of the net run on m * Phi_l(x)
    (preserve), minus that on (1 - m) * Phi_l(x) (delete), or both (dual), and
    R_a the vecsort penalty of the C mask values against a fraction a of ones.
    The optimiser and its defaults are those of :func:`extremal` (SGD with
    momentum 0.9, dampening 0.9, lr 0.01, 800 steps, lambda 300 x 1.0035^t;
    no jitter, which would not commute with a channel mask of a spatial
    layer's positions).  The mask starts at 1 in every channel, all tied, so
    the area gradient is shared equally by tied channels (``ties='average'``
    of :func:`area_penalty`): otherwise the sort's index order, not the
    reward, would pick the channels that survive.  The paper states that it uses the same optimisation;
    these defaults are its image-mask settings.

    Args:
      net, params: the net (static) and its params.
      x: images (N, H, W, 3), float RGB in [0, 1].
      target: class indices (N,) / (N, T) or a :class:`Unit` after ``layer``.
      layer: the split point whose channels are masked (static).
      areas: fractions of channels in (0, 1): a number, (A,) or (N, A).
      variant: 'preserve', 'delete' or 'dual'.
      reward, reward_layer: as in :func:`extremal` (a callable reward reads
        ``reward_layer``, which must come after ``layer``).
      steps, lr, momentum, dampening, lambda_start, lambda_growth: the optimiser.

    Returns:
      (masks, history): masks (N, T, A, C) in [0, 1], 1 = the preserved (or for
      'delete', the deleted) channels; history (N, T, A, steps, 2) of the reward
      and the area term lambda_t R_a at each step.

    Raises:
      ValueError naming the argument: bad ``x``, ``target``, ``areas``, ``steps``,
      ``variant``, ``reward``; ``layer`` unknown or not before the reward's layer.
    """
    x = check_images(x)
    n = x.shape[0]
    if layer is None:
        raise ValueError("layer: expected a split point of the net, got None")
    check_layer(net, layer)
    areas = check_areas(areas, n)
    num_a = areas.shape[1]
    sign = variant_signs(variant)
    steps = check_optimiser(steps, lr, lambda_start, lambda_growth)
    targets = check_targets(target, net, n, x.shape[1:3], after=layer)
    reward_fn, stop = reward_function(net, reward, targets, reward_layer)
    channels = net.activation_shape(layer, x.shape[1:3])[-1]
    zeros = jnp.asarray(area_zeros(channels, areas))                                  # (N, A)

    def one_image(x1, ts, zeros1):
        num_t = jax.tree.leaves(ts)[0].shape[0]
        act = net.apply(params, x1[None], stop=layer)[0]                              # (..., C)

        def energy(m, t):
            kept = jnp.stack(kept_versions(m, variant))                               # (V, T, A, C)
            inputs = kept.reshape(*kept.shape[:3], *[1] * (act.ndim - 1), channels) * act
            r = signed_rewards(net, params, reward_fn, inputs, ts, sign, start=layer, stop=stop)
            area = lambda_schedule(t, lambda_start, lambda_growth) * area_penalty(m, zeros1)
            return jnp.sum(area - r), (r, area)

        m0 = jnp.ones((num_t, num_a, channels), x1.dtype)
        return optimise_masks(energy, m0, steps, lr=lr, momentum=momentum, dampening=dampening)

    return jax.vmap(one_image)(x, targets, zeros)
