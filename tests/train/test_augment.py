"""jaxinterp.train.augment: each op against NumPy / scipy on fixed parameters; pipeline properties."""

import colorsys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage

from jaxinterp import ops
from jaxinterp.train import augment as A


def _images(n=4, h=12, w=10, seed=0):
    return np.random.default_rng(seed).uniform(size=(n, h, w, 3)).astype(np.float32)


def _np_bilinear(img, oh, ow):
    """float64 NumPy bilinear resize, half-pixel centres, clamped (torch align_corners=False)."""
    h, w = img.shape[:2]
    out = np.zeros((oh, ow, img.shape[2]))
    for i in range(oh):
        for j in range(ow):
            y = min(max((i + 0.5) * h / oh - 0.5, 0), h - 1)
            x = min(max((j + 0.5) * w / ow - 0.5, 0), w - 1)
            y0, x0 = int(np.floor(y)), int(np.floor(x))
            y1, x1 = min(y0 + 1, h - 1), min(x0 + 1, w - 1)
            fy, fx = y - y0, x - x0
            out[i, j] = ((1 - fy) * (1 - fx) * img[y0, x0] + (1 - fy) * fx * img[y0, x1]
                         + fy * (1 - fx) * img[y1, x0] + fy * fx * img[y1, x1])
    return out


@pytest.mark.parametrize("box,size", [((2, 1, 7, 6), (5, 8)), ((0, 0, 12, 10), (12, 10)),
                                      ((3, 4, 4, 3), (9, 7))])
def test_resized_crop_is_slice_then_bilinear(box, size):
    img = _images(1)[0]
    y0, x0, h, w = box
    got = np.asarray(A.resized_crop(jnp.asarray(img), jnp.asarray(box, jnp.float32), size))
    want = _np_bilinear(img[y0:y0 + h, x0:x0 + w].astype(np.float64), *size)
    np.testing.assert_allclose(got, want, atol=1e-5)
    via_ops = ops.resize_bilinear(jnp.asarray(img[y0:y0 + h, x0:x0 + w]), size, axes=(0, 1))
    np.testing.assert_allclose(got, np.asarray(via_ops), atol=1e-5)


def test_crop_box_ranges():
    keys = jax.random.split(jax.random.key(0), 500)
    boxes = np.asarray(jax.vmap(lambda k: A.crop_box(k, (40, 30), (0.2, 0.6), (0.5, 2.0)))(keys))
    y0, x0, h, w = boxes.T
    assert np.all(h >= 1) and np.all(w >= 1) and np.all(y0 >= 0) and np.all(x0 >= 0)
    assert np.all(y0 + h <= 40) and np.all(x0 + w <= 30)
    assert np.all(boxes == np.round(boxes))
    frac = h * w / 1200
    assert 0.15 < frac.min() and frac.max() < 0.68 and np.median(frac) > 0.3


def test_flip_greyscale_solarize_vs_numpy():
    img = _images(1)[0]
    np.testing.assert_array_equal(np.asarray(A.flip(jnp.asarray(img), True)), img[:, ::-1])
    np.testing.assert_array_equal(np.asarray(A.flip(jnp.asarray(img), False)), img)
    grey = img.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    np.testing.assert_allclose(np.asarray(A.greyscale(jnp.asarray(img))), np.repeat(grey[..., None], 3, -1),
                               atol=1e-6)
    np.testing.assert_array_equal(np.asarray(A.greyscale(jnp.asarray(img), False)), img)
    np.testing.assert_array_equal(np.asarray(A.solarize(jnp.asarray(img), True, 0.5)),
                                  np.where(img >= 0.5, 1 - img, img))
    np.testing.assert_array_equal(np.asarray(A.solarize(jnp.asarray(img), False)), img)


def test_colour_adjustments_vs_numpy():
    img = _images(1)[0].astype(np.float64)
    grey = (img @ np.array([0.299, 0.587, 0.114]))[..., None]
    x = jnp.asarray(img, jnp.float32)
    np.testing.assert_allclose(np.asarray(A.adjust_brightness(x, 1.3)), np.clip(1.3 * img, 0, 1), atol=1e-6)
    np.testing.assert_allclose(np.asarray(A.adjust_contrast(x, 0.7)),
                               np.clip(0.7 * img + 0.3 * grey.mean(), 0, 1), atol=1e-6)
    np.testing.assert_allclose(np.asarray(A.adjust_saturation(x, 1.4)),
                               np.clip(1.4 * img - 0.4 * grey, 0, 1), atol=1e-6)
    # Hue: shift 0 and 1 (a full turn) are identities; luma is kept where nothing is clipped.
    np.testing.assert_allclose(np.asarray(A.adjust_hue(x, 0.0)), img, atol=1e-5)
    np.testing.assert_allclose(np.asarray(A.adjust_hue(x, 1.0)), img, atol=1e-5)
    mid = jnp.asarray(0.4 + 0.2 * img, jnp.float32)   # low chroma: the rotation stays in [0, 1]
    rot = np.asarray(A.adjust_hue(mid, 0.25), np.float64)
    np.testing.assert_allclose(rot @ np.array([0.299, 0.587, 0.114]),
                               np.asarray(mid, np.float64) @ np.array([0.299, 0.587, 0.114]), atol=1e-5)
    # A rotation of a third of a turn moves the hue of a saturated colour by about a third (HSV).
    red = jnp.full((1, 1, 3), jnp.array([0.6, 0.4, 0.4]))
    h0 = colorsys.rgb_to_hsv(*np.asarray(red)[0, 0])[0]
    h1 = colorsys.rgb_to_hsv(*np.asarray(A.adjust_hue(red, 1 / 3))[0, 0])[0]
    assert abs(((h1 - h0) % 1.0) - 1 / 3) < 0.08


@pytest.mark.parametrize("sigma", [0.7, 1.5])
def test_blur_vs_scipy_and_ops(sigma):
    img = _images(1, 16, 14)[0]
    radius = int(np.ceil(4.0 * sigma))
    got = np.asarray(A.blur(jnp.asarray(img), jnp.float32(sigma), radius))
    np.testing.assert_allclose(got, np.asarray(ops.gaussian_blur(jnp.asarray(img), sigma)), atol=1e-5)
    want = scipy.ndimage.gaussian_filter(img.astype(np.float64), (sigma, sigma, 0), mode="nearest",
                                         truncate=radius / sigma)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_augment_range_shape_vmap_and_jit():
    imgs = _images(5, 16, 16)
    cfg = A.AugmentConfig.simclr(size=(12, 12), solarize_p=0.5)
    key = jax.random.key(3)
    out = A.augment(key, imgs, cfg)
    assert out.shape == (5, 12, 12, 3) and out.dtype == jnp.float32
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    loop = np.stack([np.asarray(A.augment_one(jnp.asarray(imgs[i]),
                                              A.sample_params(jax.random.fold_in(key, i), (16, 16), cfg), cfg))
                     for i in range(5)])
    np.testing.assert_allclose(np.asarray(out), loop, atol=1e-5)
    jitted = jax.jit(A.augment, static_argnums=2)(key, jnp.asarray(imgs), cfg)
    np.testing.assert_allclose(np.asarray(jitted), np.asarray(out), atol=1e-5)
    # Different keys give different views; image i's view does not depend on the others.
    assert not np.allclose(np.asarray(A.augment(jax.random.key(4), imgs, cfg)), np.asarray(out))
    np.testing.assert_allclose(np.asarray(A.augment(key, imgs[:2], cfg)), np.asarray(out[:2]), atol=1e-5)


def test_identity_config_is_identity():
    imgs = _images(3, 10, 10)
    cfg = A.AugmentConfig(size=(10, 10), scale=(1.0, 1.0), ratio=(1.0, 1.0), flip_p=0.0, jitter_p=0.0,
                          greyscale_p=0.0, blur_p=0.0)
    np.testing.assert_allclose(np.asarray(A.augment(jax.random.key(0), imgs, cfg)), imgs, atol=1e-6)
    always = A.AugmentConfig(size=(10, 10), scale=(1.0, 1.0), ratio=(1.0, 1.0), flip_p=1.0, jitter_p=0.0,
                             greyscale_p=1.0, blur_p=0.0, solarize_p=1.0)
    grey = imgs.astype(np.float64)[:, :, ::-1] @ np.array([0.299, 0.587, 0.114])
    grey = np.repeat(grey[..., None], 3, -1)
    np.testing.assert_allclose(np.asarray(A.augment(jax.random.key(0), imgs, always)),
                               np.where(grey >= 0.5, 1 - grey, grey), atol=1e-5)


def test_multicrop_shapes():
    imgs = _images(2, 32, 32)
    g, loc = A.multicrop(jax.random.key(0), imgs, n_local=3)
    assert len(g) == 2 and len(loc) == 3
    assert all(v.shape == (2, 32, 32, 3) for v in g) and all(v.shape == (2, 14, 14, 3) for v in loc)
    assert not np.allclose(np.asarray(g[0]), np.asarray(g[1]))


@pytest.mark.parametrize("field,value", [("size", (0, 4)), ("scale", (0.5, 0.2)), ("scale", (0.1, 1.5)),
                                         ("ratio", (0.0, 1.0)), ("flip_p", 1.5), ("brightness", -0.1),
                                         ("hue", 0.7), ("blur_sigma", (0.0, 1.0)), ("truncate", 0.0)])
def test_bad_config(field, value):
    with pytest.raises(ValueError, match=field):
        A.AugmentConfig(**{field: value})


def test_bad_inputs():
    cfg = A.AugmentConfig()
    with pytest.raises(ValueError, match="images"):
        A.augment(jax.random.key(0), np.zeros((4, 4, 3)), cfg)
    with pytest.raises(ValueError, match="config"):
        A.augment(jax.random.key(0), np.zeros((1, 4, 4, 3)), {"size": 4})
    with pytest.raises(ValueError, match="n_local"):
        A.multicrop(jax.random.key(0), np.zeros((1, 8, 8, 3)), n_local=-1)
    with pytest.raises(ValueError, match="view"):
        A.AugmentConfig.dino_global(3)


def test_sela_preset_always_jitters_never_blurs():
    """SeLa's transform: ColorJitter(0.4, 0.4, 0.4, 0.4) on every view, greyscale p 0.2, no blur."""
    cfg = A.AugmentConfig.sela(size=(8, 8))
    params = jax.vmap(lambda k: A.sample_params(k, (64, 64), cfg))(jax.random.split(jax.random.key(0), 2000))
    assert bool(np.all(params["jitter"])) and not bool(np.any(params["blur"]))
    assert np.abs(params["hue"]).max() > 0.35 and np.abs(params["hue"]).max() <= 0.4
    assert 0.17 < float(np.mean(params["greyscale"])) < 0.23
    # The crop area is at least 0.2 of the image (SeLa's RandomResizedCrop scale; integer sides).
    area = np.asarray(params["box"][:, 2] * params["box"][:, 3]) / 64 ** 2
    assert 0.19 < area.min() < 0.25
