"""InfoNCE / NT-Xent / GDT against a brute-force loop and optax; sharded values and gradients."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxinterp.objectives import contrast_from_factors, gdt_loss, infonce, nt_xent
from jaxinterp.train import sharding


def _z(n, v, d, seed=0):
    return np.random.default_rng(seed).normal(size=(n, v, d)).astype(np.float32)


def _brute_force(emb, contrast, weights, t):
    """The GDT / InfoNCE loss by explicit Python loops over pairs, in float64."""
    e = np.asarray(emb, np.float64)
    e = e / np.linalg.norm(e, axis=1, keepdims=True)
    m = len(e)
    num = den = 0.0
    for i in range(m):
        for j in range(m):
            if contrast[i][j] != 1:
                continue
            total = sum(np.exp(e[i] @ e[k] / t) for k in range(m) if contrast[i][k] != 0)
            num += weights[i][j] * -np.log(np.exp(e[i] @ e[j] / t) / total)
            den += weights[i][j]
    return num / den


def _views_contrast(n, v):
    """+1 same sample other view, -1 other sample, 0 itself; rows ordered sample-major."""
    ids = np.repeat(np.arange(n), v)
    c = np.where(ids[:, None] == ids[None], 1, -1)
    np.fill_diagonal(c, 0)
    return c


@pytest.mark.parametrize("v", [2, 3])
def test_infonce_equals_brute_force_loop(v):
    z = _z(5, v, 4)
    expected = _brute_force(z.reshape(-1, 4), _views_contrast(5, v), np.ones((5 * v,) * 2), 0.1)
    np.testing.assert_allclose(float(infonce(jnp.asarray(z), temperature=0.1)), expected, rtol=1e-5)


def test_nt_xent_equals_optax_ntxent():
    z = _z(8, 2, 6, seed=1)
    labels = np.repeat(np.arange(8), 2)
    for t in (0.07, 0.5):
        # optax.losses.ntxent(embeddings (B, D), labels (B,), temperature): cosine similarity,
        # positives = same label other row, mean over positive pairs.
        expected = optax.losses.ntxent(jnp.asarray(z.reshape(16, 6)), jnp.asarray(labels), t)
        np.testing.assert_allclose(float(nt_xent(jnp.asarray(z[:, 0]), jnp.asarray(z[:, 1]),
                                                 temperature=t)), float(expected), rtol=1e-5)
        np.testing.assert_allclose(float(infonce(jnp.asarray(z), temperature=t)), float(expected),
                                   rtol=1e-5)


def test_gdt_with_simclr_contrast_equals_nt_xent():
    z = _z(6, 2, 5, seed=2)
    c = contrast_from_factors(np.repeat(np.arange(6), 2)[:, None], ["distinctive"])
    np.testing.assert_array_equal(c, _views_contrast(6, 2))
    np.testing.assert_allclose(float(gdt_loss(jnp.asarray(z.reshape(12, 5)), c, temperature=0.1)),
                               float(nt_xent(jnp.asarray(z[:, 0]), jnp.asarray(z[:, 1]))), rtol=1e-5)


def test_gdt_general_contrast_and_weights_equal_brute_force():
    rng = np.random.default_rng(3)
    # factors: sample (distinctive), modality (cross: only cross-modal pairs), time reversal
    # (distinctive), augmentation (invariant)
    factors = np.stack([np.repeat(np.arange(3), 4), np.tile([0, 1], 6), np.tile([0, 0, 1, 1], 3),
                        rng.integers(0, 3, 12)], 1)
    c = contrast_from_factors(factors, ["distinctive", "cross", "distinctive", "invariant"])
    assert set(np.unique(c)) == {-1, 0, 1}
    assert c[0, 1] == 1 and c[0, 2] == 0 and c[0, 3] == -1 and c[0, 5] == -1
    w = rng.uniform(0.5, 2.0, size=c.shape).astype(np.float32)
    emb = rng.normal(size=(12, 5)).astype(np.float32)
    np.testing.assert_allclose(float(gdt_loss(jnp.asarray(emb), c, jnp.asarray(w))),
                               _brute_force(emb, c, w, 0.07), rtol=1e-5)


def test_jit_and_vmap_over_sets_equals_loop():
    z = jnp.asarray(_z(4, 2, 3, seed=5)[None].repeat(3, 0) * np.arange(1, 4)[:, None, None, None])
    z = z + jnp.asarray(np.random.default_rng(6).normal(size=z.shape), jnp.float32)
    f = jax.jit(functools.partial(infonce, temperature=0.2))
    batched = jax.vmap(f)(z)
    np.testing.assert_allclose(np.asarray(batched), [float(f(zi)) for zi in z], rtol=1e-6)


def _sharded(fn, spec_in=jax.P("data"), out=jax.P(), vma=True):
    mesh = sharding.data_mesh()
    return jax.jit(jax.shard_map(fn, mesh=mesh, in_specs=spec_in, out_specs=out, check_vma=vma)), mesh


def test_infonce_sharded_value_and_gradient_equal_single_device():
    z = _z(16, 3, 8, seed=7)
    value, grad = jax.value_and_grad(functools.partial(infonce, temperature=0.1))(jnp.asarray(z))
    f, mesh = _sharded(functools.partial(infonce, temperature=0.1, axis_name="data"))
    zs = sharding.shard_batch(z, mesh)
    s_value, s_grad = jax.value_and_grad(f)(zs)
    np.testing.assert_allclose(float(s_value), float(value), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(s_grad), np.asarray(grad), rtol=1e-4, atol=1e-6)
    # negative control: without all_gather / psum each device only contrasts its own 2 samples
    g, _ = _sharded(lambda b: infonce(b, temperature=0.1)[None], out=jax.P("data"), vma=False)
    local = np.asarray(g(zs))
    assert not np.isclose(local.mean(), float(value), rtol=1e-3)


def test_gdt_sharded_equals_single_device():
    rng = np.random.default_rng(8)
    emb = rng.normal(size=(16, 6)).astype(np.float32)
    c = contrast_from_factors(np.repeat(np.arange(8), 2)[:, None], ["distinctive"])
    w = rng.uniform(0.5, 1.5, size=c.shape).astype(np.float32)
    value, grad = jax.value_and_grad(gdt_loss)(jnp.asarray(emb), jnp.asarray(c), jnp.asarray(w))
    f, mesh = _sharded(lambda e, cc, ww: gdt_loss(e, cc, ww, axis_name="data"))
    args = sharding.shard_batch((emb, c, w), mesh)
    s_value, s_grad = jax.value_and_grad(f)(*args)
    np.testing.assert_allclose(float(s_value), float(value), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(s_grad), np.asarray(grad), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("call,arg", [
    (lambda: infonce(np.full((4, 2, 3), np.nan, np.float32)), "z"),
    (lambda: infonce(np.zeros((4, 1, 3), np.float32)), "z"),
    (lambda: infonce(np.ones((4, 2, 3), np.float32), temperature=0.0), "temperature"),
    (lambda: infonce(np.ones((4, 2, 3), np.float32), temperature=-1.0), "temperature"),
    (lambda: nt_xent(np.ones((4, 3), np.float32), np.ones((5, 3), np.float32)), "b"),
    (lambda: gdt_loss(np.ones((4, 3), np.float32), np.full((4, 4), 2)), "contrast"),
    (lambda: gdt_loss(np.ones((4, 3), np.float32), -np.ones((4, 4))), "contrast"),
    (lambda: gdt_loss(np.ones((4, 3), np.float32), np.ones((4, 5))), "contrast"),
    (lambda: gdt_loss(np.ones((4, 3), np.float32), _views_contrast(2, 2), -np.ones((4, 4))),
     "weights"),
    (lambda: gdt_loss(np.ones((4, 3), np.float32), _views_contrast(2, 2), temperature=0), "temperature"),
    (lambda: contrast_from_factors(np.zeros((4, 2), int), ["distinctive", "sideways"]), "modes"),
])
def test_bad_input(call, arg):
    with pytest.raises(ValueError, match=arg):
        call()
