"""Network dissection against brute force: streamed quantiles vs np.quantile, a planted detector, NumPy IoUs.

The planted net is smallcnn with hand-set first-layer weights: its unit 0 copies the red
channel and unit 1 the green one, and the images' red and green channels are the
indicators of concepts 0 and 1 (rectangles on the 2-pixel grid, so that max-pooling by 2
and bilinear upsampling by 2 thresholded at 0.5 give them back exactly): dissect finds
IoU 1 for them.  Every IoU and count equals a NumPy computation of the paper's formula
(its own bilinear upsampling, masks compared pixel by pixel with & and |).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxinterp import nets
from jaxinterp.analysis.dissection import (COLOURS, SYNTHETIC_CATEGORIES, SYNTHETIC_CONCEPTS,
                                           activation_histogram_update, activation_quantiles, activation_range_update,
                                           dissect, dissection_summary, dissection_update, empty_dissection_counts,
                                           synthetic_concepts)
from tests.analysis._numpy_resize import resize_bilinear

NET = nets.get("smallcnn", widths=(4, 8, 8, 8))
LAYER = "features.2"          # conv, ReLU, max-pool 2: (16, 16, 4) at 32 px
N, S = 16, 32


def _sharding():
    return NamedSharding(Mesh(np.array(jax.devices()), ("data",)), P("data"))


# ---------------------------------------------------------------------------------------------------------------
# Quantiles.


@pytest.fixture(scope="module")
def random_net():
    params = NET.init(jax.random.key(0))
    images = np.random.default_rng(0).random((20, S, S, 3)).astype(np.float32)
    acts = np.asarray(NET.apply(params, images, stop=LAYER), np.float64).reshape(-1, 4)   # (20 16 16, 4)
    return params, images, acts


def test_streamed_quantiles_within_half_a_bin_of_np_quantile(random_net):
    params, images, acts = random_net
    width = acts.max(0) - acts.min(0)
    for top, bins, batches, batch_size in [(0.005, 128, images, 8),                         # the paper's 0.995
                                           (0.3, 64, [images[:8], images[8:16], images[16:]], None),
                                           (0.0, 128, images, 8)]:                         # the maximum
        got = np.asarray(activation_quantiles(NET, params, batches, LAYER, top=top, bins=bins, batch_size=batch_size))
        exact = np.quantile(acts, 1 - top, axis=0)
        # order statistics at bin centres: within half a bin of the truth (+ float32 rounding of the edges)
        bound = width / (2 * bins) * (1 + 1e-4) + 1e-6
        assert np.all(np.abs(got - exact) <= bound), (top, got, exact, bound)
    sharded = activation_quantiles(NET, params, images, LAYER, bins=128, batch_size=8, sharding=_sharding())
    unsharded = activation_quantiles(NET, params, images, LAYER, bins=128, batch_size=8)
    np.testing.assert_allclose(sharded, unsharded, atol=float(width.max()) / 128)


def test_quantile_updates_vmap_equals_loop(random_net):
    params, images, acts = random_net
    xs = np.stack([images[:8], images[8:16]])
    init = (jnp.full((4,), jnp.inf), jnp.full((4,), -jnp.inf))
    rng = jax.vmap(lambda x: activation_range_update(init, params, x, 8, net=NET, layer=LAYER))(xs)
    hist = jax.vmap(lambda x, lo, hi: activation_histogram_update(jnp.zeros((4, 32), jnp.int32), params, x, lo, hi, 8,
                                                                 net=NET, layer=LAYER))(xs, *rng)
    for d in range(2):
        lo, hi = activation_range_update(init, params, xs[d], 8, net=NET, layer=LAYER)
        np.testing.assert_allclose(rng[0][d], lo, rtol=1e-6)
        np.testing.assert_allclose(rng[1][d], hi, rtol=1e-6)
        a = acts[d * 8 * 256:(d + 1) * 8 * 256]
        np.testing.assert_allclose(hi, a.max(0), rtol=1e-5)
        h = activation_histogram_update(jnp.zeros((4, 32), jnp.int32), params, xs[d], lo, hi, 8, net=NET, layer=LAYER)
        np.testing.assert_array_equal(hist[d], h)
        assert np.all(np.asarray(h).sum(1) == 8 * 256)


# ---------------------------------------------------------------------------------------------------------------
# A planted dissection.


def _rectangles(rng, n, grid):
    """bool (n, S, S): one random rectangle per image (none on some), corners on a ``grid``-pixel grid."""
    out = np.zeros((n, S, S), bool)
    for i in range(n):
        if rng.random() < 0.2:
            continue
        y0, x0 = rng.integers(0, S // grid - 1, 2)
        y1, x1 = y0 + rng.integers(1, S // grid - y0 + 1), x0 + rng.integers(1, S // grid - x0 + 1)
        out[i, y0 * grid:y1 * grid, x0 * grid:x1 * grid] = True
    return out


@pytest.fixture(scope="module")
def planted():
    rng = np.random.default_rng(1)
    params = jax.tree.map(np.asarray, NET.init(jax.random.key(1)))
    kernel, bias = np.zeros((3, 3, 3, 4), np.float32), np.zeros(4, np.float32)
    mean, std = np.array(NET.mean), np.array(NET.module_cls.STD)
    kernel[1, 1, 0, 0], bias[0] = std[0], mean[0]                 # unit 0 = red (the net normalises its input)
    kernel[1, 1, 1, 1], bias[1] = std[1], mean[1]                 # unit 1 = green
    kernel[..., 2:] = rng.normal(size=(3, 3, 3, 2))               # units 2, 3: random filters
    params["features"]["0"] = {"kernel": kernel, "bias": bias}
    red, green = _rectangles(rng, N, 2), _rectangles(rng, N, 2)
    images = np.stack([red, green, rng.random((N, S, S))], -1).astype(np.float32)
    masks = np.stack([red, green, _rectangles(rng, N, 1), rng.random((N, S, S)) < 0.3], 1)   # (N, 4, S, S)
    acts = np.asarray(NET.apply(params, images, stop=LAYER), np.float64)
    up = np.stack([resize_bilinear(a, (S, S)) for a in acts])                                    # (N, S, S, 4)
    thresholds = np.array([0.5, 0.5, _gap(up[..., 2], 0.8), _gap(up[..., 3], 0.95)], np.float32)
    return params, images, masks, up, thresholds


def _gap(values, q):
    """A threshold near the q quantile, mid-way in a gap > 1e-4 between values (float32 rounding cannot cross it)."""
    v = np.unique(values)
    i = np.searchsorted(v, np.quantile(v, q))
    while v[i + 1] - v[i] <= 1e-4:
        i += 1
    return (v[i] + v[i + 1]) / 2


def _np_dissect(up, masks, thresholds, annotated=None):
    """Dataset-wide intersections and unions straight from the definition, image by image."""
    n, k = masks.shape[:2]
    c = up.shape[-1]
    annotated = np.ones((n, k), bool) if annotated is None else annotated
    inter, union = np.zeros((c, k), int), np.zeros((c, k), int)
    for i in range(n):
        for unit in range(c):
            on = up[i, :, :, unit] > thresholds[unit]
            for concept in range(k):
                if annotated[i, concept]:
                    inter[unit, concept] += np.sum(on & masks[i, concept])
                    union[unit, concept] += np.sum(on | masks[i, concept])
    return inter, union


def test_planted_detectors_found_and_ious_match_numpy(planted):
    params, images, masks, up, thresholds = planted
    got = dissect(NET, params, images, masks, LAYER, thresholds, batch_size=8)
    inter, union = _np_dissect(up, masks, thresholds)
    np.testing.assert_array_equal(got.intersection, inter)
    np.testing.assert_array_equal(got.union, union)
    np.testing.assert_allclose(got.iou, inter / np.maximum(union, 1), rtol=1e-6)
    assert got.iou[0, 0] == 1.0 and got.iou[1, 1] == 1.0                 # the planted detectors, exactly
    np.testing.assert_array_equal(got.best_concept[:2], [0, 1])
    np.testing.assert_array_equal(got.best_iou[:2], [1.0, 1.0])
    assert 0 < got.iou[2:].max() < 1
    # concepts annotated on some images only: unions over those images
    annotated = np.random.default_rng(2).random((N, 4)) < 0.6
    got = dissect(NET, params, images, masks, LAYER, thresholds, batch_size=6, annotated=annotated)   # 6, 6, 4 + pad
    inter, union = _np_dissect(up, masks, thresholds, annotated)
    np.testing.assert_array_equal(got.intersection, inter)
    np.testing.assert_array_equal(got.union, union)


def test_dissection_sharded_vmapped_and_jitted(planted):
    params, images, masks, up, thresholds = planted
    one = dissect(NET, params, images, masks, LAYER, thresholds, batch_size=8)
    eight = dissect(NET, params, images, masks, LAYER, thresholds, batch_size=8, sharding=_sharding())
    np.testing.assert_array_equal(eight.intersection, one.intersection)
    np.testing.assert_array_equal(eight.union, one.union)
    # vmap over two datasets == a loop
    empty = empty_dissection_counts(4, 4)
    update = lambda x, m: dissection_update(empty, params, x, m, thresholds, 8, net=NET, layer=LAYER)  # noqa: E731
    mapped = jax.vmap(update)(images.reshape(2, 8, S, S, 3), masks.reshape(2, 8, 4, S, S))
    for d in range(2):
        loop = update(images[8 * d:8 * d + 8], masks[8 * d:8 * d + 8])
        for a, b in zip(mapped, loop):
            np.testing.assert_array_equal(a[d], b)
        inter, _ = _np_dissect(up[8 * d:8 * d + 8], masks[8 * d:8 * d + 8], thresholds)
        np.testing.assert_array_equal(loop.intersection, inter)
    jitted = jax.jit(dissect, static_argnames=("net", "layer", "batch_size"))
    got = jitted(NET, params, jnp.asarray(images), jnp.asarray(masks), LAYER, jnp.asarray(thresholds), batch_size=8)
    np.testing.assert_array_equal(got.union, one.union)


def test_summary_counts_detectors_and_unique_concepts():
    names = ("dog", "cat", "red", "blue", "stripes")
    categories = ("object", "object", "colour", "colour", "texture")
    iou = np.array([[0.30, 0.10, 0.00, 0.02, 0.01],     # dog
                    [0.05, 0.21, 0.00, 0.00, 0.03],     # cat
                    [0.02, 0.00, 0.04, 0.01, 0.00],     # red, but IoU 0.04 is not > 0.04: no detector
                    [0.01, 0.00, 0.07, 0.02, 0.00],     # red
                    [0.00, 0.01, 0.00, 0.03, 0.02],     # blue, below the threshold
                    [0.09, 0.00, 0.00, 0.00, 0.001]],   # dog
                   np.float32)
    best = iou.argmax(1)
    detector = iou.max(1) > 0.04
    want_detectors = {cat: sum(detector[u] and categories[best[u]] == cat for u in range(6))
                      for cat in ("object", "colour", "texture")}
    detected = {best[u] for u in range(6) if detector[u]}
    want_unique = {cat: sum(categories[c] == cat for c in detected) for cat in ("object", "colour", "texture")}
    assert want_detectors == {"object": 3, "colour": 1, "texture": 0} and want_unique == {"object": 2, "colour": 1,
                                                                                          "texture": 0}
    summary = jax.jit(dissection_summary, static_argnums=(1, 2, 3))
    for got in (dissection_summary(iou, names, categories), summary(jnp.asarray(iou), names, categories, 0.04)):
        assert {c: int(v) for c, v in got["detectors"].items()} == want_detectors
        assert {c: int(v) for c, v in got["unique_concepts"].items()} == want_unique
        assert int(got["num_unique_concepts"]) == len(detected) and int(got["num_detectors"]) == detector.sum()
        assert {n: int(v) for n, v in got["units_per_concept"].items()} == {"dog": 2, "cat": 1, "red": 1, "blue": 0,
                                                                            "stripes": 0}
        np.testing.assert_array_equal(got["best_concept"], best)
        np.testing.assert_array_equal(got["is_detector"], detector)
    lower = dissection_summary(iou, names, categories, iou_threshold=0.02)          # units 2 (red) and 4 (blue) too
    assert int(lower["detectors"]["colour"]) == 3 and int(lower["unique_concepts"]["colour"]) == 2


def test_synthetic_concepts_match_numpy():
    rng = np.random.default_rng(3)          # a batch with synthetic.generate's keys (rendering it would cost seconds)
    batch = {"image": rng.random((6, S, S, 3)).astype(np.float32), "label": np.array([0, 7, 3, 6, 5, 3], np.int32),
             "mask": rng.random((6, S, S)) < 0.3, "box": np.zeros((6, 4), np.float32)}
    got = np.asarray(jax.jit(synthetic_concepts)(batch))
    assert got.shape == (6, len(SYNTHETIC_CONCEPTS), S, S) and len(SYNTHETIC_CATEGORIES) == len(SYNTHETIC_CONCEPTS)
    label, mask, image = (np.asarray(batch[k]) for k in ("label", "mask", "image"))
    for i in range(6):
        for c in range(8):
            np.testing.assert_array_equal(got[i, c], mask[i] if label[i] == c else np.zeros((S, S), bool))
    palette = np.array(list(COLOURS.values()))
    dist = np.sum((image.astype(np.float64)[..., None, :] - palette) ** 2, -1)        # (6, S, S, 11)
    srt = np.sort(dist, -1)
    clear = srt[..., 1] - srt[..., 0] > 1e-5                                            # no near-tie of two colours
    assert clear.mean() > 0.99
    nearest = np.moveaxis(np.eye(11, dtype=bool)[dist.argmin(-1)], -1, 1)              # (6, 11, S, S)
    np.testing.assert_array_equal(got[:, 8:][np.broadcast_to(clear[:, None], nearest.shape)],
                                  nearest[np.broadcast_to(clear[:, None], nearest.shape)])
    assert np.all(got[:, 8:].sum(1) == 1)                                               # one colour per pixel
    assert SYNTHETIC_CATEGORIES[:8] == ("shape",) * 6 + ("texture",) * 2


def test_bad_input_raises(random_net, planted):
    params, images, _ = random_net
    _, pimages, masks, _, thresholds = planted
    with pytest.raises(ValueError, match="^top"):
        activation_quantiles(NET, params, images, LAYER, top=1.0, batch_size=8)
    with pytest.raises(ValueError, match="^bins"):
        activation_quantiles(NET, params, images, LAYER, bins=0, batch_size=8)
    with pytest.raises(ValueError, match="^batches"):
        activation_quantiles(NET, params, iter([images]), LAYER)
    with pytest.raises(ValueError, match="^layer"):
        activation_quantiles(NET, params, images, "features.42", batch_size=8)
    with pytest.raises(ValueError, match="^thresholds"):
        dissect(NET, params, pimages, masks, LAYER, thresholds[:3])
    with pytest.raises(ValueError, match="^concept_masks"):
        dissect(NET, params, pimages, masks[:4], LAYER, thresholds)
    with pytest.raises(ValueError, match="^concept_masks"):
        dissect(NET, params, pimages, masks.astype(np.float32), LAYER, thresholds)
    with pytest.raises(ValueError, match="^annotated"):
        dissect(NET, params, pimages, masks, LAYER, thresholds, annotated=np.ones((N, 3), bool))
    with pytest.raises(ValueError, match="^images"):
        dissect(NET, params, pimages[..., :1], masks, LAYER, thresholds)
    with pytest.raises(ValueError, match="^layer"):
        dissect(NET, params, pimages, masks, "avgpool", thresholds)
    with pytest.raises(ValueError, match="^iou"):
        dissection_summary(np.zeros(3, np.float32), ("a",), ("b",))
    with pytest.raises(ValueError, match="^concept_names"):
        dissection_summary(np.zeros((2, 2), np.float32), ("a", "a"), ("b", "b"))
    with pytest.raises(ValueError, match="^categories"):
        dissection_summary(np.zeros((2, 2), np.float32), ("a", "b"), ("b",))
    with pytest.raises(ValueError, match="^iou_threshold"):
        dissection_summary(np.zeros((2, 2), np.float32), ("a", "b"), ("c", "c"), iou_threshold=2.0)
    with pytest.raises(ValueError, match="^batch"):
        synthetic_concepts({"image": pimages})
