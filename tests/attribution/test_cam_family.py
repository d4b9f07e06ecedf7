"""cam_family.py: float64 oracles per (image, target), planted truths, jit, chunks, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinterp import attribution, ops
from jaxinterp.attribution import cam_family
from jaxinterp.targets import Unit
from jaxinterp.train.sharding import data_mesh, shard_batch

from _small_nets import SIZE, small_setup

LAYER = "features.7"   # ReLU, (4, 4, 8) at 16 px
LAST = "features.10"   # last ReLU, (2, 2, 8), followed by GAP + linear
TARGETS = np.array([[0, 4], [2, 2], [1, 3]])

GRADIENT = ["grad_cam_plus_plus", "xgrad_cam", "hires_cam", "grad_cam_elementwise", "layer_cam",
            "eigen_cam", "eigen_grad_cam"]
PERTURBATION = ["score_cam", "ablation_cam"]
ALL = GRADIENT + PERTURBATION


@pytest.fixture(scope="module")
def setup():
    return small_setup()


def _p64(params):
    return jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params)


def _projection(m):
    """NumPy float64 first-principal-component projection with our sign (sum of v >= 0)."""
    h, w, c = m.shape
    mat = m.reshape(h * w, c) - m.reshape(h * w, c).mean(0)
    v = np.linalg.svd(mat)[2][0]
    return (mat @ (v if v.sum() >= 0 else -v)).reshape(h, w)


def _gradient_oracle(name, a, g):
    """The raw map (no ReLU) of a gradient method from A, G (h, w, C) in float64 NumPy."""
    s = a.sum((0, 1))
    if name == "grad_cam_plus_plus":
        alpha = np.where(g != 0, g ** 2 / (2 * g ** 2 + s * g ** 3 + 1e-6), 0.0)
        return a @ (np.maximum(g, 0) * alpha).sum((0, 1))
    if name == "xgrad_cam":
        return a @ ((g * a).sum((0, 1)) / (s + 1e-7))
    if name == "hires_cam":
        return (g * a).sum(-1)
    if name == "grad_cam_elementwise":
        return np.maximum(g * a, 0).sum(-1)
    if name == "layer_cam":
        return (np.maximum(g, 0) * a).sum(-1)
    if name == "eigen_cam":
        return _projection(a)
    if name == "grad_cam+eigen_smooth":
        return _projection(a * g.mean((0, 1)))
    if name == "layer_cam+eigen_smooth":
        return _projection(np.maximum(g, 0) * a)
    return _projection(g * a)   # eigen_grad_cam


def _scores(net, p64, x1, t, start=None):
    """float64 scores of class t (or the (layer, channel, y, x) unit t) for a batch x1 (B, ...)."""
    if isinstance(t, tuple):
        ul, c, i, j = t
        return np.asarray(net.apply(p64, x1, start=start, stop=ul)[:, i, j, c])
    return np.asarray(net.apply(p64, x1, start=start)[:, t])


def _oracle(name, net, params, x, layer, targets):
    """float64 maps (N, T, h, w), no ReLU, one (image, target) at a time.

    ``targets``: per image a list of class ints or (layer, channel, y, x) unit tuples.
    """
    out = []
    with jax.enable_x64(True):
        p64 = _p64(params)
        for n, ts in enumerate(targets):
            x1 = jnp.asarray(x[n:n + 1], jnp.float64)
            a = net.apply(p64, x1, stop=layer)[0]
            A = np.asarray(a)
            rows = []
            for t in ts:
                if name in GRADIENT or name.endswith("eigen_smooth") and not name.startswith("ablation"):
                    G = np.asarray(jax.grad(lambda a: _scores_jnp(net, p64, a, t, layer))(a))
                    rows.append(_gradient_oracle(name, A, G))
                elif name.startswith("ablation_cam"):
                    y = _scores(net, p64, a[None], t, start=layer)[0]
                    yk = np.array([_scores(net, p64, (a * (np.arange(A.shape[-1]) != k))[None], t,
                                           start=layer)[0] for k in range(A.shape[-1])])
                    w = (y - yk) / y
                    rows.append(_projection(A * w) if name.endswith("eigen_smooth") else A @ w)
                else:  # score_cam: upsampling with align_corners=True, by hand
                    h, w = A.shape[:2]
                    my = _interp(np.arange(SIZE) * (h - 1) / (SIZE - 1), h)
                    mx = _interp(np.arange(SIZE) * (w - 1) / (SIZE - 1), w)
                    scores = []
                    for k in range(A.shape[-1]):
                        u = my @ A[..., k] @ mx.T
                        m = (u - u.min()) / (u.max() - u.min() + 1e-8)
                        scores.append(_scores(net, p64, x1 * m[None, :, :, None], t)[0])
                    wts = np.exp(np.array(scores) - max(scores))
                    rows.append(A @ (wts / wts.sum()))
            out.append(rows)
    return np.array(out)


def _interp(src, n_in):
    lo = np.floor(src).astype(int).clip(0, n_in - 1)
    hi = np.minimum(lo + 1, n_in - 1)
    m = np.zeros((len(src), n_in))
    m[np.arange(len(src)), lo] += 1 - (src - lo)
    m[np.arange(len(src)), hi] += src - lo
    return m


def _scores_jnp(net, p64, a, t, layer):
    if isinstance(t, tuple):
        ul, c, i, j = t
        return net.apply(p64, a[None], start=layer, stop=ul)[0, i, j, c]
    return net.apply(p64, a[None], start=layer)[0, t]


def _check(ours, ref, signless=False):
    ours = np.asarray(ours, np.float64)
    if signless:   # the oracle's _projection has our sign convention: no flip needed, but say so
        assert np.all(np.sum(ours * ref, axis=(-2, -1)) >= 0)
    scale = np.abs(ref).max()
    assert scale > 1e-6
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-5 * scale)


@pytest.mark.parametrize("name", ALL)
def test_batched_matches_float64_oracle_loop(setup, name):
    """N=3 images x T=2 targets in one call == the method's formula per (image, target), float64 loop."""
    net, params, x = setup
    method = getattr(attribution, name)
    kwargs = {"chunk_size": 3} if name in PERTURBATION else {}
    maps = method(net, params, x, jnp.asarray(TARGETS), layer=LAYER, relu=False, resize=False, **kwargs)
    assert maps.shape == (3, 2, 4, 4) and maps.dtype == x.dtype
    ref = _oracle(name, net, params, x, LAYER, TARGETS.tolist())
    _check(maps, ref, signless=name.startswith("eigen"))
    if name == "eigen_cam":   # the same map for every target
        np.testing.assert_array_equal(maps[0, 0], maps[0, 1])


@pytest.mark.parametrize("name", ["grad_cam_plus_plus", "layer_cam", "ablation_cam", "score_cam"])
def test_unit_targets_match_float64_oracle(setup, name):
    net, params, x = setup
    ch, ys, xs = np.array([[3, 7], [0, 0], [5, 1]]), np.array([[1, 0], [0, 1], [1, 1]]), \
        np.array([[0, 1], [1, 1], [1, 0]])
    conv = "features.9"  # the convolution before LAST: its values are not 0 (Ablation-CAM divides by them)
    unit = Unit(conv, jnp.asarray(ch), jnp.asarray(ys), jnp.asarray(xs))
    maps = getattr(attribution, name)(net, params, x, unit, layer=LAYER, relu=False, resize=False)
    units = [[(conv, int(ch[n, k]), int(ys[n, k]), int(xs[n, k])) for k in range(2)] for n in range(3)]
    _check(maps, _oracle(name, net, params, x, LAYER, units))


def test_planted_gap_linear_head(setup):
    """At LAST (GAP + linear head) G_k = w_tk / (h w) everywhere: closed forms from the classifier weights.

    hires_cam(relu=False) = CAM / (h w) = linear_approx; ablating channel k drops the logit by
    w_tk mean(A_k), so Ablation-CAM's weights are w_tk mean(A_k) / y_t; Layer-CAM is
    sum_k ReLU(w_tk) A_k / (h w).
    """
    net, params, x = setup
    t = jnp.asarray(TARGETS)
    a = np.asarray(net.apply(params, x, stop=LAST), np.float64)                 # (3, 2, 2, 8)
    w = np.asarray(params["classifier"]["kernel"], np.float64)[:, TARGETS]     # (C, 3, 2)
    w = np.moveaxis(w, 0, -1)                                                   # (3, 2, C)
    y = np.asarray(net.apply(params, x), np.float64)[np.arange(3)[:, None], TARGETS]
    hw = a.shape[1] * a.shape[2]
    kw = dict(layer=LAST, relu=False, resize=False)
    cam = np.einsum("nhwc,ntc->nthw", a, w)
    np.testing.assert_allclose(attribution.hires_cam(net, params, x, t, **kw), cam / hw, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(attribution.hires_cam(net, params, x, t, **kw),
                                  attribution.linear_approx(net, params, x, t, layer=LAST, resize=False))
    np.testing.assert_allclose(attribution.layer_cam(net, params, x, t, **kw),
                               np.einsum("nhwc,ntc->nthw", a, np.maximum(w, 0)) / hw, rtol=1e-5, atol=1e-6)
    weights = w * a.mean((1, 2))[:, None, :] / y[..., None]
    np.testing.assert_allclose(attribution.ablation_cam(net, params, x, t, **kw),
                               np.einsum("nhwc,ntc->nthw", a, weights), rtol=1e-4, atol=1e-5)


def test_first_component_planted():
    """A rank-one activation p(i, j) v_k + c_k projects onto p (centred), times |v|, with our sign."""
    rng = np.random.default_rng(0)
    p, v, c = rng.normal(size=(3, 5)), rng.normal(size=7), rng.normal(size=7)
    v = v if v.sum() > 0 else -v
    m = p[..., None] * v + c
    proj = np.asarray(cam_family._first_component(jnp.asarray(m)))
    np.testing.assert_allclose(proj, (p - p.mean()) * np.linalg.norm(v), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.asarray(cam_family._first_component(jnp.asarray(-m))), -proj,
                               rtol=1e-4, atol=1e-5)   # -v: the sign convention flips the map


@pytest.mark.parametrize("name", ALL)
def test_jit_equals_eager_relu_and_resize(setup, name):
    """Jitted with the defaults (relu, resize) == the eager raw map, ReLU'd and bilinearly resized."""
    net, params, x = setup
    t = jnp.asarray(TARGETS)
    method = getattr(attribution, name)
    static = ("net", "layer", "relu", "resize") + (("chunk_size",) if name in PERTURBATION else ())
    jitted = jax.jit(method, static_argnames=static)(net, params, x, t, layer=LAYER)
    assert jitted.shape == (3, 2, SIZE, SIZE)
    raw = method(net, params, x, t, layer=LAYER, relu=False, resize=False)
    np.testing.assert_allclose(jitted, ops.resize_bilinear(jnp.maximum(raw, 0), (SIZE, SIZE)),
                               rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def eight_images(setup):
    """8 images and (8, 2) targets: one image per fake CPU device."""
    net = setup[0]
    x = jax.random.uniform(jax.random.key(2), (8, SIZE, SIZE, 3))
    return x, jax.random.randint(jax.random.key(3), (8, 2), 0, net.num_classes)


@pytest.mark.parametrize("name", ALL)
def test_sharded_equals_single_device(setup, eight_images, name):
    """The batch split over the 8 fake CPU devices gives the single-device maps (to float32 rounding
    relative to the largest value: Ablation-CAM divides score drops by the activation)."""
    net, params, _ = setup
    x, targets = eight_images
    fn = jax.jit(getattr(attribution, name), static_argnames=("net", "layer"))
    single = fn(net, params, x, targets, layer=LAYER)
    sharded = fn(net, params, *shard_batch((x, targets), data_mesh()), layer=LAYER)
    assert len(sharded.sharding.device_set) == len(jax.devices()) == 8
    np.testing.assert_allclose(sharded, single, rtol=1e-5, atol=1e-5 * float(jnp.max(jnp.abs(single))))


@pytest.mark.parametrize("name", PERTURBATION)
def test_chunks_do_not_change_the_maps(setup, name):
    net, params, x = setup
    method = getattr(attribution, name)
    kw = dict(layer=LAYER, resize=False)
    whole = method(net, params, x, jnp.asarray(TARGETS), **kw)
    np.testing.assert_allclose(method(net, params, x, jnp.asarray(TARGETS), chunk_size=3, **kw), whole,
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("kwargs, match", [
    ({"layer": "conv5"}, r"^layer: unknown split point 'conv5'"),
    ({"layer": None}, r"^layer: expected the name"),
    ({"layer": "avgpool"}, r"^layer: activation of 'avgpool' has shape \(8,\)"),
    ({"layer": LAST, "target": jnp.array([0, 5, 1])}, r"^target: expected indices in \[0, 5\)"),
    ({"layer": LAST, "target": Unit("features.3", jnp.array([0, 1, 2]))},
     r"^target: unit layer 'features.3' does not come after the attributed layer 'features.10'"),
    ({"layer": LAST, "x": jnp.zeros((3, SIZE, SIZE))}, r"^x: expected images of rank 4"),
])
def test_bad_input_raises(setup, name, kwargs, match):
    net, params, x = setup
    kwargs = dict(kwargs)
    target = kwargs.pop("target", jnp.array([0, 1, 2]))
    x = kwargs.pop("x", x)
    if isinstance(target, Unit) and name == "score_cam":
        # Score-CAM runs the whole net on masked images: a unit before the layer is a valid target
        maps = getattr(attribution, name)(net, params, x, target, resize=False, **kwargs)
        assert maps.shape == (3, 1, 2, 2)
        return
    with pytest.raises(ValueError, match=match):
        getattr(attribution, name)(net, params, x, target, **kwargs)


@pytest.mark.parametrize("name", PERTURBATION)
@pytest.mark.parametrize("chunk_size", [0, 2.0, True])
def test_bad_chunk_size_raises(setup, name, chunk_size):
    net, params, x = setup
    with pytest.raises(ValueError, match=r"^chunk_size: expected a positive integer"):
        getattr(attribution, name)(net, params, x, jnp.array([0, 1, 2]), layer=LAST, chunk_size=chunk_size)


# --------------------------------------------------------------------------- eigen_smooth, augmentation_smoothing


@pytest.mark.parametrize("name", ["grad_cam", "layer_cam", "ablation_cam"])
def test_eigen_smooth_matches_float64_oracle(setup, name):
    """eigen_smooth: the per-channel terms' first-component projection (our sign), float64 loop."""
    net, params, x = setup
    kwargs = {"chunk_size": 3} if name == "ablation_cam" else {}
    maps = getattr(attribution, name)(net, params, x, jnp.asarray(TARGETS), layer=LAYER, relu=False,
                                      resize=False, eigen_smooth=True, **kwargs)
    _check(maps, _oracle(f"{name}+eigen_smooth", net, params, x, LAYER, TARGETS.tolist()), signless=True)


FACTORS = (0.8, 1.0, 1.3)


def _scaled(m):
    m = np.maximum(np.asarray(m, np.float64), 0)
    m = m - m.min((-2, -1), keepdims=True)
    return m / (m.max((-2, -1), keepdims=True) + 1e-7)


def test_augmentation_smoothing_matches_loop(setup):
    """Jitted, one call == the mean over a Python loop of flips x factors of the ReLU'd, min-max
    scaled, flipped-back maps; without augmentation it is the scaled map."""
    net, params, x = setup
    t = jnp.asarray(TARGETS)
    smooth = jax.jit(attribution.augmentation_smoothing,
                     static_argnames=("method", "net", "factors", "flip", "layer", "eigen_smooth"))
    ours = smooth(attribution.grad_cam, net, params, x, t, factors=FACTORS, layer=LAYER, eigen_smooth=True)
    assert ours.shape == (3, 2, SIZE, SIZE) and ours.dtype == x.dtype
    loop = []
    for flip in (False, True):
        for f in FACTORS:
            xa = (x[:, :, ::-1] if flip else x) * f
            m = _scaled(attribution.grad_cam(net, params, xa, t, layer=LAYER, eigen_smooth=True))
            loop.append(m[..., ::-1] if flip else m)
    np.testing.assert_allclose(ours, np.mean(loop, axis=0), rtol=1e-4, atol=1e-5)
    one = attribution.augmentation_smoothing(attribution.layer_cam, net, params, x, t, factors=(1.0,), flip=False,
                                             layer=LAYER, resize=False)
    np.testing.assert_allclose(one, _scaled(attribution.layer_cam(net, params, x, t, layer=LAYER, resize=False)),
                               rtol=1e-5, atol=1e-6)


def test_augmentation_smoothing_sharded_equals_single_device(setup, eight_images):
    net, params, _ = setup
    x, targets = eight_images
    fn = jax.jit(attribution.augmentation_smoothing, static_argnames=("method", "net", "layer"))
    single = fn(attribution.grad_cam, net, params, x, targets, layer=LAYER)
    sharded = fn(attribution.grad_cam, net, params, *shard_batch((x, targets), data_mesh()), layer=LAYER)
    assert len(sharded.sharding.device_set) == 8
    np.testing.assert_allclose(sharded, single, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kwargs, match", [
    ({"method": "grad_cam"}, r"^method: expected a map method"),
    ({"factors": ()}, r"^factors: expected a non-empty tuple"),
    ({"factors": 0.9}, r"^factors: expected a non-empty tuple"),
    ({"factors": (1.0, 0.0)}, r"^factors: expected a number in \(0, inf\)"),
    ({"x": jnp.zeros((3, SIZE, SIZE))}, r"^x: expected images of rank 4"),
])
def test_augmentation_smoothing_bad_input_raises(setup, kwargs, match):
    net, params, x = setup
    kwargs = {"method": attribution.grad_cam, "x": x, **kwargs}
    method, x = kwargs.pop("method"), kwargs.pop("x")
    with pytest.raises(ValueError, match=match):
        attribution.augmentation_smoothing(method, net, params, x, jnp.array([0, 1, 2]), layer=LAYER, **kwargs)
