"""Deletion / insertion curves: closed form of a linear model, brute-force order, chunking, net scores, vmap, sharding."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxinterp import nets, ops
from jaxinterp.evaluation import (curve_auc, deletion_curve, insertion_curve, map_order, net_score_fn,
                                  pixels_changed)

N, H, W = 4, 8, 10


@pytest.fixture(scope="module")
def linear():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((H, W, 3)).astype(np.float32)
    x = rng.random((N, H, W, 3)).astype(np.float32)
    score = lambda imgs: jnp.sum(imgs * w, axis=(1, 2, 3))  # noqa: E731
    return w, x, score


def _closed_form(w, x, order_maps, steps, mode, b):
    """Linear f: c_k = sum_p [changed] s^b_p + [unchanged] s^x_p with s^v_p = sum_c w_pc v_pc (float64)."""
    w64, x64 = w.astype(np.float64), x.astype(np.float64)
    out = []
    for i in range(len(x)):
        sx = (w64 * x64[i]).sum(-1).ravel()
        sb = (w64 * b).sum(-1).ravel()
        order = np.argsort(-order_maps[i].ravel(), kind="stable")
        gain = sx[order] - sb[order]                       # inserting pixel p adds sx - sb
        cum = np.concatenate([[0.0], np.cumsum(gain)])
        n_k = [k * H * W // steps for k in range(steps + 1)]
        if mode == "deletion":
            out.append([sx.sum() - cum[n] for n in n_k])
        else:
            out.append([sb.sum() + cum[n] for n in n_k])
    return np.array(out)


@pytest.mark.parametrize("steps", [1, 80])
def test_linear_model_matches_closed_form(linear, steps):
    w, x, score = linear
    attribution = (w * x).sum(-1)                              # the exact per-pixel contribution
    for mode, fn in (("deletion", deletion_curve), ("insertion", insertion_curve)):
        c = fn(score, x, attribution, steps=steps, baseline="constant", value=0.25)
        want = _closed_form(w, x, attribution, steps, mode, 0.25)
        np.testing.assert_allclose(c, want, rtol=1e-4, atol=1e-4)
        want_auc = (want.sum(-1) - 0.5 * (want[:, 0] + want[:, -1])) / steps
        np.testing.assert_allclose(curve_auc(c), want_auc, rtol=1e-4, atol=1e-4)
    # the exact attribution deletes best: lower deletion AUC than any random map
    rand = np.random.default_rng(1).random((N, H, W)).astype(np.float32)
    good = curve_auc(deletion_curve(score, x, attribution, steps=20, baseline="constant"))
    bad = curve_auc(deletion_curve(score, x, rand, steps=20, baseline="constant"))
    assert np.all(np.asarray(good) <= np.asarray(bad) + 1e-5)


def test_ties_broken_by_row_major_index_and_lower_resolution_maps(linear):
    w, x, score = linear
    rng = np.random.default_rng(2)
    maps = rng.integers(0, 3, (N, H, W)).astype(np.float32)      # many ties
    ranks = np.asarray(map_order(maps))
    for i in range(N):
        order = sorted(range(H * W), key=lambda p: (-maps[i].ravel()[p], p))
        np.testing.assert_array_equal(ranks[i].ravel()[order], np.arange(H * W))
    c = deletion_curve(score, x, maps, steps=9, baseline="constant")
    np.testing.assert_allclose(c, _closed_form(w, x, maps, 9, "deletion", 0.0), rtol=1e-4, atol=1e-4)
    small = rng.standard_normal((N, 4, 5)).astype(np.float32)
    big = np.asarray(ops.resize_bilinear(jnp.asarray(small), (H, W)))
    c = insertion_curve(score, x, small, steps=6, baseline="constant")
    np.testing.assert_allclose(c, _closed_form(w, x, big, 6, "insertion", 0.0), rtol=1e-4, atol=1e-4)


def test_blur_baseline_and_chunking(linear):
    w, x, score = linear
    maps = np.random.default_rng(3).random((N, H, W)).astype(np.float32)
    blurred = np.asarray(ops.gaussian_blur(jnp.asarray(x), 2.0))
    c1 = insertion_curve(score, x, maps, steps=10, baseline="blur", sigma=2.0, batch_size=1)
    c3 = insertion_curve(score, x, maps, steps=10, baseline="blur", sigma=2.0, batch_size=3)
    call = insertion_curve(score, x, maps, steps=10, baseline="blur", sigma=2.0, batch_size=None)
    np.testing.assert_allclose(c1, c3, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(c1, call, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(c1[:, 0], score(blurred), rtol=1e-5)
    np.testing.assert_allclose(c1[:, -1], score(x), rtol=1e-5)
    arr = deletion_curve(score, x, maps, steps=10, baseline=blurred)
    np.testing.assert_allclose(arr[:, -1], score(blurred), rtol=1e-5)
    assert pixels_changed(H * W, 10)[-1] == H * W


def test_net_targets_vmap_loop_and_sharding():
    net = nets.get("smallcnn", num_classes=5, widths=(4, 8, 8, 8))
    params = net.init(jax.random.key(0))
    x = jax.random.uniform(jax.random.key(1), (8, 16, 16, 3))
    maps = jax.random.normal(jax.random.key(2), (8, 2, 4, 4))
    target = jnp.array([[i % 5, (i + 2) % 5] for i in range(8)])
    f = jax.jit(lambda p, x, m, t: deletion_curve(net, x, m, params=p, target=t, steps=8, batch_size=3))
    c = np.asarray(f(params, x, maps, target))
    assert c.shape == (8, 2, 9)
    probs = jax.nn.softmax(net.apply(params, x))
    np.testing.assert_allclose(c[..., 0], np.take_along_axis(np.asarray(probs), np.asarray(target), 1),
                               rtol=1e-5)
    # one target with a callable score, (N, H, W) maps
    ct = deletion_curve(net_score_fn(net, params, target[:, 1]), x, maps[:, 1], steps=8, batch_size=9)
    np.testing.assert_allclose(ct, c[:, 1], rtol=1e-5, atol=1e-6)
    loop = np.stack([f(params, x[i:i + 1], maps[i:i + 1], target[i:i + 1])[0] for i in range(3)])
    np.testing.assert_allclose(c[:3], loop, rtol=1e-5, atol=1e-6)
    vm = jax.vmap(lambda x1, m1, t1: f(params, x1[None], m1[None], t1[None])[0])(x[:3], maps[:3], target[:3])
    np.testing.assert_allclose(np.asarray(vm), loop, rtol=1e-5, atol=1e-6)
    sh = NamedSharding(Mesh(np.array(jax.devices()), ("data",)), P("data"))
    cs = f(params, jax.device_put(x, sh), jax.device_put(maps, sh), jax.device_put(target, sh))
    np.testing.assert_allclose(np.asarray(cs), c, rtol=1e-5, atol=1e-6)


def test_bad_input_raises(linear):
    w, x, score = linear
    maps = np.zeros((N, H, W), np.float32)
    with pytest.raises(ValueError, match="^steps"):
        deletion_curve(score, x, maps, steps=0)
    with pytest.raises(ValueError, match="^batch_size"):
        deletion_curve(score, x, maps, batch_size=0)
    with pytest.raises(ValueError, match="^maps"):
        deletion_curve(score, x, maps[:2])
    with pytest.raises(ValueError, match="^images"):
        deletion_curve(score, x[..., :1], maps)
    with pytest.raises(ValueError, match="^baseline"):
        deletion_curve(score, x, maps, baseline="noise")
    with pytest.raises(ValueError, match="^baseline"):
        deletion_curve(score, x, maps, baseline=np.zeros((2, 2, 3)))
    with pytest.raises(ValueError, match="^sigma"):
        insertion_curve(score, x, maps, sigma=0.0)
    with pytest.raises(ValueError, match="^mode"):
        from jaxinterp.evaluation import curve
        curve(score, x, maps, mode="both")
    with pytest.raises(ValueError, match="^score_fn"):
        deletion_curve(3, x, maps)
    with pytest.raises(ValueError, match="^curves"):
        curve_auc(np.zeros((3, 1)))
