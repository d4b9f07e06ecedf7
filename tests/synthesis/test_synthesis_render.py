"""The render loop: planted optimum, vmap == loop, chunking, sharding, jit, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxinterp import nets
from jaxinterp.synthesis import objectives as O
from jaxinterp.synthesis import params as P
from jaxinterp.synthesis import rendering as R
from jaxinterp.synthesis import transforms as T
from jaxinterp.train.sharding import data_mesh, shard_batch

SIZE = 16


@pytest.fixture(scope="module")
def small():
    net = nets.get("smallcnn", num_classes=5)
    return net, net.init(jax.random.key(0))


def run(net, params, channels, key=jax.random.key(3), **kw):
    kw = {"param": P.fourier(SIZE), "steps": 4, "transforms": (T.jitter(3), T.random_rotate()), **kw}
    return R.render(net, params, lambda c: O.channel("features.5", c), channels, key=key, **kw)


def test_planted_optimum_is_reached():
    """Objective -||x - x*||^2 on the image alone: the loop must converge to the planted image x*."""
    target = jnp.asarray(np.random.default_rng(0).uniform(0.2, 0.8, (2, 6, 5, 3)), jnp.float32)
    net = nets.get("smallcnn", num_classes=5)
    obj = lambda t: O.Objective(lambda a, x: -jnp.sum((x - t) ** 2))          # noqa: E731
    res = R.render(net, None, obj, target, param=P.pixel((6, 5), decorrelate=False), key=jax.random.key(0),
                   transforms=(), steps=300, optimiser=optax.adam(0.05))
    np.testing.assert_allclose(np.asarray(res.images[:, 0]), np.asarray(target), atol=2e-3)
    assert np.all(np.diff(np.asarray(res.history)[:, ::50], axis=1) > 0)


def test_vmap_equals_loop_and_chunking(small):
    net, params = small
    channels = jnp.array([3, 0, 7])
    key = jax.random.key(5)
    fn = jax.jit(lambda c, k: run(net, params, c, k))
    batched = fn(channels, key)
    for i, c in enumerate(channels):
        alone = fn(channels[i:i + 1], jax.random.fold_in(key, i)[None])
        np.testing.assert_allclose(np.asarray(alone.images[0]), np.asarray(batched.images[i]), atol=1e-5)
        np.testing.assert_allclose(np.asarray(alone.history[0]), np.asarray(batched.history[i]), rtol=1e-4)
    chunked = run(net, params, channels, key, chunk_size=2)
    np.testing.assert_allclose(np.asarray(chunked.images), np.asarray(batched.images), atol=1e-5)


def test_batch_images_differ_and_diversity_runs(small):
    net, params = small
    res = R.render(net, params, lambda c: O.channel("features.5", c) + 100 * O.diversity("features.5"),
                   jnp.array([1]), param=P.fourier(SIZE), key=jax.random.key(0), steps=2, batch=3, transforms=())
    assert res.images.shape == (1, 3, SIZE, SIZE, 3)
    assert not np.allclose(res.images[0, 0], res.images[0, 1])


def test_sharded_equals_single_device(small):
    net, params = small
    channels = jnp.arange(8)
    single = jax.jit(lambda c: run(net, params, c))(channels)
    sharded = jax.jit(lambda c: run(net, params, c))(shard_batch(channels, data_mesh()))
    assert len(sharded.images.sharding.device_set) == 8
    np.testing.assert_allclose(np.asarray(sharded.images), np.asarray(single.images), atol=1e-5)


def test_bf16_compute_runs_close(small):
    net, params = small
    a = run(net, params, jnp.array([2]), transforms=())
    b = run(net, params, jnp.array([2]), transforms=(), compute_dtype=jnp.bfloat16)
    assert b.images.dtype == jnp.float32 and np.all(np.isfinite(np.asarray(b.images)))
    np.testing.assert_allclose(np.asarray(b.history[:, 0]), np.asarray(a.history[:, 0]), rtol=0.1)


def test_activations_match_separate_passes(small):
    net, params = small
    x = jax.random.uniform(jax.random.key(1), (2, SIZE, SIZE, 3))
    acts = R.activations(net, params, x, ["features.5", O.OUTPUT, "features.2"])
    for layer in ("features.5", "features.2"):
        np.testing.assert_allclose(np.asarray(acts[layer]), np.asarray(net.apply(params, x, stop=layer)), atol=1e-5)
    np.testing.assert_allclose(np.asarray(acts[O.OUTPUT]), np.asarray(net.apply(params, x)), atol=1e-5)


@pytest.mark.parametrize("kwargs, match", [
    ({"steps": 0}, r"^steps:"),
    ({"batch": 0}, r"^batch:"),
    ({"chunk_size": 0}, r"^chunk_size:"),
    ({"key": jax.random.split(jax.random.key(0), 2)}, r"^key:"),
    ({"key": 3}, r"^key:"),
])
def test_bad_input_raises(small, kwargs, match):
    net, params = small
    with pytest.raises(ValueError, match=match):
        run(net, params, jnp.arange(3), **kwargs)


def test_bad_objective_raises(small):
    net, params = small
    with pytest.raises(ValueError, match=r"^objective: unknown layer"):
        R.render(net, params, lambda c: O.channel("nope", c), jnp.arange(2), param=P.pixel(8), key=jax.random.key(0))
    with pytest.raises(ValueError, match=r"^targets:"):
        R.render(net, params, O.channel("features.5", 0), jnp.arange(2), param=P.pixel(8), key=jax.random.key(0))
    with pytest.raises(ValueError, match=r"^targets:"):
        R.render(net, params, lambda c: O.channel("features.5", c), None, param=P.pixel(8), key=jax.random.key(0))
    with pytest.raises(ValueError, match=r"^objective: objective\(target\) returned"):
        R.render(net, params, lambda c: 3.0, jnp.arange(2), param=P.pixel(8), key=jax.random.key(0))
