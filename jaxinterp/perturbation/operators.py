"""Perturbation operators of extremal perturbations (Fong, Patrick and Vedaldi, ICCV 2019, Sec. 3.3).

A perturbation operator maps an image x and a mask m in [0, 1] to the image
with the region m = 0 perturbed and m = 1 intact.  It is precomputed once per
image as a *pyramid* of L levels (level 0 most perturbed, level L - 1 the
image itself) and applied by linear interpolation between the two levels
around m (L - 1):

* ``'blur'``: level l is x blurred with sigma_l = (1 - l / (L - 1)) sigma_max
  (L = 8, sigma_max = 20 px), a separable Gaussian truncated at +-ceil(4 sigma)
  with constant padding;
* ``'fade'``: level l = f + (l / (L - 1)) (x - f), fading x to the colour f,
  so that ``apply_pyramid`` gives f + m (x - f) exactly.

``fill`` is the padding colour of the blur and the target of the fade.  The
paper (and TorchRay) perturb the *normalised* image with zero padding and fade
to zero; the same operator on the [0, 1] image is ``fill = net.mean`` (the
colour the normalisation maps to 0), which :func:`jaxinterp.perturbation.extremal`
uses.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxinterp import ops
from jaxinterp.checks import check_int

__all__ = ["PERTURBATIONS", "blur_pyramid", "fade_pyramid", "perturbation_pyramid", "apply_pyramid"]


def blur_pyramid(x: jax.Array, *, levels: int = 8, max_sigma: float = 20.0, fill=0.0) -> jax.Array:
    """Blur pyramid of images x (..., H, W, C) -> (..., L, H, W, C), level L - 1 = x.

    Level l is blurred with sigma_l = (1 - l / (L - 1)) max_sigma (defaults L = 8,
    max_sigma = 20: the paper's and TorchRay's), padding with ``fill``.
    """
    levels = check_int(levels, "levels", minimum=2)
    if not max_sigma > 0:
        raise ValueError(f"max_sigma: expected a positive blur in pixels, got {max_sigma!r}")
    out = []
    for level in range(levels):
        sigma = (1.0 - level / (levels - 1)) * float(max_sigma)
        out.append(x if sigma == 0 else ops.gaussian_blur(x, sigma, fill=fill))
    return jnp.stack(out, axis=-4)


def fade_pyramid(x: jax.Array, *, levels: int = 8, fill=0.0) -> jax.Array:
    """Fade pyramid of images x (..., H, W, C) -> (..., L, H, W, C): level l = fill + l / (L - 1) (x - fill)."""
    levels = check_int(levels, "levels", minimum=2)
    fill = jnp.asarray(fill, x.dtype)
    alpha = jnp.linspace(0.0, 1.0, levels, dtype=x.dtype).reshape(levels, 1, 1, 1)
    return fill + alpha * (x[..., None, :, :, :] - fill)


PERTURBATIONS = {"blur": blur_pyramid, "fade": fade_pyramid}
"""Pyramid builders by name: ``blur`` (default, the paper's) and ``fade``."""


def perturbation_pyramid(x: jax.Array, perturbation: str = "blur", *, levels: int = 8,
                         max_sigma: float = 20.0, fill=0.0) -> jax.Array:
    """The pyramid (..., L, H, W, C) of the named perturbation (``'blur'`` or ``'fade'``)."""
    if perturbation == "blur":
        return blur_pyramid(x, levels=levels, max_sigma=max_sigma, fill=fill)
    if perturbation == "fade":
        return fade_pyramid(x, levels=levels, fill=fill)
    raise ValueError(f"perturbation: expected one of {sorted(PERTURBATIONS)}, got {perturbation!r}")


def apply_pyramid(pyramid: jax.Array, mask: jax.Array) -> jax.Array:
    """Perturb with a mask: interpolate the pyramid's levels at m (L - 1).

    Args:
      pyramid: (L, H, W, C) from :func:`blur_pyramid` / :func:`fade_pyramid`.
      mask: (..., H, W) in [0, 1]; 1 keeps the pixel, 0 perturbs it fully.

    Returns:
      (..., H, W, C): with w = m (L - 1), k = min(floor(w), L - 2), the image
      (1 - (w - k)) level_k + (w - k) level_{k+1}, pixel by pixel.
    """
    levels = pyramid.shape[-4]
    w = mask * (levels - 1)
    k = jnp.clip(jnp.floor(w), 0, levels - 2)
    frac = (w - k)[..., None]
    k = k.astype(jnp.int32)
    hw = jnp.indices(mask.shape[-2:])
    lo = pyramid[k, hw[0], hw[1]]
    hi = pyramid[k + 1, hw[0], hw[1]]
    return lo + frac * (hi - lo)
