"""Pointing game against a brute-force NumPy oracle: ties, empty masks, other resolutions, accuracy, jit, vmap, sharding."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxinterp import ops
from jaxinterp.evaluation import (centre_hits, centre_maps, pointing_accuracy, pointing_game,
                                  pointing_hits)


def _np_resize(m, hw):
    """float64 bilinear resize, half-pixel centres, edge clamp (torch align_corners=False), by loops."""
    h, w = m.shape
    H, W = hw
    out = np.zeros((H, W))
    for i in range(H):
        sy = min(max((i + 0.5) * h / H - 0.5, 0), h - 1)
        y0 = int(np.floor(sy)); y1 = min(y0 + 1, h - 1); fy = sy - y0
        for j in range(W):
            sx = min(max((j + 0.5) * w / W - 0.5, 0), w - 1)
            x0 = int(np.floor(sx)); x1 = min(x0 + 1, w - 1); fx = sx - x0
            out[i, j] = ((1 - fy) * ((1 - fx) * m[y0, x0] + fx * m[y0, x1])
                         + fy * ((1 - fx) * m[y1, x0] + fx * m[y1, x1]))
    return out


def _oracle_hit(m, mask, tol, resized=None):
    """Brute force: first row-major maximum, then any mask pixel within Euclidean distance tol."""
    H, W = mask.shape
    r = np.asarray(resized) if resized is not None else m
    best, py, px = -np.inf, -1, -1
    for i in range(H):
        for j in range(W):
            if r[i, j] > best:
                best, py, px = r[i, j], i, j
    for i in range(H):
        for j in range(W):
            if mask[i, j] and (i - py) ** 2 + (j - px) ** 2 <= tol ** 2:
                return True
    return False


def _random_masks(rng, shape, p=0.03):
    m = rng.random(shape) < p
    m[0] = False  # an empty mask
    return m


def test_hits_match_bruteforce_with_ties_and_empty_masks():
    rng = np.random.default_rng(0)
    n, H, W = 12, 20, 24
    maps = rng.integers(0, 4, (n, H, W)).astype(np.float32)  # many ties at the maximum
    masks = _random_masks(rng, (n, H, W))
    for tol in (0.0, 1.0, 2.5, 15.0):
        got = np.asarray(jax.jit(pointing_hits, static_argnames="tolerance")(maps, masks, tolerance=tol))
        want = [_oracle_hit(maps[k], masks[k], tol) for k in range(n)]
        np.testing.assert_array_equal(got, want)
    assert not got[0]  # an empty mask is a miss


def test_ties_take_first_row_major_maximum():
    maps = np.zeros((1, 10, 10), np.float32)
    maps[0, 2, 7] = maps[0, 8, 1] = 1.0       # two tied maxima; (2, 7) comes first
    mask = np.zeros((1, 10, 10), bool)
    mask[0, 2, 7] = True
    assert bool(pointing_hits(maps, mask, tolerance=0.0)[0])
    mask = np.zeros((1, 10, 10), bool)
    mask[0, 8, 1] = True
    assert not bool(pointing_hits(maps, mask, tolerance=0.0)[0])


def test_maps_at_lower_resolution_are_resized_bilinearly():
    rng = np.random.default_rng(1)
    n, h, w, H, W = 6, 5, 7, 20, 28
    maps = rng.standard_normal((n, 3, h, w)).astype(np.float32)
    masks = rng.random((n, 3, H, W)) < 0.02
    got = np.asarray(pointing_hits(maps, masks, tolerance=4.0))
    resized = np.asarray(ops.resize_bilinear(jnp.asarray(maps), (H, W)))
    for a in range(n):
        for t in range(3):
            np.testing.assert_allclose(resized[a, t], _np_resize(maps[a, t].astype(np.float64), (H, W)),
                                       atol=1e-5)
            assert got[a, t] == _oracle_hit(None, masks[a, t], 4.0, resized[a, t])


def test_accuracy_per_class_then_mean_and_difficult_and_centre():
    rng = np.random.default_rng(2)
    n, T, H, W, C = 16, 2, 16, 16, 4
    maps = rng.standard_normal((n, T, H, W)).astype(np.float32)
    masks = rng.random((n, T, H, W)) < 0.05
    classes = rng.integers(0, C, (n, T))
    classes[:C, 0] = np.arange(C)
    valid = rng.random((n, T)) < 0.8
    valid[:C, 0] = True
    difficult = rng.random((n, T)) < 0.5
    out = pointing_game(maps, masks, classes, C, tolerance=3.0, valid=valid, difficult=difficult)
    hits = np.array([[_oracle_hit(maps[a, t], masks[a, t], 3.0) for t in range(T)] for a in range(n)])
    np.testing.assert_array_equal(out["hits"], hits)
    ch = np.zeros((n, T), bool)
    for a in range(n):
        for t in range(T):
            ys, xs = np.nonzero(masks[a, t])
            ch[a, t] = bool(np.any((ys - H // 2) ** 2 + (xs - W // 2) ** 2 <= 9.0))
    np.testing.assert_array_equal(out["centre_hits"], ch)

    def acc(h, v):
        per = []
        for c in range(C):
            sel = (classes == c) & v
            per.append(h[sel].mean() if sel.any() else np.nan)
        return np.nanmean(per), np.array(per)

    for key, h in (("", hits), ("centre_", ch)):
        a, per = acc(h, valid)
        np.testing.assert_allclose(out[key + "accuracy"], a, rtol=1e-6)
        np.testing.assert_allclose(out[key + "per_class"], per, rtol=1e-6)
        a, per = acc(h, valid & difficult)
        np.testing.assert_allclose(out[key + "accuracy_difficult"], a, rtol=1e-6)
        np.testing.assert_allclose(out[key + "per_class_difficult"], per, rtol=1e-6)
    # the centre maps point where centre_hits looks
    np.testing.assert_array_equal(pointing_hits(centre_maps(maps.shape), masks, tolerance=3.0), ch)


def test_jit_gives_nan_for_empty_class():
    hits = jnp.array([True, False, True])
    classes = jnp.array([0, 0, 2])
    mean, per = jax.jit(pointing_accuracy, static_argnums=2)(hits, classes, 3)
    assert np.isnan(per[1]) and np.isclose(per[0], 0.5) and np.isclose(mean, 0.75)
    maps = jnp.zeros((3, 6, 6)).at[:, 1, 1].set(1.0)
    masks = jnp.zeros((3, 6, 6), bool).at[0, 1, 2].set(True).at[2, 5, 5].set(True)
    out = jax.jit(pointing_game, static_argnums=3, static_argnames="tolerance")(
        maps, masks, classes, 3, tolerance=1.0, difficult=jnp.array([True, True, False]))
    np.testing.assert_array_equal(out["hits"], [True, False, False])
    np.testing.assert_allclose(out["per_class"], [0.5, np.nan, 0.0])
    np.testing.assert_allclose(out["per_class_difficult"], [0.5, np.nan, np.nan])
    np.testing.assert_allclose(out["centre_hits"], [False, False, False])


def test_vmap_equals_loop_and_sharded_equals_single_device():
    rng = np.random.default_rng(3)
    n, H, W = 16, 12, 12
    maps = rng.standard_normal((n, H, W)).astype(np.float32)
    masks = rng.random((n, H, W)) < 0.05
    f = jax.jit(lambda m, k: pointing_hits(m, k, tolerance=2.0))
    full = np.asarray(f(maps, masks))
    loop = np.array([f(maps[i:i + 1], masks[i:i + 1])[0] for i in range(n)])
    vm = np.asarray(jax.vmap(lambda m, k: f(m[None], k[None])[0])(maps, masks))
    np.testing.assert_array_equal(full, loop)
    np.testing.assert_array_equal(vm, loop)
    sh = NamedSharding(Mesh(np.array(jax.devices()), ("data",)), P("data"))
    got = f(jax.device_put(maps, sh), jax.device_put(masks, sh))
    np.testing.assert_array_equal(np.asarray(got), full)


def test_bad_input_raises():
    maps = np.zeros((2, 8, 8), np.float32)
    masks = np.zeros((2, 8, 8), bool)
    with pytest.raises(ValueError, match="^tolerance"):
        pointing_hits(maps, masks, tolerance=-1.0)
    with pytest.raises(ValueError, match="^masks"):
        pointing_hits(maps, masks[:1])
    with pytest.raises(ValueError, match="^masks"):
        pointing_hits(maps, masks[:, None])
    with pytest.raises(ValueError, match="^maps"):
        pointing_hits(maps[0], masks[0])
    with pytest.raises(ValueError, match="^maps"):
        pointing_hits(maps.astype(np.int32), masks)
    with pytest.raises(ValueError, match="^classes"):
        pointing_accuracy(np.array([True, False]), np.array([0, 0]), 2)  # class 1 is empty
    with pytest.raises(ValueError, match="^classes"):
        pointing_accuracy(np.array([True, False]), np.array([0, 5]), 2)
    with pytest.raises(ValueError, match="^classes"):
        pointing_accuracy(np.array([True, False]), np.array([0]), 2)
    with pytest.raises(ValueError, match="^tolerance"):
        centre_hits(masks, tolerance=-0.5)


def test_non_finite_maps_raise():
    maps = np.zeros((1, 4, 4), np.float32)
    maps[0, 1, 1] = np.nan
    with pytest.raises(ValueError, match="^maps"):
        pointing_hits(maps, np.ones((1, 4, 4), bool))
