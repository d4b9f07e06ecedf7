"""Meaningful perturbations: regularisers and blend vs NumPy, first step vs a float64 oracle,
a planted ground truth (v1 and v2), decrease of the objective, vmap == loop, jit, sharding, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage
from flax import nnx

from jaxinterp import nets
from jaxinterp.targets import Unit
from jaxinterp.perturbation.meaningful import (blend, l1_deletion, meaningful_perturbation,
                                               perturbed_reference, total_variation)
from jaxinterp.train.sharding import data_mesh, shard_batch

SIZE = 32
NUM_CLASSES = 5
STATIC = ("net", "version", "steps", "mask_size", "perturbation", "blur_sigma", "jitter", "score")
REGION = (slice(8, 18), slice(14, 26))  # the planted region (rows, cols)


class _Planted(nnx.Module):
    """A linear readout of the pixels: logits = <readout, x> + bias (no normalisation)."""

    MEAN = (0.0, 0.0, 0.0)
    STD = (1.0, 1.0, 1.0)
    INPUT_SIZE = (SIZE, SIZE)

    def __init__(self, num_classes=2, size=SIZE, *, rngs):
        self.readout = nnx.Param(jnp.zeros((size, size, 3, num_classes)))
        self.bias = nnx.Param(jnp.zeros((num_classes,)))

    def stages(self):
        return [("head", self._head)]

    def _head(self, x, rules):
        return jnp.einsum("nhwc,hwck->nk", x, self.readout[...]) + self.bias[...]


nets.register("_test_meaningful_planted", _Planted, num_classes=2, size=SIZE)


def _planted():
    """Class 1's logit is 20 (mean of the planted region) - 10: only that region matters."""
    net = nets.get("_test_meaningful_planted")
    readout = np.zeros((SIZE, SIZE, 3, 2), np.float32)
    area = readout[REGION].shape[0] * readout[REGION].shape[1] * 3
    readout[REGION[0], REGION[1], :, 1] = 20.0 / area
    params = {"readout": jnp.asarray(readout), "bias": jnp.asarray([0.0, -10.0])}
    x = np.full((2, SIZE, SIZE, 3), 0.1, np.float32)
    x[:, REGION[0], REGION[1]] = 0.9
    x[1] += np.random.default_rng(0).uniform(-0.05, 0.05, x[1].shape).astype(np.float32)
    return net, params, jnp.asarray(x)


@pytest.fixture(scope="module")
def small():
    net = nets.get("smallcnn", num_classes=NUM_CLASSES, widths=(4, 8, 8, 8))
    rng = np.random.default_rng(0)  # He-normal kernels, small biases (cheaper than compiling net.init)
    params = jax.tree_util.tree_map_with_path(
        lambda path, a: jnp.asarray(0.1 * rng.normal(size=a.shape) if "bias" in jax.tree_util.keystr(path)
                                    else rng.normal(size=a.shape) * np.sqrt(2.0 / np.prod(a.shape[:-1])),
                                    jnp.float32), net.abstract_params())
    x = jax.random.uniform(jax.random.key(1), (3, SIZE, SIZE, 3), minval=0.05, maxval=0.95)
    return net, params, x


@pytest.mark.parametrize("beta", [1.0, 2.0, 2.5, 3.0])
def test_regularisers_match_numpy(beta):
    m = np.random.default_rng(2).uniform(0, 1, (3, 7, 9))
    with jax.enable_x64(True):
        tv = np.asarray(total_variation(jnp.asarray(m), beta))
        l1 = np.asarray(l1_deletion(jnp.asarray(m)))
    for k in range(3):
        ref = sum(abs(m[k, i + 1, j] - m[k, i, j]) ** beta for i in range(6) for j in range(9)) \
            + sum(abs(m[k, i, j + 1] - m[k, i, j]) ** beta for i in range(7) for j in range(8))
        np.testing.assert_allclose(tv[k], ref, rtol=1e-12)
        np.testing.assert_allclose(l1[k], np.sum(1 - m[k]), rtol=1e-12)
    assert float(total_variation(jnp.ones((5, 5)) * 0.3)) == 0.0


def test_blend_and_perturbed_reference_match_numpy():
    rng = np.random.default_rng(3)
    x = rng.uniform(0, 1, (SIZE, 24, 3))
    m = rng.uniform(0, 1, (SIZE, 24))
    with jax.enable_x64(True):
        blurred = np.asarray(perturbed_reference(jnp.asarray(x), "blur", blur_sigma=3.0))
        ref_blur = np.stack([scipy.ndimage.gaussian_filter(x[..., c], 3.0, mode="nearest", truncate=4.0)
                             for c in range(3)], -1)
        # ops builds the Gaussian kernel in float32
        np.testing.assert_allclose(blurred, ref_blur, rtol=1e-6, atol=1e-7)
        out = np.asarray(blend(jnp.asarray(x), jnp.asarray(m), jnp.asarray(blurred)))
        ref = np.empty_like(x)
        for i in range(SIZE):
            for j in range(24):
                ref[i, j] = m[i, j] * x[i, j] + (1 - m[i, j]) * blurred[i, j]
        np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-14)
        const = np.asarray(perturbed_reference(jnp.asarray(x), "constant"))
        np.testing.assert_allclose(const, np.broadcast_to(x.mean((0, 1)), x.shape), rtol=1e-12)
        noise = np.asarray(perturbed_reference(jnp.asarray(x), "noise", noise_std=0.2, key=jax.random.key(0)))
        assert abs((noise - x.mean((0, 1))).std() - 0.2) < 0.01


def test_first_step_terms_match_float64_oracle():
    """history[:, :, 0] = the objective of the initial constant mask, computed independently."""
    net, params, _ = _planted()
    params = {**params, "readout": params["readout"] * jnp.linspace(0.5, 1.5, 2 * 3 * SIZE * SIZE).reshape(
        params["readout"].shape) + 0.01}  # every pixel and colour matters, differently
    x = jax.random.uniform(jax.random.key(6), (3, SIZE, SIZE, 3))
    targets = np.array([[0, 1], [1, 1], [1, 0]])
    init, l1, tv = 0.3, 1e-3, 0.5
    with jax.enable_x64(True):
        p64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params)
        x64 = np.asarray(x, np.float64)
        _, hist = meaningful_perturbation(net, p64, jnp.asarray(x64), jnp.asarray(targets), version="v2",
                                          steps=2, mask_size=8, jitter=0, blur_sigma=4.0, init=init, l1=l1,
                                          tv=tv)
        assert hist.shape == (3, 2, 2, 4) and hist.dtype == jnp.float64
        w, b = np.asarray(p64["readout"]), np.asarray(p64["bias"])
        for i in range(3):
            blurred = np.stack([scipy.ndimage.gaussian_filter(x64[i, ..., c], 4.0, mode="nearest")
                                for c in range(3)], -1)
            z = np.einsum("hwc,hwck->k", init * x64[i] + (1 - init) * blurred, w) + b
            prob = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
            for k, t in enumerate(targets[i]):
                ref = [prob[t], l1 * 64 * (1 - init), 0.0, prob[t] + l1 * 64 * (1 - init)]
                np.testing.assert_allclose(hist[i, k, 0], ref, rtol=1e-6, atol=1e-9)  # float32 blur kernel
        # the second step: the mask moved (Adam's first step is lr sign(g) per cell), so l1 changed
        assert np.all(np.asarray(hist[:, :, 1, 1]) != np.asarray(hist[:, :, 0, 1]))


@pytest.mark.parametrize("version, cells", [("v1", SIZE * SIZE), ("v2", 28 * 28)])
def test_version_presets(version, cells):
    """v1 learns an image-resolution mask, v2 a 28 x 28 one: the first l1 term counts the cells."""
    net, params, x = _planted()
    masks, hist = meaningful_perturbation(net, params, x, jnp.array([1, 1]), jax.random.key(0),
                                          version=version, steps=1)
    np.testing.assert_allclose(hist[:, 0, 0, 1], 1e-4 * cells * 0.5, rtol=1e-5)
    np.testing.assert_allclose(hist[:, 0, 0, 2], 0.0, atol=1e-12)  # TV of the constant initial mask
    assert masks.shape == (2, 1, SIZE, SIZE)


def _iou(a, b):
    return (a & b).sum() / (a | b).sum()


@pytest.mark.parametrize("kwargs", [
    dict(version="v1", steps=80, l1=2e-3),
    dict(version="v2", steps=100, mask_size=16, l1=4e-3, tv=2e-2, jitter=3),
    dict(version="v2", steps=100, mask_size=16, l1=4e-3, tv=2e-2, jitter=0, perturbation="constant"),
])
def test_planted_region_is_deleted(kwargs):
    """The score depends only on REGION: the deletion mask removes it and keeps the rest."""
    net, params, x = _planted()
    fn = jax.jit(meaningful_perturbation, static_argnames=STATIC)
    masks, hist = fn(net, params, x, jnp.array([1, 1]), jax.random.key(0), **kwargs)
    assert masks.shape == (2, 1, SIZE, SIZE) and hist.shape == (2, 1, kwargs["steps"], 4)
    truth = np.zeros((SIZE, SIZE), bool)
    truth[REGION] = True
    for i in range(2):
        m = np.asarray(masks[i, 0])
        assert m.min() >= 0 and m.max() <= 1
        assert _iou(1 - m > 0.5, truth) >= 0.5, _iou(1 - m > 0.5, truth)
        assert m[~truth].mean() > 0.9  # the rest is left alone
        h = np.asarray(hist[i, 0])
        assert h[-1, 0] < 0.1 * h[0, 0]  # the class probability collapsed
        # the objective decreases on average: means over successive quarters of the run
        # (up to the noise of the stochastic jitter estimate of E_tau)
        quarters = h[:, 3].reshape(4, -1).mean(1)
        assert quarters[-1] < 0.8 * quarters[0] and np.all(np.diff(quarters) < 1e-2), quarters


def test_objective_decreases_on_a_cnn(small):
    net, params, x = small
    _, hist = meaningful_perturbation(net, params, x, jnp.array([0, 1, 2]), jax.random.key(3),
                                      version="v2", steps=32, mask_size=8, blur_sigma=4.0, jitter=2)
    total = np.asarray(hist[:, 0, :, 3])
    quarters = total.reshape(3, 4, 8).mean(-1)
    assert np.all(quarters[:, -1] < quarters[:, 0]), quarters
    assert np.mean(np.diff(quarters, axis=1) < 0) >= 0.75, quarters


def test_vmap_equals_loop_under_jit():
    """(N=3, T=2) in one jitted call == one call per (image, target); same key, same masks."""
    net, params, _ = _planted()
    x = jax.random.uniform(jax.random.key(1), (3, SIZE, SIZE, 3))
    targets = jnp.array([[0, 1], [1, 1], [1, 0]])
    kw = dict(version="v2", steps=12, mask_size=8, jitter=3, perturbation="noise", noise_std=0.1)
    key = jax.random.key(5)
    fn = jax.jit(meaningful_perturbation, static_argnames=STATIC)
    masks, hist = fn(net, params, x, targets, key, **kw)
    for i in range(3):  # the loop: one image and one target per call
        for k in range(2):
            m1, h1 = fn(net, params, x[i:i + 1], targets[i:i + 1, k], key, **kw)
            np.testing.assert_allclose(m1[0, 0], masks[i, k], rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(h1[0, 0], hist[i, k], rtol=1e-5, atol=1e-6)
    assert not np.allclose(masks[0, 0], masks[0, 1])
    # hyper-parameters traced under an outer jit (their checks skipped) give the same answer
    traced = jax.jit(lambda lr, l1, tv, ns: meaningful_perturbation(
        net, params, x, targets, key, lr=lr, l1=l1, tv=tv, **{**kw, "noise_std": ns}))(0.1, 1e-4, 1e-2, 0.1)
    np.testing.assert_allclose(traced[0], masks, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(traced[1], hist, rtol=1e-5, atol=1e-6)


def test_unit_target(small):
    """A Unit target: the score is the unit's value (first step), and the optimisation lowers it."""
    net, params, x = small
    ch, ys, xs = jnp.array([1, 5, 7]), jnp.array([0, 1, 2]), jnp.array([2, 1, 0])
    target = Unit("features.5", ch, ys, xs)
    masks, hist = meaningful_perturbation(net, params, x, target, version="v1", steps=30, l1=1e-4,
                                          blur_sigma=4.0, init=1.0)
    assert masks.shape == (3, 1, SIZE, SIZE)
    act = net.apply(params, x, stop="features.5")  # init = 1: the mask keeps the whole image
    np.testing.assert_allclose(hist[:, 0, 0, 0], act[jnp.arange(3), ys, xs, ch], rtol=1e-5, atol=1e-6)
    assert np.all(np.asarray(hist[:, 0, -1, 0]) <= np.asarray(hist[:, 0, 0, 0]))


def test_sharded_equals_single_device():
    net, params, _ = _planted()
    x = jax.random.uniform(jax.random.key(2), (8, SIZE, SIZE, 3))
    targets = jax.random.randint(jax.random.key(3), (8, 2), 0, 2)
    fn = jax.jit(meaningful_perturbation, static_argnames=STATIC)
    kw = dict(version="v2", steps=8, mask_size=8, jitter=3)
    single = fn(net, params, x, targets, jax.random.key(4), **kw)
    xs, ts = shard_batch((x, targets), data_mesh())
    sharded = fn(net, params, xs, ts, jax.random.key(4), **kw)
    assert len(sharded[0].sharding.device_set) == 8
    np.testing.assert_allclose(sharded[0], single[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(sharded[1], single[1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kwargs, match", [
    ({"steps": 0}, r"^steps: expected a positive integer"),
    ({"version": "v3"}, r"^version: expected one of"),
    ({"perturbation": "fade"}, r"^perturbation: expected one of"),
    ({"score": "sigmoid"}, r"^score: expected"),
    ({"l1": -1e-4}, r"^l1: expected a number in \[0, inf\)"),
    ({"tv": -0.1}, r"^tv: expected a number in \[0, inf\)"),
    ({"lr": 0.0}, r"^lr: expected a number in \(0, inf\)"),
    ({"tv_beta": 0.5}, r"^tv_beta: expected a number in \[1, inf\)"),
    ({"blur_sigma": 0.0}, r"^blur_sigma: expected a number in \(0, inf\)"),
    ({"noise_std": -1.0}, r"^noise_std: expected a number in \[0, inf\)"),
    ({"mask_size": 40}, r"^mask_size: \(40, 40\) is larger than the image"),
    ({"mask_size": (4,)}, r"^mask_size: expected an int or \(h, w\)"),
    ({"mask_size": 0}, r"^mask_size: expected a positive integer"),
    ({"jitter": -1}, r"^jitter: expected an integer >= 0"),
    ({"init": 1.5}, r"^init: expected a number in \[0, 1\]"),
    ({"key": None}, r"^key: a jax.random.key is needed"),
    ({"key": None, "jitter": 0, "perturbation": "noise"}, r"^key: a jax.random.key is needed"),
    ({"target": jnp.array([0, 5, 1])}, r"^target: expected indices in \[0, 5\)"),
    ({"target": jnp.array([0.0, 1.0, 2.0])}, r"^target: expected integer indices"),
    ({"x": jnp.zeros((3, SIZE, SIZE))}, r"^x: expected images of rank 4"),
    ({"x": jnp.zeros((3, SIZE, SIZE, 3), jnp.int32)}, r"^x: expected a floating dtype"),
    ({"x": jnp.full((3, SIZE, SIZE, 3), 2.0)}, r"^x: expected pixel values in \[0, 1\]"),
])
def test_bad_input_raises(small, kwargs, match):
    net, params, x = small
    kwargs = {"key": jax.random.key(0), "steps": 2, **kwargs}
    target = kwargs.pop("target", jnp.array([0, 1, 2]))
    x = kwargs.pop("x", x)
    with pytest.raises(ValueError, match=match):
        meaningful_perturbation(net, params, x, target, **kwargs)
