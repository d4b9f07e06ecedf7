"""The stabilised scaling solver of sinkhorn_labels (method='scaling', the default) against the
float64 oracle and the log-domain solver: peaked and flat scores, extreme lambda, absorption,
jit, vmap and sharding."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinterp.objectives import sinkhorn_labels
from jaxinterp.objectives.sinkhorn import _ABSORB_AT, METHODS
from jaxinterp.train import sharding
from _objective_oracles import sela_float64


def _logits(n, k, scale, seed=0, hot=0.0):
    """N(0, scale^2) logits plus ``hot`` on one random cluster per image (a trained head)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, k)) * scale
    x[np.arange(n), rng.integers(0, k, n)] += hot
    return x.astype(np.float32)


def _marginal_error64(logits, log_r, lam):
    """max_k |K mean_n softmax(lam l + u)_nk - 1|, in float64."""
    y = lam * np.asarray(logits, np.float64) + np.asarray(log_r, np.float64)
    y -= y.max(1, keepdims=True)
    q = np.exp(y)
    q /= q.sum(1, keepdims=True)
    return np.abs(q.mean(0) * q.shape[1] - 1).max()


def _both(logits, **kw):
    return {m: sinkhorn_labels(jnp.asarray(logits), method=m, **kw) for m in METHODS}


@pytest.mark.parametrize("name,logits,lam", [
    ("flat", _logits(3000, 500, 0.05), 25.0),                  # p ~ 1/500: P^25 ~ 1e-67 underflows float32
    ("peaked", _logits(1200, 40, 1.0, seed=1, hot=4.0), 25.0),   # log-scalings span 50: absorbed
    ("peaked_cifar", _logits(1200, 40, 3.0, seed=2), 10.0),
])
def test_scaling_equals_float64_oracle_and_log_domain(name, logits, lam):
    expected, q64, _ = sela_float64(logits, lam)
    res = _both(logits, lam=lam, tol=1e-5, max_iters=20000)
    for method, r in res.items():
        np.testing.assert_array_equal(np.asarray(r.labels), expected, err_msg=method)
        assert float(r.error) <= 1e-5 and _marginal_error64(logits, r.log_r, lam) <= 3e-5, method
        assert np.isfinite(float(r.sela_error)) and np.all(np.isfinite(np.asarray(r.log_r))), method
    s, g = res["scaling"], res["log"]
    # the same iteration: the same number of steps, log-scalings equal to float32 rounding of their range
    assert abs(int(s.iterations) - int(g.iterations)) <= max(2, int(g.iterations) // 100)
    u_s, u_g = np.asarray(s.log_r), np.asarray(g.log_r)
    np.testing.assert_allclose(u_s - u_s.mean(), u_g - u_g.mean(), atol=2e-5 * max(1.0, np.ptp(u_g)))


def test_peaked_scores_absorb_and_stay_equal_to_the_log_domain():
    # lambda 25 on logits with a +8 hot cluster: the log-scalings end 150 apart, far outside the
    # e^20 a scaling may reach from its potential, so the solver absorbed on the way.
    logits = _logits(2000, 100, 1.0, seed=3, hot=8.0)
    res = _both(logits, lam=25.0, tol=1e-3, max_iters=20000)
    assert np.abs(np.asarray(res["scaling"].log_r)).max() > 3 * _ABSORB_AT
    assert abs(int(res["scaling"].iterations) - int(res["log"].iterations)) <= 20
    assert float(res["scaling"].error) <= 1e-3
    np.testing.assert_array_equal(np.asarray(res["scaling"].labels), np.asarray(res["log"].labels))
    assert _marginal_error64(logits, res["scaling"].log_r, 25.0) <= 2e-3


@pytest.mark.parametrize("lam,tol,counts", [(1e-3, 1e-4, None), (200.0, 1e-3, (49, 51)), (1000.0, None, (48, 52))])
def test_extreme_lambda_finite_and_equipartitioned(lam, tol, counts):
    # lambda 1e-3: Q nearly uniform, one step.  lambda 200 and 1000: P^lambda underflows even in
    # float64 (the oracle's scaling form divides by zero) and lambda x spans 1e3 to 1e4; at 1000
    # every image is all but hard-assigned, so the marginals move by whole images (1 / 50 of a
    # cluster) and the iteration only gets within 2 images of N / K = 50 in 2000 steps.
    logits = _logits(1000, 20, 2.0, seed=4)
    res = _both(logits, lam=lam, tol=tol or 1e-4, max_iters=2000 if tol is None else 20000)
    for method, r in res.items():
        assert np.all(np.isfinite(np.asarray(r.log_r))) and np.isfinite(float(r.sela_error)), method
        assert float(r.error) <= (tol or 0.05) and _marginal_error64(logits, r.log_r, lam) <= 2 * (tol or 0.05)
        if counts is not None:
            c = np.bincount(np.asarray(r.labels), minlength=20)
            assert counts[0] <= c.min() and c.max() <= counts[1], (method, c)
    np.testing.assert_array_equal(np.asarray(res["scaling"].labels), np.asarray(res["log"].labels))
    np.testing.assert_allclose(float(res["scaling"].error), float(res["log"].error), atol=1e-3)


def test_huge_logits_and_constant_logits_no_nan():
    # lambda x ~ 2.5e5: exp overflows without the potentials; the assignment is all but hard.
    huge = _logits(400, 8, 1e4, seed=5)
    res = _both(huge, lam=25.0, tol=1e-4, max_iters=500)
    for method, r in res.items():
        assert np.all(np.isfinite(np.asarray(r.log_r))) and np.isfinite(float(r.error)), method
        assert np.isfinite(float(r.sela_error)), method
    np.testing.assert_array_equal(np.asarray(res["scaling"].labels), np.asarray(res["log"].labels))
    # every cluster tied: Q is uniform at the start
    r = sinkhorn_labels(jnp.zeros((400, 8), jnp.float32), lam=25.0)
    assert int(r.iterations) == 0 and float(r.error) <= 1e-6 and np.all(np.asarray(r.log_r) == 0)


def test_jit_and_vmap_of_the_scaling_solver():
    heads = jnp.asarray(np.stack([_logits(300, 12, s, seed=i, hot=h)
                                  for i, (s, h) in enumerate(((0.1, 0.0), (1.0, 3.0), (3.0, 0.0)))]))
    f = functools.partial(sinkhorn_labels, lam=25.0, tol=1e-4, max_iters=5000)
    mapped = f(heads)                                     # the heads axis: lax.map inside
    assert float(jnp.max(mapped.error)) <= 1e-4
    for other in (jax.vmap(f)(heads), jax.jit(f)(heads)):    # a caller's vmap: absorption as a select
        np.testing.assert_array_equal(np.asarray(other.labels), np.asarray(mapped.labels))
        np.testing.assert_array_equal(np.asarray(other.iterations), np.asarray(mapped.iterations))
        np.testing.assert_allclose(np.asarray(other.log_r), np.asarray(mapped.log_r), rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("method", METHODS)
def test_sharded_equals_single_device_with_absorptions(method):
    logits = _logits(800, 24, 1.0, seed=6, hot=6.0)
    one = sinkhorn_labels(jnp.asarray(logits), lam=25.0, tol=1e-3, max_iters=5000, method=method)
    assert np.abs(np.asarray(one.log_r)).max() > 2 * _ABSORB_AT      # the scaling solver absorbed
    mesh = sharding.data_mesh()
    f = jax.shard_map(lambda l: tuple(sinkhorn_labels(l, lam=25.0, tol=1e-3, max_iters=5000, axis_name="data",
                                                      method=method)),
                      mesh=mesh, in_specs=jax.P("data"),
                      out_specs=(jax.P("data"), jax.P(), jax.P(), jax.P(), jax.P()))
    labels, log_r, it, err, _ = jax.jit(f)(sharding.shard_batch(logits, mesh))
    np.testing.assert_array_equal(np.asarray(labels), np.asarray(one.labels))
    np.testing.assert_allclose(np.asarray(log_r), np.asarray(one.log_r), rtol=1e-5, atol=1e-3)
    assert abs(int(it) - int(one.iterations)) <= 2 and float(err) <= 1e-3


def test_bad_method():
    with pytest.raises(ValueError, match="method"):
        sinkhorn_labels(np.zeros((10, 4), np.float32), method="sinkhorn")


@pytest.mark.parametrize("method", METHODS)
def test_valid_rows_equal_the_rows_alone_also_sharded(method):
    # 300 images padded to 320 with copies of the last (as the trainer's labelling pass pads):
    # the padding must not count in the marginals.
    logits = _logits(300, 12, 2.0, seed=7)
    padded = np.concatenate([logits, np.repeat(logits[-1:], 20, axis=0)])
    valid = np.arange(320) < 300
    alone = sinkhorn_labels(jnp.asarray(logits), lam=25.0, tol=1e-4, method=method)
    masked = sinkhorn_labels(jnp.asarray(padded), lam=25.0, tol=1e-4, method=method, valid=jnp.asarray(valid))
    np.testing.assert_array_equal(np.asarray(masked.labels)[:300], np.asarray(alone.labels))
    np.testing.assert_allclose(np.asarray(masked.log_r), np.asarray(alone.log_r), rtol=1e-5, atol=1e-4)
    assert int(masked.iterations) == int(alone.iterations)
    unmasked = sinkhorn_labels(jnp.asarray(padded), lam=25.0, tol=1e-4, method=method)
    assert not np.allclose(np.asarray(unmasked.log_r), np.asarray(alone.log_r), atol=1e-2)
    mesh = sharding.data_mesh()
    f = jax.shard_map(lambda l, v: tuple(sinkhorn_labels(l, lam=25.0, tol=1e-4, axis_name="data", method=method,
                                                         valid=v)),
                      mesh=mesh, in_specs=(jax.P("data"), jax.P("data")),
                      out_specs=(jax.P("data"), jax.P(), jax.P(), jax.P(), jax.P()))
    labels, log_r, it, _, _ = jax.jit(f)(*sharding.shard_batch((padded, valid), mesh))
    np.testing.assert_array_equal(np.asarray(labels)[:300], np.asarray(alone.labels))
    np.testing.assert_allclose(np.asarray(log_r), np.asarray(alone.log_r), rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("valid", [np.ones(10, np.int32), np.ones(9, bool), np.arange(10) < 3])
def test_bad_valid(valid):
    with pytest.raises(ValueError, match="valid"):
        sinkhorn_labels(np.zeros((10, 4), np.float32), valid=valid)
