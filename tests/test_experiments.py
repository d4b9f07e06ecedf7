"""experiments/train_smallcnn.py: the local variant trains, caches and writes its metrics (run in this process)."""

import json

from experiments import train_smallcnn


def test_train_smallcnn_local(tmp_path, capsys):
    argv = ["--config", "local", "--steps", "4", "--out", str(tmp_path / "runs"),
            "--cache-dir", str(tmp_path / "cache"), "--id"]
    assert train_smallcnn.main(argv + ["t"]) == 0
    metrics = json.loads((tmp_path / "runs" / "t" / "metrics.json").read_text())
    assert metrics["steps"] == 4
    assert set(metrics["accuracy"]) == {"easy", "difficult"}
    assert all(0.0 <= a <= 1.0 for a in metrics["accuracy"].values())
    capsys.readouterr()
    # A second run loads the cache instead of training again.
    assert train_smallcnn.main(argv + ["t2"]) == 0
    assert "training" not in capsys.readouterr().out
