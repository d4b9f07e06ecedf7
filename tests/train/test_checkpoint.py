"""Orbax checkpoints: round trips compared with numpy copies, retention, resharding."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxinterp.train import checkpoint, sharding


def _state(seed=0):
    """A nested dict of params, an Adam state after two updates, a step and a typed key."""
    rng = np.random.default_rng(seed)
    params = {"conv": {"kernel": jnp.asarray(rng.normal(size=(3, 3, 2, 8)), jnp.float32),
                       "bias": jnp.asarray(rng.normal(size=(8,)), jnp.float32)},
              "head": [jnp.asarray(rng.normal(size=(8, 4)), jnp.float32)]}
    tx = optax.adam(1e-2)
    opt_state = tx.init(params)
    for _ in range(2):
        grads = jax.tree.map(lambda p: jnp.sin(p) + 0.1, params)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
    return {"params": params, "opt_state": opt_state, "step": jnp.int32(2),
            "key": jax.random.key(seed)}


def _host(tree):
    """Leaves as numpy copies (typed keys as their raw uint32 data)."""
    def leaf(x):
        if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
            x = jax.random.key_data(x)
        return np.array(x)
    return jax.tree.map(leaf, tree)


def _assert_same(tree, reference):
    assert jax.tree.structure(tree) == jax.tree.structure(reference)
    for a, b in zip(jax.tree.leaves(tree), jax.tree.leaves(reference)):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)


def test_round_trip_with_adam_state(tmp_path):
    state = _state()
    expected = _host(state)
    meta = {"net": "smallcnn", "lr": 1e-3, "widths": [8, 16]}
    with checkpoint.Checkpointer(tmp_path / "ckpt") as ckpt:
        assert ckpt.save(2, state, meta)
    like = _state(seed=1)  # same structure, other values
    with checkpoint.Checkpointer(tmp_path / "ckpt") as ckpt:
        restored, restored_meta = ckpt.restore(like=like)
    assert restored_meta == meta
    assert isinstance(restored["opt_state"][0], optax.ScaleByAdamState)
    assert jnp.issubdtype(restored["key"].dtype, jax.dtypes.prng_key)
    _assert_same(_host(restored), expected)
    np.testing.assert_array_equal(jax.random.uniform(restored["key"], (3,)),
                                  jax.random.uniform(jax.random.key(0), (3,)))


def test_latest_step_and_retention(tmp_path):
    directory = tmp_path / "ckpt"
    assert checkpoint.latest_step(directory) is None
    with checkpoint.Checkpointer(directory, max_to_keep=2, save_interval_steps=10) as ckpt:
        written = [ckpt.save(step, {"x": jnp.full((2,), step)}) for step in (0, 5, 10, 20, 30)]
        assert written == [True, False, True, True, True]
        assert ckpt.save(31, {"x": jnp.full((2,), 31)}, force=True)
        assert ckpt.all_steps() == (30, 31)
        assert ckpt.latest_step() == 31
        old, _ = ckpt.restore(30, like={"x": np.zeros(2, np.int32)})
    np.testing.assert_array_equal(old["x"], [30, 30])
    assert checkpoint.latest_step(directory) == 31


def test_restore_onto_another_sharding(tmp_path):
    mesh = sharding.data_mesh()
    x = np.arange(16 * 3, dtype=np.float32).reshape(16, 3)
    with checkpoint.Checkpointer(tmp_path / "ckpt") as ckpt:
        ckpt.save(1, {"x": sharding.replicate(x, mesh)})
        like = {"x": jax.ShapeDtypeStruct(x.shape, x.dtype,
                                          sharding=jax.NamedSharding(mesh, jax.P("data")))}
        restored, _ = ckpt.restore(like=like)
    assert len(restored["x"].addressable_shards) == 8
    assert {s.data.shape for s in restored["x"].addressable_shards} == {(2, 3)}
    np.testing.assert_array_equal(sharding.gather(restored["x"]), x)


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="max_to_keep"):
        checkpoint.Checkpointer(tmp_path / "a", max_to_keep=0)
    with checkpoint.Checkpointer(tmp_path / "b") as ckpt:
        with pytest.raises(ValueError, match="step"):
            ckpt.restore(like={"x": np.zeros(2)})
        ckpt.save(3, {"x": np.zeros(2)})
        with pytest.raises(ValueError, match="step"):
            ckpt.restore(4, like={"x": np.zeros(2)})
        with pytest.raises(ValueError, match="step"):
            ckpt.save(-1, {"x": np.zeros(2)})
