"""Parameterisations, transforms, regularisers and objectives against NumPy references and closed forms.

(lucent itself is the oracle in tests/parity/test_synthesis_parity.py.)
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinterp import ops
from jaxinterp.synthesis import objectives as O
from jaxinterp.synthesis import params as P
from jaxinterp.synthesis import regularisers as R
from jaxinterp.synthesis import transforms as T

C = np.asarray([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
C_NORM = C / np.max(np.linalg.norm(C, axis=0))


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


# -- parameterisations -----------------------------------------------------------------------------

@pytest.mark.parametrize("h, w", [(16, 16), (15, 17), (9, 20)])
def test_fourier_matches_numpy_definition(h, w):
    par = P.fourier((h, w), sd=0.3)
    s = np.asarray(par.init(jax.random.key(0)), np.float64)
    fy, fx = np.fft.fftfreq(h)[:, None], np.fft.fftfreq(w)[: w // 2 + (2 if w % 2 else 1)]
    scale = 1 / np.maximum(np.sqrt(fx ** 2 + fy ** 2), 1 / max(h, w))
    spec = (s[..., 0] + 1j * s[..., 1]) * scale[..., None]
    logits = np.fft.irfft2(spec[:, : w // 2 + 1], s=(h, w), axes=(0, 1), norm="ortho") / 4
    ref = sigmoid(logits @ C_NORM.T)
    np.testing.assert_allclose(np.asarray(par.to_image(jnp.asarray(s, jnp.float32))), ref, atol=2e-6)
    assert s.shape == (h, w // 2 + (2 if w % 2 else 1), 3, 2)
    assert abs(np.std(s) - 0.3) < 0.05


def test_pixel_and_colour():
    par = P.pixel((5, 7), sd=0.5, decorrelate=True)
    t = np.asarray(par.init(jax.random.key(1)))
    np.testing.assert_allclose(np.asarray(par.to_image(jnp.asarray(t))), sigmoid(t @ C_NORM.T), atol=1e-6)
    plain = P.pixel((5, 7), decorrelate=False)
    np.testing.assert_allclose(np.asarray(plain.to_image(jnp.asarray(t))), sigmoid(t), atol=1e-6)
    assert np.max(np.linalg.norm(C_NORM, axis=0)) == pytest.approx(1.0)


def test_laplacian_pyramid_sums_upsampled_levels():
    par = P.laplacian_pyramid((12, 10), levels=3, sd=1.0, decorrelate=False)
    ts = par.init(jax.random.key(2))
    assert [t.shape for t in ts] == [(12, 10, 3), (6, 5, 3), (3, 3, 3)]
    # one level at a time: the image is sigmoid(upsample(level)); levels add before the sigmoid
    logit = lambda ts: np.log(np.asarray(par.to_image(ts))) - np.log1p(-np.asarray(par.to_image(ts)))
    zeros = [jnp.zeros_like(t) for t in ts]
    parts = [logit([t if i == j else zeros[j] for j in range(3)]) for i, t in enumerate(ts)]
    np.testing.assert_allclose(logit(ts), sum(parts), atol=2e-4)
    np.testing.assert_allclose(parts[0], np.asarray(ts[0]), atol=1e-4)
    # a constant coarse level upsamples to the same constant
    const = [zeros[0], zeros[1], jnp.full((3, 3, 3), 0.7)]
    np.testing.assert_allclose(logit(const), 0.7, atol=1e-4)


@pytest.mark.parametrize("make, kwargs, match", [
    (P.fourier, {"image_size": 0}, r"^image_size:"),
    (P.fourier, {"image_size": (4, 4, 4)}, r"^image_size:"),
    (P.fourier, {"image_size": 8, "sd": -1}, r"^sd:"),
    (P.fourier, {"image_size": 8, "decay_power": -1}, r"^decay_power:"),
    (P.pixel, {"image_size": 8, "sd": 0}, r"^sd:"),
    (P.laplacian_pyramid, {"image_size": 8, "levels": 0}, r"^levels:"),
    (P.raw_pixels, {"x0": np.zeros((2, 4, 4, 3))}, r"^x0:"),
])
def test_parameterisation_bad_input(make, kwargs, match):
    with pytest.raises(ValueError, match=match):
        make(**kwargs)


# -- transforms ----------------------------------------------------------------------------------

def numpy_affine(x, angle, scale):
    """Float64 loop: output pixel (i, j) samples x bilinearly at c + R(-angle)(p - c) / scale, zero outside."""
    h, w, c = x.shape
    cy, cx = (h - 1) / 2, (w - 1) / 2
    a = np.deg2rad(angle)
    out = np.zeros_like(x, np.float64)
    for i, j in itertools.product(range(h), range(w)):
        u, v = j - cx, i - cy
        sx = (np.cos(a) * u - np.sin(a) * v) / scale + cx
        sy = (np.sin(a) * u + np.cos(a) * v) / scale + cy
        for yi in (int(np.floor(sy)), int(np.floor(sy)) + 1):
            for xi in (int(np.floor(sx)), int(np.floor(sx)) + 1):
                if 0 <= yi < h and 0 <= xi < w:
                    out[i, j] += max(0, 1 - abs(sy - yi)) * max(0, 1 - abs(sx - xi)) * x[yi, xi]
    return out


@pytest.mark.parametrize("angle, scale", [(0.0, 1.0), (10.0, 1.0), (-7.0, 0.9), (3.0, 1.1)])
def test_affine_matches_numpy_loop(angle, scale):
    x = np.random.default_rng(0).random((9, 11, 3))
    ours = np.asarray(T.affine(jnp.asarray(x, jnp.float32), angle, scale))
    np.testing.assert_allclose(ours, numpy_affine(x, angle, scale), atol=1e-5)


def test_pad_jitter_roll_match_numpy():
    x = np.random.default_rng(1).random((6, 7, 3)).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(T.pad(2, 0.5)(None, jnp.asarray(x))),
                                  np.pad(x, ((2, 2), (2, 2), (0, 0)), constant_values=0.5))
    for seed in range(5):
        k = jax.random.key(seed)
        dy, dx = np.asarray(jax.random.randint(k, (2,), 0, 4))
        ref = np.zeros_like(x)
        ref[dy:, dx:] = x[: 6 - dy, : 7 - dx]
        np.testing.assert_array_equal(np.asarray(T.jitter(4)(k, jnp.asarray(x))), ref)
        dy, dx = np.asarray(jax.random.randint(k, (2,), -3, 4))
        np.testing.assert_array_equal(np.asarray(T.roll_jitter(3)(k, jnp.asarray(x))),
                                      np.roll(x, (dy, dx), axis=(0, 1)))


def test_standard_transforms_are_drawn_per_image():
    x = jnp.broadcast_to(jnp.asarray(np.random.default_rng(2).random((1, 20, 20, 3)), jnp.float32), (6, 20, 20, 3))
    t = T.compose(*T.STANDARD)
    keys = jax.random.split(jax.random.key(0), 6)
    out = np.asarray(jax.jit(jax.vmap(t))(keys, x))
    assert out.shape == (6, 20 + 24 - 0, 44, 3)      # pad 12 each side; jitters and warps keep the size
    assert len({o.tobytes() for o in out}) == 6       # six different draws
    np.testing.assert_allclose(out[3], np.asarray(t(keys[3], x[3])), atol=1e-5)   # vmap == loop


@pytest.mark.parametrize("make, arg, match", [
    (T.jitter, 1, r"^d:"), (T.pad, -1, r"^width:"), (T.roll_jitter, -2, r"^j:"),
    (T.random_scale, [], r"^scales:"), (T.random_scale, [0.0], r"^scales:"), (T.random_rotate, [np.nan], r"^angles:"),
    (T.resize, 0, r"^size:"), (T.compose, 3, r"^transforms\[0\]:"),
])
def test_transform_bad_input(make, arg, match):
    with pytest.raises(ValueError, match=match):
        make(arg)


# -- regularisers ----------------------------------------------------------------------------------

def numpy_tv(x, beta):
    h, w, _ = x.shape
    total = 0.0
    for i, j in itertools.product(range(h), range(w)):
        dy = x[i + 1, j] - x[i, j] if i + 1 < h else 0 * x[i, j]
        dx = x[i, j + 1] - x[i, j] if j + 1 < w else 0 * x[i, j]
        total += (np.sum(dy ** 2) + np.sum(dx ** 2)) ** (beta / 2)
    return total


@pytest.mark.parametrize("beta", [1.0, 2.0, 3.0])
def test_tv_and_alpha_norm_match_numpy(beta):
    x = np.random.default_rng(3).random((2, 5, 6, 3))
    ours = np.asarray(R.tv_norm(jnp.asarray(x, jnp.float32), beta, variation=0.2))
    ref = [numpy_tv(xi, beta) / (30 * 0.2 ** beta) for xi in x]
    np.testing.assert_allclose(ours, ref, rtol=1e-5)
    mean = np.array([0.4, 0.5, 0.6])
    ours = np.asarray(R.alpha_norm(jnp.asarray(x, jnp.float32), 6.0, mean=mean, bound=0.3))
    ref = [np.sum(np.linalg.norm(xi - mean, axis=-1) ** 6) / (30 * 0.3 ** 6) for xi in x]
    np.testing.assert_allclose(ours, ref, rtol=1e-5)
    assert R.B_PIXEL == pytest.approx(80 / 255) and R.V_PIXEL == pytest.approx(80 / 255 / 6.5)


def test_tv_gradient_is_finite_on_flat_images():
    g = jax.grad(lambda x: jnp.sum(R.tv_norm(x, 1.0)) + jnp.sum(R.alpha_norm(x, 1.0)))(jnp.zeros((1, 4, 4, 3)))
    assert np.all(np.isfinite(np.asarray(g)))


def test_anisotropic_tv_and_blur_penalty():
    m = np.random.default_rng(4).random((2, 5, 4))
    ref = np.sum(np.abs(np.diff(m, axis=1)) ** 3, axis=(1, 2)) + np.sum(np.abs(np.diff(m, axis=2)) ** 3, axis=(1, 2))
    np.testing.assert_allclose(np.asarray(ops.total_variation(jnp.asarray(m), 3.0, isotropic=False, channels=False)),
                               ref, rtol=1e-5)
    x = np.random.default_rng(5).random((1, 5, 6, 3)).astype(np.float32)
    k = np.array([[0.5, 0.5, 0.5], [0.5, 1, 0.5], [0.5, 0.5, 0.5]])
    pad = lambda a: np.pad(a, ((1, 1), (1, 1)))
    blur = np.zeros_like(x)
    for c in range(3):
        num, den = pad(x[0, ..., c]), pad(np.ones((5, 6)))
        for i, j in itertools.product(range(5), range(6)):
            blur[0, i, j, c] = np.sum(num[i:i + 3, j:j + 3] * k) / np.sum(den[i:i + 3, j:j + 3] * k)
    np.testing.assert_allclose(np.asarray(R.lucent_blur(jnp.asarray(x))), blur, atol=1e-6)
    g = jax.grad(lambda a: jnp.sum(R.blur_penalty(a)))(jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(g), x - blur, atol=1e-6)


# -- objectives -----------------------------------------------------------------------------------

@pytest.fixture
def acts():
    rng = np.random.default_rng(6)
    return {"l": jnp.asarray(rng.normal(size=(4, 3, 5, 6)), jnp.float32),
            O.OUTPUT: jnp.asarray(rng.normal(size=(4, 10)), jnp.float32)}, jnp.asarray(rng.random((4, 8, 8, 3)),
                                                                                      jnp.float32)


def test_objectives_closed_forms(acts):
    a, x = acts
    A = np.asarray(a["l"], np.float64)
    assert float(O.channel("l", 2)(a, x)) == pytest.approx(A[..., 2].mean(), rel=1e-5)
    assert float(O.neuron("l", 4, 0, 3)(a, x)) == pytest.approx(A[:, 0, 3, 4].mean(), rel=1e-5)
    assert float(O.neuron("l", 4)(a, x)) == pytest.approx(A[:, 1, 2, 4].mean(), rel=1e-5)   # centre
    v = np.arange(6.0) - 2
    cos = (A @ v) / (np.linalg.norm(A, axis=-1) * np.linalg.norm(v))
    assert float(O.direction("l", v)(a, x)) == pytest.approx(cos.mean(), rel=1e-5)
    assert float(O.class_logit(7)(a, x)) == pytest.approx(np.asarray(a[O.OUTPUT])[:, 7].mean(), rel=1e-5)
    assert float(O.deepdream("l")(a, x)) == pytest.approx((A ** 2).mean(), rel=1e-5)
    phi0 = A[0] + 0.1
    fm = -np.mean([np.sum((A[i] - phi0) ** 2) for i in range(4)]) / np.sum(phi0 ** 2)
    assert float(O.feature_matching("l", phi0)(a, x)) == pytest.approx(fm, rel=1e-5)
    car = np.mean([np.sum(A[i] * np.maximum(phi0, 0)) for i in range(4)]) / np.sum(phi0 ** 2)
    assert float(O.caricature("l", phi0)(a, x)) == pytest.approx(car, rel=1e-5)
    w = np.random.default_rng(0).normal(size=(3, 5, 6))
    assert float(O.inner_product("l", w)(a, x)) == pytest.approx(np.mean(np.sum(A * w, axis=(1, 2, 3))), rel=1e-5)


def test_diversity_and_alignment_match_lucid_loops(acts):
    a, x = acts
    A = np.asarray(a["l"], np.float64)
    grams = [A[i].reshape(-1, 6).T @ A[i].reshape(-1, 6) for i in range(4)]
    grams = [g / np.linalg.norm(g) for g in grams]
    div = -sum(np.sum(grams[i] * grams[j]) for i in range(4) for j in range(4) if i != j) / 4
    assert float(O.diversity("l")(a, x)) == pytest.approx(div, rel=1e-5)
    align = sum(np.mean((A[i] - A[i + d]) ** 2) / 2.0 ** d for d in range(1, 5) for i in range(4 - d))
    assert float(O.alignment("l")(a, x)) == pytest.approx(align, rel=1e-5)


def test_objective_algebra(acts):
    a, x = acts
    c, d, t = O.channel("l", 1), O.deepdream("l"), O.tv()
    combo = 2 * c - d / 4 + 1.5 - 0.1 * t
    ref = 2 * float(c(a, x)) - float(d(a, x)) / 4 + 1.5 - 0.1 * float(t(a, x))
    assert float(combo(a, x)) == pytest.approx(ref, rel=1e-5)
    assert float((-c)(a, x)) == pytest.approx(-float(c(a, x)))
    assert float((1 - c)(a, x)) == pytest.approx(1 - float(c(a, x)), rel=1e-5)
    assert combo.layers == ("l",)
    assert (c + O.class_logit(0)).layers == ("l", O.OUTPUT)
    with pytest.raises(ValueError, match="^layer:"):
        O.channel(3, 0)
