"""``jaxinterp demo --quick --only smallcnn`` end to end: the small CNN's sections (files, metrics, shapes).

The sections on the pretrained EfficientNet-Lite0 (the default demo) are tested in tests/test_demo.py.
"""

import json
import math
import os
from html import escape as html_escape

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinterp import cli
from jaxinterp.demo import methods, photos, run as demo_run, smallcnn


PREFIX = "Small CNN, synthetic set: "
DEMO_TITLES = tuple(PREFIX + t for t in (
    "Model", "Gradient saliency on synthetic images", "Saliency energy inside the object",
    "Gradient saliency on photographs", "Attribution methods", "Extremal perturbations", "Pointing game",
    "Sanity checks: cascading randomisation", "Channel attribution and activation diffing", "Self-labelling")) + ("Run",)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    assert cli.main(["demo", "--quick", "--no-compile-cache", "--only", "smallcnn", "--out", str(out), "--id", "t1"]) == 0
    return out / "t1"


def _numbers(tree):
    if isinstance(tree, dict):
        for v in tree.values():
            yield from _numbers(v)
    elif isinstance(tree, list):
        for v in tree:
            yield from _numbers(v)
    else:
        yield tree


def test_writes_report_config_metrics_and_figures(run_dir):
    for name in ("report.html", "metrics.json", "config.json", "saliency.npz",
                 "synthetic_easy.png", "synthetic_difficult.png", "photos.png", "attribution_grid.png",
                 "pointing_game.md", "sanity.png", "extremal.png", "features.png", "pre_images.png", "dip.png",
                 "channel_diffing.png", "self_labelling.png"):
        assert (run_dir / name).is_file(), name
    html = (run_dir / "report.html").read_text()
    for section in DEMO_TITLES:
        assert f">{html_escape(section)}</h2>" in html, section
    assert html.count('src="data:image/png;base64,') == 11
    assert not [f for f in os.listdir(run_dir) if f.endswith(".tmp")]
    config = json.loads((run_dir / "config.json").read_text())
    assert config["id"] == "t1" and config["quick"] is True
    assert config["sections"] == list(smallcnn.SMALLCNN_SECTIONS)
    assert "jaxinterp demo --only smallcnn_pointing" in html


def test_metrics_are_finite_and_shapes_match(run_dir):
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert {"model", "energy", "photos", "pointing", "sanity", "saliency_shapes", "seconds"} <= set(metrics)
    for value in _numbers({k: v for k, v in metrics.items() if k != "sanity"}):
        assert isinstance(value, (bool, int, float)) and math.isfinite(value), value
    for value in _numbers(metrics["sanity"]):   # None: Spearman undefined for every map (constant maps)
        assert value is None or (isinstance(value, (bool, int, float)) and math.isfinite(value)), value
    n = smallcnn.QUICK.evaluated
    shapes = metrics["saliency_shapes"]
    assert shapes["synthetic_easy"] == shapes["synthetic_difficult"] == [n, 64, 64]
    assert shapes["photos"] == [metrics["photos"]["count"], 64, 64]
    arrays = np.load(run_dir / "saliency.npz")
    assert {k: list(arrays[k].shape) for k in arrays.files} == shapes
    for variant in ("easy", "difficult"):
        e = metrics["energy"][variant]
        assert 0 <= e["energy_in_mask"] <= 1 and 0 < e["area_fraction"] < 1
        assert e["images"] == n and np.isclose(e["lift"], e["energy_in_mask"] / e["area_fraction"])
        assert 0 <= metrics["model"][f"demo_accuracy_{variant}"] <= 1
        assert np.all(arrays[f"synthetic_{variant}"] >= 0)


def test_attribution_grid_has_every_method_for_every_image_and_target(run_dir):
    arrays = np.load(run_dir / "saliency.npz")
    x, targets = arrays["attribution_images"], arrays["attribution_targets"]
    n = x.shape[0]
    assert targets.shape == (n, 2) and (targets[:, 0] != targets[:, 1]).all()
    maps = [k for k in arrays.files if k.startswith("attribution_") and k not in
            ("attribution_images", "attribution_targets")]
    assert len(maps) == len(methods.smallcnn_methods(quick=True))
    for k in maps:
        assert arrays[k].shape == (n, 2, 64, 64) and np.isfinite(arrays[k]).all(), k
        assert np.abs(arrays[k]).max() > 0, k


def test_pointing_game_and_sanity_sections(run_dir):
    from jaxinterp import evaluation
    from jaxinterp.data import synthetic
    metrics = json.loads((run_dir / "metrics.json").read_text())
    pg = metrics["pointing"]
    n = smallcnn._EVAL_IMAGES[True]
    assert pg["images_per_variant"] == n and pg["tolerance"] == pytest.approx(15 * 64 / 224)
    slugs = [s for s, _, _, _ in smallcnn._eval_methods(True)]
    assert set(pg["methods"]) == set(slugs) | {"centre"} and slugs == list(smallcnn._QUICK_EVAL_METHODS)
    for slug, row in pg["methods"].items():
        for col in ("accuracy_all", "accuracy_difficult"):
            assert 0.0 <= row[col] <= 1.0, (slug, col)
        if slug != "centre":
            assert 0.0 <= row["deletion_auc"] <= 1.0 and 0.0 <= row["insertion_auc"] <= 1.0
            assert row["nonfinite"] == 0
    # The table's hits, recomputed independently: mean per-class accuracy from the saved hits.
    arrays = np.load(run_dir / "saliency.npz")
    hits = arrays["pointing_hits"]
    assert hits.shape == (len(slugs) + 1, 2 * n) and hits.dtype == bool
    labels = np.concatenate([synthetic.generate(jax.random.key(smallcnn.zoo.TEST_SEED), n, variant=v, size=64)["label"]
                             for v in synthetic.VARIANTS])
    for slug, h in zip(slugs + ["centre"], hits):         # rows of pointing_hits: the methods, then centre
        row = pg["methods"][slug]
        acc = np.mean([h[labels == c].mean() for c in np.unique(labels)])
        assert row["accuracy_all"] == pytest.approx(acc)
        d = slice(n, 2 * n)
        acc = np.mean([h[d][labels[d] == c].mean() for c in np.unique(labels[d])])
        assert row["accuracy_difficult"] == pytest.approx(acc)
    table = (run_dir / "pointing_game.md").read_text().splitlines()
    assert len(table) == 2 + len(slugs) + 1 and table[-1].startswith("| centre (baseline) |")
    sn = metrics["sanity"]
    assert sn["threshold"] == evaluation.SANITY_THRESHOLD and sn["images"] == n and sn["stages"] == 6
    assert set(sn["methods"]) == set(smallcnn._QUICK_EVAL_METHODS)
    for slug, series in sn["methods"].items():
        assert len(series["spearman"]) == len(series["ssim"]) == len(series["hog"]) == 6
        assert series["spearman"][0] == pytest.approx(1.0, abs=1e-5) and series["hog"][0] == pytest.approx(0.0, abs=1e-5)
        assert all(v is None or -1 - 1e-5 <= v <= 1 + 1e-5 for v in series["spearman"] + series["ssim"])
        assert all(v is None or 0 <= v <= 2 + 1e-5 for v in series["hog"])
        final = series["spearman"][-1]
        assert series["fails"] == (final is not None and final > sn["threshold"])


def test_extremal_section(run_dir):
    """Masks (images, areas, 64, 64) in [0, 1]; the IoU metric recomputed from the saved masks."""
    from jaxinterp.data import synthetic
    from jaxinterp.train import zoo

    metrics = json.loads((run_dir / "metrics.json").read_text())["extremal"]
    with np.load(run_dir / "saliency.npz") as f:
        masks = f["extremal_masks"]
    k, areas = metrics["images"], metrics["areas"]
    assert masks.shape == (k, len(areas), 64, 64) and masks.min() >= 0 and masks.max() <= 1
    gt = np.asarray(synthetic.generate(jax.random.key(zoo.TEST_SEED), 8, variant="easy", size=64)["mask"])[:k] > 0.5
    for a, area in enumerate(areas):
        m = masks[:, a] > 0.5
        iou = (m & gt).sum((1, 2)) / np.maximum((m | gt).sum((1, 2)), 1)
        assert metrics["mean_iou_with_object"][str(area)] == pytest.approx(iou.mean(), abs=1e-6)
    assert metrics["steps"] == 20 and math.isfinite(metrics["final_reward"])


def test_synthesis_sections(run_dir):
    """Feature visualisations and pre-images: the metrics recomputed from the saved images with the quick net."""
    from jaxinterp import nets
    from jaxinterp.data import images, synthetic
    from jaxinterp.synthesis import feature_loss
    from jaxinterp.train import zoo

    metrics = json.loads((run_dir / "metrics.json").read_text())
    net = nets.get("smallcnn", num_classes=synthetic.NUM_CLASSES)
    params = net.init(jax.random.key(0))                      # --quick: the untrained net
    with np.load(run_dir / "saliency.npz") as f:
        units, pre = f["feature_visualisations"], f["pre_images"]
    vis = metrics["feature_visualisation"]
    act = np.asarray(net.apply(params, units, stop=smallcnn._VIS_LAYER).mean(axis=(1, 2)))
    np.testing.assert_allclose(np.diag(act), vis["channel_activation"], rtol=1e-4, atol=1e-5)
    data = synthetic.generate(jax.random.key(zoo.TEST_SEED), 8, variant="easy", size=64)["image"]
    x = np.concatenate([np.asarray(data[:2]), images.batch(("chelsea",), size=64)])
    losses = metrics["pre_images"]["normalised_feature_loss"]
    assert pre.shape == (len(losses), 3, 64, 64, 3) and pre.min() >= 0 and pre.max() <= 1
    for layer, images_at in zip(smallcnn.pre_image_layers(quick=True), pre):
        phi0 = net.apply(params, jnp.asarray(x), stop=layer)
        np.testing.assert_allclose(np.asarray(feature_loss(net, params, jnp.asarray(images_at), phi0, layer)),
                                   losses[layer], rtol=1e-3, atol=1e-6)
    assert (run_dir / "features.png").exists() and (run_dir / "pre_images.png").exists()
    clean = images.batch(("chelsea", "coffee"), size=64).astype(np.float64)
    with np.load(run_dir / "saliency.npz") as f:
        for task in ("denoise",):                             # --quick: denoising only
            restored = f[f"dip_{task}"]
            psnr = -10 * np.log10(np.mean((restored - clean) ** 2, axis=(1, 2, 3)))
            np.testing.assert_allclose(psnr, metrics["deep_image_prior"][task]["restored_psnr"], atol=1e-3)


def test_channel_diffing_section(run_dir):
    """Channel masks in [0, 1]; kept-channel logits recomputed from the saved masks; difference = full - kept."""
    from jaxinterp import nets
    from jaxinterp.data import synthetic
    from jaxinterp.train import zoo

    metrics = json.loads((run_dir / "metrics.json").read_text())["channel_diffing"]
    net = nets.get("smallcnn", num_classes=synthetic.NUM_CLASSES)
    params = net.init(jax.random.key(0))                      # --quick: the untrained net
    with np.load(run_dir / "saliency.npz") as f:
        m, full, kept, diff = (f[k] for k in ("channel_masks", "diffing_full", "diffing_kept", "diffing_difference"))
    data = synthetic.generate(jax.random.key(zoo.TEST_SEED), len(m), variant="easy", size=64)
    x, y = jnp.asarray(data["image"]), np.asarray(data["label"])
    phi = net.apply(params, x, stop=smallcnn._DIFF_LAYER)
    assert m.shape == (len(x), phi.shape[-1]) and m.min() >= 0 and m.max() <= 1
    assert metrics["channels_kept"] == (m > 0.5).sum(1).tolist()
    logit = lambda code: np.asarray(net.apply(params, code, start=smallcnn._DIFF_LAYER))[np.arange(len(x)), y]  # noqa: E731
    np.testing.assert_allclose(logit(phi * m[:, None, None, :]), metrics["logit_kept_channels"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(logit(phi), metrics["logit_all_channels"], rtol=1e-4, atol=1e-5)
    assert full.shape == kept.shape == (len(x), 64, 64, 3) and full.min() >= 0 and full.max() <= 1
    np.testing.assert_allclose(diff, full - kept, atol=1e-6)
    assert (run_dir / "channel_diffing.png").exists()


def test_self_labelling_section(run_dir):
    """Purity, NMI and ARI recomputed from the saved self-labels against the training images' classes."""
    from jaxinterp.data import synthetic
    from jaxinterp.train import metrics as cluster_metrics

    sl = json.loads((run_dir / "metrics.json").read_text())["self_labelling"]
    with np.load(run_dir / "saliency.npz") as f:
        labels = f["self_labels"]
    classes = np.asarray(synthetic.generate(jax.random.key(1), sl["images"], size=sl["size"])["label"])
    assert labels.shape == (sl["images"],) and labels.min() >= 0 and labels.max() < sl["clusters"]
    # Equipartition: Sinkhorn's hard labels spread over the clusters (no collapse into a few).
    assert (np.bincount(labels, minlength=sl["clusters"]) > 0).sum() >= sl["clusters"] // 2
    assert sl["purity"] == pytest.approx(cluster_metrics.purity(labels, classes), abs=1e-12)
    assert sl["nmi"] == pytest.approx(cluster_metrics.nmi(labels, classes), abs=1e-12)
    assert sl["ari"] == pytest.approx(cluster_metrics.ari(labels, classes), abs=1e-12)
    assert 0 <= sl["knn_accuracy"] <= 1 and sl["chance"] == 1 / synthetic.NUM_CLASSES
    assert len(sl["loss"]) == sl["epochs"] and (run_dir / "self_labelling.png").exists()


def test_energy_in_mask_closed_form():
    saliency = np.zeros((3, 4, 4))
    saliency[0, :2] = 1.0          # half the energy in the top half
    saliency[1, 0, 0] = 5.0        # all energy at one pixel
    mask = np.zeros((3, 4, 4), bool)
    mask[:, 0] = True              # the top row
    np.testing.assert_allclose(smallcnn.energy_in_mask(saliency, mask), [0.5, 1.0, np.nan])


def test_bad_command_line_exits():
    with pytest.raises(SystemExit):
        cli.main([])
    with pytest.raises(SystemExit):
        cli.main(["demo", "--bogus"])


def test_only_rejects_unknown_sections(capsys):
    with pytest.raises(SystemExit):
        cli.main(["demo", "--only", "attribution,nonsense"])
    assert "--only" in capsys.readouterr().err


def test_section_choice():
    parse = lambda *a: demo_run.chosen_sections(cli._parser().parse_args(["demo", *a]))  # noqa: E731
    assert parse() == list(photos.SECTIONS)
    full = parse("--full")
    assert full[:len(photos.SECTIONS)] == list(photos.SECTIONS)
    assert set(full) == set(demo_run.section_names())
    assert parse("--only", "sanity,classification") == ["classification", "sanity"]
