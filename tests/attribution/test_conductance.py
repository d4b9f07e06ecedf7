"""Layer conductance, internal influence, neuron conductance: closed forms through a linear tail, neuron
conductance summed over a layer == integrated gradients, a loop over path segments, chunking, jit,
sharding, bad input.  Methods are jitted once per module; shapes are shared."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinterp.attribution.conductance import internal_influence, layer_conductance, neuron_conductance
from jaxinterp.attribution.gradient import integrated_gradients, quadrature
from jaxinterp.train.sharding import data_mesh, shard_batch
from tests.attribution._small_nets import NUM_CLASSES, small_setup

TARGETS = np.array([[0, 3], [1, 4], [2, 2]], np.int32)
LAYER_STATIC = ("net", "layer", "steps", "method", "reduce", "resize", "chunk_size")
LC = jax.jit(layer_conductance, static_argnames=LAYER_STATIC)
II = jax.jit(internal_influence, static_argnames=LAYER_STATIC)


@pytest.fixture(scope="module")
def small64():
    with jax.enable_x64(True):
        net, params, x = small_setup()
        yield (net, jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params), jnp.asarray(x, jnp.float64),
               jnp.asarray(np.random.default_rng(7).uniform(size=x.shape[1:])))


def test_linear_tail_closed_forms(small64):
    """At ``avgpool`` the tail is the linear classifier, s_t = W[:, t] . a + b: internal influence is
    W[:, t] (the weights sum to 1) and conductance W[:, t] * (a(x) - a(x0)) on the trapezoid nodes 0 ... 1."""
    net, params, x, base = small64
    w = np.asarray(params["classifier"]["kernel"])
    with jax.enable_x64(True):
        a, a0 = net.apply(params, x, stop="avgpool"), net.apply(params, base[None], stop="avgpool")
        cond = LC(net, params, x, TARGETS, layer="avgpool", baseline=base, steps=5, method="riemann_trapezoid",
                  reduce=None, resize=False)
        influence = II(net, params, x, TARGETS, layer="avgpool", baseline=base, steps=5, reduce=None, resize=False)
    expected_w = np.moveaxis(w[:, TARGETS], 0, -1)                    # (N, T, 8)
    np.testing.assert_allclose(influence, expected_w, rtol=1e-10)
    np.testing.assert_allclose(cond, expected_w * np.asarray(a - a0)[:, None], rtol=1e-9, atol=1e-14)


def test_neuron_conductance_sums_to_integrated_gradients(small64):
    """Summed over all 8 neurons of ``avgpool`` (one vmap over the neuron index), neuron conductance is IG."""
    net, params, x, base = small64
    kw = dict(baseline=base, steps=3, method="gausslegendre", reduce=None)
    x, t = x[:1], TARGETS[:1]
    per_neuron = jax.jit(jax.vmap(lambda j: neuron_conductance(net, params, x, t, layer="avgpool",
                                                               neuron=(j,), chunk_size=2, **kw)))
    with jax.enable_x64(True):
        total = per_neuron(jnp.arange(8)).sum(0)
        ig = jax.jit(lambda: integrated_gradients(net, params, x, t, **kw))()
    np.testing.assert_allclose(total, ig, rtol=1e-9, atol=1e-12)


def test_conductance_loop_oracle_and_chunking(small64):
    """At features.4: a loop over path segments of grad s_t(a_k) . (a_{k+1} - a_k); chunking.

    (Summed over the layer it tends to s_t(x) - s_t(x0) as 1 / steps on this kinky
    random net: 2e-2 of the score's range at 1024 steps; exact through a linear tail above.)
    """
    net, params, x, base = small64
    kw = dict(layer="features.4", baseline=base, steps=4, method="gausslegendre", reduce=None, resize=False)
    with jax.enable_x64(True):
        cond = LC(net, params, x, TARGETS, **kw)
        np.testing.assert_allclose(LC(net, params, x, TARGETS, chunk_size=3, **kw), cond, rtol=1e-10, atol=1e-14)
        head = jax.jit(lambda a: net.apply(params, a[None], stop="features.4")[0])
        tail_grad = jax.jit(jax.grad(lambda a, c: net.apply(params, a[None], start="features.4")[0, c]))
        alphas = quadrature("gausslegendre", 5)[0]
        for n, k in ((0, 1), (2, 0)):
            acts = [head(base + alpha * (x[n] - base)) for alpha in alphas]
            oracle = sum(tail_grad(acts[i], TARGETS[n, k]) * (acts[i + 1] - acts[i]) for i in range(4))
            np.testing.assert_allclose(cond[n, k], oracle, rtol=1e-9, atol=1e-13)


def test_jit_eager_and_sharding():
    """float32, internal influence at features.5 resized to the image: jit == eager, 8 devices == 1."""
    net, params, x = small_setup()
    x = jnp.concatenate([x, x[::-1], x[:2]])
    t = jnp.asarray(np.random.default_rng(3).integers(0, NUM_CLASSES, (8, 2)), jnp.int32)
    kw = dict(layer="features.5", baseline=0.5, steps=3)
    single = II(net, params, x, t, **kw)
    assert single.shape == (8, 2) + x.shape[1:3]
    np.testing.assert_allclose(internal_influence(net, params, x, t, **kw), single, rtol=1e-4, atol=1e-6)
    xs, ts = shard_batch((x, t), data_mesh())
    sharded = II(net, params, xs, ts, **kw)
    assert len(sharded.sharding.device_set) == 8
    np.testing.assert_allclose(sharded, single, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("fn, kwargs, match", [
    (layer_conductance, {"layer": None}, r"^layer: a split point"),
    (internal_influence, {"layer": "features.9x"}, r"^layer:"),
    (layer_conductance, {"layer": "features.4", "method": "simpson"}, r"^method:"),
    (internal_influence, {"layer": "features.4", "steps": 0}, r"^steps:"),
    (layer_conductance, {"layer": "features.4", "baseline": 3.0}, r"^baseline:"),
    (neuron_conductance, {"layer": "features.4", "neuron": (1, 2)}, r"^neuron:"),
    (neuron_conductance, {"layer": "features.4", "neuron": (1, 2, 6)}, r"^neuron:"),
    (neuron_conductance, {"layer": "features.4", "neuron": (1, 2, 0), "reduce": "mean"}, r"^reduce:"),
])
def test_bad_input(fn, kwargs, match):
    net, params, x = small_setup()
    with pytest.raises(ValueError, match=match):
        fn(net, params, x, jnp.array([0, 1, 2]), **kwargs)
