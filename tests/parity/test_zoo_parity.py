"""Parity of the zoo with torchvision and timm on the same random weights.

Each PyTorch model gets random weights (batch-norm statistics and affine terms
randomised too, so they are exercised), its state dict is written to disk and
read back with :func:`jaxinterp.nets.load`, and the logits plus at least three
intermediate split points are compared on the same normalised input at the
highest matmul precision.  Error = max |ours - theirs| / max |theirs| <= 1e-4.
"""

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")
timm = pytest.importorskip("timm")

from jaxinterp import nets  # noqa: E402

pytestmark = pytest.mark.parity

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)
TOL = 1e-4


def _randomise_norms(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.LayerNorm)):
                m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=g))
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
    return model.eval()


def _images(n=2, size=224, seed=0):
    return np.random.default_rng(seed).uniform(size=(n, size, size, 3)).astype(np.float32)


def _torch_input(x):
    return torch.from_numpy(((x - MEAN) / STD).transpose(0, 3, 1, 2).copy())


def _numpy(t, nchw=False):
    """A torch output as NumPy; conv feature maps (N, C, H, W) -> (N, H, W, C)."""
    a = t.detach().numpy()
    return a.transpose(0, 2, 3, 1) if nchw and a.ndim == 4 else a


def _rel_err(ours, theirs):
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    assert ours.shape == theirs.shape, (ours.shape, theirs.shape)
    return float(np.abs(ours - theirs).max() / np.abs(theirs).max())


def _load_via_file(name, model, tmp_path, ext=".pth", **config):
    path = tmp_path / f"{name}{ext}"
    if ext == ".pth":
        torch.save(model.state_dict(), path)
    else:
        from safetensors.torch import save_file
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return nets.load(name, str(path), **config)


def _compare(net, params, x, reference, report):
    """reference: {split point or None: torch output}; asserts every relative error <= TOL."""
    with jax.default_matmul_precision("highest"):
        for layer, theirs in reference.items():
            nchw = net.name != "vit_s16"
            err = _rel_err(net.apply(params, x, stop=layer), _numpy(theirs, nchw))
            report[layer or "logits"] = err
    print(f"\n{net.name} parity (max rel. error):",
          ", ".join(f"{k} {v:.1e}" for k, v in report.items()))
    assert all(v <= TOL for v in report.values()), report


@pytest.mark.parametrize("arch, layers", [
    ("alexnet", ("features.2", "features.7", "features.12", "classifier.2")),
    ("vgg16", ("features.4", "features.15", "features.29", "avgpool", "classifier.4")),
])
def test_torchvision_plain_cnns(arch, layers, tmp_path):
    torch.manual_seed(0)
    model = getattr(torchvision.models, arch)(weights=None).eval()
    params = _load_via_file(arch, model, tmp_path)
    x = _images()
    t = _torch_input(x)
    ref = {}
    with torch.no_grad():
        ref[None] = model(t)
        for layer in layers:
            part, idx = layer.split(".") if "." in layer else (layer, None)
            if part == "features":
                ref[layer] = model.features[: int(idx) + 1](t)
            elif part == "avgpool":
                ref[layer] = torch.flatten(model.avgpool(model.features(t)), 1)
            else:
                h = torch.flatten(model.avgpool(model.features(t)), 1)
                ref[layer] = model.classifier[: int(idx) + 1](h)
    _compare(nets.get(arch), params, x, ref, {})


def test_torchvision_resnet50(tmp_path):
    torch.manual_seed(0)
    model = _randomise_norms(torchvision.models.resnet50(weights=None))
    params = _load_via_file("resnet50", model, tmp_path, ext=".safetensors")
    x = _images()
    t = _torch_input(x)
    ref = {}
    with torch.no_grad():
        h = model.maxpool(model.relu(model.bn1(model.conv1(t))))
        ref["maxpool"] = h
        h = model.layer1(h)
        ref["layer1"] = h
        h = model.layer2[:2](h)
        ref["layer2.1"] = h
        h = model.layer3(model.layer2[2:](h))
        ref["layer3"] = h
        h = model.layer4(h)
        ref["layer4"] = h
        ref[None] = model.fc(torch.flatten(model.avgpool(h), 1))
    _compare(nets.get("resnet50"), params, x, ref, {})


def test_timm_vit_small_patch16_224(tmp_path):
    torch.manual_seed(0)
    model = _randomise_norms(timm.create_model("vit_small_patch16_224", pretrained=False))
    params = _load_via_file("vit_s16", model, tmp_path, num_classes=1000)
    net = nets.get("vit_s16", num_classes=1000)
    x = _images()
    t = _torch_input(x)
    ref = {}
    with torch.no_grad():
        h = model.patch_embed(t)
        ref["patch_embed"] = h
        h = model._pos_embed(h)
        for i, block in enumerate(model.blocks):
            if i == 11:
                attn = block.attn
                z = block.norm1(h)
                qkv = attn.qkv(z).reshape(z.shape[0], z.shape[1], 3, attn.num_heads, -1)
                q, k, _ = qkv.permute(2, 0, 3, 1, 4)
                ref["blocks.11.attn"] = (q @ k.transpose(-2, -1) * attn.scale).softmax(-1)
                ref["blocks.11.keys"] = k.transpose(1, 2).reshape(z.shape[0], z.shape[1], -1)
            h = block(h)
            if i in (3, 11):
                ref[f"blocks.{i}"] = h
        ref["norm"] = model.norm(h)
        ref[None] = model(t)
    _compare(net, params, x, ref, {})


def test_dino_layout_loads_without_head(tmp_path):
    # DINO's ViT-S/16 checkpoints have no classifier: the headless net returns the CLS feature.
    torch.manual_seed(1)
    model = _randomise_norms(timm.create_model("vit_small_patch16_224", pretrained=False,
                                               num_classes=0))
    params = _load_via_file("vit_s16", model, tmp_path, ext=".safetensors")
    x = _images(1)
    with torch.no_grad():
        ref = {None: model(_torch_input(x))}
    _compare(nets.get("vit_s16"), params, x, ref, {})
