"""Data-parallel helpers on the 8 fake CPU devices of tests/conftest.py."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinterp import nets
from jaxinterp.train import sharding


def test_suite_sees_eight_devices():
    assert jax.device_count() == 8


def test_data_mesh():
    mesh = sharding.data_mesh()
    assert mesh.axis_names == ("data",)
    assert mesh.shape["data"] == 8
    one = sharding.data_mesh(jax.devices()[:1])
    assert one.shape["data"] == 1
    with pytest.raises(ValueError, match="devices"):
        sharding.data_mesh([])


def test_shard_batch_splits_leading_axis():
    mesh = sharding.data_mesh()
    x = np.arange(16 * 3, dtype=np.float32).reshape(16, 3)
    y = np.arange(16, dtype=np.int32)
    sx, sy = sharding.shard_batch((x, y), mesh)
    assert len(sx.addressable_shards) == 8
    devices = set()
    for shard in sx.addressable_shards:
        assert shard.data.shape == (2, 3)
        rows = shard.index[0]
        np.testing.assert_array_equal(np.asarray(shard.data), x[rows])
        devices.add(shard.device)
    assert len(devices) == 8
    np.testing.assert_array_equal(sharding.gather(sy), y)


def test_shard_batch_rejects_indivisible_batch():
    mesh = sharding.data_mesh()
    with pytest.raises(ValueError, match="batch"):
        sharding.shard_batch({"image": np.zeros((12, 2))}, mesh)
    with pytest.raises(ValueError, match="batch"):
        sharding.shard_batch(np.float32(1.0), mesh)
    with pytest.raises(ValueError, match="mesh"):
        sharding.shard_batch(np.zeros(8), "data")


def test_replicate_and_gather():
    mesh = sharding.data_mesh()
    tree = {"w": np.arange(6.0).reshape(2, 3), "b": np.ones(5, np.int32)}
    rep = sharding.replicate(tree, mesh)
    assert len(rep["w"].addressable_shards) == 8
    for shard in rep["w"].addressable_shards:
        np.testing.assert_array_equal(np.asarray(shard.data), tree["w"])
    host = sharding.gather(rep)
    assert all(isinstance(v, np.ndarray) for v in host.values())
    np.testing.assert_array_equal(host["b"], tree["b"])


def test_sharded_net_apply_equals_single_device():
    net = nets.get("smallcnn", num_classes=8, widths=(8, 16))
    params = net.init(jax.random.key(0))
    x = np.asarray(jax.random.uniform(jax.random.key(1), (16, 32, 32, 3)))
    apply = jax.jit(net.apply)
    one = jax.devices()[0]
    expected = np.asarray(apply(jax.device_put(params, one), jax.device_put(x, one)))

    mesh = sharding.data_mesh()
    sx = sharding.shard_batch(x, mesh)
    out = apply(sharding.replicate(params, mesh), sx)
    assert len(out.addressable_shards) == 8
    assert {s.data.shape for s in out.addressable_shards} == {(2, 8)}
    np.testing.assert_allclose(sharding.gather(out), expected, rtol=1e-5, atol=1e-5)


def test_shard_map_psum_equals_single_device():
    mesh = sharding.data_mesh()
    x = np.random.default_rng(0).normal(size=(32, 5)).astype(np.float32)

    def local_sum(block):  # block: (4, 5) rows of this device
        return jax.lax.psum(jnp.sum(block, axis=0), "data")

    f = jax.jit(jax.shard_map(local_sum, mesh=mesh, in_specs=jax.P("data"), out_specs=jax.P()))
    out = f(sharding.shard_batch(x, mesh))
    np.testing.assert_allclose(sharding.gather(out), x.astype(np.float64).sum(0), rtol=1e-5)
