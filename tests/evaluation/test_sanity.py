"""Sanity checks: layer order, cascading / independent randomisation, class selectivity, shift invariance."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinterp import nets
from jaxinterp.evaluation import (cascading_randomisation, class_selectivity, independent_randomisation,
                                  parameter_layers, randomise_layers, shift_invariance, spearman)

LAYERS = ["features.0", "features.3", "features.6", "features.9", "classifier"]


@pytest.fixture(scope="module")
def setup():
    net = nets.get("smallcnn", num_classes=5, widths=(4, 8, 8, 8))
    params = net.init(jax.random.key(0))
    x = jax.random.uniform(jax.random.key(1), (2, 16, 16, 3))
    return net, params, x


def grad_method(net, params, x, target):
    """|gradient| max over channels, (N, T, H, W): a method callable as in jaxinterp.attribution."""
    target = jnp.asarray(target).reshape(x.shape[0], -1)

    def one(x1, t):
        return jnp.abs(jax.grad(lambda z: net.apply(params, z[None])[0, t])(x1)).max(-1)

    return jax.vmap(lambda x1, ts: jax.vmap(lambda t: one(x1, t))(ts))(x, target)


def image_method(net, params, x, target):
    """A map that ignores the net and the target: the image's grey level."""
    target = jnp.asarray(target).reshape(x.shape[0], -1)
    return jnp.broadcast_to(x.mean(-1)[:, None], (x.shape[0], target.shape[1], *x.shape[1:3]))


def _leaf(params, path):
    for k in path:
        params = params[k]
    return np.asarray(params)


def _changed(net, a, b):
    """{layer: True if any leaf of the layer differs between params a and b}."""
    return {name: any(not np.array_equal(_leaf(a, p), _leaf(b, p)) for p in paths)
            for name, paths in parameter_layers(net)}


def test_layers_in_forward_order(setup):
    net, _, _ = setup
    assert [n for n, _ in parameter_layers(net)] == LAYERS
    r50 = [n for n, _ in parameter_layers(nets.get("resnet50"))]
    assert r50[:4] == ["conv1", "bn1", "layer1.0.conv1", "layer1.0.bn1"] and r50[-1] == "fc"
    assert r50.index("layer1.0.downsample.0") < r50.index("layer1.1.conv1")
    assert r50.index("layer2.0.conv1") < r50.index("layer3.0.conv1") < r50.index("layer4.0.conv1")
    assert len(r50) == len(set(r50)) == 1 + 1 + 3 * 2 * (3 + 4 + 6 + 3) + 4 * 2 + 1


def test_cascading_randomisation_top_down(setup):
    net, params, _ = setup
    key = jax.random.key(7)
    fresh = net.init(key)
    stages = cascading_randomisation(net, params, key)
    assert [n for n, _ in stages] == LAYERS[::-1]
    for i, (_, p) in enumerate(stages):
        assert jax.tree.structure(p) == jax.tree.structure(params)
        top = set(LAYERS[len(LAYERS) - 1 - i:])
        assert _changed(net, params, p) == {n: n in top for n in LAYERS}
        assert not any(v for n, v in _changed(net, fresh, p).items() if n in top)   # fresh weights
    # params untouched, and the maps of a randomised net differ from the original ones
    assert not any(_changed(net, params, net.init(jax.random.key(0))).values())
    m0 = grad_method(net, params, setup[2], jnp.array([1, 2]))
    m_all = grad_method(net, stages[-1][1], setup[2], jnp.array([1, 2]))
    assert np.all(np.asarray(spearman(m0, m_all)) < 0.99)


def test_independent_randomisation_one_layer(setup):
    net, params, _ = setup
    stages = independent_randomisation(net, params, jax.random.key(3))
    assert [n for n, _ in stages] == LAYERS[::-1]
    for name, p in stages:
        assert _changed(net, params, p) == {n: n == name for n in LAYERS}
    p = randomise_layers(net, params, jax.random.key(3), ["features.3", "classifier"])
    assert _changed(net, params, p) == {n: n in ("features.3", "classifier") for n in LAYERS}


def test_class_selectivity(setup):
    net, params, x = setup
    target = jnp.array([[0, 4], [3, 1]])
    key = jax.random.key(5)
    sim, other = class_selectivity(grad_method, net, params, x, target, key)
    assert sim.shape == (2, 2) and np.all(np.asarray(other) != np.asarray(target))
    assert np.all((np.asarray(other) >= 0) & (np.asarray(other) < 5))
    want = spearman(grad_method(net, params, x, target), grad_method(net, params, x, other))
    np.testing.assert_allclose(sim, want, rtol=1e-5)
    sim_img, _ = class_selectivity(image_method, net, params, x, target, key)
    np.testing.assert_allclose(sim_img, 1.0, rtol=1e-6)     # a target-blind map is not selective
    jitted = jax.jit(lambda x, t, k: class_selectivity(grad_method, net, params, x, t, k))
    np.testing.assert_allclose(jitted(x, target, key)[0], sim, rtol=1e-5)


def test_shift_invariance(setup):
    net, params, x = setup
    target = jnp.array([1, 3])
    for shift in ((2, -3), (-1, 0)):
        np.testing.assert_allclose(shift_invariance(image_method, net, params, x, target, shift), 1.0,
                                   rtol=1e-6)
    dy, dx = 2, -3
    got = shift_invariance(grad_method, net, params, x, target, (dy, dx))
    m = np.roll(np.asarray(grad_method(net, params, x, target)), (dy, dx), axis=(-2, -1))
    ms = np.asarray(grad_method(net, params, jnp.roll(x, (dy, dx), axis=(1, 2)), target))
    want = [[spearman(m[i, 0, dy:, :16 + dx], ms[i, 0, dy:, :16 + dx])] for i in range(2)]
    np.testing.assert_allclose(got, np.array(want), rtol=1e-5)


def test_bad_input_raises(setup):
    net, params, x = setup
    with pytest.raises(ValueError, match="^layers"):
        randomise_layers(net, params, jax.random.key(0), ["features.1"])
    with pytest.raises(ValueError, match="^params"):
        cascading_randomisation(net, {"features": {}}, jax.random.key(0))
    with pytest.raises(ValueError, match="^net"):
        parameter_layers("smallcnn")
    with pytest.raises(ValueError, match="^target"):
        class_selectivity(grad_method, net, params, x, jnp.array([0.5, 1.0]), jax.random.key(0))
    with pytest.raises(ValueError, match="^shift"):
        shift_invariance(grad_method, net, params, x, jnp.array([0, 1]), (16, 0))
    with pytest.raises(ValueError, match="^shift"):
        shift_invariance(grad_method, net, params, x, jnp.array([0, 1]), (1.5, 0))


def test_vmap_equals_loop_and_sharded_equals_single_device(setup):
    """class_selectivity and shift_invariance: batch == per-image loop == vmap, and 8 devices == one."""
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    net, params, _ = setup
    x = jax.random.uniform(jax.random.key(2), (8, 16, 16, 3))
    target = jnp.arange(8, dtype=jnp.int32)[:, None] % 5
    key = jax.random.key(9)

    def sel(x1, t1, o1):       # similarity of the maps for the target and for given other classes
        return spearman(grad_method(net, params, x1, t1), grad_method(net, params, x1, o1))

    full, others = class_selectivity(grad_method, net, params, x, target, key)
    loop = np.stack([np.asarray(sel(x[i:i + 1], target[i:i + 1], others[i:i + 1]))[0] for i in range(8)])
    np.testing.assert_allclose(full, loop, rtol=1e-5, atol=1e-6)
    shift = jax.jit(lambda x, t: shift_invariance(grad_method, net, params, x, t, (3, -2)))
    s_full = np.asarray(shift(x, target))
    s_loop = np.stack([np.asarray(shift(x[i:i + 1], target[i:i + 1]))[0] for i in range(8)])
    np.testing.assert_allclose(s_full, s_loop, rtol=1e-5, atol=1e-6)
    s_vmap = jax.vmap(lambda a, t: shift(a[None], t[None])[0])(x, target)
    np.testing.assert_allclose(np.asarray(s_vmap), s_loop, rtol=1e-5, atol=1e-6)
    sh = NamedSharding(Mesh(np.array(jax.devices()), ("data",)), P("data"))
    xs, ts = jax.device_put(x, sh), jax.device_put(target, sh)
    np.testing.assert_allclose(np.asarray(shift(xs, ts)), s_full, rtol=1e-5, atol=1e-6)
    cs = jax.jit(lambda x, t, k: class_selectivity(grad_method, net, params, x, t, k))
    got, got_others = cs(xs, ts, key)
    np.testing.assert_array_equal(np.asarray(got_others), np.asarray(others))
    np.testing.assert_allclose(np.asarray(got), np.asarray(full), rtol=1e-5, atol=1e-6)


def test_randomised_params_keep_placement_so_jit_does_not_recompile(setup):
    net, params, x = setup
    key = jax.random.key(4)
    f = jax.jit(lambda p, x: net.apply(p, x))
    committed = jax.device_put(params, jax.devices()[0])
    f(committed, x)
    for _, p in cascading_randomisation(net, committed, key) + independent_randomisation(net, committed, key):
        assert all(a.committed for a in jax.tree.leaves(p))
        f(p, x)
    assert f._cache_size() == 1                       # one compilation for every stage
    for _, p in cascading_randomisation(net, params, key):
        assert [a.committed for a in jax.tree.leaves(p)] == [a.committed for a in jax.tree.leaves(params)]
