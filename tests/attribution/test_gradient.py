"""Gradient saliency: float64 finite differences, vmap == loop, jit == eager, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinterp import nets
from jaxinterp.attribution import gradient
from jaxinterp.nets import rules as R

NUM_CLASSES = 5


@pytest.fixture(scope="module")
def setup():
    net = nets.get("smallcnn", num_classes=NUM_CLASSES)
    params = net.init(jax.random.key(0))
    x = jax.random.uniform(jax.random.key(1), (3, 16, 16, 3), minval=0.05, maxval=0.95)
    return net, params, x


def test_matches_float64_finite_differences(setup):
    """Central differences of the float64 logit: per channel for max|g|, all channels for signed."""
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
        signed = gradient(net, p64, x64, jnp.array([t]), signed=True)[0, 0]
        assert unsigned.dtype == jnp.float64
        for i, j in pixels:
            per_channel = [fd(jnp.zeros_like(x64).at[0, i, j, c].set(1.0)) for c in range(3)]
            grey = fd(jnp.zeros_like(x64).at[0, i, j, :].set(1.0))
            np.testing.assert_allclose(unsigned[i, j], max(map(abs, per_channel)), rtol=1e-6, atol=1e-9)
            np.testing.assert_allclose(signed[i, j], grey, rtol=1e-6, atol=1e-9)
    assert np.abs(np.asarray(signed)).max() > 0


@pytest.mark.parametrize("rules", [None, R.GUIDED])
@pytest.mark.parametrize("signed", [False, True])
def test_vmap_over_images_and_targets_equals_loop(setup, rules, signed):
    net, params, x = setup
    targets = jnp.array([[0, 4], [2, 2], [1, 3]])
    maps = gradient(net, params, x, targets, signed=signed, rules=rules)
    assert maps.shape == (3, 2, 16, 16)
    for n in range(3):
        for k in range(2):
            t = int(targets[n, k])
            g = np.asarray(jax.grad(lambda x1: net.apply(params, x1[None], rules=rules)[0, t])(x[n]))
            ref = g.sum(-1) if signed else np.abs(g).max(-1)
            np.testing.assert_allclose(maps[n, k], ref, rtol=1e-5, atol=1e-7)


def test_guided_differs_from_standard(setup):
    net, params, x = setup
    t = jnp.array([0, 1, 2])
    assert not np.allclose(gradient(net, params, x, t, signed=True),
                           gradient(net, params, x, t, signed=True, rules=R.GUIDED))


def test_vector_targets_are_one_column(setup):
    net, params, x = setup
    t = jnp.array([4, 0, 1])
    np.testing.assert_array_equal(gradient(net, params, x, t), gradient(net, params, x, t[:, None]))
    assert gradient(net, params, x, t).shape == (3, 1, 16, 16)


def test_jit_equals_eager(setup):
    net, params, x = setup
    targets = jnp.array([[1, 0], [3, 4], [2, 1]])
    jitted = jax.jit(gradient, static_argnames=("net", "signed", "rules"))
    for signed in (False, True):
        np.testing.assert_allclose(jitted(net, params, x, targets, signed=signed),
                                   gradient(net, params, x, targets, signed=signed),
                                   rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("target, match", [
    (jnp.array([0, 5, 1]), r"target: expected class indices in \[0, 5\)"),
    (jnp.array([0, -1, 1]), r"target: expected class indices"),
    (jnp.array([0, 1]), r"target: expected shape \(3,\) or \(3, T\)"),
    (jnp.zeros((3, 1, 1), jnp.int32), r"target: expected shape"),
    (jnp.zeros((3, 0), jnp.int32), r"target: expected shape"),
    (jnp.array(2), r"target: expected shape"),
    (jnp.array([0.0, 1.0, 2.0]), r"target: expected integer"),
])
def test_bad_target_raises(setup, target, match):
    net, params, x = setup
    with pytest.raises(ValueError, match=match):
        gradient(net, params, x, target)


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
