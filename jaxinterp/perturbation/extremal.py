"""Extremal perturbations (Fong, Patrick and Vedaldi, "Understanding deep networks via extremal
perturbations and smooth masks", ICCV 2019).

For an image x, a target and an area a, find the smooth mask m of area a that
maximises the target's reward on the perturbed image:

    m_a = argmax_m  Phi(m (x) x) - lambda R_a(m)

with m (x) x the perturbation operator (:mod:`.operators`), m a smooth mask
(:mod:`.masks`) and R_a the vecsort area penalty (:mod:`.area`).  The
optimisation (all ``steps`` of it) runs in one ``lax.scan``, for every image,
target and area at once: a step is one forward and backward pass of a batch
of N x T x A (x 2 for 'dual') perturbed images.
"""

from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp

from jaxinterp import ops
from jaxinterp.checks import check_areas, check_images, check_int, check_layer, check_positive_float, check_real
from jaxinterp.targets import Unit, check_targets, unit_value
from jaxinterp.nets import Net
from jaxinterp.perturbation.area import area_penalty, area_zeros
from jaxinterp.perturbation.masks import clamp01, mask_geometry, smooth_mask
from jaxinterp.perturbation.operators import PERTURBATIONS, apply_pyramid, perturbation_pyramid

__all__ = ["extremal", "extremal_saliency", "VARIANTS", "REWARDS", "simple_reward", "contrastive_reward",
           "reward_function", "signed_rewards", "sgd_dampened", "lambda_schedule", "optimise_masks",
           "check_optimiser", "variant_signs", "kept_versions"]

VARIANTS = ("preserve", "delete", "dual")
"""'preserve': keep the region m = 1, perturb the rest, maximise the reward;
'delete': perturb the region m = 1, minimise the reward; 'dual': both, maximise
preserve reward - delete reward."""


def simple_reward(act1: jax.Array, t) -> jax.Array:
    """The target's score in one example's activation: logit ``act1[t]`` or the unit's value.

    A :class:`Unit` channel is averaged over positions (the paper's reward for
    intermediate layers); a class index reads the last axis.
    """
    if isinstance(t, Unit):
        return unit_value(act1, t)
    return act1[..., t]


def contrastive_reward(act1: jax.Array, t) -> jax.Array:
    """``act1[t] - max_{c != t} act1[c]`` for class targets (the paper's contrastive reward)."""
    if isinstance(t, Unit):
        raise ValueError("reward: 'contrastive' needs class targets, not a Unit")
    others = jnp.where(jnp.arange(act1.shape[-1]) == t, -jnp.inf, act1)
    return act1[t] - jnp.max(others)


REWARDS: dict[str, Callable] = {"simple": simple_reward, "contrastive": contrastive_reward}
"""Named rewards ``reward(act1, t) -> scalar`` (one example's activation, one target)."""


def lambda_schedule(step: jax.Array, start: float = 300.0, growth: float = 1.0035) -> jax.Array:
    """lambda_t = start * growth ** t: the area weight at step t (defaults: the paper's and TorchRay's)."""
    return start * jnp.power(growth, step)


def sgd_dampened(p, g, buf, step, *, lr: float, momentum: float, dampening: float):
    """One SGD step with momentum and dampening (``torch.optim.SGD``'s update).

    buf = g at step 0, else momentum buf + (1 - dampening) g;  p <- p - lr buf.
    optax's ``sgd(momentum=)`` has no dampening (it is buf = momentum buf + g),
    so the paper's setting (momentum 0.9, dampening 0.9) is written out here.

    Returns:
      (new p, new buf).
    """
    buf = jnp.where(step == 0, g, momentum * buf + (1.0 - dampening) * g)
    return p - lr * buf, buf


def optimise_masks(energy: Callable, p0: jax.Array, steps: int, *, lr: float, momentum: float,
                   dampening: float) -> tuple[jax.Array, jax.Array]:
    """Minimise ``energy(p, t) -> (scalar, (reward, area))`` from p0 in one ``lax.scan``.

    Each step: gradient, :func:`sgd_dampened`, clamp p to [0, 1].

    Args:
      energy: the energy at step t and its terms, reward and area (both shaped
        like p0's leading axes, e.g. (T, A)).
      p0: initial mask parameters (T, A, ...).
      steps: number of steps (static).

    Returns:
      (p, history): the final parameters and history (T, A, steps, 2) of the
      reward and area terms at each step, before its update.
    """
    def update(carry, t):
        p, buf = carry
        g, (r, area) = jax.grad(energy, has_aux=True)(p, t)
        p, buf = sgd_dampened(p, g, buf, t, lr=lr, momentum=momentum, dampening=dampening)
        return (clamp01(p), buf), jnp.stack([r, area], -1)

    (p, _), history = jax.lax.scan(update, (p0, jnp.zeros_like(p0)), jnp.arange(steps))
    return p, jnp.moveaxis(history, 0, 2)


def check_optimiser(steps, lr, lambda_start, lambda_growth) -> int:
    """The checks of the optimisation arguments; returns ``steps``."""
    steps = check_int(steps, "steps")
    for name, value in (("lr", lr), ("lambda_start", lambda_start), ("lambda_growth", lambda_growth)):
        check_positive_float(value, name)
    return steps


def variant_signs(variant: str) -> tuple[float, ...]:
    """Signs of the preserve / delete rewards of ``variant``; ValueError naming ``variant``."""
    if variant not in VARIANTS:
        raise ValueError(f"variant: expected one of {VARIANTS}, got {variant!r}")
    return {"preserve": (1.0,), "delete": (-1.0,), "dual": (1.0, -1.0)}[variant]


def kept_versions(mask: jax.Array, variant: str) -> tuple[jax.Array, ...]:
    """What a variant keeps of the input: (m,) preserve, (1 - m,) delete, (m, 1 - m) dual."""
    return {"preserve": (mask,), "delete": (1 - mask,), "dual": (mask, 1 - mask)}[variant]


def reward_function(net: Net, reward, targets, reward_layer: str | None) -> tuple[Callable, str | None]:
    """The reward ``fn(act1, t) -> scalar`` and the split point it reads; ValueError naming the argument.

    Named rewards read the net's output (class targets) or the unit's layer
    (:class:`Unit` targets); a callable reads ``reward_layer`` (None: the output).
    """
    if reward_layer is not None and reward_layer not in net.taps:
        check_layer(net, reward_layer, "reward_layer")
    unit_layer = targets.layer if isinstance(targets, Unit) else None
    if callable(reward):
        return reward, reward_layer if reward_layer is not None else unit_layer
    if reward not in REWARDS:
        raise ValueError(f"reward: expected one of {sorted(REWARDS)} or a callable, got {reward!r}")
    if reward == "contrastive" and isinstance(targets, Unit):
        raise ValueError("reward: 'contrastive' needs class targets, not a Unit")
    if reward_layer is not None:
        raise ValueError("reward_layer: only a callable reward reads another split point; the named "
                         "rewards read the output (classes) or the unit's layer")
    return REWARDS[reward], unit_layer


def signed_rewards(net: Net, params, reward_fn: Callable, inputs: jax.Array, ts, sign: tuple[float, ...], *,
                   start: str | None = None, stop: str | None = None) -> jax.Array:
    """The variant's reward of perturbed inputs (V, T, A, ...) for targets ts (T,): (T, A).

    One forward pass of the V x T x A inputs (from split point ``start`` to
    ``stop``); input (v, t, a) is scored for target t and the V versions are
    combined with ``sign`` (preserve +1, delete -1).
    """
    v, num_t, num_a = inputs.shape[:3]
    act = net.apply(params, inputs.reshape(-1, *inputs.shape[3:]), start=start, stop=stop)
    ts_batch = jax.tree.map(lambda a: jnp.broadcast_to(a[None, :, None], (v, num_t, num_a)).reshape(-1), ts)
    r = jax.vmap(reward_fn)(act, ts_batch).reshape(v, num_t, num_a)
    return jnp.tensordot(jnp.asarray(sign, r.dtype), r, axes=1)


def extremal(net: Net, params, x: jax.Array, target, *, areas=(0.1,), variant: str = "preserve",
             perturbation: str = "blur", reward: str | Callable = "simple", reward_layer: str | None = None,
             steps: int = 800, lr: float = 0.01, momentum: float = 0.9, dampening: float = 0.9,
             lambda_start: float = 300.0, lambda_growth: float = 1.0035, jitter: bool = True,
             step: int = 7, sigma: float = 21.0, coldness: float = 20.0, levels: int = 8,
             max_sigma: float = 20.0, fill=None, compute_dtype=None, ties: str = "average") -> tuple[jax.Array, jax.Array]:
    """Extremal perturbation masks for every image, target and area, optimised in one compiled loop.

    For each (image, target, area a) the mask parameters p (a grid of
    ceil(H / step) x ceil(W / step) cells, initialised to 1) minimise

        E_t(p) = lambda_t R_a(m_full(p)) - reward(p),    lambda_t = lambda_start * lambda_growth^t,

    where m, m_full = :func:`smooth_mask` (p), R_a the vecsort penalty of the full
    margin-padded mask against the area-a reference (:mod:`.area`), and

    * preserve: reward = Phi_t(apply(pyramid, m)),
    * delete:   reward = -Phi_t(apply(pyramid, 1 - m)),
    * dual:     the sum of both,

    with Phi_t the target's ``reward`` on the perturbed image (flipped left-right
    on even steps when ``jitter``).  Each step is SGD with momentum and
    dampening (:func:`sgd_dampened`) followed by clamping p to [0, 1].  All
    defaults are the paper's and TorchRay 1.0.0.2's (docs/references.md,
    Extremal perturbation): 800 steps, lr 0.01, momentum 0.9, dampening 0.9,
    lambda 300 x 1.0035^t, step 7, sigma 21, coldness 20, a blur pyramid of 8
    levels up to sigma 20, jitter.

    The perturbation acts on the [0, 1] image with ``fill`` (default
    ``net.mean``) as the blur's padding colour and the fade's target: that is
    the paper's zero padding / fade to zero of the *normalised* image, so the
    results equal TorchRay's on the same net.

    The batch of a step is N x T x A (x 2 for dual) perturbed images; under
    ``jax.jit`` with x sharded over devices along N the work splits over devices.
    On a CPU, run it with :mod:`jaxinterp.xla_cpu`'s flags (the CLI and the
    experiments set them): with XLA's YNNPACK reduction fusions, the smooth-mask
    generator's reductions ran 15x slower and a step on a small net 4x slower.

    Pure and jit-compatible with every argument but ``params``, ``x`` and
    ``target`` static::

        jax.jit(extremal, static_argnames=("net", "variant", "perturbation", "reward",
                                           "reward_layer", "steps", ...))

    Args:
      net, params: the net (static) and its params.
      x: images (N, H, W, 3), float RGB in [0, 1].
      target: int class indices (N,) or (N, T), or a :class:`Unit` (N,) / (N, T)
        (the reward is then the unit's value; a channel unit is averaged over
        positions, as the paper's intermediate-layer reward).
      areas: target areas in (0, 1): a number, a sequence / array (A,) for every
        image (default (0.1,)), or an array (N, A) of per-image areas (may be
        traced).
      variant: 'preserve' (default), 'delete' or 'dual'.
      perturbation: 'blur' (default) or 'fade'.
      reward: 'simple' (the target's score), 'contrastive' (score minus the best
        other class) or a callable ``reward(act1, t) -> scalar`` of one
        perturbed example's activation at ``reward_layer`` (no batch axis) and
        one target (an int, or a :class:`Unit` with scalar fields).
      reward_layer: split point or tap a callable reward reads (None: the
        output, or the unit's layer for Unit targets).
      steps: optimisation steps (default 800).
      lr, momentum, dampening: SGD (defaults 0.01, 0.9, 0.9).
      lambda_start, lambda_growth: area weight schedule (defaults 300, 1.0035).
      jitter: flip the perturbed image horizontally on even steps (default True).
      step, sigma, coldness: the smooth mask (defaults 7, 21, 20; coldness
        ``math.inf`` = hard max).
      levels, max_sigma: the blur pyramid (defaults 8, 20 px).
      fill: padding / fade colour in [0, 1] (default: ``net.mean``).
      ties: how mask values tied at the area cut share the area gradient
        (:func:`area_penalty`): 'average' (default) or 'index' (the gradient
        of a stable sort).  The initial mask (all parameters 1) is periodic
        and has exact ties that straddle the cut; TorchRay's ``torch.sort``
        orders them by float rounding, so any fixed order makes the result
        depend on rounding, while the average does not.
      compute_dtype: dtype the perturbed images are cast to before the net
        (e.g. ``jnp.bfloat16`` with bf16 params, for mixed precision); the mask
        parameters, the optimiser and the area term stay in x's dtype.  None:
        x's dtype.

    Returns:
      (masks, history): masks (N, T, A, H, W) in [0, 1] from the final
      parameters, 1 = the preserved (or, for 'delete', the deleted) region;
      history (N, T, A, steps, 2): the reward and the area term
      lambda_t R_a at each step (before its update).

    Raises:
      ValueError naming the argument: bad ``x`` or ``target``, ``areas`` outside
      (0, 1), ``steps`` < 1, unknown ``variant`` / ``perturbation`` / ``reward``,
      unknown ``reward_layer``, a non-positive ``lr`` or ``lambda_start``.

    References:
      Fong, Patrick and Vedaldi, ICCV 2019; TorchRay's extremal_perturbation.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from jaxinterp import nets, perturbation
      >>> net = nets.get("smallcnn"); params = net.init(jax.random.key(0))
      >>> x = jax.random.uniform(jax.random.key(1), (1, 32, 32, 3))
      >>> masks, history = perturbation.extremal(net, params, x, jnp.array([3]), areas=(0.1, 0.2), steps=2)
      >>> masks.shape                                   # (N, T, areas, H, W)
      (1, 1, 2, 32, 32)
    """
    x = check_images(x)
    n, h, w = x.shape[:3]
    areas = check_areas(areas, n)                                           # (N, A)
    num_a = areas.shape[1]
    sign = variant_signs(variant)
    if perturbation not in PERTURBATIONS:
        raise ValueError(f"perturbation: expected one of {sorted(PERTURBATIONS)}, got {perturbation!r}")
    steps = check_optimiser(steps, lr, lambda_start, lambda_growth)
    targets = check_targets(target, net, n, (h, w))
    reward_fn, layer = reward_function(net, reward, targets, reward_layer)
    geometry = mask_geometry((h, w), step, sigma)
    fill = net.mean if fill is None else fill

    full_size = math.prod(geometry.full_shape)
    zeros = jnp.asarray(area_zeros(full_size, areas))                                  # (N, A) int32

    def one_image(x1, ts, zeros1):
        num_t = jax.tree.leaves(ts)[0].shape[0]
        pyramid = perturbation_pyramid(x1, perturbation, levels=levels, max_sigma=max_sigma, fill=fill)

        def energy(p, t):
            mask, full = smooth_mask(p, geometry, coldness)                       # (T, A, H, W), (T, A, FH, FW)
            images = jnp.stack([apply_pyramid(pyramid, k) for k in kept_versions(mask, variant)])
            if jitter:
                images = jnp.where(t % 2 == 0, jnp.flip(images, axis=-2), images)
            if compute_dtype is not None:
                images = images.astype(compute_dtype)
            r = signed_rewards(net, params, reward_fn, images, ts, sign, stop=layer).astype(p.dtype)  # (T, A)
            penalty = area_penalty(full.reshape(*full.shape[:-2], -1), zeros1, ties=ties)     # (T, A)
            area = lambda_schedule(t, lambda_start, lambda_growth) * penalty
            return jnp.sum(area - r), (r, area)

        p0 = jnp.ones((num_t, num_a, *geometry.grid_shape), x.dtype)
        p, history = optimise_masks(energy, p0, steps, lr=lr, momentum=momentum, dampening=dampening)
        return smooth_mask(p, geometry, coldness)[0], history

    return jax.vmap(one_image)(x, targets, zeros)


def extremal_saliency(net: Net, params, x: jax.Array, target, *, areas=(0.025, 0.05, 0.1, 0.2),
                      smooth: float = 0.09, **options) -> jax.Array:
    """A saliency map from extremal perturbations: the preserve masks summed over areas, then smoothed.

    TorchRay's pointing-game protocol (docs/references.md, Extremal perturbation):
    masks for several areas (VOC's [0.025, 0.05, 0.1, 0.2] by default; COCO's
    [0.018, 0.025, 0.05, 0.1]),
    summed, and smoothed by a Gaussian of ``smooth`` (0.09) times the image
    side, so that the argmax falls in the middle of the preserved region.

    Args:
      net, params, x, target: as :func:`extremal`.
      areas: the areas summed.
      smooth: Gaussian sigma as a fraction of max(H, W) (0: no smoothing).
      **options: passed to :func:`extremal` (steps, variant, ...).

    Returns:
      maps (N, T, H, W), non-negative, in x's dtype.
    """
    check_real(smooth, "smooth", minimum=0)                    # a fraction of the image side
    masks, _ = extremal(net, params, x, target, areas=areas, **options)
    maps = masks.sum(axis=2)                                                          # (N, T, H, W)
    if not smooth:
        return maps
    return ops.gaussian_blur(maps[..., None], smooth * max(x.shape[1:3]), fill=0.0)[..., 0]
