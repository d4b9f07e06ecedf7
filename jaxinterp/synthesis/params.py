"""Image parameterisations: how an optimised image is represented.

A :class:`Parameterisation` is a pair of pure functions for ONE image:

* ``init(key) -> p``: the trainable pytree of one image;
* ``to_image(p) -> x``: the image (H, W, 3), RGB in [0, 1].

Methods vmap them over targets and images.  Anything held fixed (the deep image
prior's noise input, say) may live in ``p`` behind ``jax.lax.stop_gradient``.

The feature-visualisation parameterisations follow Lucid / lucent
(torch-lucent 0.1.8, ``lucent.optvis.param``), which the parity tests run as an
oracle: a logit image, from pixels or from a scaled Fourier spectrum, mapped
through the decorrelated colour basis and a sigmoid.

References:
  Olah, Mordvintsev and Schubert, "Feature visualization", Distill 2017.
  Mordvintsev et al., "Differentiable image parameterizations", Distill 2018.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp import ops
from jaxinterp.checks import check_int, check_size

__all__ = ["Parameterisation", "COLOUR_CORRELATION_SQRT", "decorrelate_colour", "pixel", "fourier",
           "fourier_frequencies", "fourier_scale", "laplacian_pyramid", "raw_pixels", "check_image_size"]


class Parameterisation(NamedTuple):
    """``init(key) -> p`` and ``to_image(p) -> (H, W, 3) in [0, 1]`` for one image."""

    init: Callable[[jax.Array], Any]
    to_image: Callable[[Any], jax.Array]


COLOUR_CORRELATION_SQRT = np.asarray([[0.26, 0.09, 0.02],
                                      [0.27, 0.00, -0.05],
                                      [0.27, -0.09, 0.03]], np.float32)
"""Square root of ImageNet's RGB colour covariance (Lucid's ``color_correlation_svd_sqrt``)."""


def _colour_basis() -> np.ndarray:
    """The colour square root scaled so that its largest column has unit norm (Lucid)."""
    return COLOUR_CORRELATION_SQRT / np.max(np.linalg.norm(COLOUR_CORRELATION_SQRT, axis=0))


def decorrelate_colour(t: jax.Array) -> jax.Array:
    """Map decorrelated colour coordinates t (..., 3) to RGB logits: ``t @ C^T`` (C normalised)."""
    return t @ jnp.asarray(_colour_basis().T, t.dtype)


def check_image_size(image_size) -> tuple[int, int]:
    """``image_size`` (int or (H, W)) as a pair of positive ints; ValueError otherwise."""
    return check_size(image_size, "image_size")


def _check_sd(sd) -> float:
    if not (isinstance(sd, (int, float)) and sd > 0):
        raise ValueError(f"sd: expected a positive number, got {sd!r}")
    return float(sd)


def _to_rgb(logits: jax.Array, decorrelate: bool) -> jax.Array:
    return jax.nn.sigmoid(decorrelate_colour(logits) if decorrelate else logits)


def pixel(image_size, *, sd: float = 0.01, decorrelate: bool = True) -> Parameterisation:
    """Pixel logits: ``x = sigmoid(C t)``, t ~ N(0, sd^2) of shape (H, W, 3) (lucent ``fft=False``).

    Args:
      image_size: int or (H, W).
      sd: standard deviation of the initial logits (lucent: 0.01).
      decorrelate: map through the decorrelated colour basis (lucent: True).
    """
    h, w = check_image_size(image_size)
    sd = _check_sd(sd)
    return Parameterisation(lambda key: sd * jax.random.normal(key, (h, w, 3)),
                            lambda t: _to_rgb(t, decorrelate))


def fourier_frequencies(h: int, w: int) -> np.ndarray:
    """|f| of the real 2-D FFT grid (h, w // 2 + 1 (+1 for odd w)), cycles per pixel (float64)."""
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.fftfreq(w)[: w // 2 + (2 if w % 2 else 1)]
    return np.sqrt(fx * fx + fy * fy)


def fourier_scale(h: int, w: int, decay_power: float = 1.0) -> np.ndarray:
    """Spectrum scale ``1 / max(|f|, 1 / max(h, w)) ** decay_power`` (Lucid), float32 (h, wf)."""
    return (1.0 / np.maximum(fourier_frequencies(h, w), 1.0 / max(h, w)) ** decay_power).astype(np.float32)


def _irfft_image(spectrum: jax.Array, scale: jax.Array, h: int, w: int) -> jax.Array:
    """Spectrum (h, wf, 3, 2) (real, imaginary) -> logits (h, w, 3): ortho inverse real FFT / 4."""
    s = (spectrum[..., 0] + 1j * spectrum[..., 1]) * scale[..., None]
    # For odd w the spectrum keeps one extra column (Lucid); irfft2 to width w ignores it, as lucent's does.
    img = jnp.fft.irfft2(s, s=(h, w), axes=(0, 1), norm="ortho")
    return (img / 4.0).astype(spectrum.dtype)     # Lucid's "magic" 4: less saturated start


def fourier(image_size, *, sd: float = 0.01, decay_power: float = 1.0,
            decorrelate: bool = True) -> Parameterisation:
    """Scaled Fourier spectrum: ``x = sigmoid(C irfft2(scale * s) / 4)`` (Lucid / lucent default).

    The spectrum s (H, W // 2 + 1, 3, 2) holds real and imaginary parts, each
    N(0, sd^2); the scale ``1 / max(|f|, 1 / max(H, W)) ** decay_power``
    equalises the gradient across frequencies, so steps are not dominated by
    high frequencies.

    Args:
      image_size: int or (H, W).
      sd: standard deviation of the initial spectrum (0.01).
      decay_power: frequency decay of the scale (1).
      decorrelate: decorrelated colour basis (True).
    """
    h, w = check_image_size(image_size)
    sd = _check_sd(sd)
    if not isinstance(decay_power, (int, float)) or decay_power < 0:
        raise ValueError(f"decay_power: expected a number >= 0, got {decay_power!r}")
    scale = fourier_scale(h, w, decay_power)

    def init(key):
        return sd * jax.random.normal(key, (*scale.shape, 3, 2))

    def to_image(s):
        return _to_rgb(_irfft_image(s, jnp.asarray(scale), h, w), decorrelate)

    return Parameterisation(init, to_image)


def laplacian_pyramid(image_size, *, levels: int = 4, sd: float = 0.01,
                      decorrelate: bool = True) -> Parameterisation:
    """Sum of bilinearly upsampled logit images at 1, 1/2, ..., 1/2^(levels-1) resolution.

    Lucid's ``laplacian_pyramid`` parameterisation: coarse levels move large
    regions at once, so low frequencies are as easy to change as high ones.
    Level k has shape (ceil(H / 2^k), ceil(W / 2^k), 3), initialised N(0, sd^2).
    """
    h, w = check_image_size(image_size)
    sd = _check_sd(sd)
    levels = check_int(levels, "levels")
    shapes = [(-(-h // 2 ** k), -(-w // 2 ** k), 3) for k in range(levels)]

    def init(key):
        return [sd * jax.random.normal(k, s) for k, s in zip(jax.random.split(key, levels), shapes)]

    def to_image(ts):
        logits = sum(ops.resize_bilinear(t, (h, w), axes=(0, 1)) for t in ts)
        return _to_rgb(logits, decorrelate)

    return Parameterisation(init, to_image)


def raw_pixels(x0: jax.Array) -> Parameterisation:
    """The image itself, started at ``x0`` (H, W, 3): ``to_image`` is the identity.

    The parameterisation of Mahendran and Vedaldi's pre-images and caricatures,
    whose optimiser projects the pixels back into the valid set each step.
    """
    x0 = jnp.asarray(x0)
    if x0.ndim != 3 or x0.shape[-1] != 3:
        raise ValueError(f"x0: expected one image (H, W, 3), got shape {tuple(x0.shape)}")
    return Parameterisation(lambda key: x0, lambda p: p)
