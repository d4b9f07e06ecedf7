"""Smoke test of bench/dip.py: a tiny run (small net, 32 px, 3 steps), its JSON, the PyTorch twin, a resumed run.

Here in tests/parity because it runs PyTorch, which cannot share a process with TensorFlow.
"""

import json

import numpy as np
import pytest




def test_dip_bench_tiny_then_resume(tmp_path, capsys, load_bench):
    bench = load_bench("dip")
    argv = ["--quick", "--precisions", "fp32", "--iters", "1", "--out", str(tmp_path)]
    bench.main(argv)
    files = list(tmp_path.glob("dip_*.json"))
    assert len(files) == 1 and not list(tmp_path.glob("*.tmp"))
    entries = json.loads(files[0].read_text())["entries"]
    for batch in (1, 2):
        e = entries[f"fp32/{batch}"]
        assert e["steps_per_s"] > 0 and e["image_steps_per_s"] == e["steps_per_s"] * batch
    assert "torch" in entries
    assert "| fp32 | 2 |" in capsys.readouterr().out
    # A rerun with the same configuration measures nothing again.
    bench.ours = bench.torch_steps_per_s = None
    bench.main(argv)
    assert json.loads(files[0].read_text())["entries"] == entries


def test_torch_twin_has_the_same_architecture(load_bench):
    """The bench's PyTorch skip net has exactly the parameter shapes of skip_net_init's (same net, same cost)."""
    torch = pytest.importorskip("torch")
    import jax
    from jaxinterp import nets
    bench = load_bench("dip")
    net = dict(in_channels=5, down=(6, 7), up=(5, 4), skip=(3, 0))
    model = bench.torch_skip_net(**net)
    ours = sorted(int(np.prod(a.shape)) for a in jax.tree.leaves(nets.skip_net_init(jax.random.key(0), **net)))
    theirs = sorted(int(p.numel()) for p in model.parameters())
    assert ours == theirs
    out = model(torch.rand(1, 5, 16, 16))
    assert tuple(out.shape) == (1, 3, 16, 16)
