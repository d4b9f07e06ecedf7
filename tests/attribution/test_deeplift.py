"""DeepLIFT, DeepLIFT-SHAP, gradient SHAP: a float64 NumPy DeepLIFT of the small CNN (every image and
target: vmap == loop), completeness, a closed form on a linear net, the SHAP means, chunking, jit,
sharding, bad input.  The methods are jitted once per module and shapes are shared to keep compiles few."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxinterp import nets
from jaxinterp.attribution.deeplift import (ShapSamples, deeplift, deeplift_shap, gradient_shap,
                                            gradient_shap_samples)
from jaxinterp.nets import layers as L
from jaxinterp.nets.cnn import IMAGENET_MEAN, IMAGENET_STD
from jaxinterp.nets.core import register
from jaxinterp.nets.deeplift_rules import DEEPLIFT
from jaxinterp.train.sharding import data_mesh, shard_batch
from tests.attribution._small_nets import NUM_CLASSES, SIZE, col2im, im2col, small_setup

TARGETS = np.array([[0, 3], [1, 4], [2, 2]], np.int32)


@pytest.fixture(scope="module")
def small64():
    """The small CNN, its params, 3 images and 2 reference images, float64 (x64 on for the module)."""
    with jax.enable_x64(True):
        net, params, x = small_setup()
        params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params)
        refs = jnp.asarray(np.random.default_rng(7).uniform(size=(2, SIZE, SIZE, 3)))
        yield net, params, jnp.asarray(x, jnp.float64), refs


def _scores(net, params, x, targets):
    return np.take_along_axis(np.asarray(net.apply(params, x)), np.asarray(targets), 1)


# --------------------------------------------------------------------------- NumPy oracle


def _numpy_deeplift(net, params, x, ref, target):
    """float64 DeepLIFT of the small CNN (conv3x3-ReLU[-maxpool2] x 4, global mean, linear), one image.

    Written from the rescale rule: the pair (x, ref) goes forward, multipliers come back;
    a max-pool routes g (m - p0) by the input's argmax and g (p - m) by the reference's,
    divides by the input difference, and both halves continue with the same multiplier.
    """
    p = jax.tree.map(np.asarray, params)
    mean, std = np.asarray(IMAGENET_MEAN), np.asarray(IMAGENET_STD)
    acts = [(np.asarray(x) - mean) / std, (np.asarray(ref) - mean) / std]
    tape = []
    for i, op in enumerate(["conv", "relu", "pool"] * 3 + ["conv", "relu"]):    # features.i
        if op == "conv":
            k, b = p["features"][str(i)]["kernel"], p["features"][str(i)]["bias"]
            tape.append(("conv", k, [a.shape for a in acts]))
            acts = [(im2col(a) @ k.reshape(-1, k.shape[-1]) + b).reshape(*a.shape[:2], -1) for a in acts]
        elif op == "relu":
            tape.append(("relu", acts))
            acts = [np.maximum(a, 0) for a in acts]
        else:
            windows = [a.reshape(a.shape[0] // 2, 2, a.shape[1] // 2, 2, -1) for a in acts]
            tape.append(("pool", acts, windows))
            acts = [w.max((1, 3)) for w in windows]
    w = p["classifier"]["kernel"][:, target]
    h, wd = acts[0].shape[:2]
    g = [np.broadcast_to(w / (h * wd), acts[0].shape).copy() for _ in range(2)]
    for entry in reversed(tape):
        if entry[0] == "relu":
            a, a0 = entry[1]
            d = a - a0
            small = np.abs(d) < 1e-10
            m = np.where(small, 0.0, (np.maximum(a, 0) - np.maximum(a0, 0)) / np.where(small, 1, d))
            g = [gi * np.where(small, (ai > 0), m) for gi, ai in zip(g, (a, a0))]
        elif entry[0] == "pool":
            (a, a0), (wa, wa0) = entry[1], entry[2]
            pa, pa0 = wa.max((1, 3)), wa0.max((1, 3))
            top = np.maximum(pa, pa0)

            def route(win, value):
                hit = win == win.max((1, 3), keepdims=True)
                return (hit * value[:, None, :, None]).reshape(a.shape)

            num = route(wa, g[0] * (top - pa0)) + route(wa0, g[1] * (pa - top))
            d = a - a0
            small = np.abs(d) < 1e-10
            m = np.where(small, route(wa, g[0]), num / np.where(small, 1, d))
            g = [m, m]
        else:
            k, shapes = entry[1], entry[2]
            g = [col2im(gi.reshape(-1, k.shape[-1]) @ k.reshape(-1, k.shape[-1]).T, *s) for gi, s in zip(g, shapes)]
    return (np.asarray(x) - np.asarray(ref)) * g[0] / std


DL = jax.jit(deeplift, static_argnames=("net", "reduce", "layer", "resize"))
DLS = jax.jit(deeplift_shap, static_argnames=("net", "reduce", "layer", "resize", "chunk_size"))
GS = jax.jit(gradient_shap, static_argnames=("net", "reduce", "chunk_size"))


def test_deeplift_matches_numpy_oracle_and_completeness(small64):
    """Every image and target against the NumPy oracle (so also vmap over both == loop); completeness."""
    net, params, x, refs = small64
    with jax.enable_x64(True):
        maps = DL(net, params, x, TARGETS, baseline=refs[0], reduce=None)
        change = _scores(net, params, x, TARGETS) - _scores(net, params, refs[:1], TARGETS)
    np.testing.assert_allclose(maps.sum((2, 3, 4)), change, rtol=1e-10)
    for n in range(2):
        for k in range(2):
            oracle = _numpy_deeplift(net, params, x[n], refs[0], TARGETS[n, k])
            np.testing.assert_allclose(maps[n, k], oracle, rtol=1e-9, atol=1e-12)


def test_deeplift_layer_complete(small64):
    """LayerDeepLIFT at features.5 (a max-pool's output): the unit attributions sum to the score change."""
    net, params, x, refs = small64
    with jax.enable_x64(True):
        maps = DL(net, params, x, TARGETS, baseline=refs[1], layer="features.5", reduce=None, resize=False)
        change = _scores(net, params, x, TARGETS) - _scores(net, params, refs[1:], TARGETS)
    assert maps.shape == (3, 2, 4, 4, 6)
    np.testing.assert_allclose(maps.sum((2, 3, 4)), change, rtol=1e-10)


# --------------------------------------------------------------------------- linear net


class _LinearConv(nnx.Module):
    """conv3x3 -> global mean -> linear, no non-linearity: the closed-form test model."""

    MEAN = (0.485, 0.456, 0.406)
    STD = (0.229, 0.224, 0.225)
    INPUT_SIZE = (8, 8)

    def __init__(self, num_classes: int, *, rngs: nnx.Rngs):
        self.conv = L.Conv(3, 4, 3, padding=1, rngs=rngs)
        self.classifier = L.Linear(4, num_classes, rngs=rngs)

    def stages(self):
        return [("conv", self.conv), ("avgpool", L.global_pool), ("classifier", self.classifier)]


register("_test_linear_deeplift", _LinearConv, num_classes=3)


def test_linear_net_closed_form():
    """On an affine net DeepLIFT = (x - x0) * gradient and DeepLIFT-SHAP = (x - mean x0) * gradient;
    eager == jit (on this small net: eager DeepLIFT of the CNN compiles op by op for 20 s)."""
    net = nets.get("_test_linear_deeplift")
    params = net.init(jax.random.key(0))
    x = jax.random.uniform(jax.random.key(1), (2, 8, 8, 3))
    refs = jax.random.uniform(jax.random.key(2), (3, 8, 8, 3))
    t = jnp.array([[0, 2], [1, 1]])
    grads = jax.jacrev(lambda a: net.apply(params, a[None])[0])(x[0])          # (3, 8, 8, 3), constant
    jitted = DL(net, params, x, t, baseline=refs[0], reduce=None)
    np.testing.assert_allclose(jitted, (x[:, None] - refs[0]) * grads[t], rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(deeplift(net, params, x, t, baseline=refs[0], reduce=None), jitted,
                               rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(DLS(net, params, x, t, baselines=refs, reduce=None),
                               (x[:, None] - refs.mean(0)) * grads[t], rtol=1e-4, atol=1e-7)


# --------------------------------------------------------------------------- SHAP


def test_deeplift_shap_is_mean_of_deeplift_and_chunking(small64):
    net, params, x, refs = small64
    with jax.enable_x64(True):
        each = [DL(net, params, x, TARGETS, baseline=r, reduce=None) for r in refs]
        np.testing.assert_allclose(DLS(net, params, x, TARGETS, baselines=refs, chunk_size=1, reduce=None),
                                   np.mean(each, 0), rtol=1e-10, atol=1e-14)


def test_gradient_shap_samples_loop(small64):
    """Drawn samples, in chunks of 2, against a loop over samples of the gradient formula."""
    net, params, x, refs = small64
    with jax.enable_x64(True):
        samples = gradient_shap_samples(jax.random.key(4), x, 2, n_samples=3, stdevs=0.05)
        assert samples.baseline_index.shape == (3, 3) and samples.noise.shape == (3, 3, SIZE, SIZE, 3)
        assert set(np.unique(samples.baseline_index)) <= {0, 1} and 0 <= samples.alpha.min() <= samples.alpha.max() <= 1
        maps = GS(net, params, x, TARGETS, baselines=refs, samples=samples, reduce=None, chunk_size=2)
        grad = jax.jit(jax.grad(lambda a, c: net.apply(params, a[None])[0, c]))
        for n, k in ((0, 1), (2, 0)):
            total = 0.0
            for s in range(3):
                noisy, ref = x[n] + samples.noise[n, s], refs[samples.baseline_index[n, s]]
                point = samples.alpha[n, s] * noisy + (1 - samples.alpha[n, s]) * ref
                total = total + (noisy - ref) * grad(point, TARGETS[n, k])
            np.testing.assert_allclose(maps[n, k], total / 3, rtol=1e-10, atol=1e-14)


# --------------------------------------------------------------------------- transformations


def test_sharding():
    """float32: 8 sharded devices == 1."""
    net, params, x = small_setup()
    x = jnp.concatenate([x, x[::-1], x[:2]])                      # 8 images
    t = jnp.asarray(np.random.default_rng(3).integers(0, NUM_CLASSES, (8, 2)), jnp.int32)
    single = DL(net, params, x, t, baseline=0.5)
    xs, ts = shard_batch((x, t), data_mesh())
    sharded = DL(net, params, xs, ts, baseline=0.5)
    assert len(sharded.sharding.device_set) == 8
    np.testing.assert_allclose(sharded, single, rtol=1e-4, atol=1e-6)


# --------------------------------------------------------------------------- bad input


def test_bad_input():
    net, params, x = small_setup()
    t = jnp.array([0, 1, 2])
    with pytest.raises(ValueError, match=r"^baseline: shape"):
        deeplift(net, params, x, t, baseline=jnp.zeros((5, 5, 3)))
    with pytest.raises(ValueError, match=r"^baseline: expected pixel values"):
        deeplift(net, params, x, t, baseline=2.0)
    with pytest.raises(ValueError, match=r"^reduce:"):
        deeplift(net, params, x, t, reduce="median")
    with pytest.raises(ValueError, match=r"^baselines: expected images"):
        deeplift_shap(net, params, x, t, baselines=jnp.zeros((2, 8, 8, 3)))
    with pytest.raises(ValueError, match=r"^baselines:"):
        deeplift_shap(net, params, x, t, baselines=jnp.zeros((SIZE, SIZE, 3)))
    with pytest.raises(ValueError, match=r"^key:"):
        gradient_shap(net, params, x, t, baselines=x)
    with pytest.raises(ValueError, match=r"^samples:"):
        gradient_shap(net, params, x, t, baselines=x,
                      samples=ShapSamples(np.zeros((3, 2), int), np.zeros((3, 2)), np.zeros((3, 2, 4, 4, 3))))
    with pytest.raises(ValueError, match=r"^samples: baseline_index must lie in \[0, 3\)"):
        gradient_shap(net, params, x, t, baselines=x,
                      samples=ShapSamples(np.full((3, 2), 3), np.zeros((3, 2)), np.zeros((3, 2, SIZE, SIZE, 3))))
    with pytest.raises(ValueError, match=r"^n_samples:"):
        gradient_shap(net, params, x, t, baselines=x, key=jax.random.key(0), n_samples=0)
    with pytest.raises(ValueError, match=r"^stdevs:"):
        gradient_shap(net, params, x, t, baselines=x, key=jax.random.key(0), stdevs=-1.0)
    with pytest.raises(ValueError, match=r"^x: DeepLIFT rules need the pair"):
        jax.grad(lambda a: net.apply(params, a, rules=DEEPLIFT).sum())(x)
