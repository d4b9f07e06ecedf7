"""Adversarial examples: FGSM, PGD and the adversarial patch.

* :func:`fgsm` - the fast gradient (sign) method, one step of size epsilon
  (Goodfellow, Shlens and Szegedy 2015; targeted form: Kurakin, Goodfellow and
  Bengio 2017).
* :func:`pgd` - projected gradient descent on the epsilon ball, the whole loop
  in one ``lax.scan`` (Madry et al. 2018).
* :func:`adversarial_patch` - one universal patch trained over random
  placements, rotations and scales on a set of images (expectation over
  transformations; Brown et al. 2017), with the pure helpers
  :func:`apply_patch` and :func:`random_patch_transforms`.

Objective
---------
Every attack moves the pixels along the gradient of a loss ``L(x, t)`` of one
image and one target: *untargeted* attacks increase the loss of the true class
t, *targeted* attacks decrease the loss of the target class t.  The losses
(``loss=``), from the logits z of the image:

* ``'ce'``: the cross-entropy -log softmax(z)_t (Goodfellow et al., Madry et al.,
  Captum's default -log of the model's probabilities);
* ``'logit'``: -z_t;
* ``'margin'``: max_{j != t} z_j - z_t (the margin loss of Carlini and Wagner 2017).

For a :class:`~jaxinterp.attribution._lift.Unit` target the loss is minus the
unit's value (``loss`` is then ignored): untargeted attacks *decrease* the
unit's value, targeted attacks *increase* it.

Targets and shapes
------------------
Targets are those of :func:`jaxinterp.attribution._lift.check_targets`: class
indices (N,) or (N, T), or a Unit.  Each (image, target) pair gets its own
adversarial image: results are (N, T, H, W, 3), T = 1 for (N,) targets.  Every
attack is written for ONE image and ONE target and lifted by ``lift`` (two
vmaps), so it can be vmapped or sharded again.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxinterp.checks import check_images, check_int, check_range, check_scalar
from jaxinterp.targets import Unit, check_targets, lift, target_score
from jaxinterp.nets import Net

__all__ = ["LOSSES", "NORMS", "fgsm", "pgd", "PatchTransform", "apply_patch", "random_patch_transforms",
           "adversarial_patch"]

LOSSES = ("ce", "logit", "margin")
"""Losses of class targets: cross-entropy, minus the logit, the Carlini-Wagner margin."""

NORMS = ("linf", "l2")
"""Norms of the perturbation ball (and of the steepest-ascent step)."""


# --------------------------------------------------------------------------- argument checks


def _concrete(v) -> bool:
    return not isinstance(v, jax.core.Tracer)


def _check_budget(value, arg: str, *, positive: bool = False):
    """A finite real scalar >= 0 (> 0 if ``positive``): a budget, a step or a threshold; tracers pass unchecked."""
    return check_scalar(value, arg, minimum=0, open_min=positive, maximum=np.inf, open_max=True)


def _check_norm(norm, arg: str = "norm") -> str:
    if not isinstance(norm, str) or norm.lower() not in NORMS:
        raise ValueError(f"{arg}: expected one of {list(NORMS)}, got {norm!r}")
    return norm.lower()


def _check_loss(loss) -> str:
    if loss not in LOSSES:
        raise ValueError(f"loss: expected one of {list(LOSSES)}, got {loss!r}")
    return loss


def _check_clip(clip, x, arg: str = "x") -> tuple[float, float] | None:
    """``clip`` as (lo, hi) with lo < hi, or None; the images must lie inside it (checked when concrete)."""
    if clip is None:
        return None
    lo, hi = check_range(clip, "clip", strict=True)
    if _concrete(x) and x.size:
        a = np.asarray(x)
        if not (a.min() >= lo and a.max() <= hi):
            raise ValueError(f"{arg}: expected pixel values in the clip range [{lo:g}, {hi:g}], "
                             f"got range [{float(a.min()):.4g}, {float(a.max()):.4g}]")
    return lo, hi


def _check_bool(value, arg: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{arg}: expected True or False, got {value!r}")
    return bool(value)


# --------------------------------------------------------------------------- shared pieces


def _loss(net: Net, params, x1: jax.Array, t, loss: str) -> jax.Array:
    """L(x1, t) of one image (H, W, 3) and one target (class index or Unit with scalar fields)."""
    if isinstance(t, Unit):
        return -target_score(net, params, x1, t)
    z = net.apply(params, x1[None])[0]
    if loss == "ce":
        return -jax.nn.log_softmax(z)[t]
    if loss == "logit":
        return -z[t]
    others = jnp.where(jnp.arange(z.shape[-1]) == t, -jnp.inf, z)
    return jnp.max(others) - z[t]


def _direction(g: jax.Array, norm: str, threshold) -> jax.Array:
    """Steepest-ascent direction of unit ``norm`` for gradient g: sign(g), or g / ||g||_2.

    Entries with |g| <= threshold count as zero (Captum's FGSM uses 1e-6); a zero
    gradient gives a zero step.
    """
    g = jnp.where(jnp.abs(g) > threshold, g, 0)
    if norm == "linf":
        return jnp.sign(g)
    n = jnp.sqrt(jnp.sum(g * g))
    return g / jnp.where(n > 0, n, 1)


def _project(delta: jax.Array, norm: str, epsilon) -> jax.Array:
    """Euclidean projection of delta onto the ``norm`` ball of radius epsilon."""
    if norm == "linf":
        return jnp.clip(delta, -epsilon, epsilon)
    n = jnp.sqrt(jnp.sum(delta * delta))
    return delta * jnp.where(n > epsilon, epsilon / jnp.where(n > 0, n, 1), 1)


def _clip(x, clip):
    return x if clip is None else jnp.clip(x, clip[0], clip[1])


def _random_start(key, x1, norm: str, epsilon) -> jax.Array:
    """A uniform random point of the ``norm`` ball of radius epsilon (shape of x1)."""
    if norm == "linf":
        return jax.random.uniform(key, x1.shape, x1.dtype, -1, 1) * epsilon
    k_dir, k_rad = jax.random.split(key)
    u = jax.random.normal(k_dir, x1.shape, x1.dtype)
    u = u / jnp.sqrt(jnp.sum(u * u))
    r = jax.random.uniform(k_rad, (), x1.dtype) ** (1.0 / x1.size)
    return r * epsilon * u


def _pair_keys(key, n: int, t: int) -> jax.Array:
    """Keys (N, T): fold_in(fold_in(key, image n), target j)."""
    per_image = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(n))
    return jax.vmap(lambda k: jax.vmap(lambda j: jax.random.fold_in(k, j))(jnp.arange(t)))(per_image)


# --------------------------------------------------------------------------- FGSM


def fgsm(net: Net, params, x: jax.Array, target, *, epsilon=8 / 255, targeted: bool = False,
         norm: str = "linf", loss: str = "ce", clip: tuple[float, float] | None = (0.0, 1.0),
         grad_threshold=0.0) -> jax.Array:
    """Fast gradient (sign) method: one step of size epsilon along the loss gradient.

    For each image x and target t, with g = dL(x, t)/dx (see the module docstring
    for L) and s = +1 untargeted (increase the loss of the true class t), -1
    targeted (decrease the loss of the target class t)::

        x_adv = clip(x + s * epsilon * d(g)),   d(g) = sign(g)        (norm 'linf', FGSM)
                                                d(g) = g / ||g||_2    (norm 'l2', the fast gradient method)

    ``d`` is the steepest-ascent direction of unit norm; entries with
    |g| <= ``grad_threshold`` count as zero (Captum's ``FGSM`` uses 1e-6, the
    paper none: default 0); a zero gradient leaves the image unchanged.

    Pure and jit-compatible with ``net``, ``targeted``, ``norm``, ``loss`` and
    ``clip`` static (``epsilon`` and ``grad_threshold`` may be traced)::

        jax.jit(fgsm, static_argnames=("net", "targeted", "norm", "loss", "clip"))

    Args:
      net: the net (static).
      params: its params.
      x: images (N, H, W, 3), float RGB in [0, 1] (inside ``clip``).
      target: int class indices (N,) or (N, T) - the true classes (untargeted)
        or the classes to reach (targeted) - or a :class:`Unit` (N,) / (N, T).
      epsilon: step size = radius of the perturbation (default 8/255, the
        CIFAR-10 L-inf budget of Madry et al. 2018; Goodfellow et al. used 0.25
        on MNIST and 0.1 on CIFAR-10); >= 0.
      targeted: False (default): increase the loss of ``target``; True: decrease it.
      norm: ``'linf'`` (default, FGSM) or ``'l2'``.
      loss: ``'ce'`` (default, the papers'), ``'logit'`` or ``'margin'``; class
        targets only.
      clip: (lo, hi) valid pixel range (default (0, 1)), or None for no clipping.
      grad_threshold: gradient entries with |g| <= this are not perturbed
        (default 0; Captum: 1e-6).

    Returns:
      adversarial images (N, T, H, W, 3) in the dtype of x; T = 1 for (N,) targets.

    Raises:
      ValueError: bad ``x`` (or pixels outside ``clip``), ``target``, ``epsilon`` < 0,
        ``grad_threshold`` < 0, unknown ``norm`` or ``loss``, bad ``clip`` or ``targeted``.

    References:
      Goodfellow, Shlens and Szegedy, "Explaining and harnessing adversarial
      examples", ICLR 2015.  Kurakin, Goodfellow and Bengio, "Adversarial
      machine learning at scale", ICLR 2017 (targeted variant).
    """
    x = check_images(x)
    epsilon = _check_budget(epsilon, "epsilon")
    grad_threshold = _check_budget(grad_threshold, "grad_threshold")
    norm, loss = _check_norm(norm), _check_loss(loss)
    targeted = _check_bool(targeted, "targeted")
    clip = _check_clip(clip, x)
    targets = check_targets(target, net, x.shape[0], x.shape[1:3])
    return _fgsm(net, params, x, targets, epsilon, grad_threshold, norm=norm, loss=loss, targeted=targeted,
                 clip=clip)


@functools.partial(jax.jit, static_argnames=("net", "norm", "loss", "targeted", "clip"))
def _fgsm(net, params, x, targets, epsilon, grad_threshold, *, norm, loss, targeted, clip):
    sign = -1.0 if targeted else 1.0

    def one(x1, t):
        g = jax.grad(lambda a: _loss(net, params, a, t, loss))(x1)
        return _clip(x1 + (sign * epsilon) * _direction(g, norm, grad_threshold), clip).astype(x1.dtype)

    return lift(one)(x, targets)


# --------------------------------------------------------------------------- PGD


def pgd(net: Net, params, x: jax.Array, target, key: jax.Array | None = None, *, epsilon=8 / 255,
        step_size=None, steps: int = 20, norm: str = "linf", step_norm: str | None = None,
        targeted: bool = False, random_start: bool = True, loss: str = "ce",
        clip: tuple[float, float] | None = (0.0, 1.0), grad_threshold=0.0,
        return_history: bool = False):
    """Projected gradient descent (ascent) on the epsilon ball around each image.

    For each image x and target t, with s = +1 untargeted, -1 targeted::

        x_0 = clip(x + u),  u uniform in the ball (random_start) or 0
        x_{k+1} = clip(x + P_eps(x_k + s * step_size * d(dL(x_k, t)/dx) - x))     k < steps

    with d the steepest-ascent direction of unit ``step_norm`` (sign(g) for
    'linf', g / ||g||_2 for 'l2'; see :func:`fgsm`), P_eps the Euclidean
    projection on the ``norm`` ball of radius epsilon (clipping of each entry
    for 'linf', rescaling to radius epsilon for 'l2') and clip the valid pixel
    range, applied after the projection as in Madry et al.'s code and Captum
    (for 'l2' the two projections in turn are not exactly the projection on
    their intersection; x_{k+1} stays inside both).  All steps run in one
    ``lax.scan``; the result is the last iterate x_steps.

    Defaults follow Madry et al.'s CIFAR-10 adversary: L-inf, epsilon = 8/255,
    step size 2/255 (epsilon / 4), a random start, 20 steps (their evaluation
    attack; 7 in training); Captum's ``PGD`` has no defaults for these and no
    random start by default.  Captum's ``PGD`` always takes *sign* steps, also
    for its L2 ball: ``norm='l2', step_norm='linf', grad_threshold=1e-6,
    random_start=False`` reproduces it.  Random starts draw from
    ``fold_in(fold_in(key, n), j)`` for image n and target column j: the same
    on one device or many.

    Pure and jit-compatible with ``net``, ``steps``, ``norm``, ``step_norm``,
    ``targeted``, ``random_start``, ``loss``, ``clip`` and ``return_history``
    static (``epsilon``, ``step_size``, ``grad_threshold`` may be traced)::

        jax.jit(pgd, static_argnames=("net", "steps", "norm", "step_norm", "targeted",
                                      "random_start", "loss", "clip", "return_history"))

    Args:
      net: the net (static).
      params: its params.
      x: images (N, H, W, 3), float RGB in [0, 1] (inside ``clip``).
      target: int class indices (N,) or (N, T) - true classes (untargeted) or
        classes to reach (targeted) - or a :class:`Unit` (N,) / (N, T).
      key: ``jax.random.key`` of the random start (needed with ``random_start``).
      epsilon: radius of the ball (default 8/255, Madry et al.); >= 0.
      step_size: size of each step (default None: epsilon / 4, Madry et al.'s
        2/255 for 8/255); >= 0.
      steps: number of steps >= 1 (default 20).
      norm: the ball, ``'linf'`` (default) or ``'l2'``.
      step_norm: norm of the steepest-ascent step (default None: ``norm``;
        ``'linf'`` with ``norm='l2'`` is Captum's L2 PGD).
      targeted: False (default): increase the loss of ``target``; True: decrease it.
      random_start: start at a uniformly random point of the ball (default True,
        Madry et al.; Captum's default is False).
      loss: ``'ce'`` (default), ``'logit'`` or ``'margin'``; class targets only.
      clip: (lo, hi) valid pixel range (default (0, 1)), or None.
      grad_threshold: gradient entries with |g| <= this count as zero (default 0;
        Captum: 1e-6).
      return_history: also return the loss L(x_k, t) of every iterate.

    Returns:
      adversarial images (N, T, H, W, 3) in the dtype of x (T = 1 for (N,)
      targets); with ``return_history`` a pair (images, losses (N, T, steps + 1)),
      losses[..., k] = L(x_k, t) (k = 0 the start, k = steps the result; one
      extra forward pass).

    Raises:
      ValueError: bad ``x`` (or pixels outside ``clip``), ``target``, ``epsilon``
        or ``step_size`` < 0, ``steps`` < 1, unknown ``norm``, ``step_norm`` or
        ``loss``, bad ``clip``, no ``key`` with ``random_start``.

    References:
      Madry, Makelov, Schmidt, Tsipras and Vladu, "Towards deep learning models
      resistant to adversarial attacks", ICLR 2018.  Kurakin, Goodfellow and
      Bengio, "Adversarial examples in the physical world", ICLR workshop 2017
      (the iterated FGSM without random start).
    """
    x = check_images(x)
    n = x.shape[0]
    epsilon = _check_budget(epsilon, "epsilon")
    step_size = epsilon / 4 if step_size is None else _check_budget(step_size, "step_size")
    grad_threshold = _check_budget(grad_threshold, "grad_threshold")
    steps = check_int(steps, "steps")
    norm = _check_norm(norm)
    step_norm = norm if step_norm is None else _check_norm(step_norm, "step_norm")
    loss = _check_loss(loss)
    targeted = _check_bool(targeted, "targeted")
    random_start = _check_bool(random_start, "random_start")
    return_history = _check_bool(return_history, "return_history")
    clip = _check_clip(clip, x)
    targets = check_targets(target, net, n, x.shape[1:3])
    if random_start and key is None:
        raise ValueError("key: a jax.random.key is needed for random_start=True")
    return _pgd(net, params, x, targets, key if random_start else None, epsilon, step_size, grad_threshold,
                steps=steps, norm=norm, step_norm=step_norm, targeted=targeted, random_start=random_start,
                loss=loss, clip=clip, return_history=return_history)


@functools.partial(jax.jit, static_argnames=("net", "steps", "norm", "step_norm", "targeted", "random_start",
                                             "loss", "clip", "return_history"))
def _pgd(net, params, x, targets, key, epsilon, step_size, grad_threshold, *, steps, norm, step_norm,
         targeted, random_start, loss, clip, return_history):
    sign = -1.0 if targeted else 1.0
    n, t_count = jax.tree.leaves(targets)[0].shape
    keys = _pair_keys(key, n, t_count) if random_start else jnp.zeros((n, t_count), jnp.uint32)  # unused

    def one(x1, tk):
        t, k = tk
        start = x1 + _random_start(k, x1, norm, epsilon) if random_start else x1
        x0 = _clip(start, clip).astype(x1.dtype)

        def step(xk, _):
            value, g = jax.value_and_grad(lambda a: _loss(net, params, a, t, loss))(xk)
            moved = xk + (sign * step_size) * _direction(g, step_norm, grad_threshold)
            return _clip(x1 + _project(moved - x1, norm, epsilon), clip).astype(x1.dtype), value

        xt, history = jax.lax.scan(step, x0, None, length=steps)
        if return_history:
            history = jnp.concatenate([history, _loss(net, params, xt, t, loss)[None]])
            return xt, history
        return xt

    return lift(one)(x, (targets, keys))


# --------------------------------------------------------------------------- adversarial patch


class PatchTransform(NamedTuple):
    """Where and how a square patch goes on an image (scalars, or (B,) arrays for a batch).

    Attributes:
      y, x: the patch centre in pixel coordinates (pixel (i, j) has centre (i, j)).
        A patch of side P at scale 1 placed with its top-left pixel at (i0, j0)
        has centre (i0 + (P - 1) / 2, j0 + (P - 1) / 2).
      scale: side of one patch pixel in image pixels (1: unscaled).
      angle: rotation in radians, counter-clockwise as displayed (row 0 at the
        top): angle = pi / 2 places ``np.rot90(patch)``.
    """

    y: jax.Array
    x: jax.Array
    scale: jax.Array
    angle: jax.Array


def _apply_patch_one(image: jax.Array, patch: jax.Array, tr: PatchTransform) -> jax.Array:
    h, w = image.shape[:2]
    p = patch.shape[0]
    dtype = image.dtype
    ii = jnp.arange(h, dtype=dtype)[:, None] - tr.y
    jj = jnp.arange(w, dtype=dtype)[None, :] - tr.x
    c, s = jnp.cos(tr.angle).astype(dtype), jnp.sin(tr.angle).astype(dtype)
    mid = (p - 1) / 2
    u = (c * ii + s * jj) / tr.scale + mid   # patch row of each image pixel (inverse rotation)
    v = (-s * ii + c * jj) / tr.scale + mid  # patch column
    inside = (u >= -0.5) & (u < p - 0.5) & (v >= -0.5) & (v < p - 0.5)
    u, v = jnp.clip(u, 0, p - 1), jnp.clip(v, 0, p - 1)
    u0, v0 = jnp.floor(u), jnp.floor(v)
    wu, wv = (u - u0)[..., None], (v - v0)[..., None]
    u0, v0 = u0.astype(jnp.int32), v0.astype(jnp.int32)
    u1, v1 = jnp.minimum(u0 + 1, p - 1), jnp.minimum(v0 + 1, p - 1)
    sample = ((1 - wu) * ((1 - wv) * patch[u0, v0] + wv * patch[u0, v1])
              + wu * ((1 - wv) * patch[u1, v0] + wv * patch[u1, v1]))
    return jnp.where(inside[..., None], sample.astype(dtype), image)


def apply_patch(images: jax.Array, patch: jax.Array, transform: PatchTransform) -> jax.Array:
    """Paste a square patch onto images, rotated, scaled and placed by ``transform``.

    Image pixel (i, j) is covered when its inverse-transformed position in the
    patch, (u, v) = R(-angle) ((i, j) - (y, x)) / scale + ((P - 1) / 2, (P - 1) / 2),
    falls inside the patch's pixels [-0.5, P - 0.5)^2; it then takes the patch
    bilinearly sampled at (u, v) (border pixels clamped), else keeps the image.
    At scale 1, angle 0 and an integer top-left corner this is exactly slicing
    ``image[i0:i0 + P, j0:j0 + P] = patch``.  Differentiable in ``patch``.

    Args:
      images: one image (H, W, 3) or images (B, H, W, 3).
      patch: (P, P, 3).
      transform: a :class:`PatchTransform` of scalars (one image) or of (B,)
        arrays (a batch of images, one transform each).

    Returns:
      patched images, the shape and dtype of ``images``.

    Raises:
      ValueError: ``images`` not (H, W, 3) or (B, H, W, 3); ``patch`` not (P, P, 3);
        ``transform`` not a PatchTransform of matching shapes.
    """
    if not hasattr(images, "ndim") or images.ndim not in (3, 4) or images.shape[-1] != 3:
        raise ValueError(f"images: expected (H, W, 3) or (B, H, W, 3), got "
                         f"{getattr(images, 'shape', type(images).__name__)}")
    if not hasattr(patch, "ndim") or patch.ndim != 3 or patch.shape[0] != patch.shape[1] \
            or patch.shape[-1] != 3:
        raise ValueError(f"patch: expected a square patch (P, P, 3), got "
                         f"{getattr(patch, 'shape', type(patch).__name__)}")
    if not isinstance(transform, PatchTransform):
        raise ValueError(f"transform: expected a PatchTransform, got {type(transform).__name__}")
    want = () if images.ndim == 3 else (images.shape[0],)
    if any(jnp.shape(f) != want for f in transform):
        raise ValueError(f"transform: expected fields of shape {want}, got "
                         f"{[tuple(jnp.shape(f)) for f in transform]}")
    return _apply_patch(images, patch, transform)


@jax.jit
def _apply_patch(images, patch, transform):
    patch = jnp.asarray(patch, images.dtype)
    transform = PatchTransform(*(jnp.asarray(f, images.dtype) for f in transform))
    if images.ndim == 3:
        return _apply_patch_one(images, patch, transform)
    return jax.vmap(_apply_patch_one, in_axes=(0, None, 0))(images, patch, transform)


def random_patch_transforms(key: jax.Array, num: int, image_size: tuple[int, int], patch_size: int, *,
                            scale_range=(0.8, 1.2), rotation_range=(-math.pi / 8, math.pi / 8),
                            dtype=jnp.float32) -> PatchTransform:
    """Random placements of a patch: scale, angle uniform in their ranges, centre uniform inside the image.

    The centre is drawn uniformly among the positions where the bounding box of
    the scaled and rotated patch (half side scale P (|cos| + |sin|) / 2) lies
    inside the image; when it cannot, the patch is centred.

    Args:
      key: a ``jax.random.key``.
      num: number of transforms B (static).
      image_size: (H, W) (static).
      patch_size: P (static).
      scale_range: (lo, hi) with 0 < lo <= hi (default (0.8, 1.2)).
      rotation_range: (lo, hi) radians (default +-pi/8).
      dtype: float dtype of the fields.

    Returns:
      a :class:`PatchTransform` of (B,) arrays.
    """
    num = check_int(num, "num")
    if not isinstance(image_size, (tuple, list)) or len(image_size) != 2:
        raise ValueError(f"image_size: expected (H, W), got {image_size!r}")
    h, w = (check_int(image_size[0], "image_size"), check_int(image_size[1], "image_size"))
    p = check_int(patch_size, "patch_size")
    s_lo, s_hi = check_range(scale_range, "scale_range", positive=True)
    rotation_range = check_range(rotation_range, "rotation_range")
    return _random_transforms(key, num, (h, w), p, (s_lo, s_hi), rotation_range, jnp.dtype(dtype))


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4, 5, 6))
def _random_transforms(key, num, image_size, p, scale_range, rotation_range, dtype):
    h, w = image_size
    (s_lo, s_hi), (a_lo, a_hi) = scale_range, rotation_range
    ks, ka, ky, kx = jax.random.split(key, 4)
    scale = jax.random.uniform(ks, (num,), dtype, s_lo, s_hi)
    angle = jax.random.uniform(ka, (num,), dtype, a_lo, a_hi)
    half = scale * p * (jnp.abs(jnp.cos(angle)) + jnp.abs(jnp.sin(angle))) / 2

    def centre(k, size):
        lo, hi = half - 0.5, size - 0.5 - half
        return jnp.where(hi >= lo, lo + jax.random.uniform(k, (num,), dtype) * (hi - lo), (size - 1) / 2)

    return PatchTransform(centre(ky, h), centre(kx, w), scale, angle)


def adversarial_patch(net: Net, params, images: jax.Array, target_class, key: jax.Array, *,
                      patch_size: int = 16, steps: int = 500, scale_range=(0.8, 1.2),
                      rotation_range=(-math.pi / 8, math.pi / 8), lr: float = 0.01,
                      init: jax.Array | None = None):
    """A universal, targeted adversarial patch trained by expectation over transformations.

    Brown et al. maximise, over a patch p in [0, 1]^(P x P x 3), the expected
    log-probability of the target class ŷ over images x, placements l and
    transformations t (rotation, scale)::

        p* = argmax_p  E_{x, l, t} [ log Pr(ŷ | A(p, x, l, t)) ]

    Here each step draws one transform per image (:func:`random_patch_transforms`
    from ``fold_in(key, step)``), pastes the patch (:func:`apply_patch`) on all
    the ``images`` and takes an Adam step (lr ``lr``) on the mean
    cross-entropy of ŷ, then clips the patch to [0, 1] (projected gradient).
    All steps run in one ``lax.scan``.  Several target classes (K,) train K
    patches at once (vmapped), each from its own ``fold_in(key, k)``.

    Defaults: Brown et al. train with random location, rotation and scale but
    their paper gives neither the ranges nor the optimiser; the defaults here
    (scale 0.8-1.2 of ``patch_size`` pixels, rotations within +-22.5 degrees,
    Adam with lr 0.01 from a uniform random patch, 500 steps) are ours.  Brown
    et al. use a fresh minibatch of images each step; pass the batch you want
    trained on (the whole of ``images`` is used at every step; shard it over
    devices for large sets).

    Pure and jit-compatible with ``net``, ``patch_size``, ``steps``,
    ``scale_range``, ``rotation_range`` static.

    Args:
      net: the net (static).
      params: its params.
      images: training images (B, H, W, 3), float RGB in [0, 1].
      target_class: the class to cause, an int or int array (K,).
      key: ``jax.random.key`` (initial patch and transforms).
      patch_size: side P of the patch in pixels, at most min(H, W) / max scale
        (default 16).
      steps: optimisation steps >= 1 (default 500).
      scale_range: (lo, hi) scale of the patch's pixels (default (0.8, 1.2)).
      rotation_range: (lo, hi) radians (default (-pi/8, pi/8)).
      lr: Adam learning rate > 0 (default 0.01).
      init: initial patch (P, P, 3) in [0, 1] (default: uniform random from key).

    Returns:
      (patch, history): the patch (P, P, 3) for an int target, (K, P, P, 3) for
      (K,) targets, values in [0, 1]; history a dict with ``'loss'`` (steps,) or
      (K, steps), the mean cross-entropy of the target at each step (before
      its update) and ``'success'`` of the same shape, the fraction of the
      patched images classified as the target at that step.

    Raises:
      ValueError: bad ``images`` (not (B, H, W, 3) floats in [0, 1]), ``target_class``,
        ``patch_size`` (< 1 or too
        large for the images at the largest scale), ``steps`` < 1,
        ``scale_range``, ``rotation_range``, ``lr`` <= 0, ``init``, no ``key``.

    References:
      Brown, Mané, Roy, Abadi and Gilmer, "Adversarial patch", NIPS 2017
      workshop (arXiv:1712.09665).  Athalye, Engstrom, Ilyas and Kwok,
      "Synthesizing robust adversarial examples", ICML 2018 (expectation over
      transformation).
    """
    try:
        images = check_images(images)
    except ValueError as e:
        raise ValueError("images" + str(e)[1:]) from None
    _check_clip((0.0, 1.0), images, "images")
    b, h, w = images.shape[:3]
    if net.num_classes < 1:
        raise ValueError(f"target_class: {net!r} has no classifier head")
    tc = target_class if isinstance(target_class, jax.core.Tracer) else np.asarray(target_class)
    if not jnp.issubdtype(tc.dtype, jnp.integer) or tc.ndim > 1:
        raise ValueError(f"target_class: expected an int or an int array (K,), got {tc.dtype} {tc.shape}")
    if _concrete(tc) and tc.size and (tc.min() < 0 or tc.max() >= net.num_classes):
        raise ValueError(f"target_class: expected classes in [0, {net.num_classes}), got {tc}")
    if key is None:
        raise ValueError("key: a jax.random.key is needed (patch initialisation and transforms)")
    patch_size = check_int(patch_size, "patch_size")
    steps = check_int(steps, "steps")
    scale_range = check_range(scale_range, "scale_range", positive=True)
    rotation_range = check_range(rotation_range, "rotation_range")
    if patch_size * scale_range[1] > min(h, w):
        raise ValueError(f"patch_size: {patch_size} pixels at scale {scale_range[1]} do not fit in "
                         f"images of {h} x {w}")
    _check_budget(lr, "lr", positive=True)
    if init is not None:
        if not hasattr(init, "shape") or tuple(init.shape) != (patch_size, patch_size, 3):
            raise ValueError(f"init: expected a patch ({patch_size}, {patch_size}, 3), got "
                             f"{getattr(init, 'shape', type(init).__name__)}")
        if _concrete(init):
            a = np.asarray(init)
            if not (a.min() >= 0 and a.max() <= 1):
                raise ValueError("init: expected values in [0, 1]")
    tc = jnp.asarray(tc, jnp.int32)
    init = None if init is None else jnp.asarray(init, images.dtype)
    return _patch(net, params, images, tc, key, lr, init, patch_size=patch_size, steps=steps,
                  scale_range=scale_range, rotation_range=rotation_range)


@functools.partial(jax.jit, static_argnames=("net", "patch_size", "steps", "scale_range", "rotation_range"))
def _patch(net, params, images, tc, key, lr, init, *, patch_size, steps, scale_range, rotation_range):
    b, h, w = images.shape[:3]
    dtype = images.dtype
    opt = optax.adam(lr)

    def train(target, k):
        k_init, k_steps = jax.random.split(k)
        patch0 = jax.random.uniform(k_init, (patch_size, patch_size, 3), dtype) if init is None else init

        def objective(patch, tr):
            logits = net.apply(params, apply_patch(images, patch, tr))
            return -jnp.mean(jax.nn.log_softmax(logits)[:, target]), logits

        def step(carry, i):
            patch, state = carry
            tr = random_patch_transforms(jax.random.fold_in(k_steps, i), b, (h, w), patch_size,
                                         scale_range=scale_range, rotation_range=rotation_range, dtype=dtype)
            (value, logits), g = jax.value_and_grad(objective, has_aux=True)(patch, tr)
            updates, state = opt.update(g, state, patch)
            patch = jnp.clip(optax.apply_updates(patch, updates), 0, 1).astype(dtype)
            success = jnp.mean((jnp.argmax(logits, -1) == target).astype(dtype))
            return (patch, state), (value, success)

        (patch, _), (losses, success) = jax.lax.scan(step, (patch0, opt.init(patch0)), jnp.arange(steps))
        return patch, {"loss": losses, "success": success}

    if tc.ndim == 0:
        return train(tc, key)
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(tc.shape[0]))
    return jax.vmap(train)(tc, keys)
