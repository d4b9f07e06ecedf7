"""The feature-inversion decoder (nets.decoder): its conv layers against lax.conv / NumPy, shapes and range, the NNX
module against the pure functions, the parameter count in closed form, He init, vmap == loop, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxinterp import nets
from jaxinterp.nets import decoder


def test_layers_match_lax_conv_and_numpy():
    """im2col 3x3 conv == lax.conv_general_dilated; the up-convolution == nearest upsampling + conv (NumPy)."""
    k = jax.random.split(jax.random.key(3), 3)
    x = jax.random.normal(k[0], (2, 5, 6, 4))
    w, b = jax.random.normal(k[1], (3, 3, 4, 7)), jax.random.normal(k[2], (7,))
    want = jax.lax.conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)),
                                        dimension_numbers=("NHWC", "HWIO", "NHWC")) + b
    np.testing.assert_allclose(decoder._conv3x3(x, w, b), want, rtol=1e-5, atol=1e-5)
    # float64 NumPy loop oracle for the up-convolution
    xn, wn, bn = (np.asarray(a, np.float64) for a in (x, w, b))
    up = xn.repeat(2, axis=1).repeat(2, axis=2)
    pad = np.pad(up, ((0, 0), (1, 1), (1, 1), (0, 0)))
    ref = np.zeros((2, 10, 12, 7)) + bn
    for dy in range(3):
        for dx in range(3):
            ref += np.einsum("nhwc,cd->nhwd", pad[:, dy:dy + 10, dx:dx + 12], wn[dy, dx])
    np.testing.assert_allclose(decoder._upconv(x, w, b), ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("feature_shape, image_size, ups", [
    ((16, 16, 8), (16, 16), 0), ((2, 3, 5), (16, 24), 3), ((8,), (16, 32), 2)])
def test_shapes_range_and_architecture(feature_shape, image_size, ups):
    params = nets.inverter_init(jax.random.key(0), feature_shape, image_size, widths=(8, 4))
    assert decoder._layer_count(params, "up") == ups
    f = 3.0 * jax.random.normal(jax.random.key(1), (3, *feature_shape))
    y = jax.jit(nets.inverter_apply)(params, f)
    assert y.shape == (3, *image_size, 3) and y.dtype == jnp.float32
    assert float(y.min()) > 0.0 and float(y.max()) < 1.0
    assert nets.inverter_image_size(params, feature_shape[:2] if len(feature_shape) == 3 else None) == image_size
    want = feature_shape if len(feature_shape) == 1 else (None, None, feature_shape[2])
    assert decoder.inverter_feature_shape(params) == want
    if len(feature_shape) == 3:   # fully convolutional: twice the features, twice the image
        big = jnp.tile(f, (1, 2, 2, 1))
        assert nets.inverter_apply(params, big).shape == (3, 2 * image_size[0], 2 * image_size[1], 3)


@pytest.mark.parametrize("feature_shape, image_size", [((4, 4, 6), (16, 16)), ((6,), (8, 16))])
def test_module_and_pure_apply_agree_on_the_same_params(feature_shape, image_size):
    module = nets.Decoder(feature_shape, image_size, widths=(8, 4), rngs=nnx.Rngs(params=3))
    module.scale[...] = jnp.asarray(0.5)
    params = nnx.to_pure_dict(nnx.state(module))
    assert float(params["scale"]) == 0.5 and isinstance(module.scale, decoder.FixedScale)
    assert "scale" not in nnx.to_pure_dict(nnx.state(module, nnx.Param))     # a fixed value, not trained
    f = jax.random.normal(jax.random.key(1), (2, *feature_shape))
    np.testing.assert_array_equal(module(f), nets.inverter_apply(params, f))
    same = jax.tree.map(lambda a: (a.shape, a.dtype),
                        nets.inverter_init(jax.random.key(0), feature_shape, image_size, widths=(8, 4)))
    assert same == jax.tree.map(lambda a: (a.shape, a.dtype), params)


def _count(feature_shape, image_size, widths, num_convs, fc_width):
    """Scalars of the decoder: 3x3 convs 9 cin cout + cout, fc0 C fc_width + fc_width,
    seed fc_width h0 w0 c + h0 w0 c, and the scale."""
    n, (hh, ww) = 1, image_size                                              # 1: the scale
    if len(feature_shape) == 1:
        k = next(k for k in range(8, -1, -1) if hh % 2 ** k == 0 and ww % 2 ** k == 0 and min(hh, ww) >> k >= 4)
        h0, w0, cin = hh >> k, ww >> k, widths[0]
        n += feature_shape[0] * fc_width + fc_width + (fc_width + 1) * h0 * w0 * widths[0]
    else:
        k, cin = int(np.log2(hh // feature_shape[0])), feature_shape[2]
    for _ in range(num_convs):
        n += 9 * cin * widths[0] + widths[0]
        cin = widths[0]
    for i in range(k):
        cout = widths[min(i + 1, len(widths) - 1)]
        n += 9 * cin * cout + cout
        cin = cout
    return n + 9 * cin * 3 + 3


@pytest.mark.parametrize("feature_shape, image_size, widths, num_convs, fc_width", [
    ((8, 8, 16), (64, 64), (64, 64, 32, 32), 2, 256), ((128,), (64, 64), (64, 64, 32, 32), 2, 256),
    ((3, 5, 7), (12, 20), (5,), 3, 9), ((10,), (24, 40), (6, 5), 1, 11)])
def test_param_count_in_closed_form(feature_shape, image_size, widths, num_convs, fc_width):
    abstract = jax.eval_shape(lambda k: nets.inverter_init(k, feature_shape, image_size, widths=widths,
                                                           num_convs=num_convs, fc_width=fc_width),
                              jax.random.key(0))
    assert nets.count_params(abstract) == _count(feature_shape, image_size, widths, num_convs, fc_width)


def test_init_is_he_for_leaky_relus_with_a_small_output_layer():
    params = nets.inverter_init(jax.random.key(0), (8, 8, 32), (32, 32), widths=(64, 32))
    for name, factor in (("conv0", 1.0), ("conv1", 1.0), ("up0", 1.0), ("up1", 1.0), ("out", 0.1)):
        w = np.asarray(params[name]["w"], np.float64)
        std = np.sqrt(2.0 / ((1 + 0.2 ** 2) * 9 * w.shape[2])) * factor
        np.testing.assert_allclose(w.std(), std, rtol=0.1)
        assert abs(w.mean()) < 0.1 * std
        np.testing.assert_array_equal(params[name]["b"], 0.0)
    assert float(params["scale"]) == 1.0
    assert not np.allclose(params["conv1"]["w"][:, :, :32], params["conv0"]["w"][:, :, :32])


def test_vmap_equals_loop_and_jit():
    params = nets.inverter_init(jax.random.key(0), (4, 4, 6), (16, 16), widths=(8, 4))
    f = jax.random.normal(jax.random.key(1), (3, 2, 4, 4, 6))
    one = jax.jit(nets.inverter_apply)
    looped = np.stack([np.stack([np.asarray(one(params, f[i, j][None]))[0] for j in range(2)])
                       for i in range(3)])
    vmapped = jax.jit(jax.vmap(nets.inverter_apply, in_axes=(None, 0)))(params, f)
    np.testing.assert_allclose(vmapped, looped, rtol=1e-5, atol=1e-6)
    # and vmap over decoders (parameters), e.g. an ensemble of inverters
    stacked = jax.tree.map(lambda *a: jnp.stack(a), params,
                           nets.inverter_init(jax.random.key(2), (4, 4, 6), (16, 16), widths=(8, 4)))
    both = jax.jit(jax.vmap(nets.inverter_apply, in_axes=(0, None)))(stacked, f[0])
    np.testing.assert_allclose(both[0], nets.inverter_apply(params, f[0]), rtol=1e-5, atol=1e-6)


def test_bad_input_raises():
    with pytest.raises(ValueError, match=r"^feature_shape: expected \(h, w, C\) or \(C,\)"):
        nets.inverter_init(jax.random.key(0), (4, 4), (16, 16))
    with pytest.raises(ValueError, match=r"^image_size: \(24, 24\) is not the feature map size \(4, 4\) times"):
        nets.inverter_init(jax.random.key(0), (4, 4, 3), (24, 24))
    with pytest.raises(ValueError, match=r"^image_size: expected a positive integer or \(H, W\)"):
        nets.inverter_init(jax.random.key(0), (4, 4, 3), (16, 0))
    with pytest.raises(ValueError, match=r"^num_convs: expected a positive integer"):
        nets.inverter_init(jax.random.key(0), (4, 4, 3), (16, 16), num_convs=0)
    with pytest.raises(ValueError, match=r"^widths: expected a non-empty tuple"):
        nets.Decoder((4, 4, 3), (16, 16), widths=(), rngs=nnx.Rngs(params=0))
    p = nets.inverter_init(jax.random.key(0), (4, 4, 8), (16, 16), widths=(4,))
    with pytest.raises(ValueError, match=r"^features: expected shape \(N, h, w, 8\)"):
        nets.inverter_apply(p, jnp.zeros((2, 4, 4, 5)))
    with pytest.raises(ValueError, match=r"^features: expected shape \(N, h, w, 8\)"):
        nets.inverter_apply(p, jnp.zeros((2, 8)))
    with pytest.raises(ValueError, match=r"^features: expected a floating dtype"):
        nets.inverter_apply(p, jnp.zeros((2, 4, 4, 8), jnp.int32))
    with pytest.raises(ValueError, match=r"^features: expected an array"):
        nets.inverter_apply(p, [[0.0]])
    with pytest.raises(ValueError, match=r"^params: expected the dict of inverter_init"):
        nets.inverter_apply({"w": jnp.zeros(3)}, jnp.zeros((2, 4, 4, 8)))
    with pytest.raises(ValueError, match=r"^params: \['out'\]\['b'\] has shape \(4,\)"):
        nets.inverter_apply({**p, "out": {**p["out"], "b": jnp.zeros(4)}}, jnp.zeros((2, 4, 4, 8)))
    with pytest.raises(ValueError, match=r"^params: structure does not match"):
        nets.inverter_apply({**p, "extra": jnp.zeros(4)}, jnp.zeros((2, 4, 4, 8)))
    with pytest.raises(ValueError, match=r"^feature_hw: needed"):
        nets.inverter_image_size(p)
