"""experiments/inverter.py: a tiny local run, its metrics recomputed in NumPy, its reconstructions against
train_inverter + invert directly, resumption (finished layer skipped, killed layer resumed), bad config."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinterp import nets
from jaxinterp.data import synthetic
from jaxinterp.synthesis.inverter import invert, train_inverter
from experiments import common, inverter as ex


def test_inverter_local_run_metrics_and_resumption(tmp_path, capsys):
    argv = ["--config", "local", "--id", "t", "--set", f"out={tmp_path}", "--set", "pretrained=False",
            "--set", "size=32", "--set", "train_images=24", "--set", "test_images=5", "--set", "steps=4",
            "--set", "steps_per_call=2", "--set", "batch_size=4", "--set", "layers=['features.2', 'avgpool']",
            "--set", "widths=[8]", "--set", "fc_width=16", "--set", "shown=2"]
    metrics = common.results(ex, argv)
    run = tmp_path / "t"
    for name in ("metrics.json", "report.html", "reconstructions.png", "config.json", "data.npz",
                 "layers/features.2.npz", "layers/avgpool.npz"):
        assert (run / name).exists(), name
    assert metrics["computed_layers"] == 2
    written = json.loads((run / "metrics.json").read_text())
    assert written == json.loads(json.dumps({k: v for k, v in metrics.items() if k != "computed_layers"}))
    # Metrics recomputed in float64 NumPy from the stored images and reconstructions.
    with np.load(run / "data.npz") as f:
        train, test = f["train"].astype(np.float64), f["test"].astype(np.float64)
    assert train.shape == (24, 32, 32, 3) and test.shape == (5, 32, 32, 3)
    base = np.mean((test - train.mean(0)) ** 2)
    np.testing.assert_allclose(metrics["baseline"]["mse"], base, rtol=1e-9)
    np.testing.assert_allclose(metrics["baseline"]["psnr"], 10 * np.log10(1 / base), rtol=1e-9)
    recon = {}
    for layer in ("features.2", "avgpool"):
        with np.load(run / "layers" / f"{layer}.npz") as f:
            recon[layer] = f["recon"]
        assert recon[layer].shape == (5, 32, 32, 3)
        mse = np.mean((recon[layer].astype(np.float64) - test) ** 2)
        np.testing.assert_allclose(metrics["layers"][layer]["mse"], mse, rtol=1e-9)
        np.testing.assert_allclose(metrics["layers"][layer]["relative_mse"], mse / base, rtol=1e-9)
    # The reconstructions are train_inverter + invert's on the same data (random-init smallcnn, key 0).
    net = nets.get("smallcnn", num_classes=synthetic.NUM_CLASSES)
    params = net.init(jax.random.key(0))
    inv, _ = train_inverter(net, params, "features.2", train.astype(np.float32), steps=4, batch_size=4, lr=3e-3,
                            key=jax.random.fold_in(jax.random.key(0), 2), widths=(8,), num_convs=1,
                            steps_per_call=2)
    want = invert(net, params, inv, jnp.asarray(test, jnp.float32), "features.2")
    np.testing.assert_allclose(recon["features.2"], want, rtol=1e-5, atol=1e-6)
    # Rerun: nothing recomputed, same metrics.
    again = common.results(ex, argv)
    assert again["computed_layers"] == 0 and again["layers"] == metrics["layers"]
    assert "trained 0 inverters, 2 resumed from disk" in capsys.readouterr().out
    # A layer killed after its checkpoint but before its result: resumed from the checkpoint, same result.
    (run / "layers" / "features.2.npz").unlink()
    third = common.results(ex, argv)
    out = capsys.readouterr().out
    assert third["computed_layers"] == 1 and "resumed from step 4" in out
    with np.load(run / "layers" / "features.2.npz") as f:
        np.testing.assert_array_equal(f["recon"], recon["features.2"])


def test_inverter_rejects_bad_config(tmp_path):
    with pytest.raises(ValueError, match="^layers: unknown split points"):
        ex.main(["--config", "local", "--set", f"out={tmp_path}", "--set", "pretrained=False",
                 "--set", "layers=['features.2', 'conv99']"])
    with pytest.raises(ValueError, match="^variant"):
        ex.get_config("huge")
