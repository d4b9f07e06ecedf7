"""experiments/train_smallcnn.py: the local variant trains, caches and writes its metrics."""

import json
import subprocess
import sys


def test_train_smallcnn_local(tmp_path):
    cmd = [sys.executable, "-m", "experiments.train_smallcnn", "--config", "local",
           "--steps", "4", "--out", str(tmp_path / "runs"), "--cache-dir", str(tmp_path / "cache"),
           "--id", "t"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "runs" / "t" / "metrics.json").read_text())
    assert metrics["steps"] == 4
    assert set(metrics["accuracy"]) == {"easy", "difficult"}
    assert all(0.0 <= a <= 1.0 for a in metrics["accuracy"].values())
    # A second run loads the cache instead of training again.
    again = subprocess.run(cmd[:-1] + ["t2"], capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "training" not in again.stdout
