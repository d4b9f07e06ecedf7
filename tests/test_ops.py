"""Shared numerical helpers against SciPy / NumPy references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage

from jaxinterp import ops


@pytest.mark.parametrize("sigma", [0.7, 2.0, 5.0])
def test_gaussian_blur_matches_scipy_nearest_mode(sigma):
    x = np.random.default_rng(0).uniform(size=(2, 23, 31, 3)).astype(np.float32)
    ours = np.asarray(ops.gaussian_blur(jnp.asarray(x), sigma))
    ref = scipy.ndimage.gaussian_filter(x.astype(np.float64), sigma=(0, sigma, sigma, 0),
                                        mode="nearest", truncate=4.0)
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("sigma", [2.5, 20.0])
def test_gaussian_blur_with_a_fill_matches_scipy_constant_mode(sigma):
    """Constant padding per colour, with a kernel (radius 80 at sigma 20) wider than the image."""
    x = np.random.default_rng(1).uniform(size=(19, 26, 3))
    fill = np.array([0.485, 0.456, 0.406])
    ours = np.asarray(ops.gaussian_blur(jnp.asarray(x, jnp.float32), sigma, fill=fill))
    ref = np.stack([scipy.ndimage.gaussian_filter(x[..., c], sigma, mode="constant", cval=fill[c], truncate=4.0)
                    for c in range(3)], -1)
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-6)


def test_gaussian_kernel_is_normalised_and_bad_sigma_raises():
    k = ops.gaussian_kernel1d(3.0)
    np.testing.assert_allclose(float(k.sum()), 1.0, rtol=1e-6)
    assert k.shape == (25,)
    with pytest.raises(ValueError, match="sigma: expected a positive"):
        ops.gaussian_blur(jnp.zeros((1, 4, 4, 3)), 0.0)


def _bilinear_reference(a: np.ndarray, h: int, w: int) -> np.ndarray:
    """Direct per-pixel bilinear interpolation with half-pixel centres, clamped at the border."""
    hin, win = a.shape
    out = np.zeros((h, w))
    for i in range(h):
        for j in range(w):
            sy = min(max((i + 0.5) * hin / h - 0.5, 0), hin - 1)
            sx = min(max((j + 0.5) * win / w - 0.5, 0), win - 1)
            y0, x0 = int(np.floor(sy)), int(np.floor(sx))
            y1, x1 = min(y0 + 1, hin - 1), min(x0 + 1, win - 1)
            fy, fx = sy - y0, sx - x0
            out[i, j] = ((1 - fy) * (1 - fx) * a[y0, x0] + (1 - fy) * fx * a[y0, x1]
                         + fy * (1 - fx) * a[y1, x0] + fy * fx * a[y1, x1])
    return out


@pytest.mark.parametrize("shape, hw", [((7, 7), (32, 32)), ((5, 9), (17, 11)), ((12, 10), (4, 6))])
def test_resize_bilinear_matches_direct_interpolation(shape, hw):
    a = np.random.default_rng(1).normal(size=shape)
    ours = np.asarray(ops.resize_bilinear(jnp.asarray(a, jnp.float32)[None], hw))[0]
    np.testing.assert_allclose(ours, _bilinear_reference(a, *hw), rtol=1e-5, atol=1e-6)


def test_resize_bilinear_image_axes_and_vmap():
    x = jax.random.uniform(jax.random.key(0), (3, 8, 8, 2))
    channels_last = ops.resize_bilinear(x, (16, 12), axes=(-3, -2))
    per_channel = jax.vmap(lambda c: ops.resize_bilinear(c, (16, 12)), in_axes=-1, out_axes=-1)(x)
    np.testing.assert_allclose(channels_last, per_channel, rtol=1e-6)
    with pytest.raises(ValueError, match="hw: expected positive"):
        ops.resize_bilinear(x, (0, 3))
