"""Deep spectral methods and CLS attention against planted ground truth, SciPy float64 eigh and NumPy oracles.

Also: jit, vmap over images == a loop, 8 sharded devices == one, and the ValueErrors naming the argument.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
import scipy.ndimage
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxinterp import nets
from jaxinterp.analysis.spectral import (cls_attention, corloc, feature_affinity, fiedler_segments,
                                         laplacian_eigenvectors, segment_boxes, spectral_segmentation)
from tests.analysis._numpy_resize import resize_bilinear

_SHARD = functools.cache(lambda: NamedSharding(Mesh(np.array(jax.devices()), ("data",)), P("data")))


# -- NumPy / SciPy oracles ------------------------------------------------------------------------------------------


def _np_affinity(feats, threshold):
    """Cosine of every pair of feature vectors by explicit dot products, entries <= threshold set to 0."""
    f = np.asarray(feats, np.float64).reshape(-1, feats.shape[-1])
    w = np.zeros((len(f), len(f)))
    for p in range(len(f)):
        for q in range(len(f)):
            den = np.linalg.norm(f[p]) * np.linalg.norm(f[q])
            c = f[p] @ f[q] / den if den > 0 else 0.0
            w[p, q] = c if c > threshold else 0.0
    return w


def _np_affinity_fast(feats):
    """The same in float64 matrix products (for the larger oracles): cosines, entries <= 0 set to 0."""
    f = np.asarray(feats, np.float64).reshape(-1, feats.shape[-1])
    norm = np.linalg.norm(f, axis=1)
    c = (f @ f.T) / np.maximum(np.outer(norm, norm), 1e-300)
    return np.where(c > 0, c, 0.0)


def _np_laplacian(w, normalised):
    d = w.sum(1)
    lap = np.diag(d) - w
    if normalised:
        s = np.array([1 / np.sqrt(v) if v > 0 else 0.0 for v in d])
        lap = lap * s[:, None] * s[None, :]
    return lap


def _np_eig(w, normalised):
    """Ascending eigenpairs by scipy.linalg.eigh in float64, each vector's largest-magnitude entry positive."""
    vals, vecs = scipy.linalg.eigh(_np_laplacian(np.asarray(w, np.float64), normalised))
    top = vecs[np.argmax(np.abs(vecs), axis=0), np.arange(vecs.shape[1])]
    return vals, vecs * np.sign(top)


def _np_foreground(fiedler, h, w, rule):
    """The foreground side by counting: sides v > 0 / v <= 0; fewer patches / fewer border patches; then v > 0."""
    pos = np.asarray(fiedler).reshape(h, w) > 0
    border = np.zeros((h, w), bool)
    border[0], border[-1], border[:, 0], border[:, -1] = True, True, True, True
    size = (~pos).sum() - pos.sum()                             # > 0: the positive side is smaller
    edge = (~pos & border).sum() - (pos & border).sum()         # > 0: it touches less border
    keys = [size, edge] if rule == "smaller" else [edge, size]
    key = next((v for v in keys if v != 0), 1)
    return pos if key > 0 else ~pos


def _np_upsample(mask, size):
    """0 / 1 patch mask (h, w) -> bool (H, W): bilinear with half-pixel centres, clamped at the border, > 1/2."""
    return resize_bilinear(np.asarray(mask, np.float64)[..., None], (size, size))[..., 0] > 0.5


def _scipy_largest_box(mask):
    """Inclusive box of the largest 8-connected component (scipy.ndimage.label; ties: lowest label)."""
    lab, n = scipy.ndimage.label(mask, structure=np.ones((3, 3), int))
    if n == 0:
        return (0, 0, -1, -1)
    ys, xs = np.nonzero(lab == 1 + int(np.argmax(np.bincount(lab.ravel())[1:])))
    return (ys.min(), xs.min(), ys.max(), xs.max())


def _np_iou(a, b):
    """IoU of inclusive boxes by counting pixels."""
    def pix(b):
        return {(i, j) for i in range(b[0], b[2] + 1) for j in range(b[1], b[3] + 1)}
    A, B = pix(a), pix(b)
    return len(A & B) / len(A | B) if A | B else 0.0


def _blocks(rng, sizes):
    """A noisy block affinity (strong within blocks, weak across) with shuffled nodes, and each node's block."""
    labels = rng.permutation(np.repeat(np.arange(len(sizes)), sizes))
    same = labels[:, None] == labels[None, :]
    a = np.where(same, rng.uniform(0.7, 1.0, same.shape), rng.uniform(0.0, 0.05, same.shape))
    return (a + a.T) / 2, labels


def _planted_features(rng, planted, cos=0.3, noise=0.02, channels=16):
    """Feature maps (N, h, w, C): one vector on the planted patches, another (cosine ``cos``) elsewhere, plus noise."""
    e = np.linalg.qr(rng.normal(size=(channels, 2)))[0].T
    obj, bg = cos * e[0] + np.sqrt(1 - cos ** 2) * e[1], e[0]
    f = np.where(planted[..., None], obj, bg) + noise * rng.normal(size=planted.shape + (channels,))
    return f.astype(np.float32)


# -- planted ground truth -------------------------------------------------------------------------------------------


def test_fiedler_vector_separates_planted_blocks():
    rng = np.random.default_rng(0)
    cases = [_blocks(rng, (9, 15)) for _ in range(4)] + [_blocks(rng, (5, 8, 11)) for _ in range(4)]
    aff = np.stack([a for a, _ in cases]).astype(np.float32)
    eig = jax.jit(laplacian_eigenvectors, static_argnames=("k", "normalised"))
    seg = jax.jit(fiedler_segments, static_argnames=("grid", "normalised"))
    for normalised in (True, False):
        vals, vecs = eig(aff, 3, normalised=normalised)
        masks = np.asarray(seg(aff, (4, 6), normalised=normalised)).reshape(8, 24)
        for i, (_, labels) in enumerate(cases):
            fiedler = np.asarray(vecs[i, :, 1])
            assert abs(vals[i, 0]) < 1e-5 and vals[i, 1] > 1e-3, (normalised, i)
            for b in np.unique(labels):                 # every planted block lies on one side
                assert len(np.unique(np.sign(fiedler[labels == b]))) == 1, (normalised, i, b)
                assert len(np.unique(masks[i, labels == b])) == 1, (normalised, i, b)
            if i < 4:                                   # two blocks: the foreground is the smaller one
                np.testing.assert_array_equal(masks[i], labels == 0)


def test_planted_feature_map_segment_and_box():
    planted = np.zeros((3, 8, 8), bool)
    planted[0, 2:5, 3:7] = True
    planted[0, 7, 0] = True                              # a stray patch: not in the largest component
    planted[1, 1:7, 1:7] = True                          # more than half the patches, away from the border
    planted[2, 0:4, 0:5] = True                          # a corner object
    feats = _planted_features(np.random.default_rng(1), planted)
    seg = jax.jit(fiedler_segments, static_argnames=("grid", "foreground", "image_size"))
    aff = feature_affinity(feats)
    boxes = jax.jit(segment_boxes)
    for rule in ("smaller", "border"):
        want = planted.copy()
        if rule == "smaller":
            want[1] = ~planted[1]                        # the ring is the smaller side
        masks = np.asarray(seg(aff, (8, 8), foreground=rule, image_size=(64, 64)))
        np.testing.assert_array_equal(masks, [_np_upsample(m, 64) for m in want], err_msg=rule)
        got = np.asarray(boxes(np.concatenate([masks, np.zeros((1, 64, 64), bool)])))
        assert tuple(got[0]) == (16, 24, 39, 55)
        assert tuple(got[1]) == ((0, 0, 63, 63) if rule == "smaller" else (8, 8, 55, 55))
        assert tuple(got[2]) == (0, 0, 31, 39)
        assert tuple(got[3]) == (0, 0, -1, -1)            # an empty mask


def test_feature_affinity_matches_bruteforce_cosines():
    rng = np.random.default_rng(2)
    maps = rng.normal(size=(2, 3, 4, 5)).astype(np.float32)
    maps[1, 2, 3] = 0.0                                  # a zero feature vector: cosine 0 with everything
    tokens = rng.normal(size=(2, 7, 5)).astype(np.float32)
    f = jax.jit(feature_affinity)
    for feats in (maps, tokens):
        for threshold in (0.0, 0.2):
            got = np.asarray(f(feats, threshold=threshold))
            for n in range(2):
                np.testing.assert_allclose(got[n], _np_affinity(feats[n], threshold), atol=2e-6)
            np.testing.assert_array_equal(got, np.swapaxes(got, 1, 2))


# -- eigenpairs against SciPy in float64 ----------------------------------------------------------------------------


def test_eigenpairs_match_scipy_float64():
    rng = np.random.default_rng(3)
    with jax.enable_x64(True):
        a = rng.random((3, 12, 12)) * (rng.random((3, 12, 12)) < 0.6)
        a = a + np.swapaxes(a, 1, 2)
        twin = _blocks(rng, (6,))[0]
        degenerate = np.stack([np.kron(np.eye(2), twin),                     # two identical disconnected graphs
                               np.pad(a[0, 1:, 1:], ((1, 0), (1, 0)))])      # an isolated patch (degree 0)
        eig = jax.jit(laplacian_eigenvectors, static_argnames=("k", "normalised"))
        for normalised in (True, False):
            vals, vecs = eig(a, 5, normalised=normalised)
            assert vals.dtype == np.float64 and vals.shape == (3, 5) and vecs.shape == (3, 12, 5)
            for n in range(3):
                want_vals, want_vecs = _np_eig(a[n], normalised)
                np.testing.assert_allclose(vals[n], want_vals[:5], atol=1e-11)
                np.testing.assert_allclose(vecs[n], want_vecs[:, :5], atol=1e-9)
            full_vals, full_vecs = eig(degenerate, 12, normalised=normalised)     # k = P
            for n in range(2):
                want_vals, want_vecs = _np_eig(degenerate[n], normalised)
                np.testing.assert_allclose(full_vals[n], want_vals, atol=1e-11)
                v = np.asarray(full_vecs[n])
                np.testing.assert_allclose(v.T @ v, np.eye(12), atol=1e-11)
                top = v[np.argmax(np.abs(v), axis=0), np.arange(12)]
                assert np.all(top > 0)
                for j in (2, 4, 6) if n == 0 else (2,):                   # whole eigenspaces: projectors agree
                    np.testing.assert_allclose(v[:, :j] @ v[:, :j].T, want_vecs[:, :j] @ want_vecs[:, :j].T,
                                               atol=1e-9, err_msg=f"{normalised} {n} {j}")


# -- CorLoc ---------------------------------------------------------------------------------------------------------


def test_corloc_matches_bruteforce_iou_count():
    rng = np.random.default_rng(4)
    n, k = 16, 3

    def boxes(*shape):
        y = np.sort(rng.integers(0, 14, shape + (2,)), -1)
        x = np.sort(rng.integers(0, 14, shape + (2,)), -1)
        return np.stack([y[..., 0], x[..., 0], y[..., 1], x[..., 1]], -1)

    gt = boxes(n, k)
    pred = np.where(rng.random((n, 1)) < 0.5, gt[:, 0] + rng.integers(-2, 3, (n, 4)), boxes(n))
    pred[0] = (0, 0, -1, -1)                             # an empty prediction
    gt_valid = rng.random((n, k)) < 0.7
    gt_valid[:, 0] = True
    f = jax.jit(corloc)
    for thr in (0.5, 0.25):
        want = np.mean([any(gt_valid[i, j] and _np_iou(tuple(pred[i]), tuple(gt[i, j])) >= thr for j in range(k))
                        for i in range(n)])
        assert 0 < want < 1
        np.testing.assert_allclose(f(pred, gt, iou_threshold=thr, gt_valid=gt_valid), want, rtol=1e-6)
        np.testing.assert_allclose(f(jax.device_put(pred, _SHARD()), jax.device_put(gt, _SHARD()), iou_threshold=thr,
                                     gt_valid=jax.device_put(gt_valid, _SHARD())), want, rtol=1e-6)
    want = np.mean([_np_iou(tuple(pred[i]), tuple(gt[i, 0])) >= 0.5 for i in range(n)])
    np.testing.assert_allclose(corloc(pred, gt[:, 0]), want, rtol=1e-6)


# -- on nets: smallcnn pipeline, ViT attention and keys -------------------------------------------------------------


def _object_images(rng, n, size):
    """Flat-colour backgrounds with a flat-colour rectangle on the 4-pixel grid."""
    x = np.empty((n, size, size, 3), np.float32)
    for i in range(n):
        x[i] = rng.uniform(0, 1, 3)
        y0, x0 = rng.integers(1, size // 8, 2) * 4
        hh, ww = rng.integers(2, size // 8, 2) * 4
        x[i, y0:y0 + hh, x0:x0 + ww] = rng.uniform(0, 1, 3)
    return x


def _check_pipeline(out, feats, x_size, rule="smaller"):
    """``spectral_segmentation``'s output against SciPy eigh on NumPy affinities, the NumPy rule, scipy boxes.

    The eigenvectors are checked by their residual in the oracle's Laplacian (on the patch grid in row-major
    order), which needs no eigenvalue gap and fails for a wrong token layout.
    """
    n, h, w, k = out["eigenvectors"].shape
    for i in range(n):
        lap = _np_laplacian(_np_affinity_fast(feats[i]), True)
        want_vals = scipy.linalg.eigh(lap, eigvals_only=True)
        np.testing.assert_allclose(out["eigenvalues"][i], want_vals[:k], atol=2e-5)
        v = np.asarray(out["eigenvectors"][i], np.float64).reshape(h * w, k)
        np.testing.assert_allclose(lap @ v - v * want_vals[:k], 0.0, atol=2e-5)
        np.testing.assert_allclose(v.T @ v, np.eye(k), atol=1e-5)
        patch = _np_foreground(v[:, 1], h, w, rule)
        np.testing.assert_array_equal(out["patch_masks"][i], patch)
        np.testing.assert_array_equal(out["masks"][i], _np_upsample(patch, x_size))
        assert tuple(np.asarray(out["boxes"][i])) == _scipy_largest_box(np.asarray(out["masks"][i]))


def test_smallcnn_pipeline_and_array_functions_jit_vmap_sharded():
    net = nets.get("smallcnn")
    params = _np_params(net, np.random.default_rng(6))
    x = _object_images(np.random.default_rng(6), 8, 32)

    def run(p, x):                                      # the pipeline, and its steps one by one
        out = spectral_segmentation(net, p, x, "features.7", k=3)
        feats = net.apply(p, x, stop="features.7")
        aff = feature_affinity(feats)
        return {**out, "features": feats, "step_eigenvalues": laplacian_eigenvectors(aff, 3)[0],
                "step_patch_masks": fiedler_segments(aff, (8, 8)), "step_boxes": segment_boxes(out["masks"])}

    f = jax.jit(run)
    out = f(params, x)
    assert out["masks"].shape == (8, 32, 32) and out["eigenvectors"].shape == (8, 8, 8, 3)
    _check_pipeline(out, np.asarray(out["features"], np.float64), 32)
    np.testing.assert_allclose(out["step_eigenvalues"], out["eigenvalues"], atol=1e-6)
    np.testing.assert_array_equal(out["step_patch_masks"], out["patch_masks"])
    np.testing.assert_array_equal(out["step_boxes"], out["boxes"])
    # premise of exact mask equality below: no Fiedler entry within float noise of 0, and no near tie of the
    # largest positive and negative entries (the sign convention, and the last tie-break of the side)
    fiedler = np.asarray(out["eigenvectors"][..., 1]).reshape(8, -1)
    assert np.abs(fiedler).min() > 3e-5 and np.all(fiedler.max(1) + fiedler.min(1) > 3e-5)
    loop = [f(params, x[i:i + 1]) for i in range(8)]
    loop = {key: jnp.concatenate([o[key] for o in loop]) for key in out}
    vm = jax.jit(jax.vmap(lambda a, p: jax.tree.map(lambda t: t[0], run(p, a[None])), (0, None)))(x, params)
    sh = f(params, jax.device_put(x, _SHARD()))
    for other in (loop, vm, sh):
        for key in ("eigenvalues", "step_eigenvalues", "features"):
            np.testing.assert_allclose(other[key], out[key], atol=1e-5, err_msg=key)
        for key in ("patch_masks", "masks", "boxes", "step_patch_masks", "step_boxes"):
            np.testing.assert_array_equal(other[key], out[key], err_msg=key)


def _np_params(net, rng, qkv_std=0.1):
    """Random params from NumPy (faster than net.init): He-normal kernels, zero biases, unit norm scales,
    N(0, 0.02) tokens and positions; the ViT's qkv kernels N(0, qkv_std), for attention far from uniform."""
    def leaf(path, a):
        name = jax.tree_util.keystr(path)
        if "scale" in name:
            return np.ones(a.shape, np.float32)
        if "bias" in name:
            return np.zeros(a.shape, np.float32)
        std = 0.02 if "kernel" not in name else qkv_std if "qkv" in name else np.sqrt(2 / np.prod(a.shape[:-1]))
        return rng.normal(0, std, a.shape).astype(np.float32)
    return jax.tree_util.tree_map_with_path(leaf, net.abstract_params())


def _np_attention(z, blk, heads=6):
    """q, k of a pre-norm ViT block from its input z (T, D) in float64: probabilities (heads, T, T), keys (T, D)."""
    z = np.asarray(z, np.float64)
    ln = (z - z.mean(-1, keepdims=True)) / np.sqrt(z.var(-1, keepdims=True) + 1e-6)
    ln = ln * blk["norm1"]["scale"] + blk["norm1"]["bias"]
    qkv = ln @ np.asarray(blk["attn"]["qkv"]["kernel"], np.float64) + blk["attn"]["qkv"]["bias"]
    t, d = z.shape
    q, k = qkv[:, :d].reshape(t, heads, -1), qkv[:, d:2 * d].reshape(t, heads, -1)
    logits = np.einsum("qhd,khd->hqk", q, k) / np.sqrt(d // heads)
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True), k.reshape(t, d)


def test_vit_cls_attention_and_keys_segmentation_match_numpy():
    net = nets.get("vit_s16")
    params = _np_params(net, np.random.default_rng(7))
    x = _object_images(np.random.default_rng(8), 8, 64)          # 4 x 4 patches + CLS

    @jax.jit
    def run(p, x):                                               # one ViT compile: the three passes share the work
        return (cls_attention(net, p, x), spectral_segmentation(net, p, x, "blocks.11.keys", k=3),
                net.apply(p, x, stop="blocks.10"))

    maps, seg, z = run(params, jax.device_put(x, _SHARD()))     # sharded over 8 devices
    assert maps.shape == (8, 6, 4, 4)
    blk = jax.tree.map(np.asarray, params["blocks"]["11"])
    feats = []
    for i in range(8):                                          # per image: the NumPy oracle is a loop
        attn, keys = _np_attention(z[i], blk)
        np.testing.assert_allclose(maps[i], attn[:, 0, 1:].reshape(6, 4, 4), atol=2e-5)
        np.testing.assert_allclose(np.asarray(maps[i]).sum((1, 2)) + attn[:, 0, 0], 1.0, atol=1e-5)
        feats.append(keys[1:].reshape(4, 4, -1))
    assert np.all(maps > 0) and maps.max() > 3 / 17             # not near-uniform: the check has teeth
    _check_pipeline(seg, np.stack(feats), 64)


# -- bad input ------------------------------------------------------------------------------------------------------


def test_bad_input_raises():
    aff = np.ones((2, 4, 4), np.float32)
    with pytest.raises(ValueError, match="^features"):
        feature_affinity(np.ones((4, 5), np.float32))
    with pytest.raises(ValueError, match="^threshold"):
        feature_affinity(np.ones((1, 4, 5), np.float32), threshold=1.5)
    with pytest.raises(ValueError, match="^k"):
        laplacian_eigenvectors(aff, 0)
    with pytest.raises(ValueError, match="^k"):
        laplacian_eigenvectors(aff, 5)
    with pytest.raises(ValueError, match="^affinity"):
        laplacian_eigenvectors(np.ones((2, 4, 3), np.float32), 2)
    with pytest.raises(ValueError, match="^affinity"):
        laplacian_eigenvectors(np.ones((4, 4), np.float32), 2)
    with pytest.raises(ValueError, match="^affinity"):
        laplacian_eigenvectors(-aff, 2)
    with pytest.raises(ValueError, match="^affinity"):
        laplacian_eigenvectors(np.triu(aff), 2)
    with pytest.raises(ValueError, match="^grid"):
        fiedler_segments(aff, (3, 2))
    with pytest.raises(ValueError, match="^foreground"):
        fiedler_segments(aff, (2, 2), foreground="biggest")
    with pytest.raises(ValueError, match="^masks"):
        segment_boxes(np.ones((4,), bool))
    boxes = np.zeros((3, 4), np.int32)
    with pytest.raises(ValueError, match="^pred_boxes"):
        corloc(boxes[0], boxes)
    with pytest.raises(ValueError, match="^gt_boxes"):
        corloc(boxes, boxes[:2])
    with pytest.raises(ValueError, match="^iou_threshold"):
        corloc(boxes, boxes, iou_threshold=1.5)
    net = nets.get("smallcnn")
    params = net.abstract_params()
    x = jnp.zeros((1, 32, 32, 3))
    seg = functools.partial(spectral_segmentation, net)
    with pytest.raises(ValueError, match="^layer: unknown"):
        jax.eval_shape(lambda p, x: seg(p, x, "layer9"), params, x)
    with pytest.raises(ValueError, match="^layer: expected features"):
        jax.eval_shape(lambda p, x: seg(p, x, "avgpool"), params, x)
    with pytest.raises(ValueError, match="^k"):
        jax.eval_shape(lambda p, x: seg(p, x, "features.10", k=17), params, x)     # 4 x 4 patches
    with pytest.raises(ValueError, match="^x"):
        jax.eval_shape(lambda p, x: seg(p, x[0], "features.10"), params, x)
    with pytest.raises(ValueError, match="^net"):
        jax.eval_shape(lambda p, x: cls_attention(net, p, x), params, x)
    vit = nets.get("vit_s16")
    with pytest.raises(ValueError, match="^block"):
        jax.eval_shape(lambda p, x: cls_attention(vit, p, x, block=12), vit.abstract_params(), x)
    with pytest.raises(ValueError, match="^layer: expected features"):
        jax.eval_shape(lambda p, x: spectral_segmentation(vit, p, x, "blocks.11.attn"), vit.abstract_params(), x)
