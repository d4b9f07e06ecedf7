"""The ``jaxinterp demo --quick`` command end to end: files, metrics, saliency shapes."""

import json
import math
import os

import numpy as np
import pytest

from jaxinterp import cli


DEMO_TITLES = ("Model", "Gradient saliency on synthetic images", "Saliency energy inside the object",
               "Gradient saliency on photographs", "Attribution methods", "Run")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    assert cli.main(["demo", "--quick", "--out", str(out), "--id", "t1"]) == 0
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
                 "synthetic_easy.png", "synthetic_difficult.png", "photos.png", "attribution_grid.png"):
        assert (run_dir / name).is_file(), name
    html = (run_dir / "report.html").read_text()
    for section in DEMO_TITLES:
        assert f"<h2>{section}</h2>" in html
    assert html.count('src="data:image/png;base64,') == 4
    assert not [f for f in os.listdir(run_dir) if f.endswith(".tmp")]
    config = json.loads((run_dir / "config.json").read_text())
    assert config["id"] == "t1" and config["quick"] is True


def test_metrics_are_finite_and_shapes_match(run_dir):
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert {"model", "energy", "photos", "saliency_shapes", "seconds"} <= set(metrics)
    for value in _numbers(metrics):
        assert isinstance(value, (bool, int, float)) and math.isfinite(value), value
    n = cli._QUICK.evaluated
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
    assert len(maps) == len(cli.attribution_methods(quick=True))
    for k in maps:
        assert arrays[k].shape == (n, 2, 64, 64) and np.isfinite(arrays[k]).all(), k
        assert np.abs(arrays[k]).max() > 0, k


def test_energy_in_mask_closed_form():
    saliency = np.zeros((3, 4, 4))
    saliency[0, :2] = 1.0          # half the energy in the top half
    saliency[1, 0, 0] = 5.0        # all energy at one pixel
    mask = np.zeros((3, 4, 4), bool)
    mask[:, 0] = True              # the top row
    np.testing.assert_allclose(cli.energy_in_mask(saliency, mask), [0.5, 1.0, np.nan])


def test_bad_command_line_exits():
    with pytest.raises(SystemExit):
        cli.main([])
    with pytest.raises(SystemExit):
        cli.main(["demo", "--bogus"])
