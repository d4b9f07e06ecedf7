"""Backward rules: closed forms, routing through every zoo net, jit and vmap."""

import collections

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinterp import nets
from jaxinterp.nets import relevance_rules as RR, rules as R


def _two_layer(rules, w, v, x):
    """f(x) = v . relu(W x), with the ReLU and both linear maps routed through ``rules``."""
    h = rules.linear(lambda x, w: w @ x, x, w)
    return rules.linear(lambda h, v: v @ h, rules.relu(h), v)


def test_guided_relu_closed_form():
    rng = np.random.default_rng(0)
    w, v, x = rng.normal(size=(7, 5)), rng.normal(size=7), rng.normal(size=5)
    pre = w @ x
    guided = w.T @ (np.maximum(v, 0) * (pre > 0))
    plain = w.T @ (v * (pre > 0))
    g_guided = jax.grad(_two_layer, argnums=3)(R.GUIDED, *map(jnp.asarray, (w, v, x)))
    g_plain = jax.grad(_two_layer, argnums=3)(R.STANDARD, *map(jnp.asarray, (w, v, x)))
    np.testing.assert_allclose(g_guided, guided, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(g_plain, plain, rtol=1e-5, atol=1e-6)
    assert not np.allclose(guided, plain)  # the test distinguishes the rules


def test_guided_relu_elementwise():
    x = jnp.array([-2.0, -1.0, 0.5, 1.0, 3.0])
    g = jnp.array([1.0, -1.0, 2.0, -3.0, 0.5])
    _, vjp = jax.vjp(R.guided_relu, x)
    np.testing.assert_array_equal(vjp(g)[0], [0.0, 0.0, 2.0, 0.0, 0.5])
    np.testing.assert_array_equal(R.guided_relu(x), np.maximum(np.asarray(x), 0))


def test_guided_relu_under_jit_and_vmap():
    rng = np.random.default_rng(1)
    w, v = jnp.asarray(rng.normal(size=(6, 4))), jnp.asarray(rng.normal(size=6))
    xs = jnp.asarray(rng.normal(size=(5, 4)))
    grad = jax.grad(lambda x: _two_layer(R.GUIDED, w, v, x))
    batched = jax.jit(jax.vmap(grad))(xs)
    for i in range(5):
        np.testing.assert_allclose(batched[i], grad(xs[i]), rtol=1e-6)


def test_standard_max_pool_matches_numpy_with_padding():
    x = np.random.default_rng(2).normal(size=(1, 7, 7, 2)).astype(np.float32)
    out = R.standard_max_pool(jnp.asarray(x), 3, 2, 1)
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-np.inf)
    ref = np.array([[[xp[0, 2 * i:2 * i + 3, 2 * j:2 * j + 3, c].max() for c in range(2)]
                     for j in range(4)] for i in range(4)])
    np.testing.assert_array_equal(out[0], ref)


def _counting_rules():
    calls = collections.Counter()

    def count(kind, fn):
        def wrapped(*args, **kw):
            calls[kind] += 1
            return fn(*args, **kw)
        return wrapped

    rules = R.STANDARD.replace(
        name="counting",
        relu=count("relu", R.standard_relu), relu6=count("relu6", R.standard_relu6),
        max_pool=count("max_pool", R.standard_max_pool),
        linear=count("linear", R.standard_linear), add=count("add", R.standard_add))
    return rules, calls


# (ReLUs, max-pools, linear maps incl. convs / dense / BN / avg-pools, residual sums)
EXPECTED_CALLS = {
    "smallcnn": (32, dict(relu=4, max_pool=3, linear=4 + 1 + 1, add=0)),
    "alexnet": (64, dict(relu=7, max_pool=3, linear=5 + 3 + 1, add=0)),
    "vgg16": (32, dict(relu=15, max_pool=5, linear=13 + 3 + 1, add=0)),
    "resnet50": (32, dict(relu=1 + 16 * 3, max_pool=1, linear=(53 + 53) + 1 + 1, add=16)),
    "vit_s16": (32, dict(relu=0, max_pool=0, linear=1 + 12 * 4 + 0, add=24)),
    # 16 blocks: stem, the first block's depthwise and each inverted residual's expansion and
    # depthwise conv, and the head end in ReLU6; 9 blocks keep stride 1 and width (residual sums).
    "tf_efficientnet_lite0": (32, dict(relu6=1 + 1 + 15 * 2 + 1, linear=2 * (1 + 2 + 15 * 3 + 1) + 1 + 1,
                                       add=9)),
}


@pytest.mark.parametrize("name", sorted(EXPECTED_CALLS))
def test_every_op_is_routed_through_the_rules(name):
    net = nets.get(name)
    size, expected = EXPECTED_CALLS[name]
    rules, calls = _counting_rules()
    x = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
    jax.eval_shape(lambda p, x: net.apply(p, x, rules=rules), net.abstract_params(), x)
    assert dict(calls) == {k: v for k, v in expected.items() if v}


def test_guided_rules_change_the_gradient_of_a_zoo_net():
    net = nets.get("smallcnn")
    params = net.init(jax.random.key(0))
    x = jax.random.uniform(jax.random.key(1), (1, 32, 32, 3))

    def score(x, rules):
        return net.apply(params, x, rules=rules)[0, 3]

    g_std = jax.jit(jax.grad(score), static_argnums=1)(x, R.STANDARD)
    g_gd = jax.jit(jax.grad(score), static_argnums=1)(x, R.GUIDED)
    # Same forward value, different backward.
    np.testing.assert_allclose(net.apply(params, x, rules=R.GUIDED), net.apply(params, x),
                               rtol=1e-6)
    assert not np.allclose(g_std, g_gd)
    # Guided backprop into the last ReLU's input: only units with positive input and
    # positive gradient pass; check against the closed form at the head.
    a = net.apply(params, x, stop="features.9")          # pre-activation of the last ReLU
    w = np.asarray(params["classifier"]["kernel"])[:, 3]  # (128,)
    hw = a.shape[1] * a.shape[2]
    expected = np.where((np.asarray(a) > 0) & (w > 0), w / hw, 0.0)
    got = jax.grad(lambda a: net.apply(params, a, start="features.9", rules=R.GUIDED)[0, 3])(a)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-8)


def test_replace_rejects_unknown_rules():
    with pytest.raises(ValueError, match="changes: unknown rule"):
        R.STANDARD.replace(softmax=jax.nn.softmax)
    assert hash(R.GUIDED) == hash(R.STANDARD.replace(name="guided", relu=R.guided_relu,
                                                     relu6=R.guided_relu6))


# ReLU6 under every rule set: x with units below 0, on the slope, exactly at both kinks, above 6;
# incoming cotangents of both signs.  Expected backward passes written out from the definitions.
_X6 = np.array([-2.0, -0.0, 0.0, 0.5, 3.0, 5.5, 6.0, 7.0, 12.0, 3.0, 8.0, -1.0])
_G6 = np.array([1.0, 1.0, 1.0, 2.0, -3.0, 4.0, 1.0, 5.0, -6.0, 2.0, 3.0, -1.0])
_SLOPE = (_X6 > 0) & (_X6 < 6)


@pytest.mark.parametrize("rules, expected", [
    (R.STANDARD, np.where(_SLOPE, _G6, 0.0)),                                # torch's hardtanh backward
    (R.GUIDED, np.where(_SLOPE & (_G6 > 0), _G6, 0.0)),
    (R.DECONVNET, np.maximum(_G6, 0.0)),
    (RR.EXCITATION, np.where(_X6 > 0, _G6, 0.0)),
    (RR.lrp_rules("epsilon"), np.where(_X6 > 0, _G6 * np.clip(_X6, 0, 6) / np.where(_X6 > 0, _X6, 1), 0.0)),
], ids=["standard", "guided", "deconvnet", "excitation", "lrp"])
def test_relu6_backward_of_every_rule_set(rules, expected):
    x, g = jnp.asarray(_X6, jnp.float32), jnp.asarray(_G6, jnp.float32)
    y, vjp = jax.vjp(rules.relu6, x)
    np.testing.assert_array_equal(y, np.clip(_X6, 0, 6))
    np.testing.assert_allclose(vjp(g)[0], expected, rtol=1e-7, atol=0)
    # Under jit and vmap (one row per element) the same.
    rows = jax.jit(jax.vmap(lambda a, b: jax.vjp(rules.relu6, a)[1](b)[0]))(x[:, None], g[:, None])
    np.testing.assert_allclose(rows[:, 0], expected, rtol=1e-7, atol=0)


def test_lrp_relu6_conserves_relevance():
    # R = activation * gradient: the relevance at the input of ReLU6 equals that at its output.
    x = jnp.asarray(_X6, jnp.float32)
    y, vjp = jax.vjp(RR.lrp_rules("epsilon").relu6, x)
    g = jnp.asarray(_G6, jnp.float32)
    np.testing.assert_allclose(x * vjp(g)[0], y * g, rtol=1e-6, atol=1e-6)
