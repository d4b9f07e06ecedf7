"""experiments/dip.py: the local variant (tiny), its outputs against deep_image_prior itself, resumption."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinterp.data import images
from jaxinterp.synthesis import dip
from experiments import common, dip as ex


def test_dip_local_run_resumes(tmp_path, capsys):
    argv = ["--config", "local", "--id", "t", "--set", f"out={tmp_path}", "--set", "images=['astronaut']",
            "--set", "steps={'denoise': 4, 'inpaint': 3, 'super_resolution': 2}", "--set", "curve_steps=3"]
    metrics = common.results(ex, argv)
    run = tmp_path / "t"
    for name in ("metrics.json", "report.html", "restorations.png", "curves.png", "config.json",
                 "shards/denoise.npz", "shards/inpaint.npz", "shards/super_resolution.npz", "shards/curves.npz"):
        assert (run / name).exists(), name
    assert set(metrics["tasks"]) == {"denoise", "inpaint", "super_resolution"}
    row = metrics["tasks"]["denoise"]["astronaut"]
    assert 1 <= row["best_step"] <= 4 and row["psnr_best"] >= row["psnr_final"]
    assert set(metrics["curves_final_mse"]) == set(dip.FITTING_TARGETS)
    # The denoising shard is deep_image_prior's output on the same observation (noise from the config's seed).
    with np.load(run / "shards" / "denoise.npz") as f:
        restored, observed, psnr = f["restored"], f["observed"], f["psnr"]
    clean = images.batch(["astronaut"], 32)
    assert np.abs(observed - clean).mean() > 0.05                  # sigma 25/255 noise, clipped
    want = dip.deep_image_prior(jnp.asarray(observed), key=jax.random.key(0), steps=4, reference=jnp.asarray(clean),
                                in_channels=8, down=(8, 8, 8), up=(8, 8, 8), skip=(4, 4, 4))
    np.testing.assert_allclose(restored, want.images, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(psnr[0, 0, -1], row["psnr_final"], rtol=1e-6)
    with np.load(run / "shards" / "super_resolution.npz") as f:
        assert f["observed"].shape == (1, 8, 8, 3) and f["restored"].shape == (1, 1, 32, 32, 3)
    with np.load(run / "shards" / "inpaint.npz") as f:
        assert 0.4 < f["mask"].mean() < 0.6
    written = json.loads((run / "metrics.json").read_text())
    assert written == json.loads(json.dumps({k: v for k, v in metrics.items() if k != "computed_shards"}))
    # Rerun: nothing recomputed, same metrics.
    again = common.results(ex, argv)
    assert again["computed_shards"] == 0 and metrics["computed_shards"] == 4
    assert again["tasks"] == metrics["tasks"]
    assert "resumed from disk" in capsys.readouterr().out


def test_dip_rejects_bad_config(tmp_path):
    with pytest.raises(ValueError, match="tasks"):
        ex.main(["--config", "local", "--set", f"out={tmp_path}", "--set", "tasks=['deblur']"])
    with pytest.raises(ValueError, match="image_size"):
        ex.main(["--config", "local", "--set", f"out={tmp_path}", "--set", "image_size=36"])
