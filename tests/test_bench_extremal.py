"""Smoke test of bench/extremal.py: a tiny run (smallcnn, 32 px, 2 steps), its JSON, and a resumed run."""

import json




def test_extremal_bench_tiny_then_resume(tmp_path, capsys, load_bench):
    bench = load_bench("extremal")
    argv = ["--nets", "smallcnn", "--size", "32", "--steps", "2", "--areas", "0.1,0.2", "--batches", "1,2",
            "--precisions", "highest", "--ceiling-batch", "4", "--iters", "1", "--no-torchray",
            "--out", str(tmp_path)]
    bench.main(argv)
    files = list(tmp_path.glob("extremal_*.json"))
    assert len(files) == 1 and not list(tmp_path.glob("*.tmp"))
    data = json.loads(files[0].read_text())
    entries = data["entries"]
    ceiling = entries["smallcnn/highest/ceiling"]
    assert ceiling["images_per_s"] == ceiling["forward_gradient_images_per_s"] / (2 * 2)
    for batch in ("1", "2"):
        e = entries[f"smallcnn/highest/{batch}"]
        assert e["images_per_s"] > 0 and e["ratio"] == e["images_per_s"] / ceiling["images_per_s"]
    assert "| smallcnn | highest | 2 |" in capsys.readouterr().out
    # A rerun with the same configuration measures nothing again.
    bench.measure = bench.ours = None
    bench.main(argv)
    assert json.loads(files[0].read_text())["entries"] == entries
