"""Entropy / InfoMax, SwAV's loss and DINO against NumPy float64 references; sharded == one device."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinterp.objectives import (conditional_entropy, cosine_schedule, cross_entropy, dino_loss,
                                  ema_update, entropy, infomax, marginal_entropy, prototype_scores,
                                  self_labelling_loss, swav_loss, teacher_temperature,
                                  update_centre)
from jaxinterp.train import sharding
from _objective_oracles import log_softmax64, sela_float64, swav_float64


def _x(*shape, scale=1.0, seed=0):
    return (np.random.default_rng(seed).normal(size=shape) * scale).astype(np.float32)


def _sharded(fn, n_in=1, out=jax.P(), vma=True):
    mesh = sharding.data_mesh()
    f = jax.shard_map(fn, mesh=mesh, in_specs=(jax.P("data"),) * n_in, out_specs=out, check_vma=vma)
    return jax.jit(f), mesh


# --- entropy ------------------------------------------------------------------------------

def test_entropies_equal_numpy():
    logits = _x(32, 7, scale=2.0)
    lp = log_softmax64(logits)
    p = np.exp(lp)
    h_cond = -(p * lp).sum(1).mean()
    pc = p.mean(0)
    h_marg = -(pc * np.log(pc)).sum()
    labels = np.random.default_rng(1).integers(0, 7, 32)
    np.testing.assert_allclose(float(conditional_entropy(logits)), h_cond, rtol=1e-5)
    np.testing.assert_allclose(float(marginal_entropy(logits)), h_marg, rtol=1e-5)
    np.testing.assert_allclose(float(infomax(logits)), h_marg - h_cond, rtol=1e-4)
    np.testing.assert_allclose(float(cross_entropy(logits, labels)), -lp[np.arange(32), labels].mean(),
                               rtol=1e-5)
    np.testing.assert_allclose(float(cross_entropy(logits, jnp.asarray(p, jnp.float32))), h_cond, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(entropy(logits)), -(p * lp).sum(1), rtol=1e-5)


def test_infomax_closed_forms():
    k = 5
    balanced = np.tile(np.eye(k, dtype=np.float32) * 60.0, (4, 1))       # confident, all clusters
    collapsed = np.zeros((20, k), np.float32)
    collapsed[:, 0] = 60.0                                               # confident, one cluster
    np.testing.assert_allclose(float(infomax(balanced)), np.log(k), rtol=1e-5)
    np.testing.assert_allclose(float(infomax(collapsed)), 0.0, atol=1e-5)
    np.testing.assert_allclose(float(marginal_entropy(np.zeros((3, k), np.float32))), np.log(k), rtol=1e-6)


def test_entropies_sharded_equal_single_device_with_negative_control():
    logits = _x(32, 6, scale=2.0, seed=2)
    labels = np.random.default_rng(3).integers(0, 6, 32).astype(np.int32)
    for fn in (conditional_entropy, marginal_entropy, infomax):
        f, mesh = _sharded(functools.partial(fn, axis_name="data"))
        np.testing.assert_allclose(float(f(sharding.shard_batch(logits, mesh))), float(fn(logits)),
                                   rtol=1e-5)
    f, mesh = _sharded(lambda l, y: cross_entropy(l, y, axis_name="data"), n_in=2)
    np.testing.assert_allclose(float(f(*sharding.shard_batch((logits, labels), mesh))),
                               float(cross_entropy(logits, labels)), rtol=1e-5)
    # negative control: the marginal of each device's 4 rows is not the batch marginal
    g, mesh = _sharded(lambda l: marginal_entropy(l)[None], out=jax.P("data"), vma=False)
    local = np.asarray(g(sharding.shard_batch(logits, mesh)))
    assert not np.isclose(local.mean(), float(marginal_entropy(logits)), rtol=1e-3)


def test_vmap_over_heads_equals_loop():
    heads = _x(3, 16, 5, scale=2.0, seed=4)
    np.testing.assert_allclose(np.asarray(jax.vmap(jax.jit(infomax))(heads)),
                               [float(infomax(h)) for h in heads], rtol=1e-6)


def test_self_labelling_loss_is_cross_entropy_on_oracle_labels():
    logits = _x(300, 10, scale=1.0, seed=5)
    expected_labels, _, _ = sela_float64(logits, 10.0)
    loss, res = jax.jit(functools.partial(self_labelling_loss, lam=10.0, tol=1e-5))(logits)
    np.testing.assert_array_equal(np.asarray(res.labels), expected_labels)
    lp = log_softmax64(logits)
    np.testing.assert_allclose(float(loss), -lp[np.arange(300), expected_labels].mean(), rtol=1e-5)
    # gradient flows through the cross-entropy only
    g = jax.grad(lambda l: self_labelling_loss(l, lam=10.0)[0])(jnp.asarray(logits))
    p = np.exp(lp)
    onehot = np.eye(10)[expected_labels]
    np.testing.assert_allclose(np.asarray(g), (p - onehot) / 300, atol=1e-6)


def test_entropy_bad_input():
    with pytest.raises(ValueError, match="logits"):
        infomax(np.array([[np.nan, 1.0]], np.float32))
    with pytest.raises(ValueError, match="labels"):
        cross_entropy(np.zeros((3, 4), np.float32), np.array([0, 1, 4]))
    with pytest.raises(ValueError, match="labels"):
        cross_entropy(np.zeros((3, 4), np.float32), np.array([0, 1]))


# --- SwAV ---------------------------------------------------------------------------------

def _swav_numpy(scores, num_assign=2, t=0.1, eps=0.05, iters=3):
    n, v, _ = scores.shape
    logp = log_softmax64(scores / t)
    total = 0.0
    for i in range(num_assign):
        q = swav_float64(scores[:, i], eps, iters)
        total += np.mean([-(q * logp[:, j]).sum(1).mean() for j in range(v) if j != i])
    return total / num_assign


def test_swav_loss_equals_numpy_oracle_and_shards():
    z, protos = _x(16, 4, 8, seed=7), _x(12, 8, seed=8)
    scores = np.asarray(prototype_scores(z, protos))
    zn = z / np.linalg.norm(z, axis=-1, keepdims=True)
    pn = protos / np.linalg.norm(protos, axis=-1, keepdims=True)
    np.testing.assert_allclose(scores, zn @ pn.T, rtol=1e-5, atol=1e-6)
    expected = _swav_numpy(scores.astype(np.float64))
    np.testing.assert_allclose(float(swav_loss(scores)), expected, rtol=1e-4)
    f, mesh = _sharded(functools.partial(swav_loss, axis_name="data"))
    np.testing.assert_allclose(float(f(sharding.shard_batch(scores, mesh))), expected, rtol=1e-4)
    g, mesh = _sharded(lambda s: swav_loss(s)[None], out=jax.P("data"), vma=False)
    assert not np.isclose(np.asarray(g(sharding.shard_batch(scores, mesh))).mean(), expected, rtol=1e-3)
    with pytest.raises(ValueError, match="num_assign"):
        swav_loss(scores, num_assign=5)
    with pytest.raises(ValueError, match="temperature"):
        swav_loss(scores, temperature=0.0)


# --- DINO ---------------------------------------------------------------------------------

def _dino_numpy(student, teacher, centre, ts, tt):
    ps = log_softmax64(student / ts)
    pt = np.exp(log_softmax64((teacher - centre) / tt))
    terms = [-(pt[:, i] * ps[:, j]).sum(-1).mean() for i in range(teacher.shape[1])
             for j in range(student.shape[1]) if i != j]
    return np.mean(terms)


def test_dino_loss_equals_numpy_and_shards():
    student, teacher, centre = _x(16, 6, 9, seed=9), _x(16, 2, 9, seed=10), _x(9, seed=11)
    expected = _dino_numpy(student, teacher, centre, 0.1, 0.04)
    np.testing.assert_allclose(float(dino_loss(student, teacher, centre)), expected, rtol=1e-5)
    np.testing.assert_allclose(float(jax.jit(dino_loss)(student, teacher, centre, teacher_temp=0.07)),
                               _dino_numpy(student, teacher, centre, 0.1, 0.07), rtol=1e-5)
    mesh = sharding.data_mesh()
    f = jax.jit(jax.shard_map(lambda s, t, c: dino_loss(s, t, c, axis_name="data"), mesh=mesh,
                              in_specs=(jax.P("data"), jax.P("data"), jax.P()), out_specs=jax.P()))
    args = (*sharding.shard_batch((student, teacher), mesh), sharding.replicate(centre, mesh))
    np.testing.assert_allclose(float(f(*args)), expected, rtol=1e-5)
    # no gradient into the teacher
    gt = jax.grad(lambda t: dino_loss(student, t, centre))(jnp.asarray(teacher))
    np.testing.assert_array_equal(np.asarray(gt), 0.0)


def test_dino_center_sharded_equals_single_device():
    teacher, centre = _x(32, 2, 7, seed=12), _x(7, seed=13)
    expected = 0.9 * centre.astype(np.float64) + 0.1 * teacher.astype(np.float64).mean((0, 1))
    np.testing.assert_allclose(np.asarray(update_centre(centre, teacher)), expected, rtol=1e-5, atol=1e-6)
    mesh = sharding.data_mesh()
    for axis_name, equal in (("data", True), (None, False)):
        f = jax.jit(jax.shard_map(lambda t, c: update_centre(c, t, axis_name=axis_name)[None],
                                  mesh=mesh, in_specs=(jax.P("data"), jax.P()),
                                  out_specs=jax.P("data"), check_vma=False))
        out = np.asarray(f(sharding.shard_batch(teacher, mesh), sharding.replicate(centre, mesh)))
        assert all(np.allclose(o, expected, rtol=1e-5, atol=1e-6) for o in out) == equal


def test_schedules_and_ema():
    np.testing.assert_allclose(np.asarray(teacher_temperature(jnp.array([0.0, 15.0, 30.0, 100.0]))),
                               [0.04, 0.055, 0.07, 0.07], rtol=1e-6)
    m = np.asarray(cosine_schedule(jnp.array([0, 50, 100, 150]), 100, 0.996, 1.0))
    np.testing.assert_allclose(m, [0.996, 0.998, 1.0, 1.0], rtol=1e-7)
    t = {"w": jnp.ones((2, 2)), "b": jnp.zeros(3)}
    s = {"w": jnp.zeros((2, 2)), "b": jnp.ones(3)}
    out = jax.jit(ema_update)(t, s, 0.996)
    np.testing.assert_allclose(np.asarray(out["w"]), 0.996)
    np.testing.assert_allclose(np.asarray(out["b"]), 0.004, rtol=1e-5)
    with pytest.raises(ValueError, match="momentum"):
        ema_update(t, s, 1.5)
    with pytest.raises(ValueError, match="student_params"):
        ema_update(t, {"w": s["w"]}, 0.9)


@pytest.mark.parametrize("kwargs,arg", [
    (dict(student_temp=0.0), "student_temp"),
    (dict(teacher_temp=-0.1), "teacher_temp"),
])
def test_dino_bad_input(kwargs, arg):
    s, t, c = _x(4, 3, 5), _x(4, 2, 5), np.zeros(5, np.float32)
    with pytest.raises(ValueError, match=arg):
        dino_loss(s, t, c, **kwargs)
    with pytest.raises(ValueError, match="teacher"):
        dino_loss(s, _x(4, 4, 5), c)
    with pytest.raises(ValueError, match="student"):
        dino_loss(np.full((4, 3, 5), np.inf, np.float32), t, c)
    with pytest.raises(ValueError, match="centre"):
        dino_loss(s, t, np.zeros(4, np.float32))


def test_self_labelling_loss_sharded_equals_single_device():
    logits = _x(128, 8, scale=1.0, seed=14)
    loss, res = self_labelling_loss(logits, lam=10.0, tol=1e-4)
    mesh = sharding.data_mesh()
    f = jax.jit(jax.shard_map(
        lambda l: (lambda out: (out[0], out[1].labels))(
            self_labelling_loss(l, lam=10.0, tol=1e-4, axis_name="data")),
        mesh=mesh, in_specs=jax.P("data"), out_specs=(jax.P(), jax.P("data"))))
    s_loss, s_labels = f(sharding.shard_batch(logits, mesh))
    np.testing.assert_allclose(float(s_loss), float(loss), rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(s_labels), np.asarray(res.labels))
