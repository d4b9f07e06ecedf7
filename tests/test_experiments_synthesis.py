"""experiments/feature_vis.py, pre_image.py, deepdream.py: tiny local runs, metrics checked independently, resumption."""

import importlib
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinterp import nets
from jaxinterp.data import images as photographs, synthetic
from experiments import common, deepdream, feature_vis, pre_image


def _random_smallcnn():
    net = nets.get("smallcnn", num_classes=synthetic.NUM_CLASSES)
    return net, net.init(jax.random.key(0))          # what pretrained=False loads


def _channel_means(net, params, x, layer):
    a = np.asarray(net.apply(params, jnp.asarray(x, jnp.float32), stop=layer), np.float64)
    return a.reshape(a.shape[0], -1, a.shape[-1]).mean(axis=1)


def test_feature_vis_local_run_resumes(tmp_path, capsys):
    ex = feature_vis
    photos = ["chelsea", "coffee", "rocket"]
    argv = ["--config", "local", "--id", "t", "--set", f"out={tmp_path}", "--set", "pretrained=False",
            "--set", "channels=4", "--set", "shard_size=2", "--set", "steps=64", "--set", f"photos={photos}"]
    metrics = common.results(ex, argv)
    run = tmp_path / "t"
    for name in ("metrics.json", "report.html", "channels.png", "classes.png", "config.json"):
        assert (run / name).exists(), name
    assert sorted(p.name for p in (run / "shards").glob("*.npz")) == ["c00000.npz", "c00002.npz", "classes.npz"]
    assert metrics["channels"] == 4 and metrics["computed_shards"] == 3
    # Independent check: the channel activations of the stored renders and of the held-out photographs.
    net, params = _random_smallcnn()
    renders = np.concatenate([np.load(run / "shards" / f)["images"][:, 0] for f in ("c00000.npz", "c00002.npz")])
    assert renders.shape == (4, 32, 32, 3) and renders.dtype == np.uint8
    own = _channel_means(net, params, renders / 255.0, "features.4")[np.arange(4), np.arange(4)]
    held = _channel_means(net, params, photographs.batch(photos, size=32), "features.4")
    for c, row in enumerate(metrics["per_channel"]):
        assert row["target"] == c
        np.testing.assert_allclose(row["rendered"], own[c], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(row["best_held_out"], held[:, c].max(), rtol=1e-4, atol=1e-5)
        assert row["best_held_out_image"] == photos[int(held[:, c].argmax())]
        assert row["wins"] == (own[c] > held[:, c].max())
    # The optimisation (through leaky ReLUs, config.leaky) raises every channel's objective, and activation
    # maximisation beats the photographs for channels and class logits.
    history = np.concatenate([np.load(run / "shards" / f)["history"] for f in ("c00000.npz", "c00002.npz")])
    assert history.shape == (4, 64) and (history[:, -8:].mean(1) > history[:, :8].mean(1)).all()
    assert metrics["fraction_beating_held_out"] >= 0.75 and metrics["class_fraction_beating_held_out"] >= 0.75
    assert metrics["fraction_beating_held_out"] == np.mean([r["wins"] for r in metrics["per_channel"]])
    written = json.loads((run / "metrics.json").read_text())
    assert written == json.loads(json.dumps({k: v for k, v in metrics.items() if k != "computed_shards"}))
    again = common.results(ex, argv)
    assert again["computed_shards"] == 0 and again["per_channel"] == metrics["per_channel"]
    assert "3 resumed from disk" in capsys.readouterr().out


def test_pre_image_local_run_resumes(tmp_path, capsys):
    ex = pre_image
    argv = ["--config", "local", "--id", "t", "--set", f"out={tmp_path}", "--set", "pretrained=False",
            "--set", "photos=['chelsea']", "--set", "layers=['features.4']", "--set", "steps=30",
            "--set", "caricature_layers=['features.4']", "--set", "caricature_steps=3"]
    metrics = common.results(ex, argv)
    run = tmp_path / "t"
    for name in ("metrics.json", "report.html", "smallcnn_features.4.png", "caricatures.png", "config.json"):
        assert (run / name).exists(), name
    assert metrics["computed_shards"] == 2 and metrics["images"] == ["chelsea"]
    entry = metrics["layers"]["smallcnn"]["features.4"]
    # Independent check of the loss: the stored 8-bit pre-images against the photograph's code, in float64.
    net, params = _random_smallcnn()
    x = photographs.load("chelsea", 32)[None]
    phi0 = np.asarray(net.apply(params, jnp.asarray(x), stop="features.4"), np.float64)
    with np.load(run / "shards" / "smallcnn_features.4.npz") as f:
        for variant in ("ijcv", "cvpr"):
            pre = f[f"{variant}_images"].astype(np.float32) / 255
            phi = np.asarray(net.apply(params, jnp.asarray(pre), stop="features.4"), np.float64)
            want = ((phi - phi0) ** 2).sum() / (phi0 ** 2).sum()
            np.testing.assert_allclose(entry[variant]["loss"][0], want, rtol=0.05, atol=0.01)
    # A pre-image knows more of the code than the mean-colour image (loss 1 on a zero-bias net), IJCV best.
    assert entry["mean_image_loss"] == [pytest.approx(1.0, abs=1e-5)]
    assert entry["ijcv"]["beats_mean_image"] == 1.0 and entry["ijcv"]["mean_loss"] < 0.9
    assert 0 < entry["cvpr"]["mean_loss"] < 1.0
    again = common.results(ex, argv)
    assert again["computed_shards"] == 0 and again["layers"] == metrics["layers"]
    assert "2 resumed from disk" in capsys.readouterr().out


def test_deepdream_local_run_resumes(tmp_path, capsys):
    ex = deepdream
    argv = ["--config", "local", "--id", "t", "--set", f"out={tmp_path}", "--set", "pretrained=False"]
    metrics = common.results(ex, argv)
    run = tmp_path / "t"
    for name in ("metrics.json", "report.html", "dreams.png", "config.json", "shards/features.4.npz"):
        assert (run / name).exists(), name
    entry = metrics["layers"]["features.4"]
    net, params = _random_smallcnn()
    x = photographs.batch(["chelsea", "coffee"], size=32)
    a = np.asarray(net.apply(params, jnp.asarray(x), stop="features.4"), np.float64)
    np.testing.assert_allclose(entry["energy_before"], 0.5 * (a ** 2).reshape(2, -1).sum(1), rtol=1e-4)
    assert entry["share_raised"] == 1.0 and min(entry["gain"]) > 1.0     # DeepDream amplifies the layer
    again = common.results(ex, argv)
    assert again["computed_shards"] == 0 and again["layers"] == metrics["layers"]
    assert "1 resumed from disk" in capsys.readouterr().out


@pytest.mark.parametrize("name, field, value", [("feature_vis", "layer", "'nope'"),
                                                ("feature_vis", "channels", "100"),
                                                ("pre_image", "variants", "['eccv']"),
                                                ("deepdream", "layers", "['nope']")])
def test_synthesis_experiments_reject_bad_config(tmp_path, name, field, value):
    ex = importlib.import_module(f"experiments.{name}")
    with pytest.raises(ValueError, match=field):
        ex.main(["--config", "local", "--set", f"out={tmp_path}", "--set", "pretrained=False",
                 "--set", f"{field}={value}"])
