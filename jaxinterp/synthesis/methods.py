"""Natural pre-images: activation maximisation, inversion, caricatures and DeepDream.

Every method is a use of :func:`jaxinterp.synthesis.rendering.render` (DeepDream
aside, which has its own octave loop) and runs its optimisation in one
``lax.scan``, vmapped over targets or images.

References:
  Simonyan, Vedaldi and Zisserman, "Deep inside convolutional networks", ICLR
  workshop 2014 (class models: unnormalised logit with an L2 prior).
  Mahendran and Vedaldi, "Understanding deep image representations by
  inverting them", CVPR 2015; "Visualizing deep convolutional neural networks
  using natural pre-images", IJCV 2016.
  Olah, Mordvintsev and Schubert, "Feature visualization", Distill 2017.
  Mordvintsev, Olah and Tyka, "Inceptionism", 2015 (google/deepdream).
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxinterp import ops
from jaxinterp.checks import check_int, check_real
from jaxinterp.nets import Net
from jaxinterp.nets.rules import STANDARD as STANDARD_RULES
from jaxinterp.synthesis import objectives as O
from jaxinterp.synthesis.params import Parameterisation, check_image_size, fourier, laplacian_pyramid, pixel
from jaxinterp.synthesis.regularisers import B_PIXEL
from jaxinterp.synthesis.rendering import RenderResult, render, target_keys
from jaxinterp.synthesis.transforms import STANDARD, Transform, roll_jitter
from jaxinterp.targets import Unit

__all__ = ["activation_maximisation", "visualise_layer", "pre_image", "caricature", "deepdream",
           "activation_diffing", "DiffingResult",
           "PreImageResult", "LEAKY_RULES", "leaky_relu", "mahendran_optimiser", "mahendran_jitter",
           "project_pixels", "feature_loss", "check_pixel_images"]


def leaky_relu(x: jax.Array) -> jax.Array:
    """LeakyReLU with slope 0.05, the ReLU Mahendran and Vedaldi use while maximising activations."""
    return jnp.where(x > 0, x, 0.05 * x)


LEAKY_RULES = STANDARD_RULES.replace(name="leaky", relu=leaky_relu)
"""The net with every ReLU leaky (0.05), forward and backward (IJCV 2016, activation maximisation)."""

PARAMETERISATIONS = {"fourier": fourier, "pixel": pixel, "laplacian": laplacian_pyramid}


def _parameterisation(param, image_size) -> Parameterisation:
    if isinstance(param, Parameterisation):
        return param
    if param not in PARAMETERISATIONS:
        raise ValueError(f"param: expected a Parameterisation or one of {list(PARAMETERISATIONS)}, got {param!r}")
    return PARAMETERISATIONS[param](image_size)


def _unit_objective(layer: str, c, y, x) -> O.Objective:
    if y is None:
        return O.channel(layer, c)
    if x is None:                             # token y of a (tokens, D) activation
        return O.Objective(lambda acts, _: jnp.mean(acts[layer][:, y, c]), (layer,), f"token {layer}:{c}")
    return O.neuron(layer, c, y, x)


def _check_am_target(net: Net, target, image_size) -> tuple[object, str | None]:
    """(targets pytree with leading axis T, layer or None for classes); ValueError naming ``target``."""
    if isinstance(target, Unit):
        if target.layer not in net.layers and target.layer not in net.taps:
            raise ValueError(f"target: unknown unit layer {target.layer!r} of {net.name}; "
                             f"expected one of {list(net.layers)}")
        shape = net.activation_shape(target.layer, image_size)
        fields = {}
        for name, bound in (("channel", shape[-1]), ("y", shape[0] if len(shape) > 1 else None),
                            ("x", shape[1] if len(shape) > 2 else None)):
            v = getattr(target, name)
            if v is None:
                continue
            a = np.asarray(v) if not isinstance(v, jax.core.Tracer) else v
            if a.ndim != 1 or not jnp.issubdtype(a.dtype, jnp.integer):
                raise ValueError(f"target.{name}: expected integer indices of shape (T,), got "
                                 f"{a.dtype} {tuple(a.shape)}")
            if bound is None:
                raise ValueError(f"target.{name}: layer {target.layer!r} has activation shape {shape}")
            if not isinstance(a, jax.core.Tracer) and a.size and (a.min() < 0 or a.max() >= bound):
                raise ValueError(f"target.{name}: expected indices in [0, {bound}), got range "
                                 f"[{a.min()}, {a.max()}]")
            fields[name] = jnp.asarray(a, jnp.int32)
        if len({f.shape for f in fields.values()}) != 1:
            raise ValueError("target: the Unit's fields must share one shape (T,)")
        return fields, target.layer
    if net.num_classes < 1:
        raise ValueError(f"target: {net!r} has no classifier; pass a Unit(layer, channel)")
    a = np.asarray(target) if not isinstance(target, jax.core.Tracer) else target
    if a.ndim != 1 or not jnp.issubdtype(a.dtype, jnp.integer):
        raise ValueError(f"target: expected integer class indices (T,) or a Unit, got {a.dtype} {tuple(a.shape)}")
    if not isinstance(a, jax.core.Tracer) and a.size and (a.min() < 0 or a.max() >= net.num_classes):
        raise ValueError(f"target: expected class indices in [0, {net.num_classes}), got range [{a.min()}, {a.max()}]")
    return {"channel": jnp.asarray(a, jnp.int32)}, None


def activation_maximisation(net: Net, params, target, *, key: jax.Array, image_size=128,
                            param="fourier", steps: int = 512, lr: float = 0.05,
                            optimiser: optax.GradientTransformation | None = None,
                            transforms: Sequence[Transform] = STANDARD, batch: int = 1,
                            diversity: float = 0.0, l1: float = 0.0, l2: float = 0.0, tv: float = 0.0,
                            leaky: bool = False, chunk_size: int | None = None,
                            compute_dtype=None) -> RenderResult:
    """Images that maximise each target: a class logit, a channel, a neuron (Lucid's feature visualisation).

    Maximises ``S(x) + diversity * D(x) - l1 |x - 0.5|_1 - l2 ||x - 0.5||^2 - tv TV(x)``
    with S the target's score on the transformed image (Lucid: Fourier
    parameterisation, decorrelated colour, standard transforms, Adam 0.05, 512
    steps, 128 px) and D Lucid's Gram diversity across the B images of a target.
    Simonyan et al.'s class models are ``target=classes, param='pixel',
    transforms=(), l2=...`` (the unnormalised logit with an L2 prior).

    Args:
      net, params: the net.
      target: class indices (T,), or a :class:`jaxinterp.targets.Unit` with
        fields (T,): ``Unit(layer, channel)`` the channel's mean,
        ``Unit(layer, channel, y, x)`` one neuron, ``Unit(layer, channel, y)``
        a token of a ViT.  All T targets render in one compiled call.
      key: a ``jax.random.key`` (target t uses ``fold_in(key, t)``) or T keys.
      image_size: int or (H, W) (Lucid: 128).
      param: 'fourier' (default), 'pixel', 'laplacian' or any :class:`Parameterisation`
        (e.g. :func:`jaxinterp.synthesis.dip.dip_parameterisation`).
      steps, lr, optimiser: Adam(lr) unless ``optimiser`` is given.
      transforms: Lucid's standard set by default.
      batch: images per target; diversity: weight of the diversity term (Lucid: 100) when batch > 1.
      l1, l2, tv: weights of the image penalties.
      leaky: use :data:`LEAKY_RULES` (Mahendran and Vedaldi's leaky ReLUs) during optimisation.
      chunk_size: targets per vmapped chunk (memory); compute_dtype: e.g. ``jnp.bfloat16``.

    Returns:
      :class:`RenderResult`: images (T, batch, H, W, 3), history (T, steps).
    """
    size = check_image_size(image_size)
    fields, layer = _check_am_target(net, target, size)
    weights = {k: check_real(v, k, minimum=0) for k, v in (("diversity", diversity), ("l1", l1), ("l2", l2), ("tv", tv))}
    if not (isinstance(lr, (int, float)) and lr > 0):
        raise ValueError(f"lr: expected a positive number, got {lr!r}")
    div_layer = layer if layer is not None else O.OUTPUT

    def objective(t):
        if layer is None:
            obj = O.class_logit(t["channel"])
        else:
            obj = _unit_objective(layer, t["channel"], t.get("y"), t.get("x"))
        if weights["diversity"] and batch > 1 and div_layer != O.OUTPUT:
            obj = obj + weights["diversity"] * O.diversity(div_layer)
        for name, term in (("l1", O.l1()), ("l2", O.l2()), ("tv", O.tv())):
            if weights[name]:
                obj = obj - weights[name] * term
        return obj

    return render(net, params, objective, fields, param=_parameterisation(param, size), key=key,
                  transforms=transforms, steps=steps, optimiser=optimiser or optax.adam(lr), batch=batch,
                  chunk_size=chunk_size, compute_dtype=compute_dtype, rules=LEAKY_RULES if leaky else None)


def visualise_layer(net: Net, params, layer: str, channels=None, **kwargs) -> RenderResult:
    """Render every channel of ``layer`` (or the given ``channels`` (T,)) in one call.

    ``kwargs`` go to :func:`activation_maximisation`; ``chunk_size`` bounds the
    memory (2048 channels of resnet50 'layer4' at 128 px fit in chunks of 256).

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from jaxinterp import nets, synthesis
      >>> net = nets.get("smallcnn"); params = net.init(jax.random.key(0))
      >>> vis = synthesis.visualise_layer(net, params, "features.5", channels=jnp.arange(2),
      ...                                 key=jax.random.key(0), image_size=16, steps=2)
      >>> vis.images.shape                              # (channels, batch, H, W, 3)
      (2, 1, 16, 16, 3)
    """
    if layer not in net.layers:
        raise ValueError(f"layer: unknown split point {layer!r} of {net.name}; expected one of {list(net.layers)}")
    size = check_image_size(kwargs.get("image_size", 128))
    if channels is None:
        channels = np.arange(net.activation_shape(layer, size)[-1])
    if not isinstance(channels, jax.core.Tracer):
        channels = np.asarray(channels)
    return activation_maximisation(net, params, Unit(layer, channels), **kwargs)


# -- Mahendran and Vedaldi's pre-images ---------------------------------------------------------


class PreImageResult(NamedTuple):
    """images (N, H, W, 3); history (N, steps) of the energy; loss (N,): final normalised feature loss."""

    images: jax.Array
    history: jax.Array
    loss: jax.Array


def check_pixel_images(x) -> jax.Array:
    """Images (N, H, W, 3) in [0, 1] (range checked when concrete); ValueError naming ``x``."""
    if not hasattr(x, "shape") or np.ndim(x) != 4 or np.shape(x)[-1] != 3:
        raise ValueError(f"x: expected images (N, H, W, 3), got shape {getattr(x, 'shape', None)}")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"x: expected a floating dtype, got {x.dtype}")
    if not isinstance(x, jax.core.Tracer) and x.size:
        lo, hi = float(np.min(x)), float(np.max(x))
        if lo < 0 or hi > 1:
            raise ValueError(f"x: expected pixel values in [0, 1], got range [{lo:.4g}, {hi:.4g}]")
    return jnp.asarray(x)


def mahendran_optimiser(lr: float, steps: int, *, momentum: float = 0.9, decay: float = 0.9,
                        final_steps: int = 50) -> optax.GradientTransformation:
    """Momentum 0.9 with an AdaGrad-like step (a leaky average of squared gradients), lr / 10 at the end.

    IJCV 2016: 300 iterations and 50 more at a tenth of the rate.  The
    "AdaGrad-like" normalisation with a forgetting factor is RMSProp with
    momentum (``optax.rmsprop(decay=0.9, momentum=0.9)``); the last
    ``final_steps`` of ``steps`` run at ``lr / 10``.
    """
    boundary = max(steps - final_steps, 0)
    schedule = optax.piecewise_constant_schedule(lr, {boundary: 0.1}) if boundary else lr / 10
    return optax.rmsprop(schedule, decay=decay, momentum=momentum, eps=1e-8)


def mahendran_jitter(net: Net, layer: str | None, image_size: tuple[int, int]) -> int:
    """``max(round(stride / 4), 1)`` with stride the layer's sampling step (image size / map size).

    For a layer without a spatial map (fully connected), the stride of the
    last spatial split point before it.
    """
    names = net.layers if layer is None else net.layers[: net.layers.index(layer) + 1]
    for name in reversed(names):
        shape = net.activation_shape(name, image_size)
        if len(shape) == 3:
            return max(int(round(image_size[0] / shape[0] / 4)), 1)
    return 1


def project_pixels(x: jax.Array, mean, radius: float = 2 * B_PIXEL) -> jax.Array:
    """Project every colour vector into the ball ||x_u - mean|| <= radius (IJCV: 2B), then into [0, 1].

    The second projection is ours: the Net facade takes pixels in [0, 1].
    """
    d = x - jnp.asarray(mean, x.dtype)
    norm = jnp.linalg.norm(d, axis=-1, keepdims=True)
    d = d * jnp.minimum(1.0, radius / jnp.maximum(norm, 1e-12))
    return jnp.clip(d + jnp.asarray(mean, x.dtype), 0.0, 1.0)


def feature_loss(net: Net, params, x: jax.Array, phi0: jax.Array, layer: str | None) -> jax.Array:
    """``||Phi(x) - Phi0||^2 / ||Phi0||^2`` per image: x (N, H, W, 3), phi0 (N, ...) -> (N,)."""
    phi = net.apply(params, x, stop=layer)
    n = x.shape[0]
    num = jnp.sum(((phi - phi0) ** 2).reshape(n, -1), axis=1)
    return num / jnp.maximum(jnp.sum((phi0 ** 2).reshape(n, -1), axis=1), 1e-12)


def _layer_arg(net: Net, layer: str | None) -> str:
    if layer is None:
        if net.num_classes < 1:
            raise ValueError(f"layer: {net!r} has no output head; name a split point")
        return O.OUTPUT
    if layer not in net.layers:
        raise ValueError(f"layer: unknown split point {layer!r} of {net.name}; expected one of {list(net.layers)}")
    return layer


def pre_image(net: Net, params, x: jax.Array, layer: str | None, *, key: jax.Array, variant: str = "ijcv",
              C: float = 100.0, alpha: float = 6.0, beta: float = 2.0, tv_weight: float | None = None,
              steps: int = 350, lr: float = 0.01, jitter: int | None = None,
              param: Parameterisation | None = None, optimiser: optax.GradientTransformation | None = None,
              compute_dtype=None, code: jax.Array | None = None) -> PreImageResult:
    """Reconstruct images from their representation at ``layer`` (Mahendran and Vedaldi).

    IJCV 2016 energy, minimised over x for each image's code Phi0 = Phi(x0):

        E(x) = C ||Phi(x) - Phi0||^2 / ||Phi0||^2
               + 1/(HW B^alpha) sum_u ||x_u - m||^alpha + 1/(HW V^beta) sum_u ||grad x_u||^beta

    with m the net's mean colour, alpha 6, beta 2, B = 80/255, V = B / 6.5, the
    pixels projected into ||x_u - m|| <= 2B (and [0, 1]) after each step,
    random circular jitter of ``max(round(stride / 4), 1)`` pixels, and
    :func:`mahendran_optimiser` (300 steps + 50 at lr / 10).  The start is
    the mean colour plus noise N(0, (B / 10)^2).

    The CVPR 2015 variant (``variant='cvpr'``): the same data term with C = 1
    and a TV weight (beta = 2) of 1, 10 or 100 for a layer in the first, second
    or last third of the net (``tv_weight`` overrides), alpha prior weight 1.

    The IJCV paper tunes C per layer and publishes no single value
    (docs/references.md, Pre-images).  The default 100 weighs the data term
    well above the priors (each about 1 on a natural image) and brings the normalised feature loss to <= 0.1 on mid
    layers (tested).  Pass ``param=`` (e.g. a deep image prior) to replace the
    pixel parameterisation; the pixel projection then does not apply.

    Args:
      net, params: the net.
      x: images (N, H, W, 3) in [0, 1] whose codes are inverted.
      layer: split point (None: the output).
      key: a ``jax.random.key`` (image n uses ``fold_in(key, n)``) or N keys.
      variant: 'ijcv' or 'cvpr'.
      C, alpha, beta, tv_weight: the energy (see above).
      steps, lr: optimiser length and rate; jitter: pixels (None: from the layer's stride).
      param, optimiser: overrides of the parameterisation (one image) and optimiser.
      compute_dtype: dtype of the net's forward pass.
      code: the codes Phi0 to invert (N, ...) at ``layer``, when they are not
        Phi(x) (e.g. masked activations, :func:`activation_diffing`); x then
        only gives the image size.

    Returns:
      :class:`PreImageResult`: images (N, H, W, 3), history (N, steps) of -E,
      loss (N,) the normalised feature loss of the final images (no jitter).
    """
    x = check_pixel_images(x)
    stop = _layer_arg(net, layer)
    steps = check_int(steps, "steps")
    if variant not in ("ijcv", "cvpr"):
        raise ValueError(f"variant: expected 'ijcv' or 'cvpr', got {variant!r}")
    for name, v in (("C", C), ("alpha", alpha), ("beta", beta), ("lr", lr)):
        if not isinstance(v, (int, float)) or not v > 0:
            raise ValueError(f"{name}: expected a positive number, got {v!r}")
    size = tuple(x.shape[1:3])
    split = None if stop == O.OUTPUT else stop
    j = mahendran_jitter(net, split, size) if jitter is None else jitter
    mean = jnp.asarray(net.mean, x.dtype)
    if variant == "cvpr":
        third = 3 * (net.layers.index(split) if split else len(net.layers) - 1) // len(net.layers)
        tv_w, data_w = (1.0, 10.0, 100.0)[min(third, 2)] if tv_weight is None else tv_weight, 1.0
    else:
        tv_w, data_w = (1.0 if tv_weight is None else tv_weight), C
    phi0 = net.apply(params, x, stop=split)
    if code is not None:
        if tuple(np.shape(code)) != tuple(phi0.shape):
            raise ValueError(f"code: expected the activation shape {tuple(phi0.shape)} at {stop!r}, "
                             f"got {tuple(np.shape(code))}")
        phi0 = jnp.asarray(code, phi0.dtype)

    def objective(target):
        _, p0 = target
        return (data_w * O.feature_matching(stop, p0) - O.alpha(alpha, mean=mean)
                - tv_w * O.tv(beta))

    if param is None:
        par = Parameterisation(lambda k: mean + (B_PIXEL / 10) * jax.random.normal(k, (*size, 3)),
                               lambda p: p)
        project = lambda p: project_pixels(p, mean)          # noqa: E731
    else:
        par, project = param, None
    result = render(net, params, objective, (x, phi0), param=par, key=key, transforms=(roll_jitter(j),),
                    steps=steps, optimiser=optimiser or mahendran_optimiser(lr, steps), batch=1,
                    compute_dtype=compute_dtype, project=project)
    images = result.images[:, 0]
    return PreImageResult(images, result.history, feature_loss(net, params, images, phi0, split))


def caricature(net: Net, params, x: jax.Array, layer: str, *, key: jax.Array, C: float = 100.0,
               alpha: float = 6.0, beta: float = 2.0, tv_weight: float = 1.0, steps: int = 350,
               lr: float = 0.01, jitter: int | None = None, compute_dtype=None) -> RenderResult:
    """Exaggerate what ``layer`` sees in each image (Mahendran and Vedaldi, IJCV 2016).

    Maximises ``C <Phi(x), max(Phi0, 0)> / ||Phi0||^2 - R_alpha(x) - tv_weight R_TV(x)``
    started from the image x0 itself (Phi0 = Phi(x0)), with the pre-image's
    projection, jitter and optimiser (:func:`pre_image`).

    Returns:
      :class:`RenderResult`: images (N, 1, H, W, 3), history (N, steps).
    """
    x = check_pixel_images(x)
    if layer not in net.layers:
        raise ValueError(f"layer: unknown split point {layer!r} of {net.name}; expected one of {list(net.layers)}")
    steps = check_int(steps, "steps")
    size = tuple(x.shape[1:3])
    j = mahendran_jitter(net, layer, size) if jitter is None else jitter
    mean = jnp.asarray(net.mean, x.dtype)
    phi0 = net.apply(params, x, stop=layer)

    def objective(target):
        _, p0 = target
        return C * O.caricature(layer, p0) - O.alpha(alpha, mean=mean) - tv_weight * O.tv(beta)

    def param_of(target):
        x0, _ = target
        return Parameterisation(lambda k: x0, lambda p: p)

    return render(net, params, objective, (x, phi0), param=param_of, key=key, transforms=(roll_jitter(j),),
                  steps=steps, optimiser=mahendran_optimiser(lr, steps), compute_dtype=compute_dtype,
                  project=lambda p: project_pixels(p, mean))


class DiffingResult(NamedTuple):
    """Pre-images of the full code, of the code with only the kept channels, and their difference (N, H, W, 3)."""

    full: jax.Array
    kept: jax.Array
    difference: jax.Array


def activation_diffing(net: Net, params, x: jax.Array, channel_mask: jax.Array, layer: str, *,
                       key: jax.Array, **pre_image_kwargs) -> DiffingResult:
    """Visualise what a channel mask keeps: invert Phi(x) and m (x) Phi(x), and show the difference.

    The "activation diffing" of Fong, Patrick and Vedaldi (ICCV 2019, Sec. 5):
    with m the channel mask of a channel extremal perturbation
    (:func:`jaxinterp.perturbation.channel_extremal`), the pre-image of the
    masked activation shows what the kept channels encode, and its difference
    from the pre-image of the full activation what the removed ones did.
    Both pre-images use the same key (the same start and jitter), so the
    difference comes from the code alone.

    Args:
      net, params: the net.
      x: images (N, H, W, 3) in [0, 1].
      channel_mask: (N, C) or (C,) weights in [0, 1] over the C channels of ``layer``.
      layer: a split point with channels last.
      key: a ``jax.random.key``.
      **pre_image_kwargs: options of :func:`pre_image` (variant, steps, C, ...).

    Returns:
      :class:`DiffingResult`: full, kept (pre-images) and difference = full - kept.
    """
    x = check_pixel_images(x)
    if layer not in net.layers:
        raise ValueError(f"layer: unknown split point {layer!r} of {net.name}; expected one of {list(net.layers)}")
    phi = net.apply(params, x, stop=layer)
    m = jnp.asarray(channel_mask, phi.dtype)
    if m.shape not in ((phi.shape[-1],), (x.shape[0], phi.shape[-1])):
        raise ValueError(f"channel_mask: expected shape ({phi.shape[-1]},) or ({x.shape[0]}, {phi.shape[-1]}) "
                         f"for the channels of {layer!r}, got {tuple(m.shape)}")
    m = jnp.broadcast_to(m, (x.shape[0], phi.shape[-1])).reshape(x.shape[0], *[1] * (phi.ndim - 2), -1)
    # One pre-image vmapped over the two codes: both runs are the same program on their own code,
    # so an all-ones mask gives no difference at all (two separate calls compiled differently and
    # parted by rounding).
    full, kept = jax.vmap(lambda code: pre_image(net, params, x, layer, key=key, code=code,
                                                 **pre_image_kwargs).images)(jnp.stack([phi, phi * m]))
    return DiffingResult(full, kept, full - kept)


# -- DeepDream ------------------------------------------------------------------------------------


def _dream_octave(net: Net, params, layer: str, base: jax.Array, detail: jax.Array, key: jax.Array, *,
                  steps: int, step_size: float, jitter: int) -> jax.Array:
    """One octave of DeepDream for one image: ``steps`` normalised gradient steps on 0.5 ||a||^2."""
    def energy(img):
        return 0.5 * jnp.sum(net.apply(params, img[None], stop=layer) ** 2)

    def step(img, k):
        dy, dx = jax.random.randint(k, (2,), -jitter, jitter + 1) if jitter else (0, 0)
        rolled = jnp.roll(img, (dy, dx), axis=(0, 1))
        g = jnp.roll(jax.grad(energy)(rolled), (-dy, -dx), axis=(0, 1))
        img = img + step_size / jnp.maximum(jnp.mean(jnp.abs(g)), 1e-12) * g
        return jnp.clip(img, 0.0, 1.0), None

    src, _ = jax.lax.scan(step, base + detail, jax.random.split(key, steps))
    return src - base


def deepdream(net: Net, params, x: jax.Array, layer: str, *, key: jax.Array, octaves: int = 4,
              octave_scale: float = 1.4, steps: int = 10, step_size: float = 1.5 / 255,
              jitter: int = 32) -> jax.Array:
    """DeepDream (google/deepdream): amplify whatever ``layer`` sees, octave by octave.

    Gradient ascent on ``0.5 ||a||^2`` at ``layer`` with steps of
    ``step_size / mean|g| * g`` on a randomly rolled image (jitter 32), over
    ``octaves`` scales (each 1 / 1.4 of the previous); the detail added at one
    scale is upsampled and carried to the next.  Pixels are clipped to [0, 1]
    (the reference clips to the valid 0..255 range).  ``step_size`` 1.5 / 255
    is the reference's 1.5 on the 0..255 scale.

    Args:
      x: images (N, H, W, 3) in [0, 1].
      layer: split point.
      key: a ``jax.random.key`` (image n uses ``fold_in(key, n)``), or N keys: the roll offsets.
      octaves, octave_scale, steps (per octave), step_size, jitter: as above
        (google/deepdream: 4, 1.4, 10, 1.5, 32).

    Returns:
      The dreamed images (N, H, W, 3).
    """
    x = check_pixel_images(x)
    if layer not in net.layers:
        raise ValueError(f"layer: unknown split point {layer!r} of {net.name}; expected one of {list(net.layers)}")
    check_int(steps, "steps")
    octaves = check_int(octaves, "octaves")
    if not isinstance(octave_scale, (int, float)) or octave_scale <= 1:
        raise ValueError(f"octave_scale: expected a number > 1, got {octave_scale!r}")
    h, w = x.shape[1:3]
    sizes = [(max(int(round(h / octave_scale ** i)), 1), max(int(round(w / octave_scale ** i)), 1))
             for i in range(octaves)]
    bases = [x] + [ops.resize_bilinear(x, s, axes=(1, 2)) for s in sizes[1:]]
    image_keys = target_keys(key, x.shape[0])
    detail = jnp.zeros_like(bases[-1])
    for i in reversed(range(octaves)):
        base = bases[i]
        detail = ops.resize_bilinear(detail, sizes[i], axes=(1, 2))
        keys = jax.vmap(lambda k: jax.random.fold_in(k, i))(image_keys)
        detail = jax.vmap(lambda b, d, k: _dream_octave(net, params, layer, b, d, k, steps=steps,
                                                         step_size=step_size, jitter=jitter))(base, detail, keys)
    return jnp.clip(x + detail, 0.0, 1.0)
