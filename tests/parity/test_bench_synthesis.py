"""Smoke test of bench/synthesis.py: a tiny run (smallcnn, 32 px, 2 steps), its JSON, a resumed run, tiny lucent.

Here in tests/parity because it runs PyTorch, which cannot share a process with TensorFlow.
"""

import importlib.util
import json
import sys

import pytest




def test_synthesis_bench_tiny_then_resume(tmp_path, capsys, load_bench):
    bench = load_bench("synthesis")
    argv = ["--quick", "--channels", "1,2", "--iters", "1", "--no-dip", "--out", str(tmp_path)]
    bench.main(argv)
    files = list(tmp_path.glob("synthesis_*.json"))
    assert len(files) == 1 and not list(tmp_path.glob("*.tmp"))
    data = json.loads(files[0].read_text())
    assert data["config"]["size"] == 32 and data["config"]["steps"] == 2 and data["config"]["transforms"] == "none"
    assert data["goal"] == {"channels_per_s": 40.0, "precision": "bf16", "device": "H100"}
    entries = data["entries"]
    assert "lucent/1" not in entries and "dip" not in entries                # --no-lucent (quick), --no-dip
    ceiling = entries["smallcnn/features.10/highest/ceiling"]
    assert ceiling["channels_per_s"] == ceiling["forward_gradient_images_per_s"] / 2
    for channels in (1, 2):
        e = entries[f"smallcnn/features.10/highest/{channels}"]
        assert e["channels_per_s"] > 0 and e["finite"] and e["chunk_size"] is None
        assert e["ratio"] == e["channels_per_s"] / ceiling["channels_per_s"]
        assert e["seconds_per_call"] == pytest.approx(channels / e["channels_per_s"])
    out = capsys.readouterr().out
    assert "| smallcnn | features.10 | highest | 2 |" in out and "channels/call" in out
    # A rerun with the same configuration measures nothing again (the measuring functions are gone).
    bench.measure = bench.ours = None
    bench.main(argv)
    assert json.loads(files[0].read_text())["entries"] == entries
    # Another configuration is not overwritten silently.
    with pytest.raises(ValueError, match="--out"):
        bench.main(["--quick", "--steps", "3", "--no-dip", "--out", str(tmp_path)])


def test_synthesis_bench_rejects_bad_precision(tmp_path, load_bench):
    bench = load_bench("synthesis")
    with pytest.raises(ValueError, match="--precisions"):
        bench.main(["--quick", "--precisions", "fp8", "--out", str(tmp_path)])


def test_lucent_tiny_net_two_steps(load_bench):
    """lucent's render_vis runs through the bench's wrapper on a tiny torch net (one channel, then a batch)."""
    torch = pytest.importorskip("torch")
    bench = load_bench("synthesis")
    bench._import_lucent()                  # make test installs lucent and kornia: no skip
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Conv2d(4, 6, 3)).eval()
    for q in model.parameters():
        q.requires_grad_(False)
    seconds, note = bench.lucent_seconds(model, "2", [3], steps=2, size=16, fixed_image_size=16)
    assert seconds > 0 and note == "standard"                  # lucent's standard transforms ran
    if importlib.util.find_spec("IPython") is None:
        assert "IPython" not in sys.modules                    # the display stub is not left behind
    seconds, _ = bench.lucent_seconds(model, "2", [0, 5], steps=2, size=16, fixed_image_size=16)
    assert seconds > 0


def test_dip_entry_calls_dip_benchmark_only_when_bench_dip_exists(tmp_path, monkeypatch, load_bench):
    """bench/dip.py is written separately (its own test runs it): skipped while absent, else called with the
    options its signature declares (a stand-in dip.py here, so that this test stays fast)."""
    bench = load_bench("synthesis")
    args = bench.parse(["--quick", "--out", str(tmp_path)])
    monkeypatch.setattr(bench, "BENCH_DIR", str(tmp_path))
    assert bench.dip_entry(args) == {"skipped": "bench/dip.py does not exist"}
    (tmp_path / "dip.py").write_text(
        "def dip_benchmark(*, size=512, steps=50, quick=False, precisions=('fp32',), batches=(1, 16), out=None):\n"
        "    return {'called': dict(size=size, steps=steps, quick=quick, precisions=list(precisions),\n"
        "                           batches=list(batches), out=out)}\n")
    assert bench.dip_entry(args) == {"called": {"size": 32, "steps": 2, "quick": True, "precisions": ["highest"],
                                                "batches": [1], "out": str(tmp_path)}}
    args = bench.parse(["--precisions", "default,bf16", "--out", str(tmp_path)])
    assert bench.dip_entry(args)["called"] == {"size": 512, "steps": 50, "quick": False,
                                               "precisions": ["fp32", "bf16"], "batches": [1, 16],
                                               "out": str(tmp_path)}
