"""Weak localisation against brute-force NumPy: thresholds, boxes, IoU, held-out threshold choice, jit, vmap, sharding."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxinterp import ops
from jaxinterp.evaluation import (EMPTY_BOX, best_threshold, box_iou, largest_component, localisation_accuracy,
                                  localisation_hits, map_to_box, threshold_mask)


def _np_select(m, alpha, method):
    m = np.asarray(m, np.float64)
    if method == "value":
        return m >= alpha * m.max()
    if method == "mean":
        return m >= alpha * m.mean()
    p = np.maximum(m, 0)
    vals = sorted(p.ravel(), reverse=True)
    total, acc = sum(vals), 0.0
    for v in vals:                       # smallest prefix reaching the energy
        acc += v
        if acc >= alpha * total:
            break
    return p >= v


def _np_box(sel):
    ys = [i for i in range(sel.shape[0]) for j in range(sel.shape[1]) if sel[i, j]]
    xs = [j for i in range(sel.shape[0]) for j in range(sel.shape[1]) if sel[i, j]]
    if not ys:
        return EMPTY_BOX
    return (min(ys), min(xs), max(ys), max(xs))


def _np_iou(a, b):
    """IoU of inclusive boxes by counting pixels."""
    def pix(b):
        return {(i, j) for i in range(b[0], b[2] + 1) for j in range(b[1], b[3] + 1)}
    A, B = pix(a), pix(b)
    return len(A & B) / len(A | B) if A | B else 0.0


@pytest.mark.parametrize("method,alphas", [("value", (0.0, 0.3, 0.5, 1.0)), ("mean", (0.5, 1.0, 2.0, 50.0)),
                                           ("energy", (0.0, 0.5, 0.9, 1.0))])
def test_boxes_match_bruteforce(method, alphas):
    rng = np.random.default_rng(0)
    maps = rng.integers(-2, 5, (6, 9, 11)).astype(np.float32)   # ties and negative values
    maps[0] = 0.0                                                  # a constant map
    f = jax.jit(map_to_box, static_argnames="method")
    for a in alphas:
        got = np.asarray(f(maps, a, method=method))
        for k in range(len(maps)):
            sel = _np_select(maps[k], a, method)
            np.testing.assert_array_equal(threshold_mask(maps[k], a, method=method), sel)
            assert tuple(got[k]) == _np_box(sel), (a, k)


def test_empty_selection_gives_empty_box():
    maps = np.ones((1, 5, 5), np.float32)
    assert tuple(np.asarray(map_to_box(maps, 2.0, method="mean")[0])) == EMPTY_BOX
    assert float(box_iou(jnp.array(EMPTY_BOX), jnp.array([0, 0, 4, 4]))) == 0.0


def test_iou_matches_pixel_counting():
    rng = np.random.default_rng(1)
    a = np.sort(rng.integers(0, 12, (40, 2, 2)), axis=1).transpose(0, 2, 1).reshape(40, 4)[:, [0, 1, 2, 3]]
    a = np.stack([a[:, 0], a[:, 2], a[:, 1], a[:, 3]], 1)  # (y0, x0, y1, x1) with y0 <= y1, x0 <= x1
    b = np.roll(a, 1, axis=0)
    got = np.asarray(box_iou(a, b))
    want = [_np_iou(tuple(x), tuple(y)) for x, y in zip(a, b)]
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_hits_resized_maps_multiple_gt_boxes_and_held_out_choice():
    rng = np.random.default_rng(2)
    n, h, w, H, W, K = 10, 6, 6, 24, 24, 2
    maps = rng.random((n, h, w)).astype(np.float32) ** 3
    gt = np.zeros((n, K, 4), np.int64)
    for i in range(n):
        for k in range(K):
            y0, x0 = rng.integers(0, 12, 2)
            gt[i, k] = (y0, x0, y0 + rng.integers(4, 12), x0 + rng.integers(4, 12))
    gt_valid = rng.random((n, K)) < 0.8
    gt_valid[:, 0] = True
    big = np.asarray(ops.resize_bilinear(jnp.asarray(maps), (H, W)))
    thresholds = np.array([0.1, 0.3, 0.5, 0.7], np.float32)
    held = np.arange(n) < 5

    def oracle(alpha, method):
        out = []
        for i in range(n):
            box = _np_box(_np_select(big[i], alpha, method))
            out.append(any(gt_valid[i, k] and _np_iou(box, tuple(gt[i, k])) >= 0.5 for k in range(K)))
        return np.array(out)

    for method in ("value", "energy"):
        got = np.asarray(localisation_hits(maps, gt, 0.3, method=method, size=(H, W), gt_valid=gt_valid))
        np.testing.assert_array_equal(got, oracle(0.3, method))
        res = jax.jit(best_threshold, static_argnames=("method", "size"))(
            maps, gt, thresholds, held, method=method, size=(H, W), gt_valid=gt_valid)
        ho = np.array([oracle(a, method)[held].mean() for a in thresholds])
        te = np.array([oracle(a, method)[~held].mean() for a in thresholds])
        np.testing.assert_allclose(res["held_out_accuracy"], ho, rtol=1e-6)
        k = int(np.argmax(ho))
        assert int(res["index"]) == k and np.isclose(res["threshold"], thresholds[k])
        np.testing.assert_allclose(res["accuracy"], te[k], rtol=1e-6)
        np.testing.assert_allclose(localisation_accuracy(maps, gt, 0.3, method=method, size=(H, W),
                                                         gt_valid=gt_valid), oracle(0.3, method).mean())


def test_vmap_equals_loop_and_sharded_equals_single_device():
    rng = np.random.default_rng(3)
    maps = rng.random((8, 2, 10, 10)).astype(np.float32)
    gt = np.tile(np.array([2, 2, 7, 7]), (8, 2, 1))
    f = jax.jit(lambda m, g: localisation_hits(m, g, 0.5, method="energy"))
    full = np.asarray(f(maps, gt))
    loop = np.stack([f(maps[i:i + 1], gt[i:i + 1])[0] for i in range(8)])
    np.testing.assert_array_equal(full, loop)
    vm = jax.vmap(lambda m, g: f(m[None], g[None])[0])(maps, gt)
    np.testing.assert_array_equal(np.asarray(vm), loop)
    sh = NamedSharding(Mesh(np.array(jax.devices()), ("data",)), P("data"))
    np.testing.assert_array_equal(np.asarray(f(jax.device_put(maps, sh), jax.device_put(gt, sh))), full)


def test_bad_input_raises():
    maps = np.zeros((2, 8, 8), np.float32)
    gt = np.zeros((2, 4), np.int32)
    with pytest.raises(ValueError, match="^method"):
        map_to_box(maps, 0.5, method="otsu")
    with pytest.raises(ValueError, match="^threshold"):
        map_to_box(maps, 1.5, method="value")
    with pytest.raises(ValueError, match="^threshold"):
        map_to_box(maps, -0.1, method="mean")
    with pytest.raises(ValueError, match="^gt_boxes"):
        localisation_hits(maps, gt[:1], 0.5)
    with pytest.raises(ValueError, match="^gt_boxes"):
        localisation_hits(maps, np.zeros((2, 3)), 0.5)
    with pytest.raises(ValueError, match="^iou_threshold"):
        localisation_hits(maps, gt, 0.5, iou_threshold=-1)
    with pytest.raises(ValueError, match="^held_out"):
        best_threshold(maps, gt, np.array([0.5]), np.array([True, True]))
    with pytest.raises(ValueError, match="^thresholds"):
        best_threshold(maps, gt, np.array([]), np.array([True, False]))
    with pytest.raises(ValueError, match="^maps"):
        map_to_box(np.zeros((2, 0, 8), np.float32), 0.5)


def _scipy_largest(mask):
    """The largest 8-connected component by scipy.ndimage.label; ties -> the lowest label (first in raster order)."""
    import scipy.ndimage
    lab, n = scipy.ndimage.label(mask, structure=np.ones((3, 3), int))
    if n == 0:
        return np.zeros_like(mask, bool)
    sizes = np.bincount(lab.ravel())[1:]
    return lab == 1 + int(np.argmax(sizes))


def test_largest_component_matches_scipy_label():
    rng = np.random.default_rng(4)
    masks = rng.random((40, 13, 17)) < rng.uniform(0.2, 0.7, (40, 1, 1))    # many components, long chains
    masks[0] = False                                                         # empty
    masks[1] = True                                                          # one full component
    masks[2] = False
    masks[2, 1:3, 1:3] = masks[2, 8:10, 10:12] = True                         # a tie of two 2 x 2 blobs
    masks[3] = False
    masks[3, 5:8, 0:2] = masks[3, 0:3, 14:16] = True                          # a tie: the raster-first wins
    masks[4] = False
    masks[4, ::2, :] = True                                                   # stripes: no 8-contact
    masks[4, :, 16] = True                                                    # ... until a column joins them
    masks[5] = np.eye(13, 17, dtype=bool) | np.eye(13, 17, k=4, dtype=bool)[::-1]   # diagonals (8-connected only)
    got = np.asarray(jax.jit(largest_component)(masks))
    for k in range(len(masks)):
        np.testing.assert_array_equal(got[k], _scipy_largest(masks[k]), err_msg=str(k))
    # a spiral (path length ~ H W / 2) converges too
    spiral = np.zeros((15, 15), bool)
    y0, x0, y1, x1 = 0, 0, 14, 14
    while y0 <= y1 and x0 <= x1:
        spiral[y0, x0:x1 + 1] = spiral[y0:y1 + 1, x1] = spiral[y1, x0:x1 + 1] = True
        if y0 + 2 <= y1:
            spiral[y0 + 2:y1 + 1, x0] = True
        spiral[y0 + 2, x0:x0 + 2 if x0 + 2 <= x1 else x0 + 1] = True
        y0, x0, y1, x1 = y0 + 2, x0 + 2, y1 - 2, x1 - 2
    np.testing.assert_array_equal(largest_component(spiral), _scipy_largest(spiral))
    # vmap over a leading axis == loop
    vm = np.asarray(jax.vmap(largest_component)(masks[:8].reshape(4, 2, 13, 17))).reshape(8, 13, 17)
    np.testing.assert_array_equal(vm, got[:8])


def test_largest_component_box_and_hits():
    rng = np.random.default_rng(5)
    maps = rng.random((12, 16, 16)).astype(np.float32) ** 4
    maps[0] = 0.0
    maps[0, 2:5, 2:5] = 1.0
    maps[0, 10:12, 9:15] = 0.9                      # two blobs: 'all' encloses both, 'largest' the bigger
    f = jax.jit(map_to_box, static_argnames=("method", "component"))
    for alpha in (0.2, 0.5):
        got = np.asarray(f(maps, alpha, method="value", component="largest"))
        for k in range(len(maps)):
            want = _np_box(_scipy_largest(_np_select(maps[k], alpha, "value")))
            assert tuple(got[k]) == want, (alpha, k)
    assert tuple(np.asarray(f(maps[:1], 0.2, component="all"))[0]) == (2, 2, 11, 14)
    assert tuple(np.asarray(f(maps[:1], 0.2, component="largest"))[0]) == (10, 9, 11, 14)
    gt = np.array([[10, 9, 11, 14]] * 12)
    hits = np.asarray(localisation_hits(maps, gt, 0.2, component="largest"))
    want = [_np_iou(_np_box(_scipy_largest(_np_select(maps[k], 0.2, "value"))), tuple(gt[k])) >= 0.5
            for k in range(12)]
    np.testing.assert_array_equal(hits, want)
    held = np.arange(12) < 6
    res = best_threshold(maps, gt, np.array([0.2, 0.6]), held, component="largest")
    assert res["held_out_accuracy"].shape == (2,)
    sh = NamedSharding(Mesh(np.array(jax.devices()[:4]), ("data",)), P("data"))
    g = jax.jit(lambda m: map_to_box(m, 0.3, component="largest"))
    np.testing.assert_array_equal(np.asarray(g(jax.device_put(maps, sh))), np.asarray(g(maps)))
    with pytest.raises(ValueError, match="^component"):
        map_to_box(maps, 0.5, component="biggest")
    with pytest.raises(ValueError, match="^masks"):
        largest_component(np.zeros((3,), bool))
