"""Spearman against scipy, SSIM against a float64 NumPy implementation of Wang et al. 2004, HOG against loops."""

import math

import jax
import numpy as np
import pytest
import scipy.stats
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxinterp.evaluation import hog_descriptor, hog_distance, rankdata, spearman, ssim


def test_rankdata_and_spearman_match_scipy_with_ties():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 5, (6, 9, 7)).astype(np.float32)      # heavy ties
    b = a + rng.integers(-2, 3, a.shape).astype(np.float32)
    b[1] = rng.standard_normal((9, 7))                          # no ties
    got = np.asarray(jax.jit(spearman)(a, b))
    for i in range(6):
        np.testing.assert_allclose(rankdata(a[i].ravel()), scipy.stats.rankdata(a[i].ravel()))
        want = scipy.stats.spearmanr(a[i].ravel(), b[i].ravel()).statistic
        np.testing.assert_allclose(got[i], want, rtol=1e-5, atol=1e-6)
    # broadcasting (N, T, H, W) against (N, 1, H, W), and a constant map gives NaN like scipy
    c = np.stack([a, b], 1)
    np.testing.assert_allclose(spearman(c, a[:, None]), np.stack([np.ones(6), got], 1), rtol=1e-5)
    assert np.isnan(float(spearman(np.ones((4, 4), np.float32), a[0, :4, :4])))


def test_spearman_of_large_maps_is_exact_for_identical_maps():
    """(N, T, 64, 64) maps with ties (ReLU'd): rho(a, a) = 1 and near-copies match scipy, in float32 under jit.

    The centred rank sums reach ~5e9 here; sum(ra * rb) computed apart from sum(ra * ra) put
    rho(a, a) off 1 by up to 2e-5 on XLA's CPU backend (jax 0.10: the sanity check's stage 0).
    """
    rng = np.random.default_rng(1)
    a = np.maximum(rng.standard_normal((4, 1, 64, 64)), 0.0).astype(np.float32)   # half the pixels tie at 0
    b = a + (1e-3 * rng.standard_normal(a.shape)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(jax.jit(spearman)(a, a.copy())), 1.0, rtol=0, atol=1e-6)
    near = np.asarray(jax.jit(spearman)(a, b))[:, 0]
    want = [scipy.stats.spearmanr(a[i, 0].ravel(), b[i, 0].ravel()).statistic for i in range(4)]
    np.testing.assert_allclose(near, want, rtol=0, atol=1e-6)


def _np_ssim(x, y, data_range, sigma=1.5, truncate=3.5, k1=0.01, k2=0.03):
    """Wang et al. 2004 eq. (13) with an 11 x 11 normalised Gaussian window, float64, window by window."""
    x, y = x.astype(np.float64), y.astype(np.float64)
    r = int(truncate * sigma + 0.5)
    t = np.arange(-r, r + 1)
    g = np.exp(-(t[:, None] ** 2 + t[None, :] ** 2) / (2 * sigma ** 2))
    g /= g.sum()
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    vals = []
    for i in range(x.shape[0] - 2 * r):
        for j in range(x.shape[1] - 2 * r):
            px, py = x[i:i + 2 * r + 1, j:j + 2 * r + 1], y[i:i + 2 * r + 1, j:j + 2 * r + 1]
            mx, my = (g * px).sum(), (g * py).sum()
            vx = (g * (px - mx) ** 2).sum()
            vy = (g * (py - my) ** 2).sum()
            cxy = (g * (px - mx) * (py - my)).sum()
            vals.append((2 * mx * my + c1) * (2 * cxy + c2) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2)))
    return np.mean(vals)


def test_ssim_matches_float64_formulas():
    rng = np.random.default_rng(1)
    a = rng.random((3, 16, 20)).astype(np.float32)
    b = np.clip(a + 0.3 * rng.standard_normal(a.shape), 0, 1).astype(np.float32)
    b[2] = rng.random((16, 20))
    got = np.asarray(jax.jit(ssim, static_argnames="data_range")(a, b, data_range=1.0))
    for i in range(3):
        np.testing.assert_allclose(got[i], _np_ssim(a[i], b[i], 1.0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ssim(a, a, data_range=1.0), np.ones(3), rtol=1e-5)


def _np_hog(m, cell, bins):
    h, w = m.shape
    p = np.pad(m.astype(np.float64), 1, mode="edge")
    hist = np.zeros((h // cell, w // cell, bins))
    for i in range(h // cell * cell):
        for j in range(w // cell * cell):
            gy = p[i + 2, j + 1] - p[i, j + 1]
            gx = p[i + 1, j + 2] - p[i + 1, j]
            theta = math.atan2(gy, gx) % math.pi
            k = min(int(theta * bins / math.pi), bins - 1)
            hist[i // cell, j // cell, k] += math.hypot(gx, gy)
    return hist / np.sqrt((hist ** 2).sum() + 1e-12)


def test_hog_matches_loops():
    rng = np.random.default_rng(2)
    a = rng.random((2, 17, 21)).astype(np.float32)
    b = rng.random((2, 17, 21)).astype(np.float32)
    d = np.asarray(hog_descriptor(a, cell=4, bins=6))
    for i in range(2):
        np.testing.assert_allclose(d[i], _np_hog(a[i], 4, 6), rtol=1e-4, atol=1e-5)
    want = [np.linalg.norm(_np_hog(a[i], 4, 6) - _np_hog(b[i], 4, 6)) for i in range(2)]
    np.testing.assert_allclose(jax.jit(hog_distance, static_argnames=("cell", "bins"))(a, b, cell=4, bins=6),
                               want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(hog_distance(a, 3.0 * a), 0.0, atol=1e-5)  # scale invariant


def test_vmap_equals_loop_and_sharded():
    rng = np.random.default_rng(3)
    a = rng.random((8, 16, 16)).astype(np.float32)
    b = rng.random((8, 16, 16)).astype(np.float32)
    for f in (spearman, lambda x, y: ssim(x, y, data_range=1.0), hog_distance):
        jf = jax.jit(f)
        full = np.asarray(jf(a, b))
        loop = np.array([jf(a[i], b[i]) for i in range(8)])
        np.testing.assert_allclose(np.asarray(jax.vmap(f)(a, b)), loop, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(full, loop, rtol=1e-5, atol=1e-6)
    sh = NamedSharding(Mesh(np.array(jax.devices()), ("data",)), P("data"))
    f = jax.jit(lambda x, y: (spearman(x, y), ssim(x, y, data_range=1.0), hog_distance(x, y)))
    for s, u in zip(f(jax.device_put(a, sh), jax.device_put(b, sh)), f(a, b)):
        np.testing.assert_allclose(np.asarray(s), np.asarray(u), rtol=1e-5, atol=1e-6)


def test_bad_input_raises():
    a = np.zeros((2, 16, 16), np.float32)
    with pytest.raises(ValueError, match="^b"):
        spearman(a, np.zeros((2, 8, 16), np.float32))
    with pytest.raises(ValueError, match="^b"):
        spearman(a, np.zeros((3, 16, 16), np.float32))
    with pytest.raises(ValueError, match="^a"):
        spearman(np.zeros((2, 16, 16), np.int32), a)
    with pytest.raises(ValueError, match="^data_range"):
        ssim(a, a, data_range=0.0)
    with pytest.raises(ValueError, match="^a"):
        ssim(a[:, :8, :8], a[:, :8, :8], data_range=1.0)
    with pytest.raises(ValueError, match="^cell"):
        hog_distance(a, a, cell=0)
    with pytest.raises(ValueError, match="^maps"):
        hog_descriptor(a[:, :4, :4], cell=8)
