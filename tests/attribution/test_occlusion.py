"""Occlusion: float64 loop over windows, chunking, vmap == loop, jit, sharding, bad input."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinterp import nets
from jaxinterp.targets import Unit
from jaxinterp.attribution.occlusion import occlusion
from jaxinterp.train.sharding import data_mesh, shard_batch

NUM_CLASSES = 5
SIZE = 32


@pytest.fixture(scope="module")
def setup():
    net = nets.get("smallcnn", num_classes=NUM_CLASSES, widths=(8, 16, 16, 16))
    params = net.init(jax.random.key(0))
    x = jax.random.uniform(jax.random.key(1), (3, SIZE, SIZE, 3), minval=0.05, maxval=0.95)
    return net, params, x


def _oracle(score, x, window, stride, baseline):
    """Plain loop over window positions (Captum's rule: windows from the corner until all is covered).

    ``score(images (B, H, W, 3)) -> (B, T)``; returns the float64 map (T, H, W) of one image.
    """
    (wh, ww), (sh, sw) = window, stride
    h, w = x.shape[:2]
    s0 = score(x[None])[0]
    total = np.zeros((s0.shape[0], h, w))
    count = np.zeros((h, w))
    for y0 in range(0, sh * (math.ceil((h - wh) / sh) + 1), sh):
        for x0 in range(0, sw * (math.ceil((w - ww) / sw) + 1), sw):
            xo = x.copy()
            xo[y0:y0 + wh, x0:x0 + ww] = baseline[y0:y0 + wh, x0:x0 + ww]
            drop = s0 - score(xo[None])[0]
            total[:, y0:y0 + wh, x0:x0 + ww] += drop[:, None, None]
            count[y0:y0 + wh, x0:x0 + ww] += 1
    assert count.min() >= 1
    return total / count


def _float64(net, params):
    p64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params)
    return p64, jax.jit(lambda a: net.apply(p64, a))


@pytest.mark.parametrize("window, stride, grey", [((8, 6), (5, 4), False), (12, 12, True)])
def test_matches_float64_window_loop(setup, window, stride, grey):
    """(N=3, T=2) maps from one call == per-image float64 loop; windows cut at the border; image baseline."""
    net, params, x = setup
    targets = np.array([[0, 4], [2, 2], [1, 3]])
    pair = lambda v: v if isinstance(v, tuple) else (v, v)  # noqa: E731
    with jax.enable_x64(True):
        p64, logits = _float64(net, params)
        x64 = np.asarray(x, np.float64)
        base = np.full_like(x64, 0.5) if grey else \
            np.asarray(jax.random.uniform(jax.random.key(5), x.shape), np.float64)
        maps = occlusion(net, p64, jnp.asarray(x64), jnp.asarray(targets), window=window,
                         stride=stride, baseline=0.5 if grey else jnp.asarray(base), chunk_size=7)
        assert maps.shape == (3, 2, SIZE, SIZE) and maps.dtype == jnp.float64
        for n in range(3):
            ref = _oracle(lambda a: np.asarray(logits(jnp.asarray(a)))[:, targets[n]],
                          x64[n], pair(window), pair(stride), base[n])
            assert np.abs(ref).max() > 1e-6
            np.testing.assert_allclose(maps[n], ref, rtol=1e-9, atol=1e-12)


def test_unit_target_matches_float64_loop(setup):
    net, params, x = setup
    ch, ys, xs = np.array([[3, 7], [0, 15], [2, 2]]), np.array([[1, 2], [0, 3], [3, 3]]), \
        np.array([[0, 2], [1, 1], [2, 0]])
    with jax.enable_x64(True):
        p64, _ = _float64(net, params)
        x64 = np.asarray(x, np.float64)
        act = jax.jit(lambda a: net.apply(p64, a, stop="features.9"))
        maps = occlusion(net, p64, jnp.asarray(x64),
                         Unit("features.9", jnp.asarray(ch), jnp.asarray(ys), jnp.asarray(xs)),
                         window=10, stride=7)
        for n in range(3):
            ref = _oracle(lambda a: np.asarray(act(jnp.asarray(a)))[:, ys[n], xs[n], ch[n]],
                          x64[n], (10, 10), (7, 7), np.zeros_like(x64[n]))
            np.testing.assert_allclose(maps[n], ref, rtol=1e-9, atol=1e-12)


def test_chunk_size_changes_nothing_and_jit_equals_eager(setup):
    net, params, x = setup
    targets = jnp.array([[1, 0], [3, 4], [2, 1]])
    kw = dict(window=(8, 6), stride=(5, 4), baseline=0.5)
    full = occlusion(net, params, x, targets, **kw)
    jitted = jax.jit(occlusion, static_argnames=("net", "window", "stride", "chunk_size"))
    for chunk in (1, 11):
        np.testing.assert_allclose(jitted(net, params, x, targets, chunk_size=chunk, **kw), full,
                                   rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(occlusion(net, params, x, targets[:, 1], **kw)[:, 0], full[:, 1],
                               rtol=1e-5, atol=1e-7)


def test_sharded_equals_single_device(setup):
    net, params, _ = setup
    x = jax.random.uniform(jax.random.key(2), (8, SIZE, SIZE, 3))
    targets = jax.random.randint(jax.random.key(3), (8, 2), 0, NUM_CLASSES)
    fn = jax.jit(occlusion, static_argnames=("net", "window", "stride", "chunk_size"))
    kw = dict(window=16, stride=8, chunk_size=4)
    single = fn(net, params, x, targets, **kw)
    xs, ts = shard_batch((x, targets), data_mesh())
    sharded = fn(net, params, xs, ts, **kw)
    assert len(sharded.sharding.device_set) == 8
    np.testing.assert_allclose(sharded, single, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("kwargs, match", [
    ({"window": 33}, r"^window: \(33, 33\) is larger than the images \(32, 32\)"),
    ({"window": (8, 40)}, r"^window: .* larger than the images"),
    ({"window": 0}, r"^window: expected a positive integer"),
    ({"window": (8, 8, 8)}, r"^window: expected an int or a pair"),
    ({"stride": 0}, r"^stride: expected a positive integer"),
    ({"stride": 9}, r"^stride: \(9, 9\) is larger than the window \(8, 8\)"),
    ({"chunk_size": 0}, r"^chunk_size: expected a positive integer"),
    ({"baseline": jnp.zeros((2, 32, 32, 3))}, r"^baseline: shape \(2, 32, 32, 3\) does not broadcast"),
    ({"baseline": 2.0}, r"^baseline: expected pixel values in \[0, 1\]"),
    ({"baseline": "grey"}, r"^baseline: expected a number or an array"),
    ({"target": jnp.array([0, 5, 1])}, r"^target: expected indices in \[0, 5\)"),
    ({"target": Unit("features.9", jnp.array([0, 16, 1]))},
     r"^target.channel: expected indices in \[0, 16\)"),
])
def test_bad_input_raises(setup, kwargs, match):
    net, params, x = setup
    kwargs = {"window": 8, "stride": 4, **kwargs}
    target = kwargs.pop("target", jnp.array([0, 1, 2]))
    with pytest.raises(ValueError, match=match):
        occlusion(net, params, x, target, **kwargs)


def test_window_of_the_whole_image_with_larger_stride_is_allowed(setup):
    """Captum allows any stride along a dimension the window fills: one window, map = score drop."""
    net, params, x = setup
    maps = occlusion(net, params, x, jnp.array([0, 1, 2]), window=SIZE, stride=100)
    drop = net.apply(params, x)[jnp.arange(3), jnp.array([0, 1, 2])] - \
        net.apply(params, jnp.zeros_like(x))[jnp.arange(3), jnp.array([0, 1, 2])]
    np.testing.assert_allclose(maps[:, 0], jnp.broadcast_to(drop[:, None, None], (3, SIZE, SIZE)),
                               rtol=1e-5, atol=1e-6)
