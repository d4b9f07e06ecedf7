"""Smoke test of bench/attribution.py: a tiny run, its JSON, and a resumed run.

Runs in-process (no second JAX start-up) with ``--quick --no-captum``: smallcnn
at 32 px, 2 IG steps, 2 SmoothGrad samples, 9 occlusion windows, 4 RISE masks.
torch must not be imported here (this pytest process imports TensorFlow).
"""

import json
import math
import sys

import pytest




@pytest.mark.slow
def test_attribution_bench_quick_then_resume(tmp_path, capsys, load_bench):
    torch_loaded_before = "torch" in sys.modules
    bench = load_bench("attribution")
    argv = ["--quick", "--no-captum", "--out", str(tmp_path)]

    bench.main(argv)
    files = sorted(tmp_path.glob("attribution_smallcnn_*.json"))
    assert len(files) == 1, files
    assert not list(tmp_path.glob("*.tmp"))
    data = json.loads(files[0].read_text())
    assert data["net"] == "smallcnn" and data["device"]
    ceilings = data["ceilings"]["highest"]
    assert ceilings["forward"] > 0 and ceilings["gradient"] > 0

    for name, spec in bench.METHODS.items():
        entry = data["entries"][f"highest/{name}"]
        if entry["status"] == "skipped":  # a method not (yet) in this checkout
            assert entry["reason"]
            continue
        assert entry["status"] == "ok", entry
        assert entry["images_per_s"] > 0 and math.isfinite(entry["images_per_s"])
        assert entry["finite"], entry
        assert entry["ratio"] > 0 and math.isfinite(entry["ratio"])
        assert entry["output_shape"] == [2, 1, 32, 32], entry
        forward = spec.cost in ("windows", "masks", "channels", "features", "permutations") \
            or name in ("kernel_shap", "lime")                    # perturbation methods: forward passes only
        mode = "forward" if forward else "gradient"
        assert entry["ceiling_mode"] == mode
        expected = entry["images_per_s"] * entry["cost_units"] / ceilings[mode]
        assert entry["ratio"] == pytest.approx(expected)
        assert "captum" not in entry
    units = {n: data["entries"][f"highest/{n}"]["cost_units"]
             for n in ("integrated_gradients", "smoothgrad", "occlusion", "rise")}
    assert units == {"integrated_gradients": 2, "smoothgrad": 2, "occlusion": 9, "rise": 4}
    out = capsys.readouterr().out
    header = "| method | ours img/s | ceiling-based target | ratio | Captum img/s | ours/Captum |"
    assert header in out

    # A second run finds every entry and measures nothing again.
    bench.main(argv)
    out = capsys.readouterr().out
    assert out.count("already measured, skipped") == len(bench.METHODS)
    assert "ceiling forward" not in out
    assert json.loads(files[0].read_text()) == data

    if not torch_loaded_before:
        assert "torch" not in sys.modules


def test_loop_bench_measures_then_resumes(tmp_path, capsys, load_bench):
    bench = load_bench("loop")
    argv = ["--nets", "smallcnn", "--size", "32", "--steps", "2", "--iters", "1", "--out", str(tmp_path)]
    first = bench.main(argv)
    row = first["rows"]["smallcnn"]
    for name in ("one_call", "written_out", "scan"):
        assert row[name] > 0 and math.isfinite(row[name]), row
    assert row["scan_over_written"] == pytest.approx(row["scan"] / row["written_out"])
    files = list(tmp_path.glob("loop_*_32px.json"))
    assert len(files) == 1 and json.loads(files[0].read_text())["rows"] == first["rows"]
    bench.measure = None                                 # a resumed run measures nothing again
    assert bench.main(argv)["rows"] == first["rows"]
    assert "| smallcnn |" in capsys.readouterr().out

