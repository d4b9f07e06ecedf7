"""SeLa's sharded label step (selfsup.self_labels): 8 devices equal 1, per-device memory N K / devices,
nothing of size N K gathered, and fit labels through it.

The suite's process has 8 CPU devices (tests/conftest.py: ``jax_num_cpu_devices``).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinterp import nets, objectives
from jaxinterp.train import selfsup, sharding
from jaxinterp.train.sela import SeLa
from jaxinterp.train.augment import AugmentConfig

_N, _SIZE = 30, 16                      # 30 images: the padded batches carry padding rows
_AUG = AugmentConfig.simclr(size=(_SIZE, _SIZE), blur_sigma=(0.1, 0.5))


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 1, size=(_N, _SIZE, _SIZE, 3)).astype(np.float32)
    net = nets.get("smallcnn", num_classes=4, widths=(4, 4, 4, 8))
    return images, net, net.init(jax.random.key(3))


def _mesh(devices):
    return sharding.data_mesh(jax.devices()[:devices])


@pytest.mark.parametrize("views,batch_size", [(2, 16), (0, 256)])
def test_eight_devices_equal_one_and_the_unsharded_solver(data, views, batch_size):
    images, net, params = data
    kw = dict(lam=10.0, aug=_AUG, views=views, key=jax.random.key(7), batch_size=batch_size)
    one = selfsup.self_labels(net, params, images, mesh=_mesh(1), **kw)
    eight = selfsup.self_labels(net, params, images, mesh=_mesh(8), **kw)
    assert isinstance(eight.labels, np.ndarray) and eight.labels.shape == (_N,) and eight.labels.dtype == np.int32
    np.testing.assert_array_equal(eight.labels, one.labels)
    np.testing.assert_allclose(np.asarray(eight.log_r), np.asarray(one.log_r), rtol=1e-5, atol=1e-4)
    assert int(eight.iterations) == int(one.iterations)
    # ... and both equal Sinkhorn on the gathered (N, K) scores on one device (the padding does not count)
    scores = selfsup.label_log_probs(net, params, images, mesh=_mesh(1), **{k: v for k, v in kw.items() if k != "lam"})
    want = objectives.sinkhorn_labels(jnp.asarray(scores), lam=10.0)
    np.testing.assert_array_equal(eight.labels, np.asarray(want.labels))
    assert int(want.iterations) == int(eight.iterations)


def test_scores_stay_sharded_one_block_per_device(data):
    images, net, params = data
    scores = selfsup.label_scores(net, params, images, aug=_AUG, views=2, key=jax.random.key(7), batch_size=16,
                                  mesh=_mesh(8))
    assert scores.shape == (2, 16, 4)                           # M = 2 batches of B = 16 (2 padding rows)
    assert scores.sharding.spec == jax.P(None, sharding.DATA)
    assert {s.data.shape for s in scores.addressable_shards} == {(2, 2, 4)}
    assert len({s.device for s in scores.addressable_shards}) == 8


def _compiled(n, k, devices, method="scaling"):
    mesh = _mesh(devices)
    spec = jax.ShapeDtypeStruct((n // 256, 256, k), jnp.float32,
                                sharding=jax.NamedSharding(mesh, jax.P(None, sharding.DATA)))
    return selfsup.sharded_sinkhorn_labels.lower(spec, n=n, lam=25.0, mesh=mesh, method=method).compile()


@pytest.mark.parametrize("method,temporaries", [("scaling", 3), ("log", 2)])
def test_memory_per_device_is_n_k_over_devices(method, temporaries):
    n, k = 4096, 64
    scores = n * k * 4                                          # bytes of the float32 scores
    for devices in (1, 2, 4, 8):
        mem = _compiled(n, k, devices, method).memory_analysis()
        assert mem.argument_size_in_bytes == scores // devices
        # the solver's (N, K) temporaries, split as the scores: the kernel, the log-domain pass
        assert temporaries * scores // devices <= mem.temp_size_in_bytes <= (temporaries + 0.1) * scores // devices
        assert mem.output_size_in_bytes <= 4 * (n // devices + k) + 64      # labels of the local rows, log_r


def test_no_collective_of_size_n_k():
    n, k = 4096, 64
    text = _compiled(n, k, 8).as_text()
    assert "all-gather" not in text and "all-to-all" not in text and "collective-permute" not in text
    sizes = [line.split("all-reduce(")[0] for line in text.splitlines() if " all-reduce(" in line]
    assert sizes and all(f"f32[{k + 1}]" in s or "s32[]" in s for s in sizes), sizes


def test_fit_labels_through_the_sharded_step(data, monkeypatch):
    images, net, _ = data
    calls = []
    sharded = selfsup.sharded_sinkhorn_labels

    def spy(scores, **kw):
        calls.append((scores.sharding, kw["n"]))
        return sharded(scores, **kw)

    monkeypatch.setattr(selfsup, "sharded_sinkhorn_labels", spy)
    mesh = _mesh(8)
    state, _ = selfsup.fit(net, images[:16], SeLa(aug=_AUG, lam=10.0), selfsup.Settings(epochs=1, batch_size=16),
                           progress=None, mesh=mesh)
    assert len(calls) == 1 and calls[0] == (jax.NamedSharding(mesh, jax.P(None, sharding.DATA)), 16)
    assert np.asarray(state.labels).shape == (16,)


def test_fewer_images_than_clusters():
    net = nets.get("smallcnn", num_classes=8, widths=(4, 4, 4, 8))
    images = np.zeros((4, _SIZE, _SIZE, 3), np.float32)
    with pytest.raises(ValueError, match="images"):
        selfsup.self_labels(net, net.init(jax.random.key(0)), images, views=0, mesh=_mesh(1))
