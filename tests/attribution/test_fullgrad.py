"""FullGrad: the full-gradient completeness identity, bias gradients against autodiff in the params,
the post-processing in NumPy, vmap == loop, sharding, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from _small_nets import small_setup
from jaxinterp import ops
from jaxinterp.attribution.fullgrad import bias_gradients, fullgrad
from jaxinterp.train.sharding import data_mesh, shard_batch

TARGETS = np.array([[0, 3], [2, 4], [1, 1], [3, 0], [4, 2], [1, 0], [2, 2], [0, 4]], np.int32)  # (8, 2)


@pytest.fixture(scope="module")
def setup():
    """The net, 8 images, the jitted bias gradients and FullGrad, and the maps of the 8 x 2 targets."""
    net, params, x = small_setup()
    x = jnp.concatenate([x, x[::-1] * 0.9, x[:2] * 0.8])
    grads = jax.jit(lambda p, x1, t: bias_gradients(net, p, x1, t))
    jitted = jax.jit(fullgrad, static_argnums=0)
    return net, params, x, grads, jitted, np.asarray(jitted(net, params, x, TARGETS))


def test_completeness_and_bias_gradients(setup):
    """A ReLU / max-pool net is affine around x: f(x) = dx . (x - mean) + sum_l b_l . g_l + b_cls[t]
    (the input normalisation (x - mean) / std being the first affine map, the classifier's bias the
    last); and the gradient with respect to each conv's bias param is its map summed over positions."""
    net, params, x, grads, *_ = setup
    by_params = jax.jit(jax.value_and_grad(lambda p, x1, t: net.apply(p, x1[None])[0, t]))
    for n, t in ((0, 0), (1, 4)):
        dx, layers = grads(params, x[n], t)
        assert [(b.shape, g.shape) for b, g in layers] == [((4,), (16, 16, 4)), ((6,), (8, 8, 6)),
                                                           ((8,), (4, 4, 8)), ((8,), (2, 2, 8))]
        f, biases = by_params(params, x[n], t)
        terms = [np.sum(np.float64(dx) * (np.float64(x[n]) - net.mean)), params["classifier"]["bias"][t]]
        terms += [np.sum(np.float64(b) * np.float64(g)) for b, g in layers]
        assert abs(float(f) - float(np.sum(terms))) <= 1e-5 * max(1.0, np.abs(terms).sum())
        for (b, g), name in zip(layers, ("0", "3", "6", "9")):
            np.testing.assert_array_equal(b, params["features"][name]["bias"])
            np.testing.assert_allclose(np.asarray(g).sum((0, 1)), biases["features"][name]["bias"],
                                       rtol=1e-4, atol=1e-6)


def _psi(m, hw):
    """NumPy: |m| (h, w, C) min-max scaled per channel, summed over channels, resized to hw."""
    m = np.abs(np.asarray(m, np.float64))
    m = m - m.min((0, 1))
    m = m / (m.max((0, 1)) + 1e-7)
    return np.asarray(ops.resize_bilinear(jnp.asarray(m.sum(-1)), hw))


def test_map_is_the_sum_of_scaled_terms_and_vmap_equals_loop(setup):
    net, params, x, grads, _, maps = setup
    assert maps.shape == (8, 2, 16, 16) and maps.min() >= 0
    for n, k in ((0, 0), (0, 1), (4, 1), (7, 0)):
        dx, layers = grads(params, x[n], TARGETS[n, k])
        want = _psi(x[n] * dx, (16, 16)) + sum(_psi(b * g, (16, 16)) for b, g in layers)
        np.testing.assert_allclose(maps[n, k], want, rtol=1e-5, atol=1e-5)
    # each channel's scaled map is at most 1: 3 input channels, 4 + 6 + 8 + 8 layer channels
    assert maps.max() <= 29.0


def test_sharded_equals_single_device(setup):
    """(FullGrad's eager run is not compared with its jitted one: op by op it took 13 s of the 2-core
    budget; every other test here runs it under jit, and bias_gradients' jitted terms rebuild the map.)"""
    net, params, x, _, jitted, maps = setup
    xs, ts = shard_batch((x, jnp.asarray(TARGETS)), data_mesh())
    sharded = jitted(net, params, xs, ts)
    assert len(sharded.sharding.device_set) == 8
    np.testing.assert_allclose(sharded, maps, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("x_bad, target, match", [
    (np.zeros((2, 16, 16)), [0, 1], r"^x: "),
    (np.zeros((2, 16, 16, 3), np.float32), [0, 9], r"^target: "),
    (np.zeros((2, 16, 16, 3), np.float32), [0.5, 1.0], r"^target: "),
])
def test_bad_input(setup, x_bad, target, match):
    net, params, *_ = setup
    with pytest.raises(ValueError, match=match):
        fullgrad(net, params, x_bad, np.asarray(target))
