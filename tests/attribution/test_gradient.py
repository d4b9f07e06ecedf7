"""The gradient family against independent references.

Oracles: float64 central finite differences (gradient), NumPy quadrature facts
(Gauss-Legendre integrates polynomials exactly), the completeness axiom of
integrated gradients, plain Python loops of ``jax.grad`` for vmap / units /
layers / noise, and the one-device result for sharded inputs.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from jaxinterp import nets, ops
from jaxinterp.attribution import (QUADRATURES, Unit, deconvnet, gradient, guided_backprop,
                                   input_x_gradient, integrated_gradients, quadrature, smoothgrad)
from jaxinterp.nets import rules as R
from jaxinterp.train import sharding

NUM_CLASSES = 5


@pytest.fixture(scope="module")
def setup():
    net = nets.get("smallcnn", num_classes=NUM_CLASSES)
    params = net.init(jax.random.key(0))
    x = jax.random.uniform(jax.random.key(1), (3, 16, 16, 3), minval=0.05, maxval=0.95)
    return net, params, x


@functools.partial(jax.jit, static_argnames=("net", "rules"))
def _jit_grad(net, params, x1, t, rules=None):
    return jax.grad(lambda a: net.apply(params, a[None], rules=rules)[0, t])(x1)


def _grad(net, params, x1, t, rules=None):
    """The plain gradient of one logit for one image (the loop reference)."""
    return np.asarray(_jit_grad(net, params, x1, t, rules=rules))


# -- gradient -------------------------------------------------------------------


def test_matches_float64_finite_differences(setup):
    """Central differences of the float64 logit: per channel for max|g|, all channels for sum."""
    net, params, x = setup
    pixels = [(0, 0), (3, 7), (8, 8), (15, 2), (11, 14)]
    t, h = 3, 1e-6
    with jax.enable_x64(True):
        p64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params)
        x64 = jnp.asarray(x[:1], jnp.float64)
        logit = jax.jit(lambda x: net.apply(p64, x)[0, t])

        def fd(direction):
            return (float(logit(x64 + h * direction)) - float(logit(x64 - h * direction))) / (2 * h)

        unsigned = gradient(net, p64, x64, jnp.array([t]))[0, 0]
        signed = gradient(net, p64, x64, jnp.array([t]), reduce="sum")[0, 0]
        assert unsigned.dtype == jnp.float64
        for i, j in pixels:
            per_channel = [fd(jnp.zeros_like(x64).at[0, i, j, c].set(1.0)) for c in range(3)]
            grey = fd(jnp.zeros_like(x64).at[0, i, j, :].set(1.0))
            np.testing.assert_allclose(unsigned[i, j], max(map(abs, per_channel)), rtol=1e-6, atol=1e-9)
            np.testing.assert_allclose(signed[i, j], grey, rtol=1e-6, atol=1e-9)
    assert np.abs(np.asarray(signed)).max() > 0


@pytest.mark.parametrize("method, rules", [(gradient, None), (guided_backprop, R.GUIDED),
                                           (deconvnet, R.DECONVNET)])
@pytest.mark.parametrize("reduce", ["max_abs", "sum", None])
def test_vmap_over_images_and_targets_equals_loop(setup, method, rules, reduce):
    net, params, x = setup
    targets = jnp.array([[0, 4], [2, 2], [1, 3]])
    maps = method(net, params, x, targets, reduce=reduce)
    assert maps.shape == (3, 2, 16, 16) + ((3,) if reduce is None else ())
    for n in range(3):
        for k in range(2):
            g = _grad(net, params, x[n], int(targets[n, k]), rules)
            ref = {"max_abs": np.abs(g).max(-1), "sum": g.sum(-1), None: g}[reduce]
            np.testing.assert_allclose(maps[n, k], ref, rtol=1e-5, atol=1e-7)


def test_rule_variants_differ_and_deconvnet_ignores_forward_sign(setup):
    net, params, x = setup
    t = jnp.array([0, 1, 2])
    plain, guided, deconv = (m(net, params, x, t, reduce="sum") for m in (gradient, guided_backprop, deconvnet))
    assert not np.allclose(plain, guided) and not np.allclose(guided, deconv)
    # On a single ReLU the closed forms: deconvnet passes max(g, 0) whatever the input's sign.
    xs = jnp.array([-1.0, 2.0, -3.0, 4.0])
    g = jnp.array([1.0, -1.0, 2.0, 3.0])
    np.testing.assert_array_equal(jax.vjp(R.deconvnet_relu, xs)[1](g)[0], [1.0, 0.0, 2.0, 3.0])
    np.testing.assert_array_equal(jax.vjp(R.guided_relu, xs)[1](g)[0], [0.0, 0.0, 0.0, 3.0])


def test_vector_targets_are_one_column(setup):
    net, params, x = setup
    t = jnp.array([4, 0, 1])
    np.testing.assert_array_equal(gradient(net, params, x, t), gradient(net, params, x, t[:, None]))
    assert gradient(net, params, x, t).shape == (3, 1, 16, 16)


def test_jit_equals_eager(setup):
    net, params, x = setup
    targets = jnp.array([[1, 0], [3, 4], [2, 1]])
    jitted = jax.jit(gradient, static_argnames=("net", "reduce", "rules", "layer", "resize"))
    for reduce in ("max_abs", "sum"):
        np.testing.assert_allclose(jitted(net, params, x, targets, reduce=reduce),
                                   gradient(net, params, x, targets, reduce=reduce), rtol=1e-5, atol=1e-7)


def test_unit_targets_equal_gradient_of_the_unit(setup):
    """Unit(layer, c): mean of channel c over positions; Unit(layer, c, y, x): one neuron."""
    net, params, x = setup
    layer = "features.4"
    ch = jnp.array([[0, 5], [7, 7], [31, 2]])
    ys, xs = jnp.array([[0, 3], [1, 2], [3, 0]]), jnp.array([[2, 1], [0, 3], [3, 3]])
    channel_maps = gradient(net, params, x, Unit(layer, ch), reduce="sum")
    neuron_maps = gradient(net, params, x, Unit(layer, ch, ys, xs), reduce="sum")
    for n in range(3):
        for k in range(2):
            c, i, j = int(ch[n, k]), int(ys[n, k]), int(xs[n, k])
            act = lambda a: net.apply(params, a[None], stop=layer)[0]  # noqa: E731
            g_mean = jax.grad(lambda a: act(a)[..., c].mean())(x[n]).sum(-1)
            g_one = jax.grad(lambda a: act(a)[i, j, c])(x[n]).sum(-1)
            np.testing.assert_allclose(channel_maps[n, k], g_mean, rtol=1e-5, atol=1e-8)
            np.testing.assert_allclose(neuron_maps[n, k], g_one, rtol=1e-5, atol=1e-8)


def test_layer_attribution_is_the_resized_layer_gradient(setup):
    net, params, x = setup
    layer, t = "features.7", jnp.array([1, 2, 3])
    small = gradient(net, params, x, t, layer=layer, resize=False, reduce="sum")
    big = gradient(net, params, x, t, layer=layer, reduce="sum")
    a = net.apply(params, x, stop=layer)
    for n in range(3):
        g = jax.grad(lambda a1: net.apply(params, a1[None], start=layer)[0, int(t[n])])(a[n]).sum(-1)
        np.testing.assert_allclose(small[n, 0], g, rtol=1e-5, atol=1e-8)
    assert small.shape[2:] == a.shape[1:3] and big.shape[2:] == (16, 16)
    np.testing.assert_allclose(big, ops.resize_bilinear(small, (16, 16)), rtol=1e-6, atol=1e-9)


def test_input_x_gradient_is_input_times_gradient(setup):
    net, params, x = setup
    t = jnp.array([[1, 4], [0, 0], [3, 2]])
    maps = input_x_gradient(net, params, x, t)
    for n in range(3):
        for k in range(2):
            np.testing.assert_allclose(maps[n, k], (np.asarray(x[n]) * _grad(net, params, x[n], int(t[n, k]))).sum(-1),
                                       rtol=1e-5, atol=1e-8)


# -- integrated gradients -----------------------------------------------------------


@pytest.mark.parametrize("method", QUADRATURES)
def test_quadrature_rules(method):
    """Weights sum to one; Gauss-Legendre with n nodes is exact on degree 2n - 1 polynomials."""
    alphas, w = quadrature(method, 8)
    np.testing.assert_allclose(w.sum(), 1.0, rtol=1e-12)
    assert np.all((alphas >= 0) & (alphas <= 1))
    exact_degree = {"gausslegendre": 15, "riemann_trapezoid": 1, "riemann_middle": 1}.get(method, 0)
    for k in range(exact_degree + 1):
        np.testing.assert_allclose(np.sum(w * alphas ** k), 1.0 / (k + 1), rtol=1e-12)


def test_integrated_gradients_completeness(setup):
    """sum IG = f(x) - f(baseline) within the quadrature error, shrinking with more steps.

    The path integrand of a ReLU net is piecewise smooth, so the quadrature error
    falls slowly; 256 Gauss-Legendre nodes bring it under 1% of the scores' scale (measured
    0.3%), at least 20 times below the error with 8 nodes (measured 26 to 94 times).
    """
    net, params, x = setup
    t = jnp.array([[0, 3], [1, 2], [4, 4]])
    apply = jax.jit(net.apply)            # compiled, not op by op: float64 ops each compile on their own
    ig_jit = jax.jit(integrated_gradients, static_argnums=0, static_argnames=("steps", "baseline", "chunk_size"))
    with jax.enable_x64(True):
        p64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params)
        x64 = jnp.asarray(x, jnp.float64)
        scale = np.abs(np.asarray(apply(p64, x64))).max()
        for baseline in ("zero", "blur", 0.5):
            b = {"zero": jnp.zeros_like(x64), "blur": ops.gaussian_blur(x64, 20.0)}.get(
                baseline, jnp.full_like(x64, 0.5))
            gap = np.take_along_axis(np.asarray(apply(p64, x64) - apply(p64, b)), np.asarray(t), 1)
            errors = []
            for steps in (8, 256):
                ig = ig_jit(net, p64, x64, t, steps=steps, baseline=baseline, chunk_size=64)
                errors.append(np.abs(np.asarray(ig).sum((2, 3)) - gap).max())
            assert errors[1] < 1e-2 * max(np.abs(gap).max(), scale), (baseline, errors, gap)
            assert errors[1] < errors[0] / 20, (baseline, errors)


def test_integrated_gradients_equals_explicit_quadrature(setup):
    """A Python loop over nodes of (x - b) * sum_i w_i grad(b + alpha_i (x - b)), any chunking."""
    net, params, x = setup
    t = jnp.array([[2, 0], [1, 1], [3, 4]])
    base = jnp.full_like(x, 0.25)
    for method in ("riemann_trapezoid", "gausslegendre"):
        alphas, w = quadrature(method, 5)
        ig = integrated_gradients(net, params, x, t, steps=5, method=method, baseline=base, reduce=None)
        chunked = integrated_gradients(net, params, x, t, steps=5, method=method, baseline=base,
                                       reduce=None, chunk_size=2)
        np.testing.assert_allclose(chunked, ig, rtol=1e-5, atol=1e-8)
        for n in range(3):
            for k in range(2):
                total = sum(wi * _grad(net, params, base[n] + ai * (x[n] - base[n]), int(t[n, k]))
                            for ai, wi in zip(alphas, w))
                np.testing.assert_allclose(ig[n, k], (x[n] - base[n]) * total, rtol=1e-4, atol=1e-7)


def test_layer_integrated_gradients_completeness(setup):
    net, params, x = setup
    layer, t = "features.4", jnp.array([0, 1, 2])
    with jax.enable_x64(True):
        p64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params)
        x64 = jnp.asarray(x, jnp.float64)
        ig = integrated_gradients(net, p64, x64, t, steps=256, layer=layer, resize=False, chunk_size=64)
        gap = (net.apply(p64, x64) - net.apply(p64, jnp.zeros_like(x64)))[jnp.arange(3), t]
        error = np.abs(np.asarray(ig).sum((1, 2, 3)) - gap).max()
        assert error < 1e-2 * np.abs(gap).max(), (error, gap)


# -- SmoothGrad -----------------------------------------------------------------------


def test_smoothgrad_variants_equal_loop_over_the_given_noise(setup):
    net, params, x = setup
    t = jnp.array([[1, 0], [2, 3], [4, 1]])
    noise = 0.1 * jax.random.normal(jax.random.key(5), (4, *x.shape))
    raws = np.stack([np.stack([np.stack([_grad(net, params, x[n] + noise[s, n], int(t[n, k]))
                                         for k in range(2)]) for n in range(3)]) for s in range(4)])
    expected = {"smoothgrad": raws.mean(0), "smoothgrad_sq": (raws ** 2).mean(0),
                "vargrad": raws.var(0)}
    for variant, ref in expected.items():
        out = smoothgrad(net, params, x, t, noise=noise, variant=variant, reduce=None)
        np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-7)
    chunked = smoothgrad(net, params, x, t, noise=noise, reduce="max_abs", chunk_size=3)
    np.testing.assert_allclose(chunked, np.abs(raws.mean(0)).max(-1), rtol=1e-4, atol=1e-7)


def test_smoothgrad_key_draws_sigma_noise_and_wraps_other_methods(setup):
    net, params, x = setup
    t = jnp.array([0, 1, 2])
    key = jax.random.key(3)
    drawn = 0.15 * jax.random.normal(key, (6, *x.shape))
    np.testing.assert_allclose(smoothgrad(net, params, x, t, key, samples=6),
                               smoothgrad(net, params, x, t, noise=drawn), rtol=1e-6)
    ig_smooth = smoothgrad(net, params, x, t, noise=drawn[:2], method=integrated_gradients, steps=3,
                           reduce="sum")
    ref = sum(integrated_gradients(net, params, x + drawn[s], t, steps=3) for s in range(2)) / 2
    np.testing.assert_allclose(ig_smooth, ref, rtol=1e-4, atol=1e-7)


# -- sharding, jit, errors ------------------------------------------------------------------


@pytest.mark.parametrize("method, options", [
    (gradient, {}), (input_x_gradient, {}), (integrated_gradients, {"steps": 4}),
    (smoothgrad, {"key": jax.random.key(0), "samples": 2}), (guided_backprop, {}),
])
def test_sharded_over_eight_devices_equals_one_device(method, options):
    net = nets.get("smallcnn", num_classes=NUM_CLASSES)
    params = net.init(jax.random.key(0))
    x = jax.random.uniform(jax.random.key(2), (8, 16, 16, 3))
    t = jnp.arange(16).reshape(8, 2) % NUM_CLASSES
    mesh = sharding.data_mesh()
    assert mesh.devices.size == 8
    xs = jax.device_put(x, NamedSharding(mesh, P("data")))
    fn = jax.jit(functools.partial(method, net, **options))
    sharded = fn(params, xs, t)
    single = fn(params, jax.device_put(x, jax.devices()[0]), t)
    assert len(sharded.sharding.device_set) == 8 or sharded.sharding.is_fully_replicated
    np.testing.assert_allclose(sharded, single, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("call, match", [
    (lambda n, p, x: gradient(n, p, x, jnp.array([0, 5, 1])), r"target: expected indices in \[0, 5\)"),
    (lambda n, p, x: gradient(n, p, x, jnp.array([0, -1, 1])), r"target: expected indices"),
    (lambda n, p, x: gradient(n, p, x, jnp.array([0, 1])), r"target: expected shape \(3,\) or \(3, T\)"),
    (lambda n, p, x: gradient(n, p, x, jnp.zeros((3, 1, 1), jnp.int32)), r"target: expected shape"),
    (lambda n, p, x: gradient(n, p, x, jnp.zeros((3, 0), jnp.int32)), r"target: expected shape"),
    (lambda n, p, x: gradient(n, p, x, jnp.array([0.0, 1.0, 2.0])), r"target: expected integer"),
    (lambda n, p, x: gradient(n, p, x, Unit("nope", jnp.zeros(3, jnp.int32))), r"target: unknown unit layer"),
    (lambda n, p, x: gradient(n, p, x, Unit("features.4", jnp.full(3, 99))), r"target.channel: expected indices"),
    (lambda n, p, x: gradient(n, p, x, Unit("features.4", jnp.zeros(3, jnp.int32), jnp.full(3, 9),
                                            jnp.zeros(3, jnp.int32))), r"target.y: expected indices"),
    (lambda n, p, x: gradient(n, p, x, Unit("features.1", jnp.zeros(3, jnp.int32)), layer="features.4"),
     r"target: unit layer 'features.1' does not come after"),
    (lambda n, p, x: gradient(n, p, x, jnp.zeros(3, jnp.int32), layer="conv9"), r"layer: unknown split point"),
    (lambda n, p, x: gradient(n, p, x, jnp.zeros(3, jnp.int32), layer="avgpool"), r"layer: activation"),
    (lambda n, p, x: gradient(n, p, x, jnp.zeros(3, jnp.int32), reduce="mean"), r"reduce: expected one of"),
    (lambda n, p, x: integrated_gradients(n, p, x, jnp.zeros(3, jnp.int32), steps=0), r"steps: expected a positive"),
    (lambda n, p, x: integrated_gradients(n, p, x, jnp.zeros(3, jnp.int32), method="simpson"), r"method: expected one of"),
    (lambda n, p, x: integrated_gradients(n, p, x, jnp.zeros(3, jnp.int32), baseline="grey"), r"baseline: "),
    (lambda n, p, x: integrated_gradients(n, p, x, jnp.zeros(3, jnp.int32), baseline=jnp.zeros((2, 2))), r"baseline: "),
    (lambda n, p, x: integrated_gradients(n, p, x, jnp.zeros(3, jnp.int32), steps=4, chunk_size=0), r"chunk_size: expected a positive"),
    (lambda n, p, x: smoothgrad(n, p, x, jnp.zeros(3, jnp.int32)), r"key: a PRNG key is required"),
    (lambda n, p, x: smoothgrad(n, p, x, jnp.zeros(3, jnp.int32), jax.random.key(0), samples=0), r"samples: expected a positive"),
    (lambda n, p, x: smoothgrad(n, p, x, jnp.zeros(3, jnp.int32), jax.random.key(0), variant="x"), r"variant: expected one of"),
    (lambda n, p, x: smoothgrad(n, p, x, jnp.zeros(3, jnp.int32), noise=jnp.zeros((2, 5, 5, 3))), r"noise: expected"),
])
def test_bad_input_raises_naming_the_argument(setup, call, match):
    net, params, x = setup
    with pytest.raises(ValueError, match=match):
        call(net, params, x)


@pytest.mark.parametrize("bad, match", [
    (jnp.zeros((16, 16, 3)), r"x: expected images of rank 4"),
    (jnp.zeros((1, 16, 16, 4)), r"x: expected images of rank 4"),
    (jnp.zeros((1, 16, 16, 3), jnp.int32), r"x: expected a floating dtype"),
    ([[0.0]], r"x: expected an array"),
])
def test_bad_images_raise(setup, bad, match):
    net, params, _ = setup
    with pytest.raises(ValueError, match=match):
        gradient(net, params, bad, jnp.zeros((1,), jnp.int32))
