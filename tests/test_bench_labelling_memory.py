"""Smoke test of bench/objectives.py --labelling-memory at a small N, K on the suite's 8 CPU devices."""

import json

import jax




def test_labelling_memory_splits_over_the_devices(tmp_path, capsys, load_bench):
    bench = load_bench("objectives")
    assert jax.device_count() == 8          # JAX has started: the bench cannot change the device count
    n, k = 4096, 64
    data = bench.main(["--labelling-memory", "--n", str(n), "--k", str(k), "--memory-devices", "2,8,16",
                       "--out", str(tmp_path)])
    assert json.loads((tmp_path / f"labelling_memory_N{n}_K{k}.json").read_text())["entries"] == data["entries"]
    e = data["entries"]
    for method in ("scaling", "log"):
        two, eight = e[f"2/{method}"], e[f"8/{method}"]
        assert two["status"] == eight["status"] == "ok"
        assert two["argument_bytes"] == n * k * 4 // 2 and eight["argument_bytes"] == n * k * 4 // 8
        assert eight["total_bytes"] * 4 == two["total_bytes"] or \
            abs(eight["total_bytes"] * 4 / two["total_bytes"] - 1) < 0.02
    assert e["2/scaling"]["temp_bytes"] > e["2/log"]["temp_bytes"]           # the stored kernel
    assert e["16/scaling"]["status"] == "error"                               # JAX started with 8
    assert "| 8 | scaling |" in capsys.readouterr().out
