"""experiments/channel_diffing.py: a tiny local run, its scores recomputed from the saved masks, resumption."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinterp import nets
from jaxinterp.data import synthetic
from experiments import common, channel_diffing as ex


def _argv(tmp_path, **extra):
    sets = {"out": tmp_path, "images": 2, "batch_size": 4, "pretrained": False, "steps": 4,
            "pre_image_steps": 3, "areas": "[0.1, 0.25]", **extra}
    return ["--config", "local", "--id", "t"] + [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]


def test_channel_diffing_local_run_resumes(tmp_path, capsys):
    metrics = common.results(ex, _argv(tmp_path))
    run = tmp_path / "t"
    for name in ("metrics.json", "report.html", "diffing.png", "channel_frequency.npy", "config.json"):
        assert (run / name).exists(), name
    (shard,) = sorted((run / "shards").glob("b*.npz"))       # 4 images (2 per variant) in one batch
    with np.load(shard) as f:
        data = {k: f[k] for k in f.files}
    masks, target = data["masks"].astype(np.float32), data["target"]
    assert masks.shape == (4, 1, 2, 128) and masks.min() >= 0 and masks.max() <= 1
    # Scores recomputed directly: the tail of the (random-init, key 0) smallcnn on m * Phi(x).
    net = nets.get("smallcnn", num_classes=synthetic.NUM_CLASSES)
    params = net.init(jax.random.key(0))
    x = jnp.asarray(data["image"], jnp.float32) / 255
    phi = np.asarray(net.apply(params, x, stop="features.8"))
    for i in range(4):
        logits = np.asarray(net.apply(params, jnp.asarray(phi[i:i + 1]), start="features.8"))[0]
        assert data["score_all"][i, 0] == pytest.approx(logits[target[i, 0]], rel=1e-3, abs=1e-3)
        for a in range(2):
            kept = np.asarray(net.apply(params, jnp.asarray(phi[i:i + 1] * masks[i, 0, a]), start="features.8"))[0]
            assert data["score_kept"][i, 0, a] == pytest.approx(kept[target[i, 0]], rel=1e-2, abs=1e-2)
    assert metrics["areas"]["0.1"]["channels_kept"] <= metrics["areas"]["0.25"]["channels_kept"]
    # (That the kept pre-image inverts the masked code is tested in tests/synthesis: 3 steps are too few here.)
    assert data["pre_full"].shape == data["pre_kept"].shape == (4, 64, 64, 3)
    # channel_frequency against a loop over pairs.
    freq = np.load(run / "channel_frequency.npy")
    want = np.full((synthetic.NUM_CLASSES, 128), np.nan)
    for c in set(target[:, 0].tolist()):
        want[c] = np.mean([masks[i, 0, 0] > 0.5 for i in range(4) if target[i, 0] == c], axis=0)
    np.testing.assert_allclose(freq, want)
    assert json.loads((run / "metrics.json").read_text()) == json.loads(
        json.dumps({k: v for k, v in metrics.items() if k != "computed_batches"}))
    again = common.results(ex, _argv(tmp_path))
    assert again["computed_batches"] == 0 and metrics["computed_batches"] == 1
    assert again["areas"] == metrics["areas"] and "resumed from disk" in capsys.readouterr().out


def test_channel_diffing_rejects_bad_config(tmp_path):
    with pytest.raises(ValueError, match="layer"):
        ex.main(_argv(tmp_path, layer="features.99"))
    with pytest.raises(ValueError, match="dataset"):
        ex.main(_argv(tmp_path / "b", dataset="imagenet"))
