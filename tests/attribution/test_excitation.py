"""Excitation backprop rules and maps against independent references.

Oracles: a float64 NumPy propagation of the marginal winning probability
through a small smallcnn, with every conditional probability a_j w+_jk / sum_j
a_j w+_jk spelled out (no autodiff); NumPy formulas for single batch-norm,
residual-sum and pooling layers; the MWP being a probability (it sums to 1 at
every layer); plain Python loops for vmap; the one-device result for sharded
inputs.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinterp.targets import Unit
from jaxinterp.attribution.excitation import contrastive_excitation_backprop, excitation_backprop
from jaxinterp.nets import layers as L
from jaxinterp.nets import relevance_rules as RR
from jaxinterp.train import sharding

from _small_nets import NUM_CLASSES, SIZE, col2im, im2col, small_setup

MEAN = np.array([0.485, 0.456, 0.406])
STD = np.array([0.229, 0.224, 0.225])
TARGETS = jnp.array([[0, 3], [1, 2], [4, 4]])

ebp_jit = jax.jit(excitation_backprop, static_argnames=("net", "layer", "resize", "reduce"))
cebp_jit = jax.jit(contrastive_excitation_backprop,
                   static_argnames=("net", "contrast_layer", "layer", "classifier_layer", "relu",
                                    "resize", "reduce"))


@pytest.fixture(scope="module")
def setup():
    return small_setup()


# -- the NumPy oracle ----------------------------------------------------------------


def _np_excite(cols, w, p):
    """P of the inputs of a layer (P positions, Q inputs) -> (O outputs), w (Q, O), p (P, O)."""
    c = cols[:, :, None] * np.maximum(w, 0)[None]           # a_j w+_jk
    cond = c / (c.sum(1, keepdims=True) + 1e-20)           # P(a_j | a_k)
    return (cond * p[:, None, :]).sum(2)


def np_mwp(params, x, t, *, dual=False):
    """Float64 MWP of class t (of its dual unit) for one image: {split point: P}, 'pixels': P(x_n)."""
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    a = (np.asarray(x, np.float64) - MEAN) / STD
    trace = []
    for i, name in enumerate(("0", "3", "6", "9")):
        h, w_, _ = a.shape
        k, b = p["features"][name]["kernel"], p["features"][name]["bias"]
        cols, wm = im2col(a), k.reshape(-1, k.shape[-1])
        trace.append(("conv", 3 * i, a, cols, wm))
        a = np.maximum(cols @ wm + b, 0).reshape(h, w_, -1)
        if i < 3:
            trace.append(("pool", 3 * i + 2, a))
            a = a.reshape(h // 2, 2, w_ // 2, 2, -1).max((1, 3))
    v = a.mean((0, 1))
    wc = p["classifier"]["kernel"] * (-1 if dual else 1)
    out = {"avgpool": _np_excite(v[None], wc, np.eye(wc.shape[1])[t][None])[0]}
    prob = a / (a.shape[0] * a.shape[1]) / (v + 1e-20) * out["avgpool"]
    out["features.10"] = out["features.9"] = prob
    for op in reversed(trace):
        if op[0] == "pool":  # winner takes all
            _, i, a = op
            out[f"features.{i}"] = prob
            h, w_, c = a.shape
            win = a.reshape(h // 2, 2, w_ // 2, 2, c).transpose(0, 2, 4, 1, 3).reshape(h // 2, w_ // 2, c, 4)
            routed = np.eye(4)[win.argmax(-1)] * prob[..., None]
            prob = routed.reshape(h // 2, w_ // 2, c, 2, 2).transpose(0, 3, 1, 4, 2).reshape(h, w_, c)
            out[f"features.{i - 1}"] = out[f"features.{i - 2}"] = prob  # ReLU passes
        else:
            _, i, a, cols, wm = op
            h, w_, c = a.shape
            prob = col2im(_np_excite(cols, wm, prob.reshape(h * w_, -1)), h, w_, c)
    out["pixels"] = prob
    return out


# -- against the oracle ----------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("net",))
def _all_maps(net, params, x, targets):
    kw = dict(reduce=None, resize=False)
    return (excitation_backprop(net, params, x, targets, **kw),
            excitation_backprop(net, params, x, targets, layer="features.4", **kw),
            contrastive_excitation_backprop(net, params, x, targets, contrast_layer="features.7",
                                            relu=False, **kw),
            contrastive_excitation_backprop(net, params, x, targets, contrast_layer="features.7",
                                            layer="features.3", **dict(kw, reduce="sum")),
            contrastive_excitation_backprop(net, params, x, targets, contrast_layer="avgpool",
                                            layer="features.3", **dict(kw, reduce="sum")))


def test_matches_float64_numpy_propagation(setup):
    """MWP per channel at the normalised pixels and at a layer; contrastive MWP (TorchRay's clamp).

    EBP is linear in the probability it passes, so the contrast layer changes
    nothing but rounding.
    """
    net, params, x = setup
    targets = np.array([[1, 4], [0, 2]])
    with jax.enable_x64(True):
        p64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params)
        pixels, layer, contrast, contrast_layer, other_contrast = _all_maps(
            net, p64, jnp.asarray(x[:2], jnp.float64), jnp.asarray(targets))
    assert pixels.shape == (2, 2, SIZE, SIZE, 3) and pixels.dtype == jnp.float64
    for n in range(2):
        for k in range(2):
            want, dual = np_mwp(params, x[n], targets[n, k]), np_mwp(params, x[n], targets[n, k], dual=True)
            contrastive = np.maximum((want["features.3"] - dual["features.3"]).sum(-1), 0)
            for ours, theirs in [(pixels[n, k], want["pixels"]), (layer[n, k], want["features.4"]),
                                 (contrast[n, k], want["pixels"] - dual["pixels"]),
                                 (contrast_layer[n, k], contrastive),
                                 (other_contrast[n, k], contrastive)]:
                np.testing.assert_allclose(ours, theirs, rtol=1e-9, atol=1e-12 * np.abs(theirs).max())


@functools.partial(jax.jit, static_argnames=("net",))
def _sums_at_every_layer(net, params, x1, t):
    """Sum of the MWP at every split point (and the normalised pixels), stage by stage under EXCITATION."""
    names = (None,) + net.layers[:-1]
    acts = [x1[None]]
    for a, b in zip(names[:-1], names[1:]):
        acts.append(net.apply(params, acts[-1], start=a, stop=b))
    p = jax.grad(lambda a: net.apply(params, a, start=names[-1], rules=RR.EXCITATION)[0, t])(acts[-1])
    sums = [p.sum()]
    for i in reversed(range(len(names) - 1)):
        _, pull = jax.vjp(lambda a: net.apply(params, a, start=names[i], stop=names[i + 1],
                                              rules=RR.EXCITATION), acts[i])
        p = pull(p)[0]
        sums.append((p * jnp.asarray(STD, p.dtype)).sum() if i == 0 else p.sum())
    return jnp.stack(sums)


def test_mwp_is_a_probability_at_every_layer(setup):
    """The MWP sums to 1 at the pixels and at every split point, for classes and units.

    Zero biases and a non-negative classifier: every active unit then has a
    positive excitation W+ x (no probability is lost to a 0 / 0).
    """
    net, params, x = setup
    params = jax.tree_util.tree_map_with_path(
        lambda path, a: jnp.zeros_like(a) if "bias" in jax.tree_util.keystr(path) else a, params)
    params = dict(params, classifier=dict(params["classifier"],
                                          kernel=jnp.abs(params["classifier"]["kernel"])))
    for n, t in [(0, 0), (1, 3), (2, 4)]:
        np.testing.assert_allclose(_sums_at_every_layer(net, params, x[n], t), 1.0, rtol=1e-5)
    active = jnp.argmax(net.apply(params, x, stop="avgpool"), axis=-1)  # a unit with a > 0
    m = ebp_jit(net, params, x, Unit("avgpool", active))
    np.testing.assert_allclose(m.sum((2, 3)), 1.0, rtol=1e-5)


def test_single_layer_rules_match_numpy():
    """Batch norm passes P; residual sums split it in proportion; pools and the negated dual."""
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (1, 4, 4, 3))
    p = rng.uniform(0, 1, (1, 4, 4, 3))
    rules = RR.EXCITATION
    with jax.enable_x64(True):
        bn = functools.partial(L.batch_norm_eval, eps=1e-5)
        w = tuple(jnp.asarray(rng.uniform(0.5, 1.5, 3)) for _ in range(4))
        _, pull = jax.vjp(lambda v: rules.linear(bn, v, *w), jnp.asarray(x))
        np.testing.assert_allclose(pull(jnp.asarray(p))[0], p, rtol=1e-12)
        a, b = jnp.asarray(x), jnp.asarray(rng.uniform(0, 1, x.shape))
        _, pull = jax.vjp(rules.add, a, b)
        pa, pb = pull(jnp.asarray(p))
        np.testing.assert_allclose(pa, x / (x + b) * p, rtol=1e-12)
        np.testing.assert_allclose(pa + pb, p, rtol=1e-12)
        pool = functools.partial(L.adaptive_avg_pool, out_hw=(3, 3))
        q = rng.uniform(0, 1, (1, 3, 3, 3))
        _, pull = jax.vjp(lambda v: rules.linear(pool, v), a)
        m = np.kron(np.asarray(L.adaptive_pool_matrix(4, 3)), np.asarray(L.adaptive_pool_matrix(4, 3)))
        xc = x[0].reshape(16, 3)
        want = np.stack([xc[:, c] * (m.T @ (q[0, ..., c].reshape(9) / (m @ xc[:, c]))) for c in range(3)], -1)
        np.testing.assert_allclose(pull(jnp.asarray(q))[0][0].reshape(16, 3), want, rtol=1e-10)
        k, v, t = jnp.asarray(rng.normal(size=(6, 2))), jnp.asarray(rng.uniform(0, 1, (1, 6))), 1
        _, pull = jax.vjp(lambda u: RR.EXCITATION_NEGATED.linear(L.dense, u, k), v)
        wneg = np.maximum(-np.asarray(k[:, t]), 0)
        np.testing.assert_allclose(pull(jnp.eye(2)[t][None])[0][0], v[0] * wneg / (v[0] @ wneg),
                                   rtol=1e-12)


# -- vmap, jit, sharding, errors ---------------------------------------------------------


def test_vmap_equals_loop_and_jit_equals_eager(setup):
    """(The oracle test checks batched contrastive maps against per-example NumPy too.)"""
    net, params, x = setup
    kw = dict(layer="features.9", reduce=None)
    batched = ebp_jit(net, params, x, TARGETS, **kw)
    assert batched.shape == (3, 2, SIZE, SIZE, 8)
    tol = dict(rtol=1e-4, atol=1e-5 * float(jnp.abs(batched).max()))
    for n in range(3):
        for k in range(2):
            one = ebp_jit(net, params, x[n:n + 1], TARGETS[n:n + 1, k], **kw)
            np.testing.assert_allclose(batched[n, k], one[0, 0], **tol)
    np.testing.assert_allclose(excitation_backprop(net, params, x[:1], TARGETS[:1, 0], **kw),
                               ebp_jit(net, params, x[:1], TARGETS[:1, 0], **kw), **tol)


def test_sharded_over_eight_devices_equals_one_device(setup):
    net, params, _ = setup
    x = jnp.asarray(np.random.default_rng(3).uniform(0, 1, (8, SIZE, SIZE, 3)), jnp.float32)
    t = jnp.arange(16, dtype=jnp.int32).reshape(8, 2) % NUM_CLASSES
    fn = jax.jit(functools.partial(excitation_backprop, net))
    single = fn(params, x, t)
    mesh = sharding.data_mesh()
    assert mesh.devices.size == 8
    xs, ts = sharding.shard_batch((x, t), mesh)
    sharded = fn(sharding.replicate(params, mesh), xs, ts)
    np.testing.assert_allclose(sharded, single, rtol=1e-4, atol=1e-5 * float(jnp.abs(single).max()))


def test_bad_input_raises_naming_the_argument(setup):
    net, params, x = setup
    t = jnp.array([0, 1, 2])
    for kwargs, arg in [(dict(layer="features.99"), "layer"), (dict(reduce="median"), "reduce"),
                        (dict(layer="avgpool"), "layer")]:
        with pytest.raises(ValueError, match=arg):
            excitation_backprop(net, params, x, t, **kwargs)
    cases = [
        (dict(contrast_layer=None), "contrast_layer"),
        (dict(contrast_layer="features.99"), "contrast_layer"),
        (dict(contrast_layer="classifier"), "contrast_layer"),          # not before the classifier
        (dict(contrast_layer="features.3", layer="features.6"), "layer"),  # layer after contrast
        (dict(contrast_layer="features.3", classifier_layer="head"), "classifier_layer"),
        (dict(contrast_layer="features.9", classifier_layer="features.6"), "contrast_layer"),
        (dict(contrast_layer="features.9", classifier_layer="features.0"), "classifier_layer"),
        (dict(contrast_layer="features.6", classifier_layer="avgpool"), "classifier_layer"),
    ]
    for kwargs, arg in cases:
        with pytest.raises(ValueError, match=arg):
            contrastive_excitation_backprop(net, params, x, t, **kwargs)
    with pytest.raises(ValueError, match="target"):
        contrastive_excitation_backprop(net, params, x, Unit("features.6", t), contrast_layer="features.9")
    with pytest.raises(ValueError, match="target"):
        excitation_backprop(net, params, x, jnp.array([0, 1, NUM_CLASSES]))
