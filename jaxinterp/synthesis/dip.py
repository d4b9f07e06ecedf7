"""The deep image prior (Ulyanov, Vedaldi and Lempitsky, CVPR 2018).

A randomly initialised convolutional generator f_theta, fed a fixed noise
image z, is fitted to one degraded observation y by gradient descent on
theta alone::

    theta* = argmin_theta  || A(f_theta(z)) - y ||^2,      x* = f_theta*(z)

where A is the degradation (identity for denoising and JPEG-artifact removal,
a mask for inpainting, a downsampler for super-resolution).  The structure of
the network, not any training data, is the prior: it fits natural images much
faster than noise (:func:`fitting_curves`), so stopping early restores.

Everything here is pure JAX: the generator (:class:`jaxinterp.nets.SkipNet`,
as :func:`~jaxinterp.nets.skip_net_init` and :func:`~jaxinterp.nets.skip_net_apply`)
is a nested dict of float32 arrays and two functions for ONE image;
:func:`deep_image_prior` runs the whole Adam loop in one
``lax.scan`` and maps it over images and seeds (vmap; on a CPU one fit after
another, its convolutions as matrix products); :func:`dip_parameterisation`
lets any objective (pre-images, activation maximisation) use the generator as
its image parameterisation.

Defaults are the paper's (docs/references.md, "Deep image prior"): 5 scales of 128
channels, 4 skip channels, 32 input channels of uniform noise x 0.1, Adam
0.01, reg_noise_std 1/30 (denoising, JPEG) or 0.03 (inpainting, x4
super-resolution), 3000 steps, an exponential moving average 0.99 of the
denoised outputs.

References:
  Ulyanov, Vedaldi and Lempitsky, "Deep image prior", CVPR 2018 (and its
  supplementary material for the skip architecture).
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxinterp.checks import check_int, check_positive_float, check_real, check_size
from jaxinterp.nets.dip_skip import (check_architecture, check_divisible, check_upsample, skip_net_apply,
                                     skip_net_init)
from jaxinterp.synthesis.params import Parameterisation

__all__ = ["TASKS", "REG_NOISE_STD", "FITTING_TARGETS", "DipResult", "FittingCurves",
           "dip_noise", "degrade", "psnr", "deep_image_prior", "restore_one", "dip_parameterisation",
           "fitting_curves"]

TASKS = ("denoise", "inpaint", "super_resolution", "jpeg")

REG_NOISE_STD = {"denoise": 1.0 / 30.0, "jpeg": 1.0 / 30.0, "inpaint": 0.03, "super_resolution": 0.03}
"""Default std of the Gaussian perturbation of z at every step, per task
(docs/references.md, Deep image prior: 1/30 denoising, 0.03 inpainting and
x4 super-resolution; the paper's JPEG-artifact removal runs the denoising
setup).  For
super-resolution with ``factor >= 8`` the default is 0.05 (the paper's x8)."""

FITTING_TARGETS = ("image", "image + noise", "scrambled image", "uniform noise")
"""The four targets of :func:`fitting_curves`, in the order of its second axis (the paper's Fig. 2)."""


# -- the generator's input -------------------------------------------------------------------------


def dip_noise(key: jax.Array, image_size: tuple[int, int], channels: int = 32,
              scale: float = 0.1) -> jax.Array:
    """The generator's input: uniform noise in [0, ``scale``) of shape (H, W, channels).

    The paper's ``get_noise(..., 'noise', var=1/10)``: U(0, 1) x 0.1, 32 channels.

    Args:
      key: a ``jax.random.key``.
      image_size: (H, W).
      channels: channels of z (default 32).
      scale: amplitude (default 0.1).

    Returns:
      z: (H, W, channels) float32.
    """
    h, w = _check_size(image_size, "image_size")
    channels = check_int(channels, "channels")
    return scale * jax.random.uniform(key, (h, w, channels), jnp.float32)


def _check_size(image_size, arg: str) -> tuple[int, int]:
    return check_size(image_size, arg, pair_only=True)


# -- degradations and metrics ---------------------------------------------------------------------


def degrade(image: jax.Array, task: str, *, mask: jax.Array | None = None, factor: int = 4) -> jax.Array:
    """The degradation operator A of ``task`` on ONE image (H, W, 3).

    * 'denoise', 'jpeg': identity (the noisy / JPEG image is the observation,
      as in the paper);
    * 'inpaint': ``mask * image`` (mask (H, W, 1) or (H, W, 3), 1 = observed);
    * 'super_resolution': box (area) downsampling by ``factor``: the mean of
      each factor x factor block, (H / factor, W / factor, 3).  The paper uses a
      Lanczos downsampler; the box filter is simpler, exactly linear and
      alias-free enough for the x4 protocol, and the test / experiment
      observations are made with the same operator.
    """
    if task == "inpaint":
        return image * mask
    if task == "super_resolution":
        h, w, c = image.shape
        return image.reshape(h // factor, factor, w // factor, factor, c).mean(axis=(1, 3))
    return image


def psnr(a: jax.Array, b: jax.Array, axis=(-3, -2, -1)) -> jax.Array:
    """Peak signal-to-noise ratio in dB of images in [0, 1]: -10 log10(mean((a - b)^2))."""
    return -10.0 * jnp.log10(jnp.mean(jnp.square(a.astype(jnp.float32) - b.astype(jnp.float32)), axis=axis))


# -- the fitting loop --------------------------------------------------------------------------------


class DipResult(NamedTuple):
    """Output of :func:`deep_image_prior`.

    Attributes:
      images: (N, S, H, W, 3) restored images: the exponential moving average of
        the outputs for 'denoise' and 'jpeg' (as the paper's code reports), the
        final output otherwise.
      loss: (N, S, steps) the data term ||A(f(z)) - y||^2 (mean over pixels) at each step.
      psnr: (N, S, steps) PSNR of the running estimate (the EMA for denoise / jpeg,
        the output otherwise) against ``reference``; None without a reference.
    """

    images: jax.Array
    loss: jax.Array
    psnr: jax.Array | None


def restore_one(y: jax.Array, key: jax.Array, *, task: str = "denoise", mask: jax.Array | None = None,
                factor: int = 4, steps: int = 3000, lr: float = 0.01, reg_noise_std: float | None = None,
                ema: float | None = 0.99, reference: jax.Array | None = None, in_channels: int = 32,
                down=(128,) * 5, up=(128,) * 5, skip=(4,) * 5, upsample: str = "bilinear",
                compute_dtype=jnp.float32):
    """The deep image prior on ONE observation and ONE seed (no input checks: see :func:`deep_image_prior`).

    ``key`` draws the net's init (``fold_in(key, 0)``), z (``fold_in(key, 1)``)
    and step t's perturbation of z (``fold_in(fold_in(key, 2), t)``).

    Args:
      y: one observation (H, W, 3) ((H / factor, W / factor, 3) for super-resolution).
      key: its seed's key.
      mask: inpainting: (H, W, 1) or (H, W, 3), 1 = observed.
      reference: optional clean image (H, W, 3) for the PSNR curve.
      others: as :func:`deep_image_prior`.

    Returns:
      (image (H, W, 3), loss (steps,), psnr (steps,) or None).
    """
    if reg_noise_std is None:
        reg_noise_std = REG_NOISE_STD[task]
        if task == "super_resolution" and factor >= 8:
            reg_noise_std = 0.05
    size = (y.shape[0] * factor, y.shape[1] * factor) if task == "super_resolution" else y.shape[:2]
    params = skip_net_init(jax.random.fold_in(key, 0), in_channels=in_channels, down=down, up=up, skip=skip)
    z = dip_noise(jax.random.fold_in(key, 1), size, in_channels)
    noise_key = jax.random.fold_in(key, 2)
    opt = optax.adam(lr)
    use_ema = ema is not None and task in ("denoise", "jpeg")
    y = y.astype(jnp.float32)
    m = None if mask is None else mask.astype(jnp.float32)

    obs = y * m if task == "inpaint" else y

    def data_loss(p, zt):
        out = skip_net_apply(p, zt, upsample=upsample, compute_dtype=compute_dtype)
        return jnp.mean(jnp.square(degrade(out, task, mask=m, factor=factor) - obs)), out

    def step(carry, t):
        p, state, avg = carry
        zt = z + reg_noise_std * jax.random.normal(jax.random.fold_in(noise_key, t), z.shape) \
            if reg_noise_std else z
        (loss, out), g = jax.value_and_grad(data_loss, has_aux=True)(p, zt)
        updates, state = opt.update(g, state, p)
        p = optax.apply_updates(p, updates)
        out = jax.lax.stop_gradient(out)
        avg = jnp.where(t == 0, out, ema * avg + (1.0 - ema) * out) if use_ema else out
        q = psnr(avg, reference) if reference is not None else jnp.zeros(())
        return (p, state, avg), (loss, q)

    init = (params, opt.init(params), jnp.zeros((*size, 3), jnp.float32))
    (_, _, image), (losses, psnrs) = jax.lax.scan(step, init, jnp.arange(steps))
    return image, losses, (psnrs if reference is not None else None)


def _check_task_args(task, steps, factor, lr, ema, reg_noise_std):
    if task not in TASKS:
        raise ValueError(f"task: expected one of {TASKS}, got {task!r}")
    steps = check_int(steps, "steps")
    factor = check_int(factor, "factor")
    if task == "super_resolution" and factor < 2:
        raise ValueError(f"factor: super-resolution needs factor >= 2, got {factor}")
    check_positive_float(lr, "lr")
    if ema is not None:
        check_real(ema, "ema", minimum=0, maximum=1, open_max=True)
    if reg_noise_std is not None and (not isinstance(reg_noise_std, (int, float)) or reg_noise_std < 0):
        raise ValueError(f"reg_noise_std: expected None or a number >= 0, got {reg_noise_std!r}")


def _check_observation(x) -> jax.Array:
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        raise ValueError(f"x: expected an array of images (N, H, W, 3), got {type(x).__name__}")
    if x.ndim != 4 or x.shape[-1] != 3 or not x.shape[0]:
        raise ValueError(f"x: expected images of rank 4 (N, H, W, 3) with N >= 1, got shape {tuple(x.shape)}")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"x: expected a floating dtype (float32), got {x.dtype}")
    if not isinstance(x, jax.core.Tracer):
        a = np.asarray(x)
        if not np.all(np.isfinite(a)):
            raise ValueError("x: expected finite values, got NaN or Inf")
    return x


def _check_mask(mask, x) -> jax.Array:
    n, h, w = x.shape[:3]
    if mask is None:
        raise ValueError("mask: task 'inpaint' needs a mask (N, H, W) or (N, H, W, 1|3), 1 = observed")
    if not hasattr(mask, "shape") or mask.ndim not in (3, 4) or tuple(mask.shape[:3]) != (n, h, w) \
            or (mask.ndim == 4 and mask.shape[-1] not in (1, 3)):
        raise ValueError(f"mask: expected shape ({n}, {h}, {w}) or ({n}, {h}, {w}, 1|3), got "
                         f"{getattr(mask, 'shape', type(mask).__name__)}")
    if not isinstance(mask, jax.core.Tracer):
        a = np.asarray(mask, np.float64)
        if a.size and (a.min() < 0 or a.max() > 1):
            raise ValueError(f"mask: expected values in [0, 1], got range [{a.min():.4g}, {a.max():.4g}]")
    mask = jnp.asarray(mask, jnp.float32)
    return mask if mask.ndim == 4 else mask[..., None]


def deep_image_prior(x: jax.Array, *, key: jax.Array, task: str = "denoise", mask: jax.Array | None = None,
                     factor: int = 4, steps: int = 3000, lr: float = 0.01, reg_noise_std: float | None = None,
                     ema: float | None = 0.99, seeds: int = 1, reference: jax.Array | None = None,
                     in_channels: int = 32, down=(128,) * 5, up=(128,) * 5, skip=(4,) * 5,
                     upsample: str = "bilinear", compute_dtype=jnp.float32) -> DipResult:
    """Restore images with the deep image prior: fit a random generator to each observation.

    For each observation y and seed s, with theta_0 and z drawn from
    ``fold_in(key, s)`` (the same draws for every image)::

        theta_{t+1} = Adam(theta_t, grad_theta || A(f_theta(z + eps_t)) - y ||^2),
        eps_t ~ N(0, reg_noise_std^2)

    for ``steps`` steps, A being the task's operator (:func:`degrade`): identity
    (denoise, jpeg), ``m * .`` (inpaint: loss || m (x) (x - f(z)) ||^2, mean
    over pixels as the paper's code's MSE), box downsampling by ``factor``
    (super-resolution; the paper uses Lanczos, see :func:`degrade`).  The loop
    is one ``lax.scan``; it is mapped over seeds and images (vmapped; on a CPU
    one fit after another, see :func:`_fit_each`).

    As in the paper's code, the image kept at each step is that step's output
    (on the perturbed z); for 'denoise' and 'jpeg' the result is its
    exponential moving average with weight ``ema`` (0.99), the paper's reported
    denoised image; the other tasks return the last output.

    Pure and jit-compatible with every argument but ``x``, ``key``, ``mask``
    and ``reference`` static::

        jax.jit(deep_image_prior, static_argnames=("task", "factor", "steps", "lr", "reg_noise_std",
                "ema", "seeds", "in_channels", "down", "up", "skip", "upsample", "compute_dtype"))

    Sharding: when ``x`` is split over devices along its image axis (a
    ``NamedSharding`` such as ``P('data')``), the restoration runs under
    ``jax.shard_map`` over that axis, each device fitting its own images; the
    result equals the single-device one.  Called inside a jit on such inputs,
    wrap it in ``jax.shard_map`` yourself.

    Args:
      x: observations (N, h, w, 3) float in [0, 1]: noisy, JPEG or masked images
        (H, W) = (h, w), or low-resolution images for 'super_resolution' (the
        output is (h factor, w factor)).  The output side must be divisible by
        2**len(down).
      key: ``jax.random.key``; seed s uses ``fold_in(key, s)``.
      task: 'denoise' (default), 'inpaint', 'super_resolution' or 'jpeg'.
      mask: inpainting only: (N, H, W) or (N, H, W, 1|3) in [0, 1], 1 = observed.
      factor: super-resolution factor (default 4).
      steps: Adam steps (default 3000, the paper's for denoising; it uses about
        6000 for inpainting and 2000 for x4 super-resolution: pass them).
      lr: Adam learning rate (default 0.01).
      reg_noise_std: std of the perturbation of z each step (default per task,
        :data:`REG_NOISE_STD`; 0 to switch off).
      ema: EMA weight of the denoised outputs (default 0.99; None: last output).
        Used for 'denoise' and 'jpeg' only.
      seeds: independent restorations per image S (default 1).
      reference: optional clean images (N, H, W, 3) for the per-step PSNR.
      in_channels, down, up, skip, upsample: the generator (defaults the
        paper's: 32 input channels, 5 scales of 128 / 128 / 4, bilinear).
      compute_dtype: dtype of the conv operands (default float32).

    Returns:
      :class:`DipResult` (images (N, S, H, W, 3), loss (N, S, steps), psnr
      (N, S, steps) or None).

    Raises:
      ValueError: bad ``x``, ``task``, ``mask``, ``steps``, ``factor``, ``lr``,
        ``ema``, ``reg_noise_std``, ``seeds``, ``reference``, channels, or an
        output side not divisible by 2**scales.

    References:
      Ulyanov, Vedaldi and Lempitsky, "Deep image prior", CVPR 2018.
    """
    x = _check_observation(x)
    _check_task_args(task, steps, factor, lr, ema, reg_noise_std)
    seeds = check_int(seeds, "seeds")
    in_channels, _, down, up, skip = check_architecture(in_channels, 3, down, up, skip)
    upsample = check_upsample(upsample)
    n, h, w = x.shape[:3]
    size = (h * factor, w * factor) if task == "super_resolution" else (h, w)
    check_divisible(size, len(down), "x")
    if task == "inpaint":
        mask = _check_mask(mask, x)
    elif mask is not None:
        raise ValueError(f"mask: only task 'inpaint' takes a mask, got one for task {task!r}")
    if reference is not None:
        if not hasattr(reference, "shape") or tuple(reference.shape) != (n, *size, 3):
            raise ValueError(f"reference: expected clean images ({n}, {size[0]}, {size[1]}, 3), got "
                             f"{getattr(reference, 'shape', type(reference).__name__)}")
        reference = jnp.asarray(reference, jnp.float32)
    options = dict(task=task, factor=int(factor), steps=int(steps), lr=float(lr), reg_noise_std=reg_noise_std,
                   ema=ema, in_channels=in_channels, down=down, up=up, skip=skip, upsample=upsample,
                   compute_dtype=compute_dtype)
    data = {"x": x, "mask": mask, "reference": reference}
    split = _data_axis(x)
    if split is None:
        return _restore(data, key, int(seeds), **options)
    mesh, axis = split
    fn = functools.partial(_restore_images, key=key, seeds=int(seeds), **options)
    return jax.jit(jax.shard_map(fn, mesh=mesh, in_specs=jax.P(axis), out_specs=jax.P(axis), check_vma=False))(data)


def _data_axis(x):
    """(mesh, axis) when concrete ``x`` is split over its leading axis by a NamedSharding, else None.

    Such inputs are restored under ``jax.shard_map`` over that axis: every device
    runs the mapped loop on its own images.  (Letting GSPMD partition the
    per-image convs instead - grouped convolutions once vmapped over per-image
    weights - fails in XLA:CPU's partitioner.)  Inside a user's ``jit`` (a
    tracer) the input's sharding is unknown: wrap the call in ``shard_map`` there.
    """
    s = getattr(x, "sharding", None)
    if isinstance(x, jax.core.Tracer) or not isinstance(s, jax.sharding.NamedSharding) or not s.spec \
            or s.spec[0] is None:
        return None
    axis = s.spec[0]
    size = math.prod(s.mesh.shape[a] for a in (axis if isinstance(axis, tuple) else (axis,)))
    if size < 2 or x.shape[0] % size:
        return None
    return s.mesh, axis


def _fit_each(fit, *args):
    """``fit`` over the leading axis of ``args`` (pytrees, None allowed): one fit after another
    (``lax.map``) on a CPU, vmapped elsewhere.

    Every fit has its own net.  Elsewhere a vmap turns each convolution into a
    grouped one (``feature_group_count`` = fits), which GPUs run well.  On a
    CPU the convolutions are matrix products
    (:func:`jaxinterp.nets.dip_skip._conv_valid`): vmapped, they run at the
    same speed per fit as one after another (64 px, 1 to 16 fits), while the
    activations kept for the backward pass grow with the number of fits; one
    after another, memory stays that of one fit.
    """
    if jax.default_backend() == "cpu":
        return jax.lax.map(lambda a: fit(*a), args)
    return jax.vmap(fit)(*args)


def _restore_images(data, *, key, seeds, **options):
    """:func:`restore_one` over (image, seed) pairs, flattened into ONE mapped axis (:func:`_fit_each`).

    One flat axis rather than two nested maps: where vmapped, the per-pair
    convs become one grouped convolution (nested vmaps of grouped convs are not
    batched by JAX under ``shard_map``).
    """
    n = data["x"].shape[0]

    def rep(a):
        return None if a is None else jnp.repeat(a, seeds, axis=0)

    def one(y, m, r, s):
        return restore_one(y, jax.random.fold_in(key, s), mask=m, reference=r, **options)

    out = _fit_each(one, rep(data["x"]), rep(data["mask"]), rep(data["reference"]), jnp.tile(jnp.arange(seeds), n))
    return DipResult(*(None if o is None else o.reshape(n, seeds, *o.shape[1:]) for o in out))


_restore = jax.jit(lambda data, key, seeds, **options: _restore_images(data, key=key, seeds=seeds, **options),
                   static_argnums=(2,), static_argnames=("task", "factor", "steps", "lr", "reg_noise_std", "ema",
                                                         "in_channels", "down", "up", "skip", "upsample",
                                                         "compute_dtype"))


# -- the generator as an image parameterisation ------------------------------------------------------


def dip_parameterisation(image_size: tuple[int, int], *, in_channels: int = 32, down=(128,) * 5,
                         up=(128,) * 5, skip=(4,) * 5, upsample: str = "bilinear",
                         noise_scale: float = 0.1, compute_dtype=jnp.float32) -> Parameterisation:
    """The skip generator as an image parameterisation for any objective.

    ``init(key)`` returns ``{'net': skip_net_init(fold_in(key, 0), ...),
    'z': dip_noise(fold_in(key, 1), image_size, in_channels)}``;
    ``to_image(p) = skip_net_apply(p['net'], stop_gradient(p['z']))``, so an
    optimiser of p updates the net only and leaves z at its value (zero
    gradient; Adam's update is then exactly 0).  The paper's feature
    inversion uses 6 scales and Adam 0.001 (docs/references.md, Deep image prior).

    Args:
      image_size: (H, W), divisible by 2**len(down).
      in_channels, down, up, skip, upsample, compute_dtype: the generator (as
        :func:`deep_image_prior`).
      noise_scale: amplitude of z (default 0.1).

    Returns:
      A :class:`~jaxinterp.synthesis.params.Parameterisation` whose images are
      (H, W, 3) in (0, 1).

    Raises:
      ValueError: bad ``image_size`` (or not divisible by 2**scales), channels or ``upsample``.
    """
    size = _check_size(image_size, "image_size")
    in_channels, _, down, up, skip = check_architecture(in_channels, 3, down, up, skip)
    check_divisible(size, len(down), "image_size")
    upsample = check_upsample(upsample)

    def init(key):
        return {"net": skip_net_init(jax.random.fold_in(key, 0), in_channels=in_channels, down=down, up=up,
                                     skip=skip),
                "z": dip_noise(jax.random.fold_in(key, 1), size, in_channels, noise_scale)}

    def to_image(p):
        return skip_net_apply(p["net"], jax.lax.stop_gradient(p["z"]), upsample=upsample,
                              compute_dtype=compute_dtype)

    return Parameterisation(init, to_image)


# -- the paper's Fig. 2: fitting natural images versus noise -------------------------------------------


class FittingCurves(NamedTuple):
    """Output of :func:`fitting_curves`.

    Attributes:
      loss: (N, 4, steps) MSE between the generator's output and each target at
        each step, targets in the order of :data:`FITTING_TARGETS`.
      targets: (N, 4, H, W, 3) the four targets.
    """

    loss: jax.Array
    targets: jax.Array


def fitting_targets(image: jax.Array, key: jax.Array, noise_std: float = 0.1) -> jax.Array:
    """The four targets of the paper's Fig. 2 for ONE image (H, W, 3): (4, H, W, 3).

    (a) the image; (b) the image + N(0, noise_std^2) i.i.d. noise (not clipped);
    (c) the image's pixels (RGB triples) randomly permuted; (d) U(0, 1) white noise.
    """
    h, w, c = image.shape
    k_noise, k_perm, k_white = jax.random.split(key, 3)
    noisy = image + noise_std * jax.random.normal(k_noise, image.shape)
    scrambled = jax.random.permutation(k_perm, image.reshape(h * w, c), axis=0).reshape(h, w, c)
    white = jax.random.uniform(k_white, image.shape)
    return jnp.stack([image, noisy, scrambled, white])


def fitting_curves(x: jax.Array, key: jax.Array, steps: int = 2400, *, lr: float = 0.01,
                   noise_std: float = 0.1, in_channels: int = 32, down=(128,) * 5, up=(128,) * 5,
                   skip=(4,) * 5, upsample: str = "bilinear", compute_dtype=jnp.float32) -> FittingCurves:
    """MSE-versus-step of fitting the generator to an image, the image + noise, its scrambled pixels and noise.

    The paper's Fig. 2 argument: the same net, the same z, Adam on the same
    loss ||f(z) - target||^2, fits the natural image much faster than the
    three unstructured targets (:func:`fitting_targets`), so early stopping on
    a degraded image returns mostly its natural part.  All four fits of all
    images run in one compiled call (a map over images and targets of the
    scan in :func:`restore_one` with task 'denoise', no perturbation of z, no
    EMA).  Every fit of one image starts from the same net and z
    (``fold_in(key, 0)``); the targets are drawn from ``fold_in(key, 1 + i)``
    for image i.

    Args:
      x: clean images (N, H, W, 3) in [0, 1], H and W divisible by 2**len(down).
      key: ``jax.random.key``.
      steps: Adam steps (default 2400, the horizon of the paper's Fig. 2).
      lr: Adam learning rate (default 0.01).
      noise_std: std of the additive noise of target (b) (default 0.1).
      in_channels, down, up, skip, upsample, compute_dtype: the generator.

    Returns:
      :class:`FittingCurves`: loss (N, 4, steps), targets (N, 4, H, W, 3).

    Raises:
      ValueError: bad ``x``, ``steps``, ``lr`` or generator arguments.

    References:
      Ulyanov, Vedaldi and Lempitsky, "Deep image prior", CVPR 2018, Fig. 2.
    """
    x = _check_observation(x)
    _check_task_args("denoise", steps, 1, lr, None, None)
    in_channels, _, down, up, skip = check_architecture(in_channels, 3, down, up, skip)
    check_divisible(x.shape[1:3], len(down), "x")
    upsample = check_upsample(upsample)
    return _fitting(x, key, int(steps), float(lr), float(noise_std), in_channels, down, up, skip, upsample,
                    compute_dtype)


@functools.partial(jax.jit, static_argnums=tuple(range(2, 11)))
def _fitting(x, key, steps, lr, noise_std, in_channels, down, up, skip, upsample, compute_dtype):
    targets = jax.vmap(lambda i, im: fitting_targets(im, jax.random.fold_in(key, 1 + i), noise_std))(
        jnp.arange(x.shape[0]), x)

    def fit(target):
        return restore_one(target, jax.random.fold_in(key, 0), task="denoise", steps=steps, lr=lr,
                           reg_noise_std=0.0, ema=None, in_channels=in_channels, down=down, up=up, skip=skip,
                           upsample=upsample, compute_dtype=compute_dtype)[1]

    n = x.shape[0]
    loss = _fit_each(fit, targets.reshape(n * 4, *x.shape[1:]))          # one flat axis (see _restore_images)
    return FittingCurves(loss.reshape(n, 4, steps), targets)
