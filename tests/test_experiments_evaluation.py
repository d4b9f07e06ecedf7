"""experiments/pointing_game.py and experiments/sanity.py: tiny local runs, outputs, resumption.

Run in-process (the suite's 8 fake CPU devices, so the pointing game's batches are
sharded over the 'data' axis) on a random-weight smallcnn with a few images.
"""

import csv
import json

import jax
import numpy as np
import pytest

from jaxinterp import attribution, nets
from jaxinterp.data import synthetic
from jaxinterp.evaluation import centre_hits, pointing_hits
from jaxinterp.train import zoo
from experiments import common, pointing_game as pg, sanity as sn


def _numbers(path):
    """The table's numbers without the timing column."""
    return [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(path.open())]


def _progress(out, marker):
    return [line for line in out.splitlines() if marker in line]


def test_pointing_game_local_resumes(tmp_path, capsys):
    argv = ["--config", "local", "--id", "t", "--set", f"out={tmp_path}", "--set", "images=4",
            "--set", "batch_size=4", "--set", "pretrained=False", "--set", "curve_steps=2",
            "--set", "methods=['gradient', 'grad_cam']"]
    metrics = common.results(pg, argv)
    first = capsys.readouterr().out
    run = tmp_path / "t"
    for name in ("table.md", "table.csv", "metrics.json", "config.json", "report.html"):
        assert (run / name).exists(), name
    # 8 images in batches of 4 -> 2 batches x 2 methods computed, each with a progress line.
    assert metrics["computed_shards"] == 4 and len(_progress(first, "hit rate")) == 4
    assert metrics["pairs"] == 8 and metrics["difficult_pairs"] == 4
    assert metrics["tolerance"] == pytest.approx(15.0 * 64 / 224)
    rows = {r["slug"]: r for r in csv.DictReader((run / "table.csv").open())}
    assert set(rows) == {"gradient", "grad_cam", "centre"}
    for slug, r in rows.items():
        for col in ("accuracy_all", "accuracy_difficult"):
            assert 0.0 <= float(r[col]) <= 1.0
        if slug != "centre":
            for col in ("deletion_auc", "insertion_auc"):
                assert 0.0 <= float(r[col]) <= 1.0
    assert "| centre (baseline) |" in (run / "table.md").read_text()
    assert "Pointing game" in (run / "report.html").read_text()

    # Independent recomputation on one device: same hits as the sharded, batched run.
    net = nets.get("smallcnn", num_classes=synthetic.NUM_CLASSES)
    params = net.init(jax.random.key(0))
    hits, chits = [], []
    for variant in synthetic.VARIANTS:
        ex = synthetic.generate(jax.random.key(zoo.TEST_SEED), 4, variant=variant, size=64)
        maps = attribution.gradient(net, params, ex["image"], ex["label"])
        tol = 15.0 * 64 / 224                    # the default: TorchRay's 15 px at 224 px, scaled to 64 px
        hits.append(np.asarray(pointing_hits(maps, ex["mask"][:, None], tolerance=tol)[:, 0]))
        chits.append(np.asarray(centre_hits(ex["mask"][:, None], tolerance=tol)[:, 0]))
    shards = sorted((run / "shards" / "gradient").glob("b*.npz"))
    got = np.concatenate([np.load(s)["hits"][:, 0] for s in shards])
    np.testing.assert_array_equal(got, np.concatenate(hits))
    got = np.concatenate([np.load(s)["hits"][:, 0] for s in sorted((run / "shards" / "centre").glob("b*.npz"))])
    np.testing.assert_array_equal(got, np.concatenate(chits))

    # A second run (as after a kill) resumes: nothing recomputed, same table.
    table = _numbers(run / "table.csv")
    again = common.results(pg, argv)
    assert again["computed_shards"] == 0 and not _progress(capsys.readouterr().out, "hit rate")
    assert _numbers(run / "table.csv") == table
    # A lost shard (killed mid-run) is the only one recomputed.
    shards[1].unlink()
    again = common.results(pg, argv)
    assert again["computed_shards"] == 1 and len(_progress(capsys.readouterr().out, "hit rate")) == 1
    assert _numbers(run / "table.csv") == table
    # Resuming with another config would mix shards: refused.
    with pytest.raises(ValueError, match="another config"):
        pg.main(argv + ["--set", "tolerance=5.0"])


def test_pointing_game_rejects_bad_config(tmp_path):
    with pytest.raises(ValueError, match="methods"):
        pg.main(["--config", "local", "--set", f"out={tmp_path}", "--set", "methods=['nope']"])
    with pytest.raises(ValueError, match="--set"):
        pg.main(["--config", "local", "--set", "no_such_field=1"])
    with pytest.raises(ValueError, match="dataset"):
        pg.main(["--config", "local", "--set", f"out={tmp_path}", "--set", "dataset=imagenet"])


def test_sanity_local_resumes(tmp_path, capsys):
    argv = ["--config", "local", "--id", "t", "--set", f"out={tmp_path}", "--set", "images=2",
            "--set", "pretrained=False", "--set", "methods=['gradient', 'grad_cam']"]
    metrics = common.results(sn, argv)
    first = capsys.readouterr().out
    run = tmp_path / "t"
    for name in ("sanity.csv", "sanity.md", "sanity.png", "metrics.json", "config.json", "report.html"):
        assert (run / name).exists(), name
    stages = metrics["stages"]
    assert stages[0] == "original" and stages[1] == "classifier" and len(stages) == 6
    assert metrics["computed_shards"] == 2 * (1 + len(stages))
    assert len(_progress(first, " stage ")) == 2 * len(stages)
    for slug, series in metrics["methods"].items():
        assert series["spearman"][0] == pytest.approx(1.0, abs=1e-5)
        assert series["ssim"][0] == pytest.approx(1.0, abs=1e-4)
        assert series["hog"][0] == pytest.approx(0.0, abs=1e-5)
        assert all(v is None or -1.0 - 1e-5 <= v <= 1.0 + 1e-5 for v in series["spearman"] + series["ssim"])
        assert all(v is None or v >= 0.0 for v in series["hog"])
        assert series["fails"] == (series["spearman"][-1] is not None and series["spearman"][-1] > 0.5)
        assert (slug in metrics["fails"]) == series["fails"]
    rows = list(csv.DictReader((run / "sanity.csv").open()))
    assert len(rows) == 2 * len(stages)
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["stages"] == stages
    again = common.results(sn, argv)
    assert again["computed_shards"] == 0 and not _progress(capsys.readouterr().out, " stage ")
    assert again["methods"] == metrics["methods"]


@pytest.mark.slow
def test_pointing_game_tfds_path_on_mock_voc(tmp_path, monkeypatch, capsys):
    """The VOC07 code path on two fake batches (no TensorFlow): multi-class targets, box masks, difficult list."""
    from jaxinterp.data import tfds as tfds_data

    c = len(tfds_data.VOC_CLASSES)
    net = nets.get("smallcnn", num_classes=c)
    weights = tmp_path / "smallcnn_voc.npz"
    nets.weights.save(net.init(jax.random.key(3)), str(weights))
    rng = np.random.default_rng(0)

    def fake_load(name, data_dir, *, split, image_size, batch_size, **kw):
        assert name == "voc/2007" and split == "test[:4]"
        for _ in range(2):
            boxes = np.zeros((2, 3, 4), np.float32)
            boxes[:, :2] = [[4, 4, 30, 30], [34, 34, 60, 60]]
            box_labels = np.array([[0, 5, -1], [7, 7, -1]], np.int32)
            labels = np.zeros((2, c), bool)
            labels[0, [0, 5]] = labels[1, 7] = True
            yield {"image": rng.uniform(size=(2, image_size, image_size, 3)).astype(np.float32),
                   "labels": labels, "boxes": boxes, "box_labels": box_labels,
                   "difficult": np.zeros((2, 3), bool)}

    monkeypatch.setattr(tfds_data, "load", fake_load)
    listed = tmp_path / "difficult.txt"
    listed.write_text("1\n2\n")
    metrics = common.results(pg, ["--config", "local", "--id", "voc", "--set", f"out={tmp_path}",
                                  "--set", "dataset=voc07", "--set", f"data_dir={tmp_path}", "--set", "images=4",
                                  "--set", "net=smallcnn", "--set", f"weights={weights}", "--set", "image_size=64",
                                  "--set", "max_targets=2", "--set", "batch_size=2", "--set", "curve_steps=0",
                                  "--set", f"difficult_list={listed}", "--set", "methods=['gradient']"])
    capsys.readouterr()
    # Images 0 and 2 have two classes, 1 and 3 one: 6 (image, class) pairs, 3 of them in images 1, 2.
    assert metrics["pairs"] == 6 and metrics["difficult_pairs"] == 3
    for r in metrics["methods"].values():
        assert 0.0 <= r["accuracy_all"] <= 1.0 and 0.0 <= r["accuracy_difficult"] <= 1.0
    # The centre (32, 32) is within 4.3 px (15 px scaled to 64 px) of every box here: all hits.
    assert metrics["methods"]["centre"]["accuracy_all"] == 1.0
