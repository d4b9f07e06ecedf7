"""experiments/extremal.py: a tiny local run (8 fake devices), its outputs against extremal() itself, resumption."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinterp import nets
from jaxinterp.data import synthetic
from jaxinterp.perturbation import extremal
from experiments import common, extremal as ex


def test_extremal_local_run_resumes(tmp_path, capsys):
    argv = ["--config", "local", "--id", "t", "--set", f"out={tmp_path}", "--set", "images=3",
            "--set", "batch_size=4", "--set", "pretrained=False", "--set", "steps=3", "--set", "areas=[0.1, 0.3]"]
    metrics = common.results(ex, argv)
    run = tmp_path / "t"
    for name in ("metrics.json", "report.html", "masks.png", "config.json"):
        assert (run / name).exists(), name
    shards = sorted((run / "shards").glob("b*.npz"))
    assert len(shards) == 2                                  # 6 images (3 per variant) in batches of 4
    assert metrics["pairs"] == 6 and 0 <= metrics["pointing_all"] <= 1
    assert set(metrics["areas"]) == {"0.1", "0.3"}
    # The shards hold extremal()'s masks for the same images and targets (random-init smallcnn, key 0).
    with np.load(shards[0]) as f:
        masks, target, image = f["masks"], f["target"], f["image"]
    net = nets.get("smallcnn", num_classes=synthetic.NUM_CLASSES)
    params = net.init(jax.random.key(0))
    x = jnp.asarray(image, jnp.float32) / 255
    want, _ = extremal(net, params, x, jnp.asarray(target), areas=(0.1, 0.3), steps=3)
    assert masks.shape == (4, 1, 2, 64, 64)
    np.testing.assert_allclose(masks.astype(np.float32), want, atol=5e-3)     # float16 storage, 8-bit images
    written = json.loads((run / "metrics.json").read_text())
    assert written == json.loads(json.dumps({k: v for k, v in metrics.items() if k != "computed_batches"}))
    # Rerun: nothing recomputed, same metrics.
    again = common.results(ex, argv)
    assert again["computed_batches"] == 0 and metrics["computed_batches"] == 2
    assert again["pointing_all"] == metrics["pointing_all"]
    assert "resumed from disk" in capsys.readouterr().out


def test_extremal_rejects_bad_config(tmp_path):
    with pytest.raises(ValueError, match="dataset"):
        ex.main(["--config", "local", "--set", f"out={tmp_path}", "--set", "dataset=imagenet"])
    with pytest.raises(ValueError, match="areas"):
        ex.main(["--config", "local", "--set", f"out={tmp_path}", "--set", "pretrained=False",
                 "--set", "images=1", "--set", "areas=[1.5]"])
