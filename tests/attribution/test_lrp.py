"""LRP rules and :func:`jaxinterp.attribution.lrp.lrp` against independent references.

Oracles: a float64 NumPy propagation of relevance through a small smallcnn,
written in relevance form with every contribution x_j w_jk spelled out (no
autodiff, no sign-split tricks); NumPy formulas for single batch-norm and
residual-sum layers; conservation (epsilon rule, zero biases: the map sums to
the score); non-negativity of alpha1beta0; plain Python loops for vmap; the
one-device result for sharded inputs.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding

from jaxinterp.targets import Unit
from jaxinterp.attribution.lrp import EPSILON_GAMMA_BOX, EPSILON_PLUS, Composite, lrp
from jaxinterp.nets import layers as L
from jaxinterp.nets import relevance_rules as RR, rules as R
from jaxinterp.train import sharding

from _small_nets import NUM_CLASSES, SIZE, col2im, im2col, small_setup

MEAN = np.array([0.485, 0.456, 0.406])
STD = np.array([0.229, 0.224, 0.225])

STATIC = ("net", "rule", "eps", "gamma", "layer", "resize", "reduce")
lrp_jit = jax.jit(lrp, static_argnames=STATIC)


@pytest.fixture(scope="module")
def setup():
    return small_setup()


def _zero_biases(params):
    return jax.tree_util.tree_map_with_path(
        lambda path, a: jnp.zeros_like(a) if "bias" in jax.tree_util.keystr(path) else a, params)


# -- the NumPy oracle ----------------------------------------------------------------


def _stab(z, eps):
    return z + eps * np.where(z >= 0, 1.0, -1.0)


def _np_linear_relevance(rule, cols, w, b, r, eps, gamma, low=None, high=None):
    """Relevance of the inputs of z = cols @ w + b, from every contribution x_j w_jk.

    cols (P, Q) inputs at P positions, w (Q, O), b (O,), r (P, O) output relevance.
    """
    c = cols[:, :, None] * w[None]
    if rule == "gamma":
        # The generalised gamma rule: contributions of the output's sign get 1 + gamma.
        up, down = w + gamma * np.maximum(w, 0), w + gamma * np.minimum(w, 0)
        xp, xn = np.maximum(cols, 0)[:, :, None], np.minimum(cols, 0)[:, :, None]
        z = c.sum(1) + b
        out = 0
        for sign, c_sign, b_sign in ((z > 0, xp * up + xn * down, b + gamma * np.maximum(b, 0)),
                                     (z < 0, xp * down + xn * up, b + gamma * np.minimum(b, 0))):
            out = out + (c_sign * (np.where(sign, r, 0) / _stab(c_sign.sum(1) + b_sign, eps))[:, None, :]).sum(2)
        return out
    if rule == "epsilon":
        z = c.sum(1) + b
    elif rule == "alpha1beta0":
        c = np.maximum(c, 0)
        z = c.sum(1) + np.maximum(b, 0)
    elif rule == "zB":
        c = c - low[:, :, None] * np.maximum(w, 0) - high[:, :, None] * np.minimum(w, 0)
        z = c.sum(1)
    return (c * (r / _stab(z, eps))[:, None, :]).sum(2)


def np_lrp(params, x, t, composite, eps, gamma, *, record=None):
    """Float64 LRP of class t for one image x (H, W, 3) of the smallcnn; relevance of x_n."""
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    a = (np.asarray(x, np.float64) - MEAN) / STD
    trace = []
    for i, name in enumerate(("0", "3", "6", "9")):
        h, w_, c = a.shape
        k, b = p["features"][name]["kernel"], p["features"][name]["bias"]
        cols = im2col(a)
        wm = k.reshape(-1, k.shape[-1])
        z = cols @ wm + b
        trace.append(("conv", f"features.{3 * i}", a, cols, wm, b, z.reshape(h, w_, -1)))
        a = np.maximum(z, 0).reshape(h, w_, -1)
        if i < 3:
            trace.append(("pool", a))
            a = a.reshape(h // 2, 2, w_ // 2, 2, -1).max((1, 3))
    trace.append(("gap", a))
    v = a.mean((0, 1))
    wc, bc = p["classifier"]["kernel"], p["classifier"]["bias"]
    logits = v @ wc + bc
    rel = np.zeros_like(logits)
    rel[t] = logits[t]
    rel = _np_linear_relevance(composite.dense, v[None], wc, bc, rel[None], eps, gamma)[0]
    for op in reversed(trace):
        if op[0] == "gap":
            a = op[1]
            rel = a / (a.shape[0] * a.shape[1]) / _stab(a.mean((0, 1)), eps) * rel
        elif op[0] == "pool":
            a = op[1]
            h, w_, c = a.shape
            win = a.reshape(h // 2, 2, w_ // 2, 2, c).transpose(0, 2, 4, 1, 3).reshape(h // 2, w_ // 2, c, 4)
            pooled = win.max(-1)
            onehot = np.eye(4)[win.argmax(-1)] * (rel * pooled / _stab(pooled, eps))[..., None]
            rel = onehot.reshape(h // 2, w_ // 2, c, 2, 2).transpose(0, 3, 1, 4, 2).reshape(h, w_, c)
        else:
            _, name, a, cols, wm, b, z = op
            if record is not None:
                record[name] = rel.copy()
            first = name == "features.0"
            rule = (composite.first or composite.conv) if first else composite.conv
            low = high = None
            if rule == "zB":
                low = im2col(np.broadcast_to(-MEAN / STD, a.shape))
                high = im2col(np.broadcast_to((1 - MEAN) / STD, a.shape))
            h, w_, c = a.shape
            rc = _np_linear_relevance(rule, cols, wm, b, rel.reshape(h * w_, -1), eps, gamma, low, high)
            rel = col2im(rc, h, w_, c)
    return rel


# -- against the oracle ----------------------------------------------------------------


# Four composites cover every rule on every layer kind of the smallcnn, including
# gamma / alpha1beta0 / zB on the first layer, whose inputs have both signs, and gamma
# on the logits, whose targets' scores have both signs.
RULES = {
    "epsilon": ("epsilon", Composite()),
    "gamma": ("gamma", Composite(conv="gamma", dense="gamma")),
    "gamma_conv": (Composite(conv="gamma", dense="alpha1beta0", first="zB"),) * 2,
    "alpha1beta0_conv": (Composite(conv="alpha1beta0", dense="gamma"),) * 2,
}


@functools.partial(jax.jit, static_argnames=("net", "rule"))
def _pixels_and_layer(net, params, x, targets, rule):
    kw = dict(rule=rule, eps=0.05, gamma=0.3, reduce=None)
    return (lrp(net, params, x, targets, **kw),
            lrp(net, params, x, targets, layer="features.3", resize=False, **kw))


@pytest.mark.parametrize("name", list(RULES))
def test_matches_float64_numpy_propagation(setup, name):
    """Per-channel relevance of the normalised pixels and of a layer, eps large enough to matter."""
    net, params, x = setup
    rule, composite = RULES[name]
    targets = np.array([[1, 4], [0, 2]])
    with jax.enable_x64(True):
        p64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params)
        ours, at_layer = _pixels_and_layer(net, p64, jnp.asarray(x[:2], jnp.float64),
                                           jnp.asarray(targets), rule)
    assert ours.shape == (2, 2, SIZE, SIZE, 3) and ours.dtype == jnp.float64
    for n in range(2):
        for k in range(2):
            record = {}
            want = np_lrp(params, x[n], targets[n, k], composite, 0.05, 0.3, record=record)
            np.testing.assert_allclose(ours[n, k], want, rtol=1e-9, atol=1e-12 * np.abs(want).max())
            np.testing.assert_allclose(at_layer[n, k], record["features.3"], rtol=1e-9,
                                       atol=1e-12 * np.abs(record["features.3"]).max())


def _np_norm_gamma(x, k, b, r, eps, gamma):
    """The generalised gamma rule's modified gradient R_x / x of z = k x + b per channel, R_z = r."""
    up, down = k + gamma * np.maximum(k, 0), k + gamma * np.minimum(k, 0)
    xp, xn = np.maximum(x, 0), np.minimum(x, 0)
    z = x * k + b
    pos = np.where(x > 0, up, down) * np.where(z > 0, r, 0) / _stab(xp * up + xn * down + b + gamma * np.maximum(b, 0), eps)
    neg = np.where(x > 0, down, up) * np.where(z < 0, r, 0) / _stab(xp * down + xn * up + b + gamma * np.minimum(b, 0), eps)
    return pos + neg


def test_batch_norm_and_residual_rules_match_numpy():
    """Single layers: eval batch norm (epsilon, gamma, identity) and the residual sum, float64."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 3, 3, 4))
    scale, bias = rng.uniform(-1, 2, 4), rng.normal(size=4)
    mean, var = rng.normal(size=4), rng.uniform(0.5, 2, 4)
    c = rng.normal(size=x.shape)
    eps, gamma = 0.1, 0.4
    f = functools.partial(L.batch_norm_eval, eps=1e-5)
    k = scale / np.sqrt(var + 1e-5)
    b = bias - mean * k
    z = x * k + b
    with jax.enable_x64(True):
        for norm, want in [
            ("epsilon", k * c * z / _stab(z, eps)),
            ("gamma", _np_norm_gamma(x, k, b, c * z, eps, gamma)),
            ("identity", c * z / _stab(x, eps)),
        ]:
            rules = RR.lrp_rules(Composite(norm=norm), eps, gamma)
            g = jax.grad(lambda x: jnp.sum(rules.linear(f, x, *map(jnp.asarray, (scale, bias, mean, var)))
                                           * c))(jnp.asarray(x))
            np.testing.assert_allclose(g, want, rtol=1e-10, err_msg=norm)
        a, b2 = rng.normal(size=(5,)), rng.normal(size=(5,))
        rules = RR.lrp_rules("epsilon", eps)
        cs = rng.normal(size=5)
        ga, gb = jax.grad(lambda a, b: jnp.sum(rules.add(a, b) * cs),
                          argnums=(0, 1))(jnp.asarray(a), jnp.asarray(b2))
        s = a + b2
        want = cs * s / _stab(s, eps)
        np.testing.assert_allclose(ga, want, rtol=1e-12)
        np.testing.assert_allclose(gb, want, rtol=1e-12)
        # relevance splits in proportion: R_a + R_b = R_s (eps -> 0)
        rules = RR.lrp_rules("epsilon", 1e-12)
        ga, gb = jax.grad(lambda a, b: jnp.sum(rules.add(a, b)), argnums=(0, 1))(
            jnp.asarray(a), jnp.asarray(b2))
        np.testing.assert_allclose(a * ga + b2 * gb, s, rtol=1e-9)


def test_linear_kinds_and_stabiliser():
    conv = functools.partial(L.conv2d, stride=2, padding=1)
    assert R.linear_kind(conv) == "conv" and R.linear_kind(L.dense) == "dense"
    assert R.linear_kind(functools.partial(L.batch_norm_eval, eps=1e-5)) == "norm"
    assert R.linear_kind(L.global_avg_pool) == "pool"
    assert R.linear_kind(functools.partial(L.adaptive_avg_pool, out_hw=(2, 2))) == "pool"
    assert R.linear_kind(lambda x: 2 * x) == "other"
    # Captum's stabiliser: z + eps * sign(z) with sign(0) = +1
    np.testing.assert_allclose(RR.stabilise(jnp.array([0.0, 2.0, -2.0]), 0.5), [0.5, 2.5, -2.5])
    # cached factory: equal arguments, the same (hashable) rule set
    assert RR.lrp_rules("gamma", 1e-9, 0.25) is RR.lrp_rules(Composite(conv="gamma", dense="gamma"))
    assert hash(RR.lrp_rules(EPSILON_GAMMA_BOX)) == hash(RR.lrp_rules(EPSILON_GAMMA_BOX))


# -- conservation and sign -------------------------------------------------------------


TARGETS = jnp.array([[0, 3], [1, 2], [4, 4]])


@pytest.mark.parametrize("rule", ["epsilon", EPSILON_PLUS, EPSILON_GAMMA_BOX])
def test_conserves_the_score_with_zero_biases(setup, rule):
    """Zero biases, eps -> 0: every rule here conserves relevance, so the map sums to the logit."""
    net, params, x = setup
    params = _zero_biases(params)
    maps = lrp_jit(net, params, x, TARGETS, rule=rule)
    want = jnp.take_along_axis(net.apply(params, x), TARGETS, axis=1)
    np.testing.assert_allclose(maps.sum((2, 3)), want, rtol=2e-4, atol=1e-7)


def test_conserves_a_unit_value(setup):
    """A Unit target (a channel's mean at features.6): the map sums to that value."""
    net, params, x = setup
    params = _zero_biases(params)
    channels = [2, 5, 7]
    maps = lrp_jit(net, params, x, Unit("features.6", jnp.array(channels)))
    act = net.apply(params, x, stop="features.6")
    want = jnp.stack([act[i, ..., c].mean() for i, c in enumerate(channels)])
    np.testing.assert_allclose(maps[:, 0].sum((1, 2)), want, rtol=2e-4, atol=1e-7)


def test_alpha1beta0_is_non_negative(setup):
    """Positive target scores: alpha1beta0 relevance is >= 0 everywhere (pixels of both signs too)."""
    net, params, x = setup
    params = dict(params, classifier=dict(params["classifier"],
                                          bias=params["classifier"]["bias"] + 1.0))
    assert bool(jnp.all(jnp.take_along_axis(net.apply(params, x), TARGETS, axis=1) > 0))
    maps = lrp_jit(net, params, x, TARGETS, rule="alpha1beta0")
    assert float(maps.min()) >= 0 and float(maps.max()) > 0
    assert float(lrp_jit(net, params, x, TARGETS, rule="epsilon").min()) < 0


# -- vmap, jit, sharding, errors ---------------------------------------------------------


def test_vmap_over_images_and_targets_equals_loop_and_jit_equals_eager(setup):
    """Relevance at features.9 (the lifted per-example code is that of the pixel maps)."""
    net, params, x = setup
    kw = dict(rule=EPSILON_PLUS, layer="features.9", reduce=None)
    batched = lrp_jit(net, params, x, TARGETS, **kw)
    assert batched.shape == (3, 2, SIZE, SIZE, 8)
    tol = dict(rtol=1e-4, atol=1e-5 * float(jnp.abs(batched).max()))
    for n in range(3):
        for k in range(2):
            one = lrp_jit(net, params, x[n:n + 1], TARGETS[n:n + 1, k], **kw)
            np.testing.assert_allclose(batched[n, k], one[0, 0], **tol)
    np.testing.assert_allclose(lrp(net, params, x[:1], TARGETS[:1, 0], **kw),
                               lrp_jit(net, params, x[:1], TARGETS[:1, 0], **kw), **tol)


def test_sharded_over_eight_devices_equals_one_device(setup):
    net, params, _ = setup
    x = jax.random.uniform(jax.random.key(3), (8, SIZE, SIZE, 3))
    t = jnp.arange(16, dtype=jnp.int32).reshape(8, 2) % NUM_CLASSES
    fn = jax.jit(functools.partial(lrp, net, rule=EPSILON_PLUS))
    single = fn(params, x, t)
    mesh = sharding.data_mesh()
    assert mesh.devices.size == 8
    xs, ts = sharding.shard_batch((x, t), mesh)
    sharded = fn(sharding.replicate(params, mesh), xs, ts)
    assert isinstance(sharded.sharding, NamedSharding) or len(sharded.sharding.device_set) == 8
    np.testing.assert_allclose(sharded, single, rtol=1e-4, atol=1e-5 * float(jnp.abs(single).max()))


def test_bad_input_raises_naming_the_argument(setup):
    net, params, x = setup
    t = jnp.array([0, 1, 2])
    cases = [
        (dict(rule="epsilon_plus"), "rule"),
        (dict(eps=0.0), "eps"),
        (dict(eps=-1e-3), "eps"),
        (dict(gamma=-0.1), "gamma"),
        (dict(eps="small"), "eps"),
        (dict(layer="features.99"), "layer"),
        (dict(reduce="median"), "reduce"),
        (dict(layer="avgpool"), "layer"),  # not spatial, resize=True
    ]
    for kwargs, arg in cases:
        with pytest.raises(ValueError, match=arg):
            lrp(net, params, x, t, **kwargs)
    with pytest.raises(ValueError, match="rule.conv"):
        Composite(conv="zB")
    with pytest.raises(ValueError, match="rule.dense"):
        Composite(dense="identity")
    with pytest.raises(ValueError, match="rule.first"):
        Composite(first="flat")
    with pytest.raises(ValueError, match="target"):
        lrp(net, params, x, jnp.array([0, 1, NUM_CLASSES]))
    with pytest.raises(ValueError, match="x"):
        lrp(net, params, x[..., :2], t)
