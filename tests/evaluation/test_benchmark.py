"""The benchmark pieces shared by the demo and the experiments, against brute-force NumPy / scipy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxinterp import nets
from jaxinterp.evaluation import (compare_maps, curve_auc, deletion_curve, explain_fn, method_slug,
                                  pointing_hits, pointing_rows, pointing_table, sanitise_maps, sanity_plot,
                                  sanity_summary, sanity_table, score_maps)


def test_method_slug():
    assert [method_slug(t) for t in ("IG (8)", "IG blur (50)", "Grad-CAM", "excitation BP", "LRP epsilon")] == [
        "integrated_gradients", "integrated_gradients_blur", "grad_cam", "excitation_bp", "lrp_epsilon"]


def _np_mean_per_class(hits, classes, subset):
    accs = []
    for c in sorted(set(classes[subset].tolist())):
        sel = subset & (classes == c)
        accs.append(hits[sel].sum() / sel.sum())
    return float(np.mean(accs)) if accs else float("nan")


def test_pointing_rows_and_table_match_bruteforce():
    rng = np.random.default_rng(0)
    n, t, c = 30, 2, 4
    classes = rng.integers(0, c - 1, (n, t))           # class 3 never occurs: left out, not an error
    valid = rng.random((n, t)) < 0.8
    difficult = rng.random((n, t)) < 0.3
    results = {"a": {"hits": rng.random((n, t)) < 0.6, "deletion_auc": rng.random((n, t)),
                     "insertion_auc": rng.random((n, t)), "seconds": np.array([1.0, 2.5]), "nonfinite": 3},
               "centre": {"hits": rng.random((n, t)) < 0.4}}
    rows = pointing_rows(results, {"a": "A (8)", "centre": "centre"}, classes, valid, difficult, c)
    for row, slug in zip(rows, ("a", "centre")):
        h = results[slug]["hits"]
        assert row["slug"] == slug
        np.testing.assert_allclose(row["accuracy_all"], _np_mean_per_class(h, classes, valid), rtol=1e-6)
        np.testing.assert_allclose(row["accuracy_difficult"], _np_mean_per_class(h, classes, valid & difficult),
                                   rtol=1e-6)
    np.testing.assert_allclose(rows[0]["deletion_auc"], results["a"]["deletion_auc"][valid].mean(), rtol=1e-6)
    assert rows[0]["seconds"] == 3.5 and rows[0]["nonfinite"] == 3 and "deletion_auc" not in rows[1]
    no_diff = pointing_rows(results, {"a": "A"}, classes, valid, None, c)
    assert np.isnan(no_diff[0]["accuracy_difficult"])
    header, body, md = pointing_table(rows, curves=True)
    assert len(header) == len(body[0]) == 6 and body[1][3] == body[1][4] == "-"
    assert body[0][1] == f"{100 * rows[0]['accuracy_all']:.1f}"
    assert md.count("\n") == 4 and md.startswith("| method |")


@pytest.fixture(scope="module")
def tiny():
    net = nets.get("smallcnn", num_classes=3, widths=(4, 8, 8, 8))
    params = net.init(jax.random.key(0))
    x = jax.random.uniform(jax.random.key(1), (8, 16, 16, 3))
    return net, params, x


def test_score_maps_against_separate_metrics_and_planted_nonfinite(tiny):
    net, params, x = tiny
    rng = np.random.default_rng(1)
    maps = rng.random((8, 1, 16, 16)).astype(np.float32)
    target = np.arange(8, dtype=np.int32)[:, None] % 3
    masks = np.zeros((8, 1, 16, 16), bool)
    masks[:, :, :4, :4] = True
    maps[0, 0, 1, 1] = np.inf                     # +Inf: the maximum (hit)
    maps[1, 0, 1, 1] = np.nan                     # NaN: never the maximum
    maps[1, 0, 12, 12] = 2.0                      # ... which is far away (miss)
    maps[2, 0, 0, 0] = -np.inf
    out = score_maps(net, params, x, jnp.asarray(maps), target, masks, tolerance=2.0, curve_steps=4)
    clean = np.asarray(sanitise_maps(maps))
    assert np.isfinite(clean).all() and clean[1, 0, 1, 1] == np.finfo(np.float32).min
    assert clean[0, 0, 1, 1] == np.finfo(np.float32).max
    want = np.asarray(pointing_hits(clean, masks, tolerance=2.0))
    np.testing.assert_array_equal(out["hits"], want)
    assert out["hits"][0, 0] and not out["hits"][1, 0]
    d = curve_auc(deletion_curve(net, x, clean, params=params, target=target, steps=4, batch_size=None))
    np.testing.assert_allclose(out["deletion_auc"], d, rtol=1e-5, atol=1e-6)
    assert out["insertion_auc"].shape == (8, 1) and "deletion_auc" not in score_maps(
        net, params, x, clean, target, masks, curve_steps=0)
    # one image at a time == the batch; sharded over 8 devices == one device
    loop = [score_maps(net, params, x[i:i + 1], clean[i:i + 1], target[i:i + 1], masks[i:i + 1],
                       tolerance=2.0, curve_steps=4) for i in range(8)]
    for k in out:
        np.testing.assert_allclose(np.concatenate([np.asarray(l[k]) for l in loop]), out[k], rtol=1e-5, atol=1e-6)
    sh = NamedSharding(Mesh(np.array(jax.devices()), ("data",)), P("data"))
    put = lambda a: jax.device_put(jnp.asarray(a), sh)  # noqa: E731
    sharded = score_maps(net, params, put(x), put(clean), put(target), put(masks), tolerance=2.0, curve_steps=4)
    for k in out:
        np.testing.assert_allclose(np.asarray(sharded[k]), out[k], rtol=1e-5, atol=1e-6)


def test_explain_fn_cached_and_at_image_resolution(tiny):
    net, params, x = tiny
    calls = []

    def coarse(net, params, x, target, scale=1.0):       # a (N, T, 4, 4) map, as a layer's CAM
        calls.append(1)
        return scale * jnp.broadcast_to(x[:, None, ::4, ::4, 0], (x.shape[0], target.shape[1], 4, 4))

    f = explain_fn(net, "coarse", coarse, {"scale": 2.0})
    assert f is explain_fn(net, "coarse", coarse, {"scale": 2.0})
    m = f(params, x, jnp.zeros((8, 2), jnp.int32))
    assert m.shape == (8, 2, 16, 16)
    f(params, x, jnp.zeros((8, 2), jnp.int32))
    assert len(calls) == 1                                 # traced once
    assert explain_fn(net, "coarse", coarse, {"scale": 3.0}) is not f


def test_compare_maps_against_scipy_and_identity():
    rng = np.random.default_rng(2)
    a = rng.standard_normal((3, 2, 16, 16)).astype(np.float32)
    b = a + 0.5 * rng.standard_normal(a.shape).astype(np.float32)
    out = jax.tree.map(np.asarray, compare_maps(a, b))
    for i in range(3):
        for j in range(2):
            want = scipy.stats.spearmanr(np.abs(a[i, j]).ravel(), np.abs(b[i, j]).ravel()).statistic
            np.testing.assert_allclose(out["spearman"][i, j], want, rtol=1e-5)
    same = compare_maps(a, -a)                            # |maps| are compared: the sign does not matter
    np.testing.assert_allclose(same["spearman"], 1.0, rtol=1e-5)
    np.testing.assert_allclose(same["ssim"], 1.0, rtol=1e-5)
    np.testing.assert_allclose(same["hog"], 0.0, atol=1e-5)
    assert np.all(out["ssim"] < 1) and np.all(out["hog"] > 0)


def test_sanity_summary_rule_and_plot(tmp_path):
    stages = ["original", "fc", "conv2", "conv1"]
    ones = np.ones(4)

    def series(rhos):
        return {n: {"spearman": r, "ssim": ones * 0.5, "hog": ones * 0.1} for n, r in zip(stages, rhos)}

    per = {"robust": series([ones, ones * 0.9, ones * 0.8, np.array([0.7, 0.6, np.nan, 0.8])]),
           "good": series([ones, ones * 0.6, ones * 0.4, ones * 0.1]),
           "flat": series([ones, ones, np.full(4, np.nan), np.full(4, np.nan)])}
    s = sanity_summary(per, {"robust": "R", "good": "G", "flat": "F"}, stages, 0.5)
    assert s["robust"]["fails"] and s["robust"]["first_below_threshold"] is None
    np.testing.assert_allclose(s["robust"]["spearman"][-1], 0.7)          # NaN maps left out of the mean
    assert s["robust"]["undefined_spearman"] == [0, 0, 0, 1]
    assert not s["good"]["fails"] and s["good"]["first_below_threshold"] == "conv2"
    assert s["flat"]["spearman"][2:] == [None, None] and not s["flat"]["fails"]
    header, rows = sanity_table(s, stages)
    assert header == ["method (mean Spearman)", *stages, "fails"]
    assert rows[0] == ["R", "1.00", "0.90", "0.80", "0.70", "yes"]
    assert rows[2] == ["F", "1.00", "1.00", "-", "-", "no"]
    path = sanity_plot(tmp_path / "s.png", stages, s, 0.5)
    assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
