"""experiments/dino.py and experiments/gdt.py: tiny local runs write their metrics (as test_experiments_sela.py).

They run in this process (``main(argv)``), as ``python -m experiments.<name>`` would.
"""

import json

from experiments import dino, gdt
from experiments.configs import dino as dino_config

_TINY = ["--config", "local", "--set", "images=64", "--set", "heldout=16", "--set", "epochs=1",
         "--set", "batch_size=32", "--set", "knn_k=3"]


def _run(tmp_path, capsys, experiment, *extra):
    assert experiment.main(["--id", "t", "--set", f"out={tmp_path / 'runs'}", *_TINY, *extra]) == 0
    return json.loads((tmp_path / "runs" / "t" / "metrics.json").read_text()), capsys.readouterr().out


def test_dino_local_tiny(tmp_path, capsys):
    metrics, stdout = _run(tmp_path, capsys, dino, "--set", "head_dim=16", "--set", "n_local=1",
                           "--set", "blur_max=0.5")
    assert metrics["method"] == "dino" and metrics["steps"] == 2 and "nmi" not in metrics
    assert 0 <= metrics["knn_accuracy"] <= 1 and 0 <= metrics["knn_accuracy_untrained"] <= 1
    assert 0 <= metrics["student_knn_accuracy"] <= 1 and 0 <= metrics["student_linear_probe"] <= 1  # the teacher's are main
    assert metrics["chance"] == 1 / 8 and "epoch 1/1" in stdout


def test_dino_colour_jitter_reaches_every_crop():
    full = dino.method(dino_config.get_config("full")).aug
    assert [(a.hue, a.jitter_p) for a in full] == [(0.1, 0.8)] * 3               # DINO's
    assert [a.blur_p for a in full] == [1.0, 0.1, 0.5] and full[1].solarize_p == 0.2
    config = dino_config.get_config("local")
    assert [(a.hue, a.jitter_p) for a in dino.method(config).aug] == [(0.4, 1.0)] * 3   # SeLa's
    config.hue, config.jitter_p = 0.2, 0.5
    changed = dino.method(config).aug
    assert [(a.hue, a.jitter_p) for a in changed] == [(0.2, 0.5)] * 3
    assert [a.blur_p for a in changed] == [1.0, 0.1, 0.5] and changed[2].size == (14, 14)


def test_dino_blur_is_scaled_to_the_crop_size():
    # DINO's sigma (0.1, 2.0) is in pixels of 224-px crops: 2.0 x 32 / 224 = 0.29 at 32 px
    for variant, top in (("local", 0.29), ("cifar10", 0.29), ("full", 0.57), ("imagenet", 0.57)):
        config = dino_config.get_config(variant)
        assert [a.blur_sigma for a in dino.method(config).aug] == [(0.1, top)] * 3, variant
        assert abs(config.blur_max - 2.0 * config.size / 224) < 0.005


def test_gdt_local_tiny(tmp_path, capsys):
    metrics, _ = _run(tmp_path, capsys, gdt, "--set", "embedding=16", "--set", "blur_max=0.5")
    assert metrics["method"] == "gdt" and metrics["steps"] == 2 and 0 <= metrics["knn_accuracy"] <= 1
    config = json.loads((tmp_path / "runs" / "t" / "config.json").read_text())["config"]
    assert config["rotation"] == "distinctive" and config["temperature"] == 0.07
