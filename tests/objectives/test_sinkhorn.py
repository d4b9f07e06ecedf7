"""Sinkhorn self-labelling and SwAV codes against float64 NumPy oracles; sharding; vmap; bad input."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinterp.objectives import sinkhorn_labels, soft_assignments, swav_codes
from jaxinterp.train import sharding
from _objective_oracles import log_softmax64, sela_float64, swav_float64


def _logits(n, k, scale, seed=0):
    return (np.random.default_rng(seed).normal(size=(n, k)) * scale).astype(np.float32)


def _marginal_error(logits, log_r, lam):
    """max_k |K mean_n softmax(lam l + u)_nk - 1|, in float64."""
    y = lam * np.asarray(logits, np.float64) + np.asarray(log_r, np.float64)
    y -= y.max(1, keepdims=True)
    q = np.exp(y)
    q /= q.sum(1, keepdims=True)
    return np.abs(q.mean(0) * q.shape[1] - 1).max()


def test_sela_k3000_lambda25_near_uniform_float32_equals_float64_oracle():
    n, k, lam = 6000, 3000, 25.0
    logits = _logits(n, k, 0.05)      # near-uniform, as at initialisation: p ~ 1/3000, p^25 ~ 1e-87
    assert np.all(logits.astype(np.float32).dtype == np.float32)
    expected, q64, _ = sela_float64(logits, lam)
    res = sinkhorn_labels(jnp.asarray(logits), lam=lam, tol=1e-5)
    assert res.labels.dtype == jnp.int32 and res.labels.shape == (n,)
    assert res.log_r.dtype == jnp.float32 and np.all(np.isfinite(np.asarray(res.log_r)))
    np.testing.assert_array_equal(np.asarray(res.labels), expected)
    assert float(res.error) <= 1e-5
    assert _marginal_error(logits, res.log_r, lam) <= 2e-5          # checked in float64
    assert np.isfinite(float(res.sela_error)) and int(res.iterations) >= 1
    # the soft assignment is the oracle's N Q
    soft = np.asarray(soft_assignments(jnp.asarray(logits), res.log_r, lam=lam))
    np.testing.assert_allclose(soft, q64 * n, atol=2e-4)


@pytest.mark.parametrize("scale,lam", [(1.0, 10.0), (3.0, 25.0)])
def test_sela_peaked_equals_float64_oracle(scale, lam):
    n, k = 1200, 40
    logits = _logits(n, k, scale, seed=1)
    expected, q64, it64 = sela_float64(logits, lam)
    res = sinkhorn_labels(jnp.asarray(logits), lam=lam, tol=1e-5, max_iters=20000)
    np.testing.assert_array_equal(np.asarray(res.labels), expected)
    assert float(res.error) <= 1e-5 and _marginal_error(logits, res.log_r, lam) <= 3e-5
    # the equipartition the constraint asks for: each cluster near N / K images
    counts = np.bincount(np.asarray(res.labels), minlength=k)
    assert counts.min() > 0


def test_logits_and_log_probabilities_give_the_same_labels():
    logits = _logits(500, 20, 2.0)
    a = sinkhorn_labels(jnp.asarray(logits), lam=10.0, tol=1e-5)
    logp = jax.nn.log_softmax(jnp.asarray(logits), -1) + 7.0
    b = sinkhorn_labels(logp, lam=10.0, tol=1e-5)
    np.testing.assert_array_equal(np.asarray(a.labels), np.asarray(b.labels))


def test_stops_at_tol_and_reports_both_criteria():
    logits = jnp.asarray(_logits(800, 30, 1.0))
    loose = sinkhorn_labels(logits, lam=25.0, tol=1e-2)
    tight = sinkhorn_labels(logits, lam=25.0, tol=1e-6, max_iters=5000)
    assert float(loose.error) <= 1e-2 and float(tight.error) <= 1e-6
    assert int(loose.iterations) < int(tight.iterations)
    assert float(tight.sela_error) < float(loose.sela_error)
    capped = sinkhorn_labels(logits, lam=25.0, tol=1e-6, max_iters=2)
    assert int(capped.iterations) == 2 and float(capped.error) > 1e-6


def test_gradients_are_stopped_and_jit():
    logits = jnp.asarray(_logits(200, 10, 1.0))
    g = jax.grad(lambda l: jnp.sum(sinkhorn_labels(l, lam=5.0).log_r))(logits)
    np.testing.assert_array_equal(np.asarray(g), 0.0)
    jitted = jax.jit(functools.partial(sinkhorn_labels, lam=5.0, tol=1e-4))(logits)
    eager = sinkhorn_labels(logits, lam=5.0, tol=1e-4)
    np.testing.assert_array_equal(np.asarray(jitted.labels), np.asarray(eager.labels))


def test_heads_vmap_equals_loop():
    heads = jnp.asarray(np.stack([_logits(300, 12, s, seed=i) for i, s in enumerate((0.1, 1.0, 3.0))]))
    res = sinkhorn_labels(heads, lam=25.0, tol=1e-4)
    assert res.labels.shape == (3, 300) and res.log_r.shape == (3, 12) and res.iterations.shape == (3,)
    for h in range(3):
        one = sinkhorn_labels(heads[h], lam=25.0, tol=1e-4)
        np.testing.assert_array_equal(np.asarray(res.labels[h]), np.asarray(one.labels))
        assert int(res.iterations[h]) == int(one.iterations)
        np.testing.assert_allclose(np.asarray(res.log_r[h]), np.asarray(one.log_r), rtol=1e-5, atol=1e-4)
    assert len(set(np.asarray(res.iterations).tolist())) > 1   # each head stops on its own


def _sharded_sinkhorn(logits, axis_name, **kw):
    mesh = sharding.data_mesh()
    f = jax.shard_map(lambda l: tuple(sinkhorn_labels(l, axis_name=axis_name, **kw)), mesh=mesh,
                      in_specs=jax.P("data"),
                      out_specs=(jax.P("data"), jax.P(), jax.P(), jax.P(), jax.P()),
                      check_vma=axis_name is not None)
    return jax.jit(f)(sharding.shard_batch(logits, mesh))


def test_sharded_equals_single_device_one_psum_per_iteration():
    logits = _logits(800, 24, 2.0)
    one = sinkhorn_labels(jnp.asarray(logits), lam=25.0, tol=1e-4)
    labels, log_r, it, err, sela = _sharded_sinkhorn(logits, "data", lam=25.0, tol=1e-4)
    np.testing.assert_array_equal(np.asarray(labels), np.asarray(one.labels))
    np.testing.assert_allclose(np.asarray(log_r), np.asarray(one.log_r), rtol=1e-5, atol=1e-3)
    assert int(it) == int(one.iterations)
    np.testing.assert_allclose(float(err), float(one.error), atol=1e-6)
    # SeLa's criterion sums N residuals near float32 rounding, so the order of the sums moves it by a
    # few per cent (3 % between XLA's optimisation levels); a per-device sum without the psum is ~1/8.
    np.testing.assert_allclose(float(sela), float(one.sela_error), rtol=0.1, atol=1e-6)
    # the loop body holds exactly one psum, of a (K + 1)-vector
    mesh = sharding.data_mesh()
    f = jax.shard_map(lambda l: sinkhorn_labels(l, lam=25.0, axis_name="data").log_r, mesh=mesh,
                      in_specs=jax.P("data"), out_specs=jax.P())
    text = str(jax.make_jaxpr(f)(sharding.shard_batch(logits, mesh)))
    body = text[text.index("while["):]
    assert body.count("psum") == 1 and "f32[25]" in body
    # negative control: without the psum each device equipartitions its own rows only
    bad_labels, bad_r, *_ = _sharded_sinkhorn(logits, None, lam=25.0, tol=1e-4)
    assert not np.array_equal(np.asarray(bad_labels), np.asarray(one.labels))


def test_swav_codes_equal_float64_oracle():
    rng = np.random.default_rng(3)
    z = rng.normal(size=(64, 16))
    c = rng.normal(size=(30, 16))
    scores = (z / np.linalg.norm(z, axis=1, keepdims=True)) @ (c / np.linalg.norm(c, axis=1, keepdims=True)).T
    for eps, iters in ((0.05, 3), (0.1, 1), (0.05, 10)):
        q = swav_codes(jnp.asarray(scores, jnp.float32), epsilon=eps, iterations=iters)
        np.testing.assert_allclose(np.asarray(q), swav_float64(scores, eps, iters), rtol=2e-4, atol=1e-6)
    # log domain: unnormalised scores (exp(100 / 0.05) overflows) stay finite
    q = swav_codes(jnp.asarray(scores * 100, jnp.float32))
    assert np.all(np.isfinite(np.asarray(q))) and np.allclose(np.asarray(q).sum(1), 1, atol=1e-5)


def test_swav_codes_sharded_equals_single_device():
    scores = _logits(64, 30, 0.3, seed=4)
    mesh = sharding.data_mesh()
    one = np.asarray(swav_codes(jnp.asarray(scores)))
    for axis_name, equal in (("data", True), (None, False)):
        f = jax.shard_map(functools.partial(swav_codes, axis_name=axis_name), mesh=mesh,
                          in_specs=jax.P("data"), out_specs=jax.P("data"),
                          check_vma=axis_name is not None)
        out = np.asarray(jax.jit(f)(sharding.shard_batch(scores, mesh)))
        assert np.allclose(out, one, rtol=1e-4, atol=1e-6) == equal


@pytest.mark.parametrize("kwargs,arg", [
    (dict(logits=np.full((10, 4), np.nan, np.float32)), "logits"),
    (dict(logits=np.array([[0.0, np.inf]] * 5, np.float32)), "logits"),
    (dict(logits=np.zeros((5, 8), np.float32)), "logits"),          # K > N
    (dict(logits=np.zeros(5, np.float32)), "logits"),
    (dict(logits=np.zeros((5, 2), np.int32)), "logits"),
    (dict(logits=np.zeros((10, 4), np.float32), lam=0.0), "lam"),
    (dict(logits=np.zeros((10, 4), np.float32), tol=-1.0), "tol"),
    (dict(logits=np.zeros((10, 4), np.float32), max_iters=0), "max_iters"),
])
def test_bad_input(kwargs, arg):
    with pytest.raises(ValueError, match=arg):
        sinkhorn_labels(**kwargs)


def test_swav_bad_input():
    with pytest.raises(ValueError, match="scores"):
        swav_codes(np.full((4, 3), np.nan, np.float32))
    with pytest.raises(ValueError, match="epsilon"):
        swav_codes(np.zeros((4, 3), np.float32), epsilon=0.0)
    with pytest.raises(ValueError, match="iterations"):
        swav_codes(np.zeros((4, 3), np.float32), iterations=0)


def test_cluster_beyond_float64_range_still_gets_its_share():
    # cluster 0 is 50 logits down for every image: P^25 ~ e^-1250 underflows even in float64
    # (SeLa's scaling form divides by zero); the log domain raises its scaling step by step.
    logits = _logits(400, 8, 1.0, seed=9)
    logits[:, 0] -= 50.0
    with np.errstate(all="ignore"):
        p = np.exp(25.0 * log_softmax64(logits))
    assert np.all(p[:, 0] == 0.0)
    res = sinkhorn_labels(jnp.asarray(logits), lam=25.0, tol=1e-4, max_iters=5000)
    assert float(res.error) <= 1e-4 and np.all(np.isfinite(np.asarray(res.log_r)))
    counts = np.bincount(np.asarray(res.labels), minlength=8)
    assert abs(counts[0] - 50) <= 2, counts
