"""Batch norm in training mode (rules.BATCH_STATISTICS) and its recomputed statistics (nets.recompute_batch_norm)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinterp import nets
from jaxinterp.nets.rules import BATCH_STATISTICS

_SCALE, _BIAS = np.linspace(0.5, 2.0, 8), np.linspace(-1.0, 1.0, 8)


def _net():
    return nets.get("smallcnn", num_classes=5, widths=(8, 8, 8, 8), batch_norm=True)


def _params():
    p = _net().init(jax.random.key(0))
    p["features"]["1"] = {**p["features"]["1"], "scale": jnp.asarray(_SCALE, jnp.float32),
                          "bias": jnp.asarray(_BIAS, jnp.float32)}
    return p


def _images(n=12, seed=1):
    return np.asarray(jax.random.uniform(jax.random.key(seed), (n, 16, 16, 3)))


def _np_batch_norm(a, mean, var):
    return (a - mean) / np.sqrt(var + 1e-5) * _SCALE + _BIAS


def test_split_points_follow_torchvision_vgg_bn():
    net = _net()
    assert net.layers[:4] == ("features.0", "features.1", "features.2", "features.3")
    assert len(net.layers) == 4 * 3 + 3 + 2 and nets.batch_norm_layers(net) == tuple(
        f"features.{i}" for i in (1, 5, 9, 13))
    assert nets.batch_norm_layers(nets.get("smallcnn")) == ()
    p, x = _params(), jnp.asarray(_images())
    assert set(p["features"]["0"]) == {"kernel"} and set(p["features"]["1"]) == {"scale", "bias", "mean", "var"}
    for layer in net.layers[:-1]:         # exact splitting, in training mode too
        mid = net.apply(p, x, stop=layer, rules=BATCH_STATISTICS)
        np.testing.assert_allclose(np.asarray(net.apply(p, mid, start=layer, rules=BATCH_STATISTICS)),
                                   np.asarray(net.apply(p, x, rules=BATCH_STATISTICS)), atol=1e-6)


def test_batch_statistics_vs_numpy_float64():
    net, p, x = _net(), _params(), jnp.asarray(_images())
    conv = np.asarray(net.apply(p, x, stop="features.0"), np.float64)
    want = _np_batch_norm(conv, conv.mean((0, 1, 2)), conv.var((0, 1, 2)))
    np.testing.assert_allclose(np.asarray(net.apply(p, x, stop="features.1", rules=BATCH_STATISTICS)), want,
                               atol=1e-5)
    # Negative control: the standard rules use the stored statistics (mean 0, variance 1).
    assert np.abs(np.asarray(net.apply(p, x, stop="features.1")) - want).max() > 1e-1
    # Other maps are untouched: a net without batch norm gives the standard output.
    plain = nets.get("smallcnn", num_classes=5, widths=(8, 8, 8, 8))
    q = plain.init(jax.random.key(3))
    np.testing.assert_array_equal(np.asarray(plain.apply(q, x, rules=BATCH_STATISTICS)), np.asarray(plain.apply(q, x)))


def test_batch_statistics_gradient_vs_finite_differences():
    """The derivative runs through the batch's statistics (PyTorch's training mode), in float64."""
    net, p = _net(), _params()
    x = jnp.asarray(0.1 + 0.8 * _images(4))            # room for the finite-difference steps inside [0, 1]
    w = jax.random.normal(jax.random.key(5), net.apply(p, x, stop="features.1").shape)

    def f(x):
        return jnp.sum(w * net.apply(p, x, stop="features.1", rules=BATCH_STATISTICS))

    with jax.enable_x64(True):
        p64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), p)
        x64, w64 = jnp.asarray(x, jnp.float64), jnp.asarray(w, jnp.float64)

        def f64(x):
            return jnp.sum(w64 * net.apply(p64, x, stop="features.1", rules=BATCH_STATISTICS))

        d = jax.random.normal(jax.random.key(6), x.shape, jnp.float64) * 1e-5
        fd = (f64(x64 + d) - f64(x64 - d)) / 2
        g64 = jax.grad(f64)(x64)
        np.testing.assert_allclose(float(jnp.sum(g64 * d)), float(fd), rtol=1e-6)
        g64 = np.asarray(g64)
    np.testing.assert_allclose(np.asarray(jax.grad(f)(x)), g64, atol=1e-4)      # float32 == float64


def test_batch_statistics_sharded_equals_one_device():
    """Under jit on a batch sharded over 8 devices the statistics are the global batch's."""
    net, p, x = _net(), _params(), _images(16)
    mesh = jax.sharding.Mesh(np.array(jax.devices()), ("data",))
    xs = jax.device_put(x, jax.NamedSharding(mesh, jax.P("data")))
    run = jax.jit(lambda p, x: net.apply(p, x, rules=BATCH_STATISTICS))
    np.testing.assert_allclose(np.asarray(run(p, xs)), np.asarray(run(p, jnp.asarray(x))), atol=1e-6)


def test_recompute_batch_norm_gives_the_statistics_of_all_images():
    """After recomputing, inference on any image equals training mode on all images as one batch."""
    net, p, x = _net(), _params(), _images(30)
    q = nets.recompute_batch_norm(net, p, x, batch_size=7)           # 7 does not divide 30
    np.testing.assert_allclose(np.asarray(net.apply(q, jnp.asarray(x))),
                               np.asarray(net.apply(p, jnp.asarray(x), rules=BATCH_STATISTICS)), atol=1e-5)
    conv = np.asarray(net.apply(p, jnp.asarray(x), stop="features.0"), np.float64)   # the first norm in float64
    np.testing.assert_allclose(np.asarray(q["features"]["1"]["mean"]), conv.mean((0, 1, 2)), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(np.asarray(q["features"]["1"]["var"]), conv.var((0, 1, 2)), rtol=1e-4, atol=1e-7)
    np.testing.assert_array_equal(np.asarray(p["features"]["1"]["mean"]), np.zeros(8))   # params left as they were
    u8 = nets.recompute_batch_norm(net, p, (x * 255).round().astype(np.uint8))        # uint8 images read as x / 255
    np.testing.assert_allclose(np.asarray(u8["features"]["1"]["mean"]), np.asarray(q["features"]["1"]["mean"]),
                               atol=2e-2)


@pytest.mark.parametrize("name", ["smallcnn", "resnet50"])
def test_recompute_batch_norm_bad_net(name):
    """A net without batch norms, or with norms inside its stages (resnet50's blocks), is refused."""
    net = nets.get(name)
    params = net.abstract_params() if name == "resnet50" else net.init(jax.random.key(0))
    with pytest.raises(ValueError, match="^net"):
        nets.recompute_batch_norm(net, params, _images(2))


@pytest.mark.parametrize("kw,arg", [({"images": np.zeros((2, 16, 16), np.float32)}, "images"),
                                    ({"images": np.zeros((2, 16, 16, 3), np.int32)}, "images"),
                                    ({"batch_size": 0}, "batch_size")])
def test_recompute_batch_norm_bad_input(kw, arg):
    kw = {"images": _images(2), **kw}
    with pytest.raises(ValueError, match=f"^{arg}"):
        nets.recompute_batch_norm(_net(), _params(), kw.pop("images"), **kw)

