"""experiments/sela.py: a tiny local run writes its metrics; a rerun with the same --id resumes."""

import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).parents[1]


def _cmd(tmp_path, epochs):
    return [sys.executable, str(ROOT / "experiments" / "sela.py"), "--variant", "local", "--id", "t",
            "--set", f"out={tmp_path / 'runs'}", "--set", "images=64", "--set", "heldout=16",
            "--set", f"epochs={epochs}", "--set", "batch_size=32", "--set", "clusters=8",
            "--set", "eval_every=1", "--set", "knn_k=3"]


def test_sela_local_tiny_and_resume(tmp_path):
    first = subprocess.run(_cmd(tmp_path, 1), capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:] + first.stdout[-3000:]
    metrics = json.loads((tmp_path / "runs" / "t" / "metrics.json").read_text())
    assert metrics["steps"] == 2 and 0 <= metrics["knn_accuracy"] <= 1 and 0 <= metrics["nmi"] <= 1
    # Same --id and config: everything done is reused (no training step runs again).
    again = subprocess.run(_cmd(tmp_path, 1), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resumed from step 2" in again.stdout and "epoch 1/1" not in again.stdout
    assert json.loads((tmp_path / "runs" / "t" / "metrics.json").read_text()) == metrics
    # Another config in the same run directory is refused.
    other = subprocess.run(_cmd(tmp_path, 2), capture_output=True, text=True, timeout=600)
    assert other.returncode != 0 and "another config" in other.stderr


def test_simclr_local_tiny(tmp_path):
    cmd = [sys.executable, str(ROOT / "experiments" / "simclr.py"), "--variant", "local", "--id", "s",
           "--set", f"out={tmp_path / 'runs'}", "--set", "images=64", "--set", "heldout=16",
           "--set", "epochs=1", "--set", "batch_size=32", "--set", "embedding=16", "--set", "knn_k=3"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:] + result.stdout[-3000:]
    metrics = json.loads((tmp_path / "runs" / "s" / "metrics.json").read_text())
    assert metrics["method"] == "simclr" and metrics["steps"] == 2 and "nmi" not in metrics
