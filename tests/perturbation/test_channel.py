"""channel_extremal(): the planted optimum of a linear head, the first step, vmap == loop, sharding, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinterp.targets import Unit
from jaxinterp.perturbation import channel_extremal
from jaxinterp.train.sharding import data_mesh, shard_batch
from tests.attribution._small_nets import NUM_CLASSES, SIZE, small_setup

CHANNEL = jax.jit(channel_extremal, static_argnames=("net", "layer", "variant", "reward", "steps"))


@pytest.fixture(scope="module")
def setup():
    return small_setup()


def test_preserve_keeps_the_largest_contributions_of_a_linear_head(setup):
    """At 'avgpool' the score is sum_c m_c W_ck a_c + b_k: the optimum keeps the top-k terms W_ck a_c."""
    net, params, x = setup
    targets = jnp.array([0, 3, 4])
    masks, history = CHANNEL(net, params, x, targets, layer="avgpool", areas=jnp.array([0.25]), steps=400)
    a = np.asarray(net.apply(params, x, stop="avgpool"))                             # (N, 8)
    w = np.asarray(params["classifier"]["kernel"])                                  # (8, K)
    for i, t in enumerate(np.asarray(targets)):
        contributions = w[:, t] * a[i]
        want = set(np.argsort(contributions)[-2:])                                   # 25% of 8 channels
        assert set(np.flatnonzero(np.asarray(masks[i, 0, 0]) > 0.5)) == want, contributions
    # The mask ends (nearly) binary with 2 of 8 ones: the area term is a small fraction of its start.
    assert np.all(np.asarray(history[..., -1, 1]) < 0.05 * np.asarray(history[..., 0, 1]))


def test_first_step_and_delete_variant(setup):
    net, params, x = setup
    logits = net.apply(params, x)
    _, h = CHANNEL(net, params, x, jnp.array([1, 2, 3]), layer="features.4", areas=jnp.array([0.5]), steps=1)
    np.testing.assert_allclose(h[:, 0, 0, 0, 0], logits[jnp.arange(3), jnp.array([1, 2, 3])], rtol=1e-5)
    # R_a of the all-ones mask of 6 channels at area 0.5: 3 of 6 sorted values differ from r by 1.
    np.testing.assert_allclose(h[:, 0, 0, 0, 1], 300.0 * 0.5, rtol=1e-6)
    _, h = CHANNEL(net, params, x, jnp.array([1, 2, 3]), layer="features.4", areas=jnp.array([0.5]), steps=1,
                   variant="delete")
    zero = net.apply(params, jnp.zeros_like(net.apply(params, x, stop="features.4")), start="features.4")
    np.testing.assert_allclose(h[:, 0, 0, 0, 0], -zero[jnp.arange(3), jnp.array([1, 2, 3])], rtol=1e-5)


def test_vmap_equals_loop_and_units(setup):
    net, params, x = setup
    unit = Unit("features.9", jnp.array([[1, 5], [0, 2], [7, 3]]))
    masks, _ = CHANNEL(net, params, x, unit, layer="features.4", areas=jnp.array([0.3, 0.6]), steps=20)
    assert masks.shape == (3, 2, 2, 6)
    for i in range(3):
        for j in range(2):
            one = Unit("features.9", unit.channel[i:i + 1, j])
            m1, _ = CHANNEL(net, params, x[i:i + 1], one, layer="features.4", areas=jnp.array([0.3, 0.6]),
                            steps=20)
            np.testing.assert_allclose(masks[i, j], m1[0, 0], atol=1e-5)


def test_sharded_equals_single_device(setup):
    net, params, _ = setup
    x = jax.random.uniform(jax.random.key(4), (8, SIZE, SIZE, 3))
    t = jax.random.randint(jax.random.key(5), (8, 2), 0, NUM_CLASSES)
    single = CHANNEL(net, params, x, t, layer="features.7", areas=jnp.array([0.25]), steps=10)
    xs, ts = shard_batch((x, t), data_mesh())
    sharded = CHANNEL(net, params, xs, ts, layer="features.7", areas=jnp.array([0.25]), steps=10)
    assert len(sharded[0].sharding.device_set) == 8
    for a, b in zip(sharded, single):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kwargs, match", [
    ({"layer": "nope"}, r"^layer: unknown split point"),
    ({"layer": None}, r"^layer: expected a split point"),
    ({"areas": 1.0}, r"^areas: expected fractions in \(0, 1\)"),
    ({"steps": 0}, r"^steps: expected a positive integer"),
    ({"variant": "both"}, r"^variant: expected one of"),
    ({"target": Unit("features.1", jnp.array([0, 1, 2]))}, r"^target: unit layer 'features.1' does not come after"),
])
def test_bad_input_raises(setup, kwargs, match):
    net, params, x = setup
    kwargs = {"layer": "features.4", "target": jnp.array([0, 1, 2]), **kwargs}
    with pytest.raises(ValueError, match=match):
        channel_extremal(net, params, x, kwargs.pop("target"), **kwargs)
