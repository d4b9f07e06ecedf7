"""Activation maximisation, pre-images, caricatures and DeepDream on the trained smallcnn and vgg16."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinterp import nets
from jaxinterp.targets import Unit
from jaxinterp.data import images, synthetic
from jaxinterp.synthesis import methods as M
from jaxinterp.synthesis.regularisers import B_PIXEL


def held_out(n, size=64):
    """n held-out synthetic images (size >= 32), or uniform noise images for smaller sizes."""
    if size < 32:
        return jax.random.uniform(jax.random.key(1234), (n, size, size, 3))
    return synthetic.generate(jax.random.key(1234), n, size=size)["image"]


def batched(fn, xs, size=100):
    return np.concatenate([np.asarray(fn(xs[i:i + size])) for i in range(0, len(xs), size)])


@pytest.mark.slow
def test_pre_image_of_mid_layer_reaches_feature_loss_0_1(trained_smallcnn):
    """Issue criterion on the trained smallcnn: normalised feature loss <= 0.1 at a mid-level layer."""
    net, params, _ = trained_smallcnn
    x = held_out(3)
    res = jax.jit(lambda x: M.pre_image(net, params, x, "features.5", key=jax.random.key(0)))(x)
    loss = np.asarray(res.loss)
    np.testing.assert_allclose(loss, np.asarray(M.feature_loss(net, params, res.images, net.apply(params, x, stop="features.5"), "features.5")), rtol=1e-4)
    assert np.all(loss <= 0.1), loss
    # a random image of the same statistics is far from the code
    noise = jax.random.uniform(jax.random.key(0), x.shape)
    assert np.all(np.asarray(M.feature_loss(net, params, noise, net.apply(params, x, stop="features.5"),
                                            "features.5")) > 0.5)
    assert res.images.shape == x.shape and float(res.images.min()) >= 0 and float(res.images.max()) <= 1


@pytest.mark.slow
def test_pre_image_of_vgg16_mid_layer():
    """vgg16 (random weights: no pretrained weights can be downloaded), conv3_3 at 48 px."""
    net = nets.get("vgg16")
    params = net.init(jax.random.key(0))
    x = jnp.asarray(images.batch(("chelsea",), size=48))
    res = jax.jit(lambda x: M.pre_image(net, params, x, "features.15", key=jax.random.key(1)))(x)
    assert float(res.loss[0]) <= 0.1, float(res.loss[0])


def test_pre_image_vmap_equals_loop_and_variants():
    net = nets.get("smallcnn", num_classes=8)
    params = net.init(jax.random.key(0))
    x = held_out(2, size=16)
    key = jax.random.key(3)
    fn = jax.jit(lambda x, k: M.pre_image(net, params, x, "features.2", key=k, steps=6, variant="cvpr"))
    both = fn(x, key)
    for i in range(2):
        alone = fn(x[i:i + 1], jax.random.fold_in(key, i)[None])
        np.testing.assert_allclose(np.asarray(alone.images[0]), np.asarray(both.images[i]), atol=1e-5)
    # the projection keeps every colour within 2B of the mean and in [0, 1]
    d = np.linalg.norm(np.asarray(both.images) - np.asarray(net.mean), axis=-1)
    assert d.max() <= 2 * B_PIXEL + 1e-5


def test_project_pixels_and_jitter_rule():
    mean = np.array([0.5, 0.4, 0.3])
    x = jnp.asarray(np.random.default_rng(0).random((4, 4, 3)) * 3 - 1, jnp.float32)
    p = np.asarray(M.project_pixels(x, mean, radius=0.2))
    assert np.all(np.linalg.norm(p - mean, axis=-1) <= 0.2 + 1e-6) and p.min() >= 0 and p.max() <= 1
    inside = jnp.asarray(mean + 0.05, jnp.float32)[None, None]
    np.testing.assert_allclose(np.asarray(M.project_pixels(inside, mean, radius=0.2)), np.asarray(inside), atol=1e-7)
    net = nets.get("vgg16")
    assert M.mahendran_jitter(net, "features.15", (224, 224)) == 1        # stride 4 -> 1
    assert M.mahendran_jitter(net, "features.29", (224, 224)) == 4        # stride 16 -> 4
    assert M.mahendran_jitter(net, "classifier.6", (224, 224)) == 8       # fc: last spatial layer, stride 32


@pytest.mark.slow
def test_activation_maximisation_beats_1000_images(trained_smallcnn):
    """Issue criterion: the rendered image beats the best of 1,000 synthetic, random and bundled images."""
    net, params, _ = trained_smallcnn
    layer = "features.8"
    pool = np.concatenate([np.asarray(held_out(900)),
                           np.asarray(jax.random.uniform(jax.random.key(1), (92, 64, 64, 3))),
                           images.batch(size=64)])
    assert len(pool) == 1000
    unit = jax.jit(lambda x: net.apply(params, x, stop=layer).mean(axis=(1, 2)))
    best = batched(unit, pool).max(0)
    channels = np.flatnonzero(best > 1e-3)[:4]                # live channels (a dead ReLU has no gradient)
    res = jax.jit(lambda: M.activation_maximisation(net, params, Unit(layer, channels), key=jax.random.key(0),
                                                    image_size=64, steps=128))()
    rendered = np.asarray(unit(res.images[:, 0]))[np.arange(len(channels)), channels]
    assert np.all(rendered > best[channels]), (rendered, best[channels])
    classes = np.array([1, 7])
    logits = jax.jit(lambda: M.activation_maximisation(net, params, classes, key=jax.random.key(1),
                                                       image_size=64, steps=256))()
    scores = np.asarray(net.apply(params, logits.images[:, 0]))[np.arange(2), classes]
    assert np.all(scores > batched(lambda x: net.apply(params, x), pool).max(0)[classes])


def test_activation_maximisation_targets_and_errors():
    net = nets.get("smallcnn", num_classes=4)
    params = net.init(jax.random.key(0))
    kw = dict(key=jax.random.key(0), image_size=16, steps=2, transforms=())
    res = M.activation_maximisation(net, params, Unit("features.5", np.array([1, 2]), np.array([0, 3]),
                                                      np.array([1, 2])), **kw)
    assert res.images.shape == (2, 1, 16, 16, 3)
    res = M.visualise_layer(net, params, "features.2", channels=[0, 5], leaky=True, l2=0.1, tv=0.1, **kw)
    assert res.history.shape == (2, 2)
    for target, match in [(np.array([4]), r"^target: expected class indices in \[0, 4\)"),
                          (np.array([[1]]), r"^target: expected integer class indices \(T,\)"),
                          (Unit("nope", np.array([0])), r"^target: unknown unit layer"),
                          (Unit("features.5", np.array([999])), r"^target.channel: expected indices"),
                          (Unit("features.5", np.array([1]), np.array([9]), np.array([0])), r"^target.y:")]:
        with pytest.raises(ValueError, match=match):
            M.activation_maximisation(net, params, target, **kw)
    with pytest.raises(ValueError, match="^param:"):
        M.activation_maximisation(net, params, np.array([0]), param="wavelet", **kw)
    with pytest.raises(ValueError, match="^tv:"):
        M.activation_maximisation(net, params, np.array([0]), tv=-1.0, **kw)
    with pytest.raises(ValueError, match="^layer:"):
        M.visualise_layer(net, params, "nope")


def test_caricature_amplifies_and_deepdream_matches_one_step_formula():
    net = nets.get("smallcnn", num_classes=4)
    params = net.init(jax.random.key(0))
    x = held_out(2, size=32)
    layer = "features.5"
    phi0 = net.apply(params, x, stop=layer)
    res = M.caricature(net, params, x, layer, key=jax.random.key(0), steps=20, jitter=0)
    score = lambda im: np.sum(np.asarray(net.apply(params, im, stop=layer) * jnp.maximum(phi0, 0)), axis=(1, 2, 3))
    assert np.all(score(res.images[:, 0]) > 1.2 * score(x))
    # DeepDream, one octave, one step, no jitter: x + s / mean|g| g with g = d 0.5 ||a||^2 / dx, clipped
    out = M.deepdream(net, params, x, layer, key=jax.random.key(0), octaves=1, steps=1, jitter=0, step_size=0.01)
    g = np.asarray(jax.grad(lambda im: 0.5 * jnp.sum(net.apply(params, im[None], stop=layer) ** 2))(x[0]))
    ref = np.clip(np.asarray(x[0]) + 0.01 / np.mean(np.abs(g)) * g, 0, 1)
    np.testing.assert_allclose(np.asarray(out[0]), ref, atol=1e-5)
    dreamed = M.deepdream(net, params, x, layer, key=jax.random.key(0), octaves=3, steps=5, jitter=4)
    energy = lambda im: np.sum(np.asarray(net.apply(params, im, stop=layer)) ** 2, axis=(1, 2, 3))
    assert dreamed.shape == x.shape and np.all(energy(dreamed) > energy(x))


@pytest.mark.parametrize("call, match", [
    (lambda net, p, x: M.pre_image(net, p, x, "nope", key=jax.random.key(0)), r"^layer: unknown split point"),
    (lambda net, p, x: M.pre_image(net, p, x * 2, "features.2", key=jax.random.key(0)), r"^x: expected pixel values"),
    (lambda net, p, x: M.pre_image(net, p, x[0], "features.2", key=jax.random.key(0)), r"^x: expected images"),
    (lambda net, p, x: M.pre_image(net, p, x, "features.2", key=jax.random.key(0), variant="eccv"), r"^variant:"),
    (lambda net, p, x: M.pre_image(net, p, x, "features.2", key=jax.random.key(0), C=0), r"^C:"),
    (lambda net, p, x: M.pre_image(net, p, x, "features.2", key=jax.random.key(0), steps=0), r"^steps:"),
    (lambda net, p, x: M.caricature(net, p, x, "nope", key=jax.random.key(0)), r"^layer:"),
    (lambda net, p, x: M.deepdream(net, p, x, "features.2", key=jax.random.key(0), octaves=0), r"^octaves:"),
    (lambda net, p, x: M.deepdream(net, p, x, "features.2", key=jax.random.key(0), octave_scale=1.0),
     r"^octave_scale:"),
])
def test_methods_bad_input(call, match):
    net = nets.get("smallcnn", num_classes=4)
    with pytest.raises(ValueError, match=match):
        call(net, net.init(jax.random.key(0)), held_out(1, size=16))


def test_activation_diffing_inverts_the_masked_code():
    """Kept channels only: the kept pre-image matches the masked code better than the full pre-image does."""
    net = nets.get("smallcnn", num_classes=4)
    params = net.init(jax.random.key(0))
    x = held_out(2, size=32)
    layer = "features.2"
    mask = (np.arange(net.activation_shape(layer, (32, 32))[-1]) % 2).astype(np.float32)     # every other channel
    fn = jax.jit(lambda x, m: M.activation_diffing(net, params, x, m, layer, key=jax.random.key(0), steps=60))
    res = fn(x, mask)
    phi = net.apply(params, x, stop=layer)
    masked = phi * mask
    loss = lambda im, code: np.asarray(M.feature_loss(net, params, im, code, layer))   # noqa: E731
    assert np.all(loss(res.kept, masked) < loss(res.full, masked))
    assert np.all(loss(res.full, phi) < loss(res.kept, phi))
    np.testing.assert_allclose(np.asarray(res.difference), np.asarray(res.full - res.kept), atol=1e-7)
    same = fn(x, np.ones_like(mask))                              # the full mask: identical runs, no difference
    np.testing.assert_allclose(np.asarray(same.difference), 0.0, atol=1e-6)
    with pytest.raises(ValueError, match="^channel_mask:"):
        M.activation_diffing(net, params, x, mask[:3], layer, key=jax.random.key(0))
    with pytest.raises(ValueError, match="^code:"):
        M.pre_image(net, params, x, layer, key=jax.random.key(0), code=phi[:1])


def test_pre_image_with_the_deep_image_prior():
    """The DIP generator as the parameterisation of an inversion: the energy falls and images stay in [0, 1]."""
    import optax
    from jaxinterp.synthesis import dip
    net = nets.get("smallcnn", num_classes=4)
    params = net.init(jax.random.key(0))
    x = held_out(1, size=16)
    par = dip.dip_parameterisation((16, 16), in_channels=4, down=(4, 4), up=(4, 4), skip=(2, 2))
    res = M.pre_image(net, params, x, "features.2", key=jax.random.key(0), steps=30, param=par,
                      optimiser=optax.adam(0.01))
    h = np.asarray(res.history[0])
    assert h[-5:].mean() > h[:5].mean()                             # history is -E
    assert res.images.min() >= 0 and res.images.max() <= 1
