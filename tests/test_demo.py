"""``jaxinterp demo --quick``: the pretrained EfficientNet-Lite0 explains the real photographs, end to end."""

import json
import math

import numpy as np
import pytest

from jaxinterp import cli, evaluation
from jaxinterp.data import imagenet_classes, images
from jaxinterp.demo import photos


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    assert cli.main(["demo", "--quick", "--no-compile-cache", "--out", str(out), "--id", "r1"]) == 0
    return out / "r1"


@pytest.fixture(scope="module")
def metrics(run_dir):
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.fixture(scope="module")
def arrays(run_dir):
    with np.load(run_dir / "saliency.npz") as f:
        return {k: f[k] for k in f.files}


def test_report_leads_with_the_real_net(run_dir, metrics):
    for name in ("report.html", "classification.png", "attribution.png", "adversarial.png", "sanity.png"):
        assert (run_dir / name).is_file(), name
    html = (run_dir / "report.html").read_text()
    sections = html[html.index("</nav>"):]
    assert sections.index("What the network sees</h2>") < sections.index("<h2", sections.index("<h2") + 1)
    assert "espresso" in html and "jaxinterp demo --only attribution" in html
    assert html.count('src="data:image/png;base64,') == 4
    assert set(metrics["seconds"]) == set(photos.SECTIONS) | {"total"}     # metrics.json sorts its keys
    for value in metrics["seconds"].values():
        assert math.isfinite(value) and value > 0


def test_classification_is_the_pretrained_nets(metrics):
    # The weights are Google's (tests/parity/test_efficientnet_parity.py checks them against their reference
    # code); on the bundled photographs they recognise what a person sees.
    top = metrics["classification"]
    assert set(top) == set(images.all_names())
    first = {photo: max(p, key=p.get) for photo, p in top.items()}
    assert first["coffee"] == "espresso" and top["coffee"]["espresso"] > 0.9
    assert first["chelsea"] in ("tabby", "tiger cat", "Egyptian cat")
    assert first["camera"] in ("tripod", "reflex camera")
    for probs in top.values():
        assert len(probs) == 5 and all(0 <= p <= 1 for p in probs.values()) and sum(probs.values()) <= 1 + 1e-6


def test_every_method_maps_every_object_and_both_classes(arrays, metrics):
    objects = images.pointing_set(224)
    m = len(objects["image"])
    titles = [t for t, _, _ in photos.attribution_methods(quick=True)]
    assert set(metrics["attribution"]["seconds_waited"]) == set(titles)
    for title in titles:
        key = "attribution_" + evaluation.method_slug(title)
        a = arrays[key]
        assert a.shape == (m, 2, 224, 224) and np.isfinite(a).all() and np.abs(a).max() > 0, key


def test_pointing_hits_recomputed_from_the_maps(arrays, metrics):
    """TorchRay's pointing game written out in NumPy: the map's maximum within 15 px of the box."""
    objects = images.pointing_set(224)
    titles = [t for t, _, _ in photos.attribution_methods(quick=True)]
    hits = arrays["pointing_hits_real"]
    assert hits.shape == (len(titles) + 1, len(objects["image"]))
    yy, xx = np.mgrid[:224, :224]
    for k, title in enumerate(titles):
        maps = arrays["attribution_" + evaluation.method_slug(title)][:, 0]
        for i, (mp, mask) in enumerate(zip(maps, objects["mask"])):
            y, x = np.unravel_index(np.argmax(mp), mp.shape)
            near = (yy - y) ** 2 + (xx - x) ** 2 <= 15 ** 2
            assert hits[k, i] == bool((near & mask).any()), (title, i)
        assert metrics["pointing_real"]["hits"][title] == int(hits[k].sum())
    classes = imagenet_classes()
    assert metrics["pointing_real"]["objects"] == len(objects["image"]) == 9
    assert {classes[t] for t in objects["target"]} >= {"tabby", "espresso", "tripod", "moped"}


def test_adversarial_examples_stay_in_the_ball_and_change_the_decision(metrics):
    adv = metrics["adversarial"]
    assert adv["max_abs_change"] <= 2 / 255 + 1e-6
    assert adv["top1_after"] != adv["top1_before"]


def test_sanity_section(metrics):
    sn = metrics["sanity"]
    assert sn["stages"][0] == "original" and sn["stages"][1] == "classifier"
    assert set(sn["methods"]) == {evaluation.method_slug(t) for t in photos.SANITY_TITLES}
    for series in sn["methods"].values():
        assert len(series["spearman"]) == len(sn["stages"])
        assert series["spearman"][0] == pytest.approx(1.0, abs=1e-5)
