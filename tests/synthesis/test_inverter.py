"""Learned inverter: conv layers against lax.conv / NumPy, planted invertible features, depth ordering on the
trained smallcnn, loss decrease, vmap == loop, sharded == single device, resume == uninterrupted, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinterp import nets
from jaxinterp.synthesis import inverter as inv_mod
from jaxinterp.synthesis.inverter import (invert, inverter_apply, inverter_image_size, inverter_init,
                                          train_inverter)
from jaxinterp.train.sharding import data_mesh, replicate, shard_batch

SIZE = 16


def _smooth_images(key, n, size=SIZE):
    """Random smooth colour images in [0.05, 0.95]: 4 x 4 random grids, bilinearly upsampled."""
    low = jax.random.uniform(key, (n, 4, 4, 3), minval=0.05, maxval=0.95)
    return jax.image.resize(low, (n, size, size, 3), "bilinear")


@pytest.fixture(scope="module")
def small_net():
    net = nets.get("smallcnn", num_classes=4, widths=(8, 8, 8, 8))
    return net, net.init(jax.random.key(0))


def test_layers_match_lax_conv_and_numpy():
    """im2col 3x3 conv == lax.conv_general_dilated; the up-convolution == nearest upsampling + conv (NumPy)."""
    k = jax.random.split(jax.random.key(3), 3)
    x = jax.random.normal(k[0], (2, 5, 6, 4))
    layer = {"w": jax.random.normal(k[1], (3, 3, 4, 7)), "b": jax.random.normal(k[2], (7,))}
    want = jax.lax.conv_general_dilated(x, layer["w"], (1, 1), ((1, 1), (1, 1)),
                                        dimension_numbers=("NHWC", "HWIO", "NHWC")) + layer["b"]
    np.testing.assert_allclose(inv_mod._conv3x3(x, layer), want, rtol=1e-5, atol=1e-5)
    # float64 NumPy loop oracle for the up-convolution
    xn, wn, bn = (np.asarray(a, np.float64) for a in (x, layer["w"], layer["b"]))
    up = xn.repeat(2, axis=1).repeat(2, axis=2)
    pad = np.pad(up, ((0, 0), (1, 1), (1, 1), (0, 0)))
    ref = np.zeros((2, 10, 12, 7)) + bn
    for dy in range(3):
        for dx in range(3):
            ref += np.einsum("nhwc,cd->nhwd", pad[:, dy:dy + 10, dx:dx + 12], wn[dy, dx])
    np.testing.assert_allclose(inv_mod._upconv(x, layer), ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("feature_shape, image_size, ups", [
    ((16, 16, 8), (16, 16), 0), ((2, 3, 5), (16, 24), 3), ((8,), (16, 32), 2)])
def test_shapes_range_and_architecture(feature_shape, image_size, ups):
    params = inverter_init(jax.random.key(0), feature_shape, image_size, widths=(8, 4))
    assert inv_mod._layer_count(params, "up") == ups
    f = 3.0 * jax.random.normal(jax.random.key(1), (3, *feature_shape))
    y = jax.jit(inverter_apply)(params, f)
    assert y.shape == (3, *image_size, 3) and y.dtype == jnp.float32
    assert float(y.min()) > 0.0 and float(y.max()) < 1.0
    assert inverter_image_size(params, feature_shape[:2] if len(feature_shape) == 3 else None) == image_size
    if len(feature_shape) == 3:   # fully convolutional: twice the features, twice the image
        big = jnp.tile(f, (1, 2, 2, 1))
        assert inverter_apply(params, big).shape == (3, 2 * image_size[0], 2 * image_size[1], 3)


def test_vmap_equals_loop_and_jit():
    params = inverter_init(jax.random.key(0), (4, 4, 6), (16, 16), widths=(8, 4))
    f = jax.random.normal(jax.random.key(1), (3, 2, 4, 4, 6))
    one = jax.jit(inverter_apply)
    looped = np.stack([np.stack([np.asarray(one(params, f[i, j][None]))[0] for j in range(2)])
                       for i in range(3)])
    vmapped = jax.jit(jax.vmap(inverter_apply, in_axes=(None, 0)))(params, f)
    np.testing.assert_allclose(vmapped, looped, rtol=1e-5, atol=1e-6)
    # and vmap over decoders (parameters), e.g. an ensemble of inverters
    stacked = jax.tree.map(lambda *a: jnp.stack(a), params, inverter_init(jax.random.key(2), (4, 4, 6), (16, 16),
                                                                           widths=(8, 4)))
    both = jax.jit(jax.vmap(inverter_apply, in_axes=(0, None)))(stacked, f[0])
    np.testing.assert_allclose(both[0], inverter_apply(params, f[0]), rtol=1e-5, atol=1e-6)


def test_planted_linear_features_are_inverted(small_net):
    """features.0 of a random-weight net is a linear, invertible map of the image: the decoder
    reconstructs held-out images with an error far below the mean-image baseline."""
    net, params = small_net
    train = _smooth_images(jax.random.key(10), 256)
    test = _smooth_images(jax.random.key(11), 32)
    inv, history = train_inverter(net, params, "features.0", train, steps=100, batch_size=16, lr=3e-3,
                                  key=jax.random.key(0), widths=(16,), num_convs=1, steps_per_call=50)
    recon = invert(net, params, inv, test, "features.0")
    mse = float(np.mean((np.asarray(recon, np.float64) - np.asarray(test, np.float64)) ** 2))
    baseline = float(np.mean((np.asarray(test, np.float64) - np.asarray(train, np.float64).mean(0)) ** 2))
    print(f"planted: MSE {mse:.5f}, mean-image baseline {baseline:.5f}")
    assert mse < 0.3 * baseline, (mse, baseline)
    loss = history["loss"]
    assert loss.shape == (100,) and np.all(np.isfinite(loss))
    assert loss[-20:].mean() < 0.3 * loss[:5].mean()            # the loss decreases


@pytest.mark.slow
def test_early_layer_reconstructs_better_than_late_layer(trained_smallcnn):
    """Deeper features are more invariant (the paper's finding): on held-out synthetic images the
    decoder from pool1 beats the one from pool2, and both beat the mean image."""
    from jaxinterp.data import synthetic
    net, params, _ = trained_smallcnn
    data = np.asarray(synthetic.generate(jax.random.key(5), 256, size=64)["image"])   # two render chunks
    train, test = data[:224], data[224:]
    baseline = float(np.mean((test.astype(np.float64) - train.astype(np.float64).mean(0)) ** 2))
    mse = {}
    for layer in ("features.2", "features.5"):
        inv, _ = train_inverter(net, params, layer, train, steps=100, batch_size=8, lr=3e-3,
                                key=jax.random.key(0), widths=(16, 16), num_convs=1, steps_per_call=100)
        recon = np.asarray(invert(net, params, inv, test, layer), np.float64)
        mse[layer] = float(np.mean((recon - test) ** 2))
    print(f"trained smallcnn: MSE {mse}, mean-image baseline {baseline:.5f}")
    assert mse["features.2"] < 0.5 * mse["features.5"], mse
    assert mse["features.5"] < 0.9 * baseline, (mse, baseline)


def test_sharded_training_and_inversion_equal_single_device(small_net):
    net, params = small_net
    train = _smooth_images(jax.random.key(12), 64)
    kw = dict(steps=4, batch_size=8, lr=1e-3, key=jax.random.key(1), widths=(8,), num_convs=1, steps_per_call=4)
    single, h1 = train_inverter(net, params, "features.2", train, **kw)
    mesh = data_mesh()
    sharded, h8 = train_inverter(net, params, "features.2", train, mesh=mesh, **kw)
    np.testing.assert_allclose(h8["loss"], h1["loss"], rtol=1e-4)
    for a, b in zip(jax.tree.leaves(sharded), jax.tree.leaves(single)):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)
    fn = jax.jit(invert, static_argnames=("net", "layer"))
    x = train[:8]
    want = fn(net, params, single, x, "features.2")
    got = fn(net, replicate(params, mesh), replicate(single, mesh), shard_batch(x, mesh), "features.2")
    assert len(got.sharding.device_set) == 8
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


class _Killed(Exception):
    pass


def test_resume_from_checkpoint_equals_uninterrupted_run(small_net, tmp_path):
    net, params = small_net
    calls = []

    def data(key, n):          # a callable data source (a pure function of its key)
        calls.append(1)
        return _smooth_images(key, n)

    kw = dict(steps=6, batch_size=4, lr=1e-3, key=jax.random.key(2), widths=(8,), num_convs=1, steps_per_call=2)
    whole, h_whole = train_inverter(net, params, "features.2", data, **kw)

    def kill_after_first_call(line):
        raise _Killed(line)

    ckpt = str(tmp_path / "ckpt")
    with pytest.raises(_Killed):
        train_inverter(net, params, "features.2", data, checkpoint_dir=ckpt, progress=kill_after_first_call, **kw)
    lines = []
    resumed, h_resumed = train_inverter(net, params, "features.2", data, checkpoint_dir=ckpt,
                                        progress=lines.append, **kw)
    assert lines[0].startswith("resumed from step 2") and len(lines) == 3
    for a, b in zip(jax.tree.leaves(resumed), jax.tree.leaves(whole)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(h_resumed["loss"], h_whole["loss"], rtol=1e-6)
    with pytest.raises(ValueError, match=r"^checkpoint_dir: .* holds a run with lr="):
        train_inverter(net, params, "features.2", data, checkpoint_dir=ckpt, **{**kw, "lr": 2e-3})


@pytest.mark.parametrize("kwargs, match", [
    ({"layer": "features.99"}, r"^layer: unknown split point 'features.99'"),
    ({"steps": 0}, r"^steps: expected a positive integer"),
    ({"batch_size": 0}, r"^batch_size: expected a positive integer"),
    ({"steps_per_call": 0}, r"^steps_per_call: expected a positive integer"),
    ({"lr": -1.0}, r"^lr: expected a finite number > 0"),
    ({"widths": ()}, r"^widths: expected a non-empty tuple"),
    ({"data": np.ones((4, SIZE, SIZE))}, r"^data: expected a callable"),
    ({"data": np.full((4, SIZE, SIZE, 3), 2.0, np.float32)}, r"^data: expected pixel values in \[0, 1\]"),
    ({"data": lambda k, n: jnp.zeros((n + 1, SIZE, SIZE, 3))}, r"^data: expected batches of images \(4,"),
    ({"batch_size": 4, "mesh": "mesh"}, r"^mesh: expected a jax.sharding.Mesh"),
    ({"batch_size": 4, "mesh": None, "_mesh8": True}, r"^batch_size: expected a multiple of the 8 devices"),
])
def test_bad_training_input_raises(small_net, kwargs, match):
    net, params = small_net
    kwargs = {"layer": "features.2", "data": np.full((8, SIZE, SIZE, 3), 0.5, np.float32), "steps": 2,
              "batch_size": 4, "key": jax.random.key(0), **kwargs}
    if kwargs.pop("_mesh8", False):
        kwargs["mesh"], kwargs["batch_size"] = data_mesh(), 4
    layer, data = kwargs.pop("layer"), kwargs.pop("data")
    with pytest.raises(ValueError, match=match):
        train_inverter(net, params, layer, data, **kwargs)


def test_bad_decoder_input_raises(small_net):
    net, params = small_net
    with pytest.raises(ValueError, match=r"^feature_shape: expected \(h, w, C\) or \(C,\)"):
        inverter_init(jax.random.key(0), (4, 4), (16, 16))
    with pytest.raises(ValueError, match=r"^image_size: \(24, 24\) is not the feature map size \(4, 4\) times"):
        inverter_init(jax.random.key(0), (4, 4, 3), (24, 24))
    with pytest.raises(ValueError, match=r"^image_size: expected a positive integer or \(H, W\)"):
        inverter_init(jax.random.key(0), (4, 4, 3), (16, 0))
    with pytest.raises(ValueError, match=r"^num_convs: expected a positive integer"):
        inverter_init(jax.random.key(0), (4, 4, 3), (16, 16), num_convs=0)
    p = inverter_init(jax.random.key(0), (4, 4, 8), (16, 16), widths=(4,))
    with pytest.raises(ValueError, match=r"^features: expected shape \(N, h, w, 8\)"):
        inverter_apply(p, jnp.zeros((2, 4, 4, 5)))
    with pytest.raises(ValueError, match=r"^features: expected shape \(N, h, w, 8\)"):
        inverter_apply(p, jnp.zeros((2, 8)))
    with pytest.raises(ValueError, match=r"^features: expected a floating dtype"):
        inverter_apply(p, jnp.zeros((2, 4, 4, 8), jnp.int32))
    with pytest.raises(ValueError, match=r"^params: expected the dict of inverter_init"):
        inverter_apply({"w": jnp.zeros(3)}, jnp.zeros((2, 4, 4, 8)))
    x = jnp.full((2, SIZE, SIZE, 3), 0.5)
    p5 = inverter_init(jax.random.key(0), (4, 4, 5), (16, 16), widths=(4,))
    with pytest.raises(ValueError, match=r"^inverter_params: a decoder of features \(None, None, 5\)"):
        invert(net, params, p5, x, "features.2")                     # features.2 has 8 channels
    with pytest.raises(ValueError, match=r"^layer: unknown split point"):
        invert(net, params, p, x, "nope")
    with pytest.raises(ValueError, match=r"^x: expected images"):
        invert(net, params, p, x[0], "features.2")
