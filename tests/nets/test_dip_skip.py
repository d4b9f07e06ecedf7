"""The deep image prior's skip generator (nets.dip_skip): a float64 NumPy oracle, the NNX module against the
pure functions, the parameter count in closed form, the init's distributions, vmap over params, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxinterp import nets
from jaxinterp.nets import dip_skip

ARCH = dict(in_channels=5, down=(6, 7), up=(5, 4), skip=(3, 0))
TINY = dict(in_channels=4, down=(4, 4), up=(4, 4), skip=(2, 2))


def _noise(key, size, channels):
    return 0.1 * jax.random.uniform(key, (*size, channels))


# -- the generator against a float64 NumPy oracle -------------------------------------------------------


def _np_conv(p, h, stride):
    """float64 conv (H, W, Cin) with reflection padding, loops over the kernel taps."""
    w, b = np.asarray(p["w"], np.float64), np.asarray(p["b"], np.float64)
    k = w.shape[0]
    if k > 1:
        h = np.pad(h, ((k // 2,) * 2, (k // 2,) * 2, (0, 0)), mode="reflect")
    ho, wo = (h.shape[0] - k) // stride + 1, (h.shape[1] - k) // stride + 1
    out = np.zeros((ho, wo, w.shape[-1]))
    for dy in range(k):
        for dx in range(k):
            patch = h[dy:dy + stride * (ho - 1) + 1:stride, dx:dx + stride * (wo - 1) + 1:stride]
            out += patch @ w[dy, dx]
    return out + b


def _np_bn(p, h):
    mean, var = h.mean((0, 1)), h.var((0, 1))
    return (h - mean) / np.sqrt(var + 1e-5) * np.asarray(p["scale"], np.float64) + np.asarray(p["bias"], np.float64)


def _np_act(h):
    return np.where(h > 0, h, 0.2 * h)


def _np_up_bilinear(h):
    """x2 bilinear, align_corners=False: output pixel o samples source (o + 0.5) / 2 - 0.5, clamped."""
    def axis(n):
        src = np.clip((np.arange(2 * n) + 0.5) / 2 - 0.5, 0, n - 1)
        lo = np.floor(src).astype(int)
        return lo, np.minimum(lo + 1, n - 1), src - lo
    (y0, y1, fy), (x0, x1, fx) = axis(h.shape[0]), axis(h.shape[1])
    rows = h[y0] * (1 - fy)[:, None, None] + h[y1] * fy[:, None, None]
    return rows[:, x0] * (1 - fx)[None, :, None] + rows[:, x1] * fx[None, :, None]


def _np_skip_net(params, z):
    scales = sum(k.startswith("down") for k in params)

    def scale(i, h):
        d = params[f"down{i}"]
        deeper = _np_act(_np_bn(d["bn2"], _np_conv(d["conv2"], _np_act(_np_bn(d["bn1"], _np_conv(d["conv1"], h, 2))), 1)))
        if i + 1 < scales:
            deeper = scale(i + 1, deeper)
        parts = [_np_up_bilinear(deeper)]
        if f"skip{i}" in params:
            s = params[f"skip{i}"]
            parts.insert(0, _np_act(_np_bn(s["bn"], _np_conv(s["conv"], h, 1))))
        u = params[f"up{i}"]
        h = _np_bn(u["bn0"], np.concatenate(parts, -1))
        h = _np_act(_np_bn(u["bn1"], _np_conv(u["conv1"], h, 1)))
        return _np_act(_np_bn(u["bn2"], _np_conv(u["conv2"], h, 1)))

    return 1 / (1 + np.exp(-_np_conv(params["out"], scale(0, np.asarray(z, np.float64)), 1)))


def test_skip_net_matches_float64_numpy_and_shapes():
    params = nets.skip_net_init(jax.random.key(0), **ARCH)
    assert all(l.dtype == jnp.float32 for l in jax.tree.leaves(params))
    # random BN affine params (and larger biases) so that they matter
    rng = np.random.default_rng(9)
    params = jax.tree.map(lambda l: np.asarray(l) + 0.3 * rng.normal(size=l.shape).astype(np.float32), params)
    assert "skip1" not in params and params["up1"]["conv1"]["w"].shape == (3, 3, 7, 4)
    assert params["up0"]["conv1"]["w"].shape == (3, 3, 3 + 4, 5) and params["out"]["w"].shape == (1, 1, 5, 3)
    assert nets.skip_net_scales(params) == 2
    z = _noise(jax.random.key(1), (16, 12), 5)
    out = jax.jit(nets.skip_net_apply)(params, z)
    assert out.shape == (16, 12, 3) and out.dtype == jnp.float32
    want = _np_skip_net(jax.tree.map(np.asarray, params), z)
    np.testing.assert_allclose(out, want, rtol=1e-4, atol=2e-5)
    assert float(out.min()) > 0 and float(out.max()) < 1
    # nearest upsampling is pixel repetition
    h = np.random.default_rng(0).normal(size=(3, 4, 2)).astype(np.float32)
    np.testing.assert_array_equal(dip_skip._upsample2(jnp.asarray(h), "nearest"), h.repeat(2, 0).repeat(2, 1))
    np.testing.assert_allclose(dip_skip._upsample2(jnp.asarray(h), "bilinear"),
                               _np_up_bilinear(h.astype(np.float64)), rtol=1e-5, atol=1e-6)


def test_patch_products_and_their_gradient_match_xla_convolution():
    """The CPU convs (im2col matmul, hand-written VJP) against lax.conv_general_dilated and its autodiff."""
    kx, kw = jax.random.split(jax.random.key(4))
    for k, stride in ((3, 2), (3, 1), (1, 1)):
        x = jax.random.normal(kx, (9, 11, 5))
        w = jax.random.normal(kw, (k, k, 5, 4))

        def xla(x, w):
            return jax.lax.conv_general_dilated(x[None], w, (stride, stride), "VALID",
                                                dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                                precision=jax.lax.Precision.HIGHEST)[0]

        ours = dip_skip._patch_products(x, w, stride)
        np.testing.assert_allclose(ours, xla(x, w), rtol=1e-4, atol=1e-4)
        g = jax.random.normal(jax.random.key(5), ours.shape)
        got = jax.vjp(lambda x, w: dip_skip._patch_products(x, w, stride), x, w)[1](g)
        want = jax.vjp(xla, x, w)[1](g)
        for a, b in zip(got, want):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


# -- the module, the pure functions, the init -------------------------------------------------------------


def test_module_and_pure_apply_agree_on_the_same_params():
    net = nets.SkipNet(**ARCH, rngs=nnx.Rngs(params=3))
    params = nnx.to_pure_dict(nnx.state(net))
    z = _noise(jax.random.key(1), (8, 12), 5)
    for upsample in dip_skip.UPSAMPLE:
        np.testing.assert_array_equal(net(z, upsample=upsample), nets.skip_net_apply(params, z, upsample=upsample))
    # the pure init builds the same tree (keys, shapes, dtypes)
    same = jax.tree.map(lambda a: (a.shape, a.dtype), nets.skip_net_init(jax.random.key(0), **ARCH))
    assert same == jax.tree.map(lambda a: (a.shape, a.dtype), params)


def _count(cin, out, down, up, skip):
    """Scalars of the skip net: each conv k^2 cin cout + cout, each BN 2 c."""
    n = 0
    for i in range(len(down)):
        d, s, u = down[i], skip[i], up[i]
        deeper = up[i + 1] if i + 1 < len(down) else d
        n += 9 * cin * d + d + 9 * d * d + d + 4 * d
        n += (cin * s + s + 2 * s) if s else 0
        n += 2 * (s + deeper) + 9 * (s + deeper) * u + u + 2 * u + u * u + u + 2 * u
        cin = d
    return n + up[0] * out + out


@pytest.mark.parametrize("arch", [ARCH, TINY, dict(in_channels=3, out_channels=1, down=(8,), up=(6,), skip=(0,))])
def test_param_count_in_closed_form(arch):
    full = {"out_channels": 3, **arch}
    abstract = jax.eval_shape(lambda k: nets.skip_net_init(k, **arch), jax.random.key(0))
    assert nets.count_params(abstract) == _count(full["in_channels"], full["out_channels"], full["down"],
                                                 full["up"], full["skip"])


def test_init_is_pytorchs_default_conv_init():
    """Conv weights and biases uniform in +-1/sqrt(fan_in) (variance bound^2 / 3); BN scale 1, bias 0."""
    params = nets.skip_net_init(jax.random.key(0), in_channels=8, down=(32, 32), up=(32, 32), skip=(4, 4))
    w, b = np.asarray(params["down1"]["conv2"]["w"]), np.asarray(params["down1"]["conv2"]["b"])
    bound = 1 / np.sqrt(9 * 32)
    assert np.abs(w).max() <= bound and np.abs(b).max() <= bound and np.abs(w).max() > 0.95 * bound
    np.testing.assert_allclose(w.var(), bound ** 2 / 3, rtol=0.1)
    assert abs(w.mean()) < 0.05 * bound
    out = np.asarray(params["out"]["w"])
    assert np.abs(out).max() <= 1 / np.sqrt(32) and np.abs(out).max() > 0.5 / np.sqrt(32)
    np.testing.assert_array_equal(params["up0"]["bn0"]["scale"], 1.0)
    np.testing.assert_array_equal(params["up0"]["bn0"]["bias"], 0.0)
    other = nets.skip_net_init(jax.random.key(1), in_channels=8, down=(32, 32), up=(32, 32), skip=(4, 4))
    assert not np.allclose(other["down1"]["conv2"]["w"], w)
    # the layers are independent draws, not copies of one another
    assert not np.allclose(params["down0"]["conv2"]["w"], w)


def test_vmap_over_params_and_inputs_equals_loop_and_init_under_jit():
    keys = jax.random.split(jax.random.key(0), 3)
    stacked = jax.jit(jax.vmap(lambda k: nets.skip_net_init(k, **TINY)))(keys)
    one = nets.skip_net_init(keys[1], **TINY)
    for a, b in zip(jax.tree.leaves(stacked), jax.tree.leaves(one)):
        np.testing.assert_array_equal(a[1], b)
    z = jax.random.uniform(jax.random.key(2), (3, 16, 16, 4))
    out = jax.jit(jax.vmap(nets.skip_net_apply))(stacked, z)
    for i in range(3):
        np.testing.assert_allclose(out[i], nets.skip_net_apply(jax.tree.map(lambda a: a[i], stacked), z[i]),
                                   rtol=1e-5, atol=1e-6)


# -- bad input --------------------------------------------------------------------------------------


@pytest.mark.parametrize("call, match", [
    (lambda p: nets.skip_net_apply(p, jnp.zeros((16, 16, 3))), r"^z: expected one input \(H, W, 4\)"),
    (lambda p: nets.skip_net_apply(p, jnp.zeros((18, 16, 4))), r"^z: the skip net has 2 scales"),
    (lambda p: nets.skip_net_apply(p, jnp.zeros((16, 16, 4)), upsample="cubic"), "^upsample: expected one of"),
    (lambda p: nets.skip_net_apply({"w": p["out"]["w"]}, jnp.zeros((16, 16, 4))), "^params: expected the dict"),
    (lambda p: nets.skip_net_apply({**p, "out": {"w": p["out"]["w"]}}, jnp.zeros((16, 16, 4))),
     "^params: structure does not match"),
    (lambda p: nets.skip_net_apply({**p, "out": {**p["out"], "b": jnp.zeros(4)}}, jnp.zeros((16, 16, 4))),
     r"^params: \['out'\]\['b'\] has shape \(4,\)"),
    (lambda p: nets.skip_net_init(jax.random.key(0), in_channels=4, down=(4, 4), up=(4,), skip=(2, 2)), "^up:"),
    (lambda p: nets.skip_net_init(jax.random.key(0), in_channels=4, down=(4, 0), up=(4, 4), skip=(2, 2)), "^down:"),
    (lambda p: nets.skip_net_init(jax.random.key(0), in_channels=0), "^in_channels:"),
    (lambda p: nets.SkipNet(skip=(4, -1), down=(4, 4), up=(4, 4), rngs=nnx.Rngs(params=0)), "^skip:"),
])
def test_bad_input_raises(call, match):
    params = nets.skip_net_init(jax.random.key(1), **TINY)
    with pytest.raises(ValueError, match=match):
        call(params)
