"""Learned inverter: planted invertible features, depth ordering on the trained smallcnn, loss decrease,
sharded == single device, resume == uninterrupted, bad input.  The decoder itself is tested in
tests/nets/test_decoder.py."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinterp import nets
from jaxinterp.synthesis.inverter import invert, reconstruction_loss, train_inverter
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


def test_bad_invert_input_raises(small_net):
    net, params = small_net
    x = jnp.full((2, SIZE, SIZE, 3), 0.5)
    p = nets.inverter_init(jax.random.key(0), (4, 4, 8), (16, 16), widths=(4,))
    p5 = nets.inverter_init(jax.random.key(0), (4, 4, 5), (16, 16), widths=(4,))
    with pytest.raises(ValueError, match=r"^inverter_params: a decoder of features \(None, None, 5\)"):
        invert(net, params, p5, x, "features.2")                     # features.2 has 8 channels
    with pytest.raises(ValueError, match=r"^layer: unknown split point"):
        invert(net, params, p, x, "nope")
    with pytest.raises(ValueError, match=r"^x: expected images"):
        invert(net, params, p, x[0], "features.2")
    with pytest.raises(ValueError, match=r"^params: expected the dict of inverter_init"):
        invert(net, params, {"w": jnp.zeros(3)}, x, "features.2")


def test_reconstruction_loss_is_the_mean_squared_pixel_error():
    p = nets.inverter_init(jax.random.key(0), (4, 4, 8), (16, 16), widths=(4,))
    f = jax.random.normal(jax.random.key(1), (2, 4, 4, 8))
    x = jax.random.uniform(jax.random.key(2), (2, 16, 16, 3))
    want = np.mean((np.asarray(nets.inverter_apply(p, f), np.float64) - np.asarray(x, np.float64)) ** 2)
    np.testing.assert_allclose(float(reconstruction_loss(p, f, x)), want, rtol=1e-5)
