"""RISE: mask statistics, float64 loop over masks, chunking, vmap == loop, jit, sharding, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinterp import nets
from jaxinterp.targets import Unit
from jaxinterp.attribution.rise import rise, rise_masks
from jaxinterp.train.sharding import data_mesh, shard_batch

NUM_CLASSES = 5
SIZE = 32
STATIC = ("net", "num_masks", "grid", "p", "score", "chunk_size")


@pytest.fixture(scope="module")
def setup():
    net = nets.get("smallcnn", num_classes=NUM_CLASSES, widths=(8, 16, 16, 16))
    params = net.init(jax.random.key(0))
    x = jax.random.uniform(jax.random.key(1), (3, SIZE, SIZE, 3), minval=0.05, maxval=0.95)
    return net, params, x


@pytest.mark.parametrize("p, grid, size", [(0.5, 7, (32, 32)), (0.25, 4, (24, 40))])
def test_masks_statistics_and_determinism(p, grid, size):
    masks = rise_masks(jax.random.key(7), 400, size, grid=grid, p=p)
    assert masks.shape == (400, *size) and masks.dtype == jnp.float32
    m = np.asarray(masks)
    assert m.min() >= 0.0 and m.max() <= 1.0
    assert abs(m.mean() - p) < 0.03
    # bilinear upsampling of a grid with cells of (grid + 1) ceil(H / grid) / grid >= H / grid pixels:
    # neighbouring pixels differ by at most one cell's step
    step = grid / min(size) + 1e-6
    assert np.abs(np.diff(m, axis=1)).max() <= step and np.abs(np.diff(m, axis=2)).max() <= step
    # fully kept / dropped areas exist, and masks differ from one another
    assert (m == 1.0).mean() > 0.01 and (m == 0.0).mean() > 0.01
    assert len({mi.tobytes() for mi in m}) > 380  # all-zero grids can repeat (0.75 ** 16 = 1%)
    np.testing.assert_array_equal(masks, rise_masks(jax.random.key(7), 400, size, grid=grid, p=p))
    assert not np.array_equal(masks, rise_masks(jax.random.key(8), 400, size, grid=grid, p=p))
    # mask i depends only on (key, i): a prefix is the same masks
    np.testing.assert_array_equal(masks[:10], rise_masks(jax.random.key(7), 10, size, grid=grid, p=p))


def _oracle(score, x, masks, baseline, p):
    """Float64 NumPy loop over masks: 1 / (M p) sum_i score(b + M_i (x - b)) M_i -> (T, H, W)."""
    total = 0.0
    for m in masks:
        s = score((baseline + m[:, :, None] * (x - baseline))[None])[0]
        total = total + s[:, None, None] * m[None]
    return total / (len(masks) * p)


def _softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


@pytest.mark.parametrize("score, baseline", [("softmax", 0.0), ("sigmoid", (0.485, 0.456, 0.406))])
def test_matches_float64_mask_loop(setup, score, baseline):
    """(N=3, T=2) in one call == per-image float64 loop over the same masks, for every score."""
    net, params, x = setup
    targets = np.array([[0, 4], [2, 2], [1, 3]])
    masks = np.asarray(rise_masks(jax.random.key(3), 30, (SIZE, SIZE), p=0.4), np.float64)
    transform = {"softmax": _softmax, "sigmoid": lambda z: 1 / (1 + np.exp(-z)), "logit": lambda z: z}[score]
    with jax.enable_x64(True):
        p64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params)
        x64 = np.asarray(x, np.float64)
        logits = jax.jit(lambda a: net.apply(p64, a))
        maps = rise(net, p64, jnp.asarray(x64), jnp.asarray(targets), masks=jnp.asarray(masks), p=0.4,
                    score=score, baseline=jnp.asarray(baseline, jnp.float64), chunk_size=16)
        assert maps.shape == (3, 2, SIZE, SIZE) and maps.dtype == jnp.float64
        b = np.broadcast_to(np.asarray(baseline, np.float64), x64.shape[1:])
        for n in range(3):
            ref = _oracle(lambda a: transform(np.asarray(logits(jnp.asarray(a))))[:, targets[n]],
                          x64[n], masks, b, 0.4)
            np.testing.assert_allclose(maps[n], ref, rtol=1e-9, atol=1e-12)


def test_unit_target_matches_float64_loop(setup):
    net, params, x = setup
    ch, ys, xs = np.array([[3, 7], [0, 15], [2, 2]]), np.array([[1, 2], [0, 3], [3, 3]]), \
        np.array([[0, 2], [1, 1], [2, 0]])
    masks = np.asarray(rise_masks(jax.random.key(4), 24, (SIZE, SIZE)), np.float64)
    with jax.enable_x64(True):
        p64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params)
        x64 = np.asarray(x, np.float64)
        act = jax.jit(lambda a: net.apply(p64, a, stop="features.9"))
        target = Unit("features.9", jnp.asarray(ch), jnp.asarray(ys), jnp.asarray(xs))
        maps = rise(net, p64, jnp.asarray(x64), target, masks=jnp.asarray(masks))
        for n in range(3):
            ref = _oracle(lambda a: np.asarray(act(jnp.asarray(a)))[:, ys[n], xs[n], ch[n]],
                          x64[n], masks, np.zeros(3), 0.5)
            np.testing.assert_allclose(maps[n], ref, rtol=1e-9, atol=1e-12)


def test_key_masks_chunking_and_jit_agree(setup):
    """Drawn on the fly == rise_masks passed in; chunk_size changes nothing; jit == eager."""
    net, params, x = setup
    targets = jnp.array([[1, 0], [3, 4], [2, 1]])
    key = jax.random.key(11)
    jitted = jax.jit(rise, static_argnames=STATIC)
    drawn = jitted(net, params, x, targets, key, num_masks=50, grid=5, p=0.5)
    given = rise(net, params, x, targets, masks=rise_masks(key, 50, (SIZE, SIZE), grid=5), chunk_size=8)
    np.testing.assert_allclose(drawn, given, rtol=1e-5, atol=1e-7)
    chunked = jitted(net, params, x, targets, key, num_masks=50, grid=5, chunk_size=7)
    np.testing.assert_allclose(chunked, drawn, rtol=1e-5, atol=1e-7)


def test_sharded_equals_single_device(setup):
    net, params, _ = setup
    x = jax.random.uniform(jax.random.key(2), (8, SIZE, SIZE, 3))
    targets = jax.random.randint(jax.random.key(3), (8, 2), 0, NUM_CLASSES)
    fn = jax.jit(rise, static_argnames=STATIC)
    kw = dict(num_masks=16, chunk_size=8)
    single = fn(net, params, x, targets, jax.random.key(5), **kw)
    xs, ts = shard_batch((x, targets), data_mesh())
    sharded = fn(net, params, xs, ts, jax.random.key(5), **kw)
    assert len(sharded.sharding.device_set) == 8
    np.testing.assert_allclose(sharded, single, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("kwargs, match", [
    ({"num_masks": 0}, r"^num_masks: expected a positive integer"),
    ({"chunk_size": 0}, r"^chunk_size: expected a positive integer"),
    ({"key": None}, r"^key: a jax.random.key is needed"),
    ({"masks": jnp.ones((4, 16, 32))}, r"^masks: expected an array \(M, 32, 32\)"),
    ({"masks": jnp.ones((4, 32, 32), jnp.int32)}, r"^masks: expected a floating dtype"),
    ({"masks": jnp.full((4, 32, 32), 1.5)}, r"^masks: expected values in \[0, 1\]"),
    ({"p": 0.0}, r"^p: expected a number in \(0, 1\]"),
    ({"grid": 0}, r"^grid: expected a positive integer"),
    ({"grid": 33}, r"^grid: 33 cells is more than the image size"),
    ({"score": "probability"}, r"^score: expected one of"),
    ({"baseline": jnp.zeros((5, 3))}, r"^baseline: shape \(5, 3\) does not broadcast"),
    ({"target": jnp.array([0, 5, 1])}, r"^target: expected indices in \[0, 5\)"),
])
def test_bad_input_raises(setup, kwargs, match):
    net, params, x = setup
    kwargs = {"key": jax.random.key(0), "num_masks": 4, **kwargs}
    target = kwargs.pop("target", jnp.array([0, 1, 2]))
    with pytest.raises(ValueError, match=match):
        rise(net, params, x, target, **kwargs)


@pytest.mark.parametrize("kwargs, match", [
    ({"num_masks": 0}, r"^num_masks: expected a positive integer"),
    ({"image_size": (32,)}, r"^image_size: expected \(H, W\)"),
    ({"image_size": (0, 32)}, r"^image_size: expected a positive integer"),
    ({"p": 1.5}, r"^p: expected a number in \(0, 1\]"),
    ({"grid": 40}, r"^grid: 40 cells"),
])
def test_bad_mask_arguments_raise(kwargs, match):
    kwargs = {"num_masks": 4, "image_size": (32, 32), **kwargs}
    with pytest.raises(ValueError, match=match):
        rise_masks(jax.random.key(0), **kwargs)


def test_concrete_masks_closed_over_inside_jit(setup):
    """Range checks of concrete arrays must not run jnp ops (tracers) inside a jit trace."""
    net, params, x = setup
    masks = rise_masks(jax.random.key(4), 6, x.shape[1:3])
    t = jnp.zeros((x.shape[0],), jnp.int32)
    inside = jax.jit(lambda p: rise(net, p, x, t, masks=masks))(params)
    np.testing.assert_allclose(inside, rise(net, params, x, t, masks=masks), rtol=1e-5, atol=1e-7)
