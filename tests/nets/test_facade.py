"""The Net facade: exact splits, purity under jit / vmap, static hashing, input checks."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinterp import nets

# Small inputs keep every net cheap on a CPU; the adaptive pools make them valid.
SIZES = {"smallcnn": 32, "alexnet": 64, "vgg16": 32, "resnet50": 32, "vit_s16": 32,
         "tf_efficientnet_lite0": 32}


@functools.lru_cache(maxsize=None)
def _net_params(name):
    net = nets.get(name)
    return net, net.init(jax.random.key(0))


def _images(n, size, seed=1):
    return jax.random.uniform(jax.random.key(seed), (n, size, size, 3))


# EfficientNet-Lite0 compiles hundreds of distinct small ops when run op by op (45 s): its
# splits are checked under jit only (test_split_is_exact_under_jit).
@pytest.mark.parametrize("name", sorted(set(SIZES) - {"tf_efficientnet_lite0"}))
def test_split_is_exact_at_every_layer(name):
    # Eager execution runs the same kernels op by op, so the split must be bitwise exact.
    net, params = _net_params(name)
    x = _images(2, SIZES[name])
    y = np.asarray(net.apply(params, x))
    assert np.all(np.isfinite(y)) and np.abs(y).max() > 0
    for layer in net.layers:
        y2 = net.apply(params, net.apply(params, x, stop=layer), start=layer)
        np.testing.assert_array_equal(np.asarray(y2), y, err_msg=layer)


@pytest.mark.parametrize("name, layers", [
    ("resnet50", ("maxpool", "layer2", "layer3.4", "avgpool")),
    # One split per kind of layer (stem norm, depthwise block, stage, head); every split point of
    # Lite0 is compared with its PyTorch reference in tests/parity/test_efficientnet_parity.py.
    ("tf_efficientnet_lite0", ("bn1", "blocks.0.0", "blocks.3", "conv_head", "global_pool")),
])
def test_split_is_exact_under_jit(name, layers):
    net, params = _net_params(name)

    @jax.jit          # one program for the whole net and every rejoined split (one compile, not 2 per split)
    def whole_and_rejoined(params, x):
        return net.apply(params, x), [net.apply(params, net.apply(params, x, stop=layer), start=layer)
                                      for layer in layers]

    y, rejoined = whole_and_rejoined(params, _images(2, 32))
    y = np.asarray(y)
    for layer, y2 in zip(layers, rejoined):
        np.testing.assert_allclose(np.asarray(y2), y, rtol=1e-5, atol=1e-6 * np.abs(y).max(), err_msg=layer)


def test_start_and_stop_select_a_middle_segment():
    net, params = _net_params("vgg16")
    x = _images(1, 32)
    a = net.apply(params, x, stop="features.9")
    b = net.apply(params, a, start="features.9", stop="features.23")
    np.testing.assert_allclose(b, net.apply(params, x, stop="features.23"), rtol=1e-6, atol=1e-6)
    assert b.shape == (1, 2, 2, 512)


def test_alias_is_the_last_block():
    net, params = _net_params("resnet50")
    x = _images(1, 32)
    assert net.layers.index("layer3") == net.layers.index("layer3.5") + 1
    np.testing.assert_array_equal(net.apply(params, x, stop="layer3"),
                                  net.apply(params, x, stop="layer3.5"))


def test_layer_shapes_follow_torchvision():
    vgg, resnet, vit = nets.get("vgg16"), nets.get("resnet50"), nets.get("vit_s16")
    assert vgg.activation_shape("features.29") == (14, 14, 512)
    assert vgg.activation_shape("features.30") == (7, 7, 512)
    assert resnet.activation_shape("layer3") == (14, 14, 1024)
    assert resnet.activation_shape("layer4") == (7, 7, 2048)
    assert resnet.activation_shape() == (1000,)
    assert vit.activation_shape("blocks.11") == (197, 384)
    assert vit.activation_shape("blocks.11.attn") == (6, 197, 197)
    assert vit.activation_shape("blocks.11.keys") == (197, 384)
    assert vit.activation_shape() == (384,)
    assert nets.get("vit_s16", num_classes=1000).activation_shape() == (1000,)
    assert resnet.activation_shape("layer4", (64, 96)) == (2, 3, 2048)        # remembered per image size
    assert resnet.activation_shape("layer4", np.array([64, 96])) == (2, 3, 2048)
    with pytest.raises(ValueError, match="layer"):
        resnet.activation_shape(["layer4"])
    with pytest.raises(ValueError, match="layer"):
        resnet.activation_shape("layer9")
    for bad in ((64,), (64, None), (0, 64), "64x64"):
        with pytest.raises(ValueError, match="image_size"):
            resnet.activation_shape("layer4", bad)


def test_vmap_over_a_stack_of_params_equals_a_loop():
    net = nets.get("smallcnn")
    keys = jax.random.split(jax.random.key(3), 3)
    stack = jax.vmap(net.init)(keys)
    x = _images(2, 32)
    ys = jax.jit(jax.vmap(net.apply, (0, None)))(stack, x)
    for i, k in enumerate(keys):
        np.testing.assert_allclose(ys[i], net.apply(net.init(k), x), rtol=1e-5, atol=1e-6)


def test_vmap_over_images_equals_a_loop():
    net, params = _net_params("smallcnn")
    x = _images(3, 32)
    ys = jax.vmap(lambda xi: net.apply(params, xi[None])[0])(x)
    for i in range(3):
        np.testing.assert_allclose(ys[i], net.apply(params, x[i:i + 1])[0], rtol=1e-5, atol=1e-6)


def test_net_is_static_and_hashable():
    a, b = nets.get("vgg16"), nets.get("vgg16")
    assert a == b and hash(a) == hash(b)
    assert nets.get("vgg16", num_classes=10) != a
    net, params = _net_params("smallcnn")

    @functools.partial(jax.jit, static_argnums=0)
    def logits(net, params, x):
        return net.apply(params, x)

    assert logits(net, params, _images(1, 32)).shape == (1, 8)


def test_init_is_deterministic_and_key_dependent():
    net = nets.get("smallcnn")
    p0, p1, p2 = net.init(jax.random.key(0)), net.init(jax.random.key(0)), net.init(jax.random.key(1))
    leaves = zip(jax.tree.leaves(p0), jax.tree.leaves(p1), jax.tree.leaves(p2))
    assert all(np.array_equal(a, b) for a, b, _ in leaves)
    assert not np.array_equal(p0["features"]["0"]["kernel"], p2["features"]["0"]["kernel"])


def test_normalisation_is_inside_the_net():
    # The first conv sees (x - mean) / std: compare with a NumPy conv of the normalised image.
    net, params = _net_params("smallcnn")
    x = np.asarray(_images(1, 8))
    z = (x - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    k = np.asarray(params["features"]["0"]["kernel"], np.float64)
    zp = np.pad(z, ((0, 0), (1, 1), (1, 1), (0, 0)))
    ref = np.zeros((1, 8, 8, k.shape[-1]))
    for i in range(8):
        for j in range(8):
            ref[0, i, j] = np.einsum("hwc,hwco->o", zp[0, i:i + 3, j:j + 3], k)
    ref += np.asarray(params["features"]["0"]["bias"])
    out = net.apply(params, jnp.asarray(x), stop="features.0")
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("x, match", [
    (np.zeros((8, 8, 3), np.float32), "rank 4"),
    (np.zeros((1, 8, 8, 4), np.float32), "3 RGB channels"),
    (np.zeros((1, 8, 8, 3), np.int32), "floating dtype"),
    (np.full((1, 8, 8, 3), 255.0, np.float32), r"\[0, 1\]"),
    (np.full((1, 8, 8, 3), -0.5, np.float32), r"\[0, 1\]"),
])
def test_bad_images_raise(x, match):
    net, params = _net_params("smallcnn")
    with pytest.raises(ValueError, match="^x: .*" + match):
        net.apply(params, jnp.asarray(x))


def test_bad_split_points_raise():
    net, params = _net_params("smallcnn")
    x = _images(1, 32)
    with pytest.raises(ValueError, match="stop: unknown split point 'layer3'"):
        net.apply(params, x, stop="layer3")
    with pytest.raises(ValueError, match="start: unknown split point"):
        net.apply(params, x, start="nope")
    with pytest.raises(ValueError, match="start: .*comes after stop"):
        net.apply(params, x, start="features.6", stop="features.3")
    vit = nets.get("vit_s16")
    with pytest.raises(ValueError, match="start: unknown split point 'blocks.11.attn'"):
        vit.apply(vit.abstract_params(), x, start="blocks.11.attn")


def test_bad_params_raise():
    net, params = _net_params("smallcnn")
    x = _images(1, 32)
    with pytest.raises(ValueError, match="params: structure does not match"):
        net.apply({"features": params["features"]}, x)
    other = nets.get("smallcnn", num_classes=3).init(jax.random.key(0))
    with pytest.raises(ValueError, match=r"params: \['classifier'\]\['bias'\] has shape \(3,\)"):
        net.apply(other, x)


def test_bad_names_and_rules_raise():
    with pytest.raises(ValueError, match="name: unknown net 'resnet18'"):
        nets.get("resnet18")
    with pytest.raises(ValueError, match="config: .*depth"):
        nets.get("vgg16", depth=3)
    net, params = _net_params("smallcnn")
    with pytest.raises(ValueError, match="rules:"):
        net.apply(params, _images(1, 32), rules="guided")


def test_checks_are_skipped_under_jit_without_a_host_sync():
    net, params = _net_params("smallcnn")
    jaxpr = jax.make_jaxpr(net.apply)(params, _images(1, 32))
    assert "pure_callback" not in str(jaxpr)


def test_apply_jits_with_concrete_images_closed_over():
    """The input range check uses NumPy on concrete x, so it also works inside a jit trace."""
    net = nets.get("smallcnn", widths=(8, 8, 8, 8))
    params = net.init(jax.random.key(0))
    x = jnp.full((1, 16, 16, 3), 0.5)
    np.testing.assert_allclose(jax.jit(lambda p: net.apply(p, x))(params), net.apply(params, x),
                               rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("name, capture", [
    ("smallcnn", ("features.2", "features.5", "avgpool")),
    ("resnet50", ("layer1", "layer3")),
    ("vit_s16", ("blocks.0", "blocks.3.attn", "blocks.5.keys", "blocks.5")),
])
def test_capture_reads_every_layer_in_one_pass(name, capture):
    """Each captured activation equals the net run from the image to it on its own."""
    net, params = _net_params(name)
    x = _images(2, SIZES[name])
    out, acts = net.apply(params, x, capture=capture)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(net.apply(params, x)))
    assert list(acts) == list(capture)
    for layer in capture:
        np.testing.assert_allclose(np.asarray(acts[layer]), np.asarray(net.apply(params, x, stop=layer)),
                                   rtol=1e-6, atol=1e-6, err_msg=layer)


def test_capture_between_start_and_stop_and_under_grad():
    net, params = _net_params("smallcnn")
    x = _images(2, 32)
    a = net.apply(params, x, stop="features.2")
    stop_value, acts = net.apply(params, a, start="features.2", stop="features.7", capture=("features.5", "features.7"))
    np.testing.assert_array_equal(np.asarray(acts["features.7"]), np.asarray(stop_value))
    np.testing.assert_allclose(np.asarray(acts["features.5"]),
                               np.asarray(net.apply(params, a, start="features.2", stop="features.5")), rtol=1e-6)

    def two_layer_score(x):               # one pass, a score that reads two layers
        _, acts = net.apply(params, x, stop="features.7", capture=("features.5", "features.7"))
        return acts["features.5"].mean() + acts["features.7"].mean()

    def separate(x):
        return net.apply(params, x, stop="features.5").mean() + net.apply(params, x, stop="features.7").mean()

    np.testing.assert_allclose(np.asarray(jax.jit(jax.grad(two_layer_score))(x)),
                               np.asarray(jax.grad(separate)(x)), rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("capture, match", [
    ("features.5", "capture: expected a tuple"),
    (("nonsense",), "capture: unknown split point"),
    (("features.1",), "capture: 'features.1' does not lie between"),
    (("features.9",), "capture: 'features.9' does not lie between"),
])
def test_bad_capture_raises(capture, match):
    net, params = _net_params("smallcnn")
    a = net.apply(params, _images(1, 32), stop="features.2")
    with pytest.raises(ValueError, match=match):
        net.apply(params, a, start="features.2", stop="features.7", capture=capture)
