"""CAM, Grad-CAM, linear approximation: closed form, float64 oracles, vmap, jit, sharding, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinterp import nets, ops
from jaxinterp.targets import Unit
from jaxinterp.attribution.cam import cam, grad_cam, linear_approx
from jaxinterp.train.sharding import data_mesh, shard_batch

NUM_CLASSES = 5
SIZE = 32
LAST = "features.10"  # last ReLU, (4, 4, 16) at 32 px, followed by GAP + linear


@pytest.fixture(scope="module")
def setup():
    net = nets.get("smallcnn", num_classes=NUM_CLASSES, widths=(8, 16, 16, 16))
    params = net.init(jax.random.key(0))
    x = jax.random.uniform(jax.random.key(1), (3, SIZE, SIZE, 3), minval=0.05, maxval=0.95)
    return net, params, x


def _oracle(net, params, x, layer, targets, kind):
    """float64 NumPy maps (N, T, h, w) from activations and jax.grad of the net's tail at ``layer``.

    ``targets`` is a list (per image) of class ints or (layer, channel, y, x) unit tuples.
    """
    out = []
    with jax.enable_x64(True):
        p64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params)
        for n, ts in enumerate(targets):
            a = net.apply(p64, jnp.asarray(x[n:n + 1], jnp.float64), stop=layer)[0]
            rows = []
            for t in ts:
                if isinstance(t, tuple):
                    ul, c, i, j = t
                    f = lambda a: net.apply(p64, a[None], start=layer, stop=ul)[0, i, j, c]  # noqa: E731
                else:
                    f = lambda a: net.apply(p64, a[None], start=layer)[0, t]  # noqa: E731
                A, G = np.asarray(a), np.asarray(jax.grad(f)(a))
                if kind == "grad_cam":
                    m = np.maximum((A * G.mean(axis=(0, 1))).sum(-1), 0.0)
                elif kind == "grad_cam_signed":
                    m = (A * G.mean(axis=(0, 1))).sum(-1)
                elif kind == "linear_approx":
                    m = (A * G).sum(-1)
                else:  # cam
                    m = (A * G.sum(axis=(0, 1))).sum(-1)
                rows.append(m)
            out.append(rows)
    return np.array(out)


def test_cam_equals_closed_form_of_gap_linear_head(setup):
    """CAM_t = sum_k w_{t,k} A_k from the classifier kernel; its spatial mean + bias is the logit."""
    net, params, x = setup
    targets = jnp.array([[0, 4], [2, 2], [1, 3]])
    maps = cam(net, params, x, targets, layer=LAST, resize=False)
    assert maps.shape == (3, 2, 4, 4) and maps.dtype == x.dtype
    a = np.asarray(net.apply(params, x, stop=LAST), np.float64)
    w = np.asarray(params["classifier"]["kernel"], np.float64)  # (C, K)
    b = np.asarray(params["classifier"]["bias"], np.float64)
    ref = np.einsum("nhwc,ck->nkhw", a, w)[np.arange(3)[:, None], np.asarray(targets)]
    np.testing.assert_allclose(maps, ref, rtol=1e-5, atol=1e-6)
    logits = np.asarray(net.apply(params, x), np.float64)[np.arange(3)[:, None], np.asarray(targets)]
    np.testing.assert_allclose(ref.mean(axis=(2, 3)) + b[np.asarray(targets)], logits, rtol=1e-5, atol=1e-6)
    assert np.abs(ref).max() > 1e-3


@pytest.mark.parametrize("method, kind, kwargs", [
    (grad_cam, "grad_cam", {}),
    (grad_cam, "grad_cam_signed", {"relu": False}),
    (linear_approx, "linear_approx", {}),
    (cam, "cam", {}),
])
def test_batched_matches_float64_oracle_loop(setup, method, kind, kwargs):
    """N=3 images x T=2 targets in one call == per-(image, target) float64 oracle, at an inner layer."""
    net, params, x = setup
    layer = "features.7"  # (8, 8, 16)
    targets = jnp.array([[0, 4], [2, 2], [1, 3]])
    maps = method(net, params, x, targets, layer=layer, resize=False, **kwargs)
    assert maps.shape == (3, 2, 8, 8)
    ref = _oracle(net, params, x, layer, np.asarray(targets).tolist(), kind)
    scale = np.abs(ref).max()
    assert scale > 0
    np.testing.assert_allclose(maps, ref, rtol=1e-4, atol=1e-5 * scale)


@pytest.mark.parametrize("method, kind", [(grad_cam, "grad_cam_signed"), (linear_approx, "linear_approx")])
def test_unit_targets_match_float64_oracle(setup, method, kind):
    net, params, x = setup
    ch, ys, xs = jnp.array([[3, 7], [0, 0], [15, 1]]), jnp.array([[1, 2], [0, 3], [3, 3]]), \
        jnp.array([[0, 2], [1, 1], [2, 0]])
    target = Unit(LAST, ch, ys, xs)
    kwargs = {"relu": False} if method is grad_cam else {}
    maps = method(net, params, x, target, layer="features.6", resize=False, **kwargs)
    assert maps.shape == (3, 2, 8, 8)
    units = [[(LAST, int(ch[n, k]), int(ys[n, k]), int(xs[n, k])) for k in range(2)] for n in range(3)]
    ref = _oracle(net, params, x, "features.6", units, kind)
    scale = np.abs(ref).max()
    np.testing.assert_allclose(maps, ref, rtol=1e-4, atol=1e-5 * max(scale, 1e-6))


def test_resize_is_bilinear_upsampling_of_layer_map(setup):
    net, params, x = setup
    t = jnp.array([1, 0, 4])
    small = grad_cam(net, params, x, t, layer=LAST, resize=False)
    big = grad_cam(net, params, x, t, layer=LAST)
    assert small.shape == (3, 1, 4, 4) and big.shape == (3, 1, SIZE, SIZE)
    np.testing.assert_allclose(big, ops.resize_bilinear(small, (SIZE, SIZE)), rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(grad_cam(net, params, x, t[:, None], layer=LAST), big)


@pytest.mark.parametrize("method, static", [
    (cam, ("net", "layer", "resize")),
    (grad_cam, ("net", "layer", "relu", "resize")),
    (linear_approx, ("net", "layer", "resize")),
])
def test_jit_equals_eager(setup, method, static):
    net, params, x = setup
    targets = jnp.array([[1, 0], [3, 4], [2, 1]])
    jitted = jax.jit(method, static_argnames=static)
    np.testing.assert_allclose(jitted(net, params, x, targets, layer="features.9"),
                               method(net, params, x, targets, layer="features.9"), rtol=1e-5, atol=1e-6)


def test_sharded_equals_single_device(setup):
    net, params, _ = setup
    x = jax.random.uniform(jax.random.key(2), (8, SIZE, SIZE, 3))
    targets = jax.random.randint(jax.random.key(3), (8, 2), 0, NUM_CLASSES)
    fn = jax.jit(grad_cam, static_argnames=("net", "layer", "relu", "resize"))
    single = fn(net, params, x, targets, layer=LAST)
    mesh = data_mesh()
    xs, ts = shard_batch((x, targets), mesh)
    sharded = fn(net, params, xs, ts, layer=LAST)
    assert len(sharded.sharding.device_set) == len(jax.devices()) == 8
    np.testing.assert_allclose(sharded, single, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method", [cam, grad_cam, linear_approx])
@pytest.mark.parametrize("kwargs, match", [
    ({"layer": "conv5"}, r"^layer: unknown split point 'conv5'"),
    ({"layer": None}, r"^layer: expected the name"),
    ({"layer": "avgpool"}, r"^layer: activation of 'avgpool' has shape \(16,\)"),
    ({"layer": "classifier"}, r"^layer: activation of .classifier. has shape .*not \(h, w, C\)"),
    ({"layer": LAST, "target": jnp.array([0, 5, 1])}, r"^target: expected indices in \[0, 5\)"),
    ({"layer": LAST, "target": Unit("features.3", jnp.array([0, 1, 2]))},
     r"^target: unit layer 'features.3' does not come after the attributed layer 'features.10'"),
])
def test_bad_input_raises(setup, method, kwargs, match):
    net, params, x = setup
    kwargs = dict(kwargs)
    target = kwargs.pop("target", jnp.array([0, 1, 2]))
    with pytest.raises(ValueError, match=match):
        method(net, params, x, target, **kwargs)


def test_vit_token_layer_is_not_spatial():
    net = nets.get("vit_s16", num_classes=3)
    with pytest.raises(ValueError, match=r"^layer: activation of 'blocks.11' has shape \(197, 384\)"):
        grad_cam(net, net.abstract_params(), jnp.zeros((1, 224, 224, 3)), jnp.array([0]), layer="blocks.11")
