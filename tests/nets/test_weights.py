"""Weight import / export: layouts, round trips through every format, strict key checks."""

import jax
import numpy as np
import pytest

from jaxinterp import nets


@pytest.fixture(scope="module")
def smallcnn():
    net = nets.get("smallcnn")
    return net, net.init(jax.random.key(0))


def test_state_dict_names_and_layouts_follow_pytorch(smallcnn):
    net, params = smallcnn
    sd = nets.to_state_dict(params)
    k = np.asarray(params["features"]["0"]["kernel"])          # (3, 3, 3, 32) HWIO
    np.testing.assert_array_equal(sd["features.0.weight"], k.transpose(3, 2, 0, 1))
    w = np.asarray(params["classifier"]["kernel"])             # (128, 8) (in, out)
    np.testing.assert_array_equal(sd["classifier.weight"], w.T)
    assert set(sd) == {f"features.{i}.{p}" for i in (0, 3, 6, 9) for p in ("weight", "bias")} | {
        "classifier.weight", "classifier.bias"}


def _zeros(net):
    return jax.tree.map(lambda s: np.zeros(s.shape, np.float32), net.abstract_params())


def test_batch_norm_and_vit_names():
    sd_resnet = nets.to_state_dict(_zeros(nets.get("resnet50")))
    assert {"bn1.running_mean", "bn1.running_var", "bn1.weight", "bn1.bias",
            "layer1.0.downsample.0.weight", "layer4.2.bn3.running_var", "fc.weight"} <= set(sd_resnet)
    assert sd_resnet["layer1.0.conv2.weight"].shape == (64, 64, 3, 3)
    sd_vit = nets.to_state_dict(_zeros(nets.get("vit_s16")))
    assert {"cls_token", "pos_embed", "patch_embed.proj.weight", "blocks.11.attn.qkv.weight",
            "blocks.0.mlp.fc2.bias", "norm.weight"} <= set(sd_vit)
    assert sd_vit["blocks.0.attn.qkv.weight"].shape == (1152, 384)


@pytest.mark.parametrize("ext", [".npz", ".safetensors"])
def test_save_load_round_trip(smallcnn, tmp_path, ext):
    net, params = smallcnn
    path = tmp_path / f"w{ext}"
    nets.save(params, str(path))
    loaded = nets.load("smallcnn", str(path))
    assert jax.tree.structure(loaded) == jax.tree.structure(params)
    for a, b in zip(jax.tree.leaves(loaded), jax.tree.leaves(params)):
        np.testing.assert_array_equal(a, b)
    assert not list(tmp_path.glob("*.tmp*"))


def _state_dict(params):
    return dict(nets.to_state_dict(params))


def test_missing_extra_and_misshaped_keys_raise(smallcnn):
    _, params = smallcnn
    sd = _state_dict(params)
    del sd["features.3.bias"]
    with pytest.raises(ValueError, match=r"state_dict: .*missing keys \['features.3.bias'\]"):
        nets.from_state_dict("smallcnn", sd)
    sd = _state_dict(params)
    sd["features.4.weight"] = np.zeros(3, np.float32)
    with pytest.raises(ValueError, match=r"state_dict: .*unexpected keys \['features.4.weight'\]"):
        nets.from_state_dict("smallcnn", sd)
    sd = _state_dict(params)
    sd["features.0.weight"] = np.zeros((32, 3, 5, 5), np.float32)
    with pytest.raises(ValueError, match=r"state_dict: mis-shaped keys: features.0.weight"):
        nets.from_state_dict("smallcnn", sd)


def test_prefix_and_batch_counters_are_handled(smallcnn):
    _, params = smallcnn
    sd = {"module." + k: v for k, v in _state_dict(params).items()}
    sd["module.features.0.num_batches_tracked"] = np.array(3)
    loaded = nets.from_state_dict("smallcnn", sd, prefix="module.")
    np.testing.assert_array_equal(loaded["classifier"]["bias"], params["classifier"]["bias"])


def test_bad_paths_raise(tmp_path):
    with pytest.raises(ValueError, match="path: no such file"):
        nets.load("smallcnn", str(tmp_path / "none.npz"))
    (tmp_path / "w.bin").write_bytes(b"")
    with pytest.raises(ValueError, match="path: expected a .pth"):
        nets.load("smallcnn", str(tmp_path / "w.bin"))
    with pytest.raises(ValueError, match="path: expected a .safetensors"):
        nets.save({"a": {"kernel": np.zeros((2, 2))}}, str(tmp_path / "w.bin"))
    with pytest.raises(ValueError, match="params: expected a nested dict"):
        nets.save([np.zeros(2)], str(tmp_path / "w.npz"))
