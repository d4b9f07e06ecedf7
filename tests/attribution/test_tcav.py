"""TCAV: a planted concept direction, CAVs of image sets == CAVs of their activations (vmap == loop),
directional derivatives against float64 finite differences, the scores, the t-test against scipy,
jit == eager, sharding, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from _small_nets import small_setup
from jaxinterp.attribution.tcav import (cav_accuracy, concept_activation_vectors, directional_derivatives,
                                        fit_cav, t_test, tcav)
from jaxinterp.train.sharding import data_mesh, shard_batch

LAYER = "features.5"              # (4, 4, 6) at 16 px
TARGETS = np.array([[0, 3], [2, 4], [1, 1], [3, 0], [4, 2], [1, 0], [2, 2], [0, 4]], np.int32)  # (8, 2)


@pytest.fixture(scope="module")
def setup():
    """The net, 8 images and the jitted TCAV (its derivatives are :func:`directional_derivatives`)."""
    net, params, x = small_setup()
    x = jnp.concatenate([x, x[::-1] * 0.9, x[:2] * 0.8])
    return net, params, x, jax.jit(tcav, static_argnames=("net", "layer"))


@pytest.fixture(scope="module")
def cavs_fn():
    return jax.jit(concept_activation_vectors, static_argnames=("net", "layer", "max_iters"))


def test_planted_concept_direction():
    """Concept activations are random ones shifted along a planted direction d: the CAV is d."""
    rng = np.random.default_rng(0)
    d = rng.normal(size=(2, 2, 3))
    d /= np.linalg.norm(d)
    random = rng.normal(size=(2, 200, 2, 2, 3)).astype(np.float32)
    concept = (rng.normal(size=(200, 2, 2, 3)) + 1.5 * d).astype(np.float32)   # overlapping: logistic -> d
    fit = jax.jit(jax.vmap(fit_cav, in_axes=(None, 0)))
    cav = fit(jnp.asarray(concept), jnp.asarray(random))
    assert cav.vector.shape == (2, 2, 2, 3) and cav.offset.shape == (2,)
    np.testing.assert_allclose(np.linalg.norm(np.asarray(cav.vector).reshape(2, -1), axis=1), 1.0, rtol=1e-5)
    cosine = np.asarray(cav.vector).reshape(2, -1) @ d.reshape(-1)
    assert np.all(cosine > 0.95), cosine
    # held-out activations: near the Bayes accuracy Phi(0.75) = 0.77; the swapped sets 1 - that
    test_c = (rng.normal(size=(500, 2, 2, 3)) + 1.5 * d).astype(np.float32)
    test_r = rng.normal(size=(500, 2, 2, 3)).astype(np.float32)
    accuracy = jax.jit(cav_accuracy)
    assert np.all(np.abs(np.asarray(accuracy(cav, test_c, test_r)) - 0.77) < 0.05)
    assert np.all(np.abs(np.asarray(accuracy(cav, test_r, test_c)) - 0.23) < 0.05)


def test_image_cavs_equal_activation_cavs(setup, cavs_fn):
    """One concept set against R = 2 random sets (vmap) == fit_cav on each pair of activation sets."""
    net, params, *_ = setup
    rng = np.random.default_rng(1)
    stripes = np.zeros((8, 16, 16, 3), np.float32)
    stripes[:, :, ::4] = 1.0
    concept = np.clip(stripes + rng.uniform(0, 0.3, stripes.shape), 0, 1).astype(np.float32)
    randoms = rng.uniform(0, 1, (2, 8, 16, 16, 3)).astype(np.float32)
    cav = cavs_fn(net, params, concept, randoms, layer=LAYER)
    assert cav.vector.shape == (2, 4, 4, 6)
    acts = jax.jit(lambda a: net.apply(params, a, stop=LAYER))
    fit = jax.jit(fit_cav)
    for r in range(2):
        one = fit(acts(concept), acts(randoms[r]))
        np.testing.assert_allclose(cav.vector[r], one.vector, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(cav.offset[r], one.offset, rtol=1e-4, atol=1e-5)
        # a concept this distinct is separated on the training sets
        assert float(cav_accuracy(one._replace(vector=one.vector[None], offset=one.offset[None]),
                                  acts(concept), acts(randoms[r]))[0]) == 1.0


def test_derivatives_against_finite_differences_and_scores(setup):
    """S[n, t, r] == (s_t(a_n + h v_r) - s_t(a_n - h v_r)) / 2h, the net's tail in float64;
    sign_count and magnitude from S; a CAV along an input's own gradient has S > 0 there."""
    net, params, x, tcav_fn = setup
    cavs = np.random.default_rng(2).normal(size=(2, 4, 4, 6))
    scores = tcav_fn(net, params, x, TARGETS, jnp.asarray(cavs, jnp.float32), layer=LAYER)
    s = np.asarray(scores.derivatives)
    assert s.shape == (8, 2, 2)
    np.testing.assert_array_equal(scores.sign_count, (s > 0).mean(0))
    np.testing.assert_allclose(scores.magnitude, s.mean(0), rtol=1e-6, atol=1e-9)
    with jax.enable_x64(True):
        p64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params)
        a = np.asarray(net.apply(p64, jnp.asarray(x, jnp.float64), stop=LAYER))
        tail = jax.jit(lambda z: net.apply(p64, z, start=LAYER))
        h = 1e-6
        plus = np.asarray(tail(jnp.asarray(a[:, None] + h * cavs[None]).reshape(16, 4, 4, 6))).reshape(8, 2, -1)
        minus = np.asarray(tail(jnp.asarray(a[:, None] - h * cavs[None]).reshape(16, 4, 4, 6))).reshape(8, 2, -1)
    fd = (plus - minus) / (2 * h)                                      # (N, R, classes)
    want = np.take_along_axis(fd, TARGETS[:, None, :], axis=2).transpose(0, 2, 1)
    np.testing.assert_allclose(s, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())
    # a CAV along the gradient of input 0's first target: S[0, 0] = |g| > 0, and -g gives < 0
    g = jax.jit(jax.grad(lambda z: net.apply(params, z[None], start=LAYER)[0, TARGETS[0, 0]]))(
        net.apply(params, x[:1], stop=LAYER)[0])
    v = jnp.stack([g, -g]) / jnp.linalg.norm(g)
    s = np.asarray(tcav_fn(net, params, x, TARGETS, v, layer=LAYER).derivatives)
    np.testing.assert_allclose(s[0, 0], [np.linalg.norm(g), -np.linalg.norm(g)], rtol=1e-5)


def test_jit_equals_eager_loop_and_sharded(setup):
    net, params, x, tcav_fn = setup
    cavs = jnp.asarray(np.random.default_rng(3).normal(size=(2, 4, 4, 6)), jnp.float32)
    batched = np.asarray(tcav_fn(net, params, x, TARGETS, cavs, layer=LAYER).derivatives)
    eager = directional_derivatives(net, params, x[:1], TARGETS[:1, :1], cavs, layer=LAYER)
    np.testing.assert_allclose(eager, batched[:1, :1], rtol=1e-5, atol=1e-6)
    derivs = jax.jit(directional_derivatives, static_argnames=("net", "layer"))
    for n in (0, 4, 7):           # vmap over images and targets == one image at a time
        np.testing.assert_allclose(derivs(net, params, x[n:n + 1], TARGETS[n:n + 1], cavs, layer=LAYER),
                                   batched[n:n + 1], rtol=1e-5, atol=1e-6)
    xs, ts = shard_batch((x, jnp.asarray(TARGETS)), data_mesh())
    sharded = tcav_fn(net, params, xs, ts, cavs, layer=LAYER)
    assert len(sharded.derivatives.sharding.device_set) == 8
    np.testing.assert_allclose(sharded.derivatives, batched, rtol=1e-5, atol=1e-6)


def test_t_test_against_scipy():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(4)
    with jax.enable_x64(True):
        for na, nb, shift in ((10, 10, 0.1), (2, 1, 1.0)):
            a, b = rng.uniform(0.3, 0.8, na) + shift, rng.uniform(0.3, 0.8, nb)
            t, p = jax.jit(t_test)(jnp.asarray(a), jnp.asarray(b))
            want = stats.ttest_ind(a, b)
            np.testing.assert_allclose([t, p], [want.statistic, want.pvalue], rtol=1e-9)


@pytest.mark.parametrize("call, match", [
    (lambda net, p, x: concept_activation_vectors(net, p, x[0], x, layer=LAYER), r"^concept: "),
    (lambda net, p, x: concept_activation_vectors(net, p, x, x[None, ..., :2], layer=LAYER), r"^counterexamples: "),
    (lambda net, p, x: concept_activation_vectors(net, p, jnp.stack([x] * 2), jnp.stack([x] * 3),
                                                  layer=LAYER), r"^concept: expected 1 or 3 sets"),
    (lambda net, p, x: concept_activation_vectors(net, p, x, x, layer="nope"), r"^layer: "),
    (lambda net, p, x: directional_derivatives(net, p, x, TARGETS, jnp.zeros((2, 4, 4, 5)), layer=LAYER),
     r"^cavs: "),
    (lambda net, p, x: directional_derivatives(net, p, x, TARGETS[:3], jnp.zeros((2, 4, 4, 6)), layer=LAYER),
     r"^target: "),
    (lambda net, p, x: tcav(net, p, x[0], TARGETS, jnp.zeros((2, 4, 4, 6)), layer=LAYER), r"^x: "),
    (lambda net, p, x: t_test(jnp.ones((2, 2)), jnp.ones(3)), r"^a: "),
    (lambda net, p, x: t_test(jnp.ones(1), jnp.ones(1)), r"^b: "),
])
def test_bad_input(setup, call, match):
    net, params, x, _ = setup
    with pytest.raises(ValueError, match=match):
        call(net, params, x)
