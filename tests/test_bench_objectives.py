"""Smoke test of bench/objectives.py: a tiny run, its JSON, and a resumed run (in-process)."""

import json
import math

import jax




def test_objectives_bench_quick_then_resume(tmp_path, capsys, load_bench):
    bench = load_bench("objectives")
    argv = ["--quick", "--n", "256", "--k", "16", "--max-iters", "3000", "--devices", "1",
            "--out", str(tmp_path)]
    bench.main(argv)
    files = sorted(tmp_path.glob("objectives_*_N256_K16.json"))
    assert len(files) == 1, files
    assert not list(tmp_path.glob("*.tmp"))
    data = json.loads(files[0].read_text())
    assert data["device"] and data["config"]["n"] == 256
    for kind in bench.KINDS:
        e = data["entries"][f"sinkhorn/{kind}"]
        assert e["status"] == "ok", e
        ours, ref = e["ours"], e["sela64"]
        assert 1 <= ours["iterations"] <= 3000 and ours["seconds"] > 0
        assert ours["error"] <= 1e-3 or ours["iterations"] == 3000
        assert math.isclose(ours["seconds_per_pass"], ours["seconds"] / (ours["iterations"] + 1))
        assert ours["marginal_error_float64"] < 2e-3
        assert ref["iterations"] >= 1 and ref["sela_error"] < 0.1 and ref["seconds"] > 0
        assert 0.9 <= e["label_agreement"] <= 1.0
    assert data["entries"]["infonce"]["steps_per_s"] > 0
    out = capsys.readouterr().out
    assert "| logits | ours s |" in out
    # float64 was only switched on inside the bench's context
    assert not jax.config.jax_enable_x64

    bench.main(argv)
    out = capsys.readouterr().out
    assert out.count("already measured, skipped") == 3
    assert json.loads(files[0].read_text())["entries"] == data["entries"]


def test_objectives_bench_sharded_quick(tmp_path, load_bench):
    bench = load_bench("objectives")
    data = bench.main(["--quick", "--n", "256", "--k", "16", "--kinds", "near_uniform",
                       "--infonce-batch", "16", "--devices", "8", "--out", str(tmp_path)])
    assert data["device"].startswith("8x")
    e = data["entries"]["sinkhorn/near_uniform"]
    assert e["status"] == "ok" and e["label_agreement"] >= 0.99, e
    assert data["entries"]["infonce"]["status"] == "ok"
