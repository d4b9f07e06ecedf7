"""Tests of jaxinterp.data.images against the files read directly with NumPy / scikit-image."""

import os

import numpy as np
import pytest
import skimage
import skimage.io

from jaxinterp.data import images

DATA_DIR = os.path.join(os.path.dirname(skimage.__file__), "data")


def test_names_are_the_colour_photographs():
    names = images.names()
    assert isinstance(names, tuple) and names == tuple(sorted(names))
    assert {"astronaut", "chelsea", "coffee", "rocket", "motorcycle"} <= set(names)


@pytest.mark.parametrize("name", images.names())
def test_load_shape_dtype_range(name):
    x = images.load(name, size=32)
    assert x.shape == (32, 32, 3) and x.dtype == np.float32
    assert 0.0 <= x.min() and x.max() <= 1.0 and x.std() > 0.02


@pytest.mark.parametrize("name, file", [("chelsea", "chelsea.png"), ("motorcycle", "motorcycle_left.png")])
def test_original_size_is_the_file(name, file):
    expected = skimage.io.imread(os.path.join(DATA_DIR, file)).astype(np.float64) / 255.0
    x = images.load(name, size=None)
    assert x.dtype == np.float32 and x.shape == expected.shape
    np.testing.assert_allclose(x, expected, atol=1e-6)


def test_resize_is_centre_crop_then_downscale():
    """chelsea is 300 x 451: crop columns 75..375, then 3 x 3 box means give 100 x 100."""
    pixels = skimage.io.imread(os.path.join(DATA_DIR, "chelsea.png")).astype(np.float64) / 255.0
    crop = pixels[:, 75:375]
    reference = crop.reshape(100, 3, 100, 3, 3).mean(axis=(1, 3))
    x = images.load("chelsea", size=100)
    assert np.abs(x - reference).mean() < 0.02
    shifted = pixels[:, 0:300].reshape(100, 3, 100, 3, 3).mean(axis=(1, 3))
    assert np.abs(x - shifted).mean() > 0.05          # the check can tell a wrong crop


def test_batch():
    xs = images.batch(["coffee", "chelsea"], size=48)
    assert xs.shape == (2, 48, 48, 3) and xs.dtype == np.float32
    np.testing.assert_array_equal(xs[1], images.load("chelsea", size=48))
    assert images.batch(size=16).shape == (len(images.names()), 16, 16, 3)


def test_imagenet_hints():
    for name, classes in images.IMAGENET_HINTS.items():
        assert name in images.names()
        assert all(isinstance(c, int) and 0 <= c < 1000 for c in classes)
    assert 281 in images.IMAGENET_HINTS["chelsea"]      # tabby cat


def test_bad_arguments():
    with pytest.raises(ValueError, match="name"):
        images.load("horse")
    with pytest.raises(ValueError, match="size"):
        images.load("chelsea", size=0)
    with pytest.raises(ValueError, match="size"):
        images.load("chelsea", size=12.5)
    with pytest.raises(ValueError, match="names"):
        images.batch(["chelsea", "lena"])
    with pytest.raises(ValueError, match="names"):
        images.batch([])
    with pytest.raises(ValueError, match="size"):
        images.batch(size=None)
