"""Feature ablation, Shapley value sampling, Kernel SHAP and LIME over feature masks.

Oracles: a linear net (additive features: every method is exact), and a float64
NumPy table of the scores of all 2^F coalitions of a small CNN, from which the
brute-force Shapley values, the ablation drops and NumPy weighted least squares
are computed.  Then chunking, jit == eager, one image == the batch, sharding,
Felzenszwalb superpixels (efficiency) and bad input.
"""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxinterp import nets
from jaxinterp.nets import layers as L
from jaxinterp.nets.core import register
from jaxinterp.targets import Unit
from jaxinterp.attribution.features import feature_ablation, shapley_sampling
from jaxinterp.attribution.surrogates import kernel_shap, kernel_shap_samples, lime, lime_samples
from jaxinterp.train.sharding import data_mesh, shard_batch
from tests.attribution._small_nets import NUM_CLASSES, SIZE, small_setup

METHODS = {"feature_ablation": feature_ablation, "shapley_sampling": shapley_sampling,
           "kernel_shap": kernel_shap, "lime": lime}
STATIC = {"feature_ablation": ("net", "num_features", "chunk_size"),
          "shapley_sampling": ("net", "num_features", "n_samples", "chunk_size"),
          "kernel_shap": ("net", "num_features", "n_samples", "weighting", "chunk_size"),
          "lime": ("net", "num_features", "n_samples", "kernel_width", "alpha", "chunk_size")}
F = 5
TARGETS = np.array([[0, 3], [2, 2], [4, 1]])
BASE = 0.3
JIT = {name: jax.jit(method, static_argnames=STATIC[name]) for name, method in METHODS.items()}


def _segments() -> np.ndarray:
    """(3, SIZE, SIZE) ids: images 0 and 1 have features 0..4 (2 cells on top, 3 below; image 1 transposed);
    image 2 only 0, 1, 2, 4 (id 3 is absent)."""
    rows, cols = np.arange(SIZE)[:, None], np.arange(SIZE)[None, :]
    top = rows < SIZE // 2
    five = np.where(top, cols * 2 // SIZE, 2 + cols * 3 // SIZE)
    four = np.where(five == 3, 2, five)
    return np.stack([five, five.T, four]).astype(np.int32)


def _features_of(maps: np.ndarray, seg: np.ndarray, num: int) -> np.ndarray:
    """Per-feature values (N, T, num) of maps (N, T, H, W) constant on segments (NaN for absent ids)."""
    out = np.full(maps.shape[:2] + (num,), np.nan)
    for n in range(seg.shape[0]):
        for f in np.unique(seg[n]):
            values = maps[n][:, seg[n] == f]
            assert np.ptp(values, axis=1).max() <= 1e-12 * max(1.0, np.abs(values).max())
            out[n, :, f] = values[:, 0]
    return out


# --------------------------------------------------------------------------- planted truth: a linear net


class _Linear(nnx.Module):
    """z = W^T vec(x) + b on raw pixels: every feature contributes W_f . (x_f - baseline_f)."""

    MEAN = (0.0, 0.0, 0.0)
    STD = (1.0, 1.0, 1.0)
    INPUT_SIZE = (SIZE, SIZE)

    def __init__(self, num_classes: int, *, rngs: nnx.Rngs):
        self.classifier = L.Linear(SIZE * SIZE * 3, num_classes, rngs=rngs)

    def stages(self):
        return [("flatten", lambda x, rules: x.reshape(x.shape[0], -1)), ("classifier", self.classifier)]


register("_test_linear_features", _Linear, num_classes=NUM_CLASSES)


@pytest.fixture(scope="module")
def linear():
    """The linear net with NumPy weights (float64): (net, W (H*W*3, C), b (C,), x (3, H, W, 3))."""
    rng = np.random.default_rng(0)
    w, b = rng.normal(size=(SIZE * SIZE * 3, NUM_CLASSES)), rng.normal(size=NUM_CLASSES)
    return nets.get("_test_linear_features"), w, b, rng.uniform(0.1, 0.9, (3, SIZE, SIZE, 3))


def _linear_params(w, b, dtype):
    return {"classifier": {"kernel": jnp.asarray(w, dtype), "bias": jnp.asarray(b, dtype)}}


@pytest.mark.parametrize("name", list(METHODS))
def test_additive_net_every_method_is_exact(linear, name):
    """Linear net, float64: phi_t(f) = sum over f's pixels of W_t . (x - b), with an absent id (image 2)."""
    net, w, b, x = linear
    base = np.random.default_rng(1).uniform(0.0, 1.0, (3, SIZE, SIZE, 3))
    seg = _segments()
    options = {"feature_ablation": {}, "shapley_sampling": dict(n_samples=3),
               "kernel_shap": dict(n_samples=20), "lime": dict(n_samples=20, alpha=0.0)}[name]
    key = {} if name == "feature_ablation" else {"key": jax.random.key(1)}
    with jax.enable_x64(True):
        params = _linear_params(w, b, jnp.float64)
        maps = np.asarray(JIT[name](net, params, jnp.asarray(x), jnp.asarray(TARGETS), segments=seg,
                                    num_features=F, baseline=jnp.asarray(base), **key, **options))
    contrib = ((x - base)[..., None] * w.reshape(SIZE, SIZE, 3, -1)).sum(3)     # (N, H, W, C)
    for n in range(3):
        for k, t in enumerate(TARGETS[n]):
            truth = np.zeros((SIZE, SIZE))
            for f in np.unique(seg[n]):
                truth[seg[n] == f] = contrib[n, ..., t][seg[n] == f].sum()
            np.testing.assert_allclose(maps[n, k], truth, rtol=1e-9, atol=1e-9)


# --------------------------------------------------------------------------- a small CNN: all coalitions


@pytest.fixture(scope="module")
def cnn():
    """float64 smallcnn, images, segments, and the NumPy table of scores v[n, z, k] of all 2^F coalitions."""
    net, params, x = small_setup()
    seg = _segments()
    coalitions = np.array(list(itertools.product([0, 1], repeat=F)))            # (2^F, F)
    x64 = np.asarray(x, np.float64)
    with jax.enable_x64(True):
        p64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params)
        keep = coalitions[:, seg].astype(bool)                                   # (2^F, N, H, W)
        images = np.where(keep[..., None], x64[None], BASE)
        logits = np.asarray(jax.jit(lambda a: net.apply(p64, a))(
            jnp.asarray(images.reshape(-1, SIZE, SIZE, 3)))).reshape(len(coalitions), 3, -1)
    table = np.stack([logits[:, n, TARGETS[n]] for n in range(3)])               # (N, 2^F, T)
    return dict(net=net, params=params, p64=p64, x=x, x64=x64, seg=seg, coalitions=coalitions,
                table=table, images=images)


def _index(z) -> int:
    return int("".join(map(str, z)), 2)


def _brute_force_shapley(table_n: np.ndarray, present: list[int]) -> np.ndarray:
    """Exact Shapley values (F, T) over the present features (absent ones: 0), from the coalition table."""
    m, phi = len(present), np.zeros((F, table_n.shape[1]))
    for f in present:
        others = [g for g in present if g != f]
        for size in range(m):
            weight = math.factorial(size) * math.factorial(m - size - 1) / math.factorial(m)
            for subset in itertools.combinations(others, size):
                z = np.zeros(F, int)
                z[list(subset)] = 1
                without = table_n[_index(z)]
                z[f] = 1
                phi[f] += weight * (table_n[_index(z)] - without)
    return phi


def _weighted_ls(z, y, w, alpha=0.0):
    """NumPy weighted (ridge) least squares with an unpenalised intercept: coefficients (F, T)."""
    zc = z - np.average(z, axis=0, weights=w)
    yc = y - np.average(y, axis=0, weights=w)
    a = zc.T @ (w[:, None] * zc) + alpha * np.eye(z.shape[1])
    return np.linalg.lstsq(a, zc.T @ (w[:, None] * yc), rcond=None)[0]


def _ours64(cnn, name, **options):
    with jax.enable_x64(True):
        return np.asarray(JIT[name](cnn["net"], cnn["p64"], jnp.asarray(cnn["x64"]), jnp.asarray(TARGETS),
                                    segments=cnn["seg"], num_features=F, baseline=BASE, **options))


def test_exact_shapley_from_all_permutations_and_all_coalitions(cnn):
    """shapley_sampling over all 5! orders and kernel_shap over all 2^5 coalitions weighted by the Shapley
    kernel == the brute-force Shapley values (absent id of image 2: 0, the others unaffected)."""
    sv = _features_of(_ours64(cnn, "shapley_sampling", chunk_size=64,
                              permutations=np.array(list(itertools.permutations(range(F))))),
                      cnn["seg"], F)
    ks = _features_of(_ours64(cnn, "kernel_shap", samples=cnn["coalitions"], weighting="kernel"),
                      cnn["seg"], F)
    for n in range(3):
        present = sorted(np.unique(cnn["seg"][n]))
        truth = _brute_force_shapley(cnn["table"][n], present).T                 # (T, F)
        assert np.abs(truth).max() > 1e-3
        np.testing.assert_allclose(sv[n][:, present], truth[:, present], rtol=1e-10, atol=1e-12)
        # the full and empty coalitions weigh 1e6 (Captum's soft constraint): 1e-7 relative
        np.testing.assert_allclose(ks[n][:, present], truth[:, present], rtol=0,
                                   atol=1e-6 * np.abs(truth).max())


def test_ablation_and_surrogates_match_numpy(cnn):
    """feature_ablation == table drops; kernel_shap (Captum's weights) and lime (cosine kernel, ridge)
    on given coalitions == NumPy weighted least squares on the table's scores."""
    seg, table = cnn["seg"], cnn["table"]
    rng = np.random.default_rng(3)
    samples = np.concatenate([np.ones((1, F), int), np.zeros((1, F), int), rng.integers(0, 2, (14, F))])
    ablation = _features_of(_ours64(cnn, "feature_ablation", chunk_size=4), seg, F)
    ks = _features_of(_ours64(cnn, "kernel_shap", samples=samples, chunk_size=4), seg, F)
    li = _features_of(_ours64(cnn, "lime", samples=samples, kernel_width=0.5, alpha=0.1, chunk_size=4),
                      seg, F)
    idx = [_index(z) for z in samples]
    for n in range(3):
        present = sorted(np.unique(seg[n]))
        full = table[n, -1]
        for f in present:
            z = np.ones(F, int)
            z[f] = 0
            np.testing.assert_allclose(ablation[n, :, f], full - table[n, _index(z)], rtol=1e-10, atol=1e-12)
        zp = samples * np.isin(np.arange(F), present)
        counts = zp.sum(1)
        w = np.where((counts == 0) | (counts == len(present)), 1e6, 1.0)
        np.testing.assert_allclose(ks[n][:, present], _weighted_ls(zp, table[n, idx], w)[present].T,
                                   rtol=1e-8, atol=1e-9)
        u = cnn["x64"][n].ravel()
        v = cnn["images"][idx, n].reshape(len(idx), -1)
        cos = v @ u / (np.linalg.norm(u) * np.linalg.norm(v, axis=1))
        sims = np.exp(-(1 - cos) ** 2 / (2 * 0.5 ** 2))
        np.testing.assert_allclose(li[n][:, present], _weighted_ls(zp, table[n, idx], sims, 0.1)[present].T,
                                   rtol=1e-8, atol=1e-9)


def test_unit_target(cnn):
    """A Unit target: feature ablation == drops of the neuron's value on the NumPy-built images."""
    net, p64, seg = cnn["net"], cnn["p64"], cnn["seg"]
    ch, ys, xs = [1, 5, 7], [0, 1, 2], [2, 0, 1]
    rows = [len(cnn["coalitions"]) - 1] + [_index(1 - np.eye(F, dtype=int)[f]) for f in range(F)]
    with jax.enable_x64(True):
        unit = Unit("features.6", jnp.array(ch), jnp.array(ys), jnp.array(xs))
        maps = np.asarray(JIT["feature_ablation"](net, p64, jnp.asarray(cnn["x64"]), unit, segments=seg,
                                                  num_features=F, baseline=BASE))
        act = np.asarray(net.apply(p64, jnp.asarray(cnn["images"][rows].reshape(-1, SIZE, SIZE, 3)),
                                   stop="features.6")).reshape(F + 1, 3, 4, 4, 8)
    ours = _features_of(maps, seg, F)
    for n in range(3):
        value = act[:, n, ys[n], xs[n], ch[n]]
        for f in np.unique(seg[n]):
            np.testing.assert_allclose(ours[n, 0, f], value[0] - value[1 + f], rtol=1e-10, atol=1e-12)


# --------------------------------------------------------------------------- chunking, jit, vmap, sharding


def test_jit_equals_eager(linear):
    net, w, b, x = linear
    params, x = _linear_params(w, b, jnp.float32), jnp.asarray(x, jnp.float32)
    eager = feature_ablation(net, params, x, jnp.asarray(TARGETS), segments=_segments(), chunk_size=4)
    jitted = JIT["feature_ablation"](net, params, x, jnp.asarray(TARGETS), segments=_segments(),
                                     num_features=F, chunk_size=4)
    np.testing.assert_allclose(jitted, eager, rtol=1e-5, atol=1e-5)


def test_one_image_equals_its_row_of_the_batch(linear):
    """vmap over images and targets == one image and one target at a time (LIME: its similarities are
    per image; chunking is covered by the oracle tests)."""
    net, w, b, x = linear
    params, x, seg = _linear_params(w, b, jnp.float32), jnp.asarray(x, jnp.float32), _segments()
    options = dict(key=jax.random.key(4), num_features=F, n_samples=9)
    batch = JIT["lime"](net, params, x, jnp.asarray(TARGETS), segments=seg, **options)
    one = JIT["lime"](net, params, x[1:2], jnp.asarray(TARGETS[1:2, 1]), segments=seg[1:2], **options)
    np.testing.assert_allclose(one[0, 0], batch[1, 1], rtol=1e-5, atol=1e-5)


def test_sharded_equals_single_device(linear):
    net, w, b, _ = linear
    params = _linear_params(w, b, jnp.float32)
    x = jax.random.uniform(jax.random.key(2), (8, SIZE, SIZE, 3))
    targets = jax.random.randint(jax.random.key(3), (8, 2), 0, NUM_CLASSES)
    seg = jnp.asarray(np.concatenate([_segments()] * 3)[:8])
    kw = dict(num_features=F, chunk_size=4)
    single = JIT["feature_ablation"](net, params, x, targets, segments=seg, **kw)
    xs, ts, ss = shard_batch((x, targets, seg), data_mesh())
    sharded = JIT["feature_ablation"](net, params, xs, ts, segments=ss, **kw)
    assert len(sharded.sharding.device_set) == 8
    np.testing.assert_allclose(sharded, single, rtol=1e-4, atol=1e-4)


def test_felzenszwalb_superpixels_efficiency(cnn):
    """Realistic segments (skimage Felzenszwalb, different counts per image): Shapley sampling's values
    sum to s(x) - s(baseline) exactly, for every sample of permutations."""
    felzenszwalb = pytest.importorskip("skimage.segmentation").felzenszwalb
    net, p64, x64 = cnn["net"], cnn["p64"], cnn["x64"]
    seg = np.stack([felzenszwalb(im, scale=20, sigma=0.5, min_size=20) for im in x64]).astype(np.int32)
    counts = [len(np.unique(s)) for s in seg]
    assert min(counts) >= 2
    with jax.enable_x64(True):
        maps = np.asarray(JIT["shapley_sampling"](net, p64, jnp.asarray(x64), jnp.asarray(TARGETS),
                                                  jax.random.key(6), segments=seg, n_samples=2, baseline=BASE,
                                                  num_features=int(seg.max()) + 1))
        logits = np.asarray(net.apply(p64, jnp.asarray(np.concatenate([x64, np.full_like(x64, BASE)]))))
    num = int(seg.max()) + 1
    phi = _features_of(maps, seg, num)
    for n in range(3):
        gap = logits[n, TARGETS[n]] - logits[3 + n, TARGETS[n]]
        np.testing.assert_allclose(np.nansum(phi[n], axis=1), gap, rtol=1e-9, atol=1e-10)


def test_kernel_shap_samples_follow_the_shapley_kernel():
    """Captum's sampler: the full and empty coalitions first, then sizes k with P(k) ~ (F - 1) / (k (F - k))
    and, given k, every subset equally likely."""
    z = np.asarray(jax.jit(kernel_shap_samples, static_argnums=(1, 2))(jax.random.key(0), 20002, 4))
    assert z.shape == (20002, 4) and (z[0] == 1).all() and (z[1] == 0).all()
    k = z[2:].sum(1)
    p = np.array([3 / (j * (4 - j)) for j in (1, 2, 3)])
    np.testing.assert_allclose(np.bincount(k, minlength=4)[1:] / len(k), p / p.sum(), atol=0.015)
    pairs = z[2:][k == 2]
    np.testing.assert_allclose(pairs.mean(0), 0.5, atol=0.03)


@pytest.mark.parametrize("draw", [kernel_shap_samples, lime_samples])
def test_drawn_coalitions_do_not_depend_on_x64(draw):
    draw = jax.jit(draw, static_argnums=(1, 2))
    first = np.asarray(draw(jax.random.key(7), 12, F))
    with jax.enable_x64(True):
        np.testing.assert_array_equal(np.asarray(draw(jax.random.key(7), 12, F)), first)


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("name, kwargs, match", [
    ("feature_ablation", {"segments": np.zeros((3, SIZE, SIZE), np.float32)}, r"^segments: expected integer"),
    ("feature_ablation", {"segments": np.zeros((3, SIZE, 8), np.int32)},
     r"^segments: expected feature ids of shape"),
    ("feature_ablation", {"segments": -np.ones((3, SIZE, SIZE), np.int32)},
     r"^segments: expected feature ids >= 0"),
    ("feature_ablation", {"num_features": 4}, r"^num_features: 4, but segments has feature id 4"),
    ("feature_ablation", {"num_features": 0}, r"^num_features: expected a positive integer"),
    ("feature_ablation", {"chunk_size": 0}, r"^chunk_size: expected a positive integer"),
    ("feature_ablation", {"baseline": 2.0}, r"^baseline: expected pixel values in \[0, 1\]"),
    ("feature_ablation", {"target": jnp.array([0, 5, 1])}, r"^target: expected indices in \[0, 5\)"),
    ("shapley_sampling", {}, r"^key: a jax.random.key is needed"),
    ("shapley_sampling", {"permutations": np.array([[0, 1, 2, 3, 3]])}, r"^permutations: every row must be"),
    ("shapley_sampling", {"permutations": np.array([[0, 1, 2]])}, r"^permutations: expected \(P, 5\)"),
    ("shapley_sampling", {"key": jax.random.key(0), "n_samples": 0}, r"^n_samples: expected a positive"),
    ("kernel_shap", {"samples": np.full((4, F), 2)}, r"^samples: expected 0/1 values"),
    ("kernel_shap", {"samples": np.ones((4, 3))}, r"^samples: expected coalitions \(S, 5\)"),
    ("kernel_shap", {"key": jax.random.key(0), "n_samples": 1}, r"^n_samples: expected an integer >= 2"),
    ("kernel_shap", {"key": jax.random.key(0), "weighting": "uniform"}, r"^weighting: expected one of"),
    ("lime", {"key": jax.random.key(0), "kernel_width": 0.0}, r"^kernel_width: expected a finite number > 0"),
    ("lime", {"key": jax.random.key(0), "alpha": -1.0}, r"^alpha: expected a number in \[0, inf\)"),
])
def test_bad_input_raises(cnn, name, kwargs, match):
    kwargs = {"segments": cnn["seg"], **kwargs}
    target = kwargs.pop("target", jnp.array([0, 1, 2]))
    with pytest.raises(ValueError, match=match):
        METHODS[name](cnn["net"], cnn["params"], cnn["x"], target, **kwargs)


def test_num_features_needed_under_jit(cnn):
    fn = jax.jit(feature_ablation, static_argnames=("net",))
    with pytest.raises(ValueError, match=r"^num_features: needed when segments are traced"):
        fn(cnn["net"], cnn["params"], cnn["x"], jnp.array([0, 1, 2]), segments=jnp.asarray(cnn["seg"]))
