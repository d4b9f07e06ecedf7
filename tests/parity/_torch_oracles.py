"""PyTorch side of the attribution parity tests: torchvision nets with random weights.

Shared by ``test_attribution_parity.py``; torch is imported here only, and this
module is only imported from tests/parity (which runs in its own pytest
process, without TensorFlow).  Nothing here is copied from Captum or TorchRay:
they are called as oracles.
"""

from __future__ import annotations

import copy
import json
import os
import types

import jax
import jax.numpy as jnp
import numpy as np
import torch
import torchvision

from jaxinterp import nets

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


class Normalize(torch.nn.Module):
    """(x - mean) / std on NCHW pixels in [0, 1]: what our nets do inside.

    The constants are rounded once to ``dtype`` from their decimal values, as
    ours are (float32 constants cast to float64 would differ by 4e-8).
    """

    def __init__(self, dtype=torch.float32):
        super().__init__()
        self.register_buffer("mean", torch.tensor(MEAN, dtype=dtype).reshape(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(STD, dtype=dtype).reshape(1, 3, 1, 1))

    def forward(self, x):
        return (x - self.mean) / self.std


def randomise_norms(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random batch-norm statistics and affine terms (as tests/parity/test_zoo_parity.py), eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=g))
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
    return model.eval()


def _no_inplace(model: torch.nn.Module) -> torch.nn.Module:
    # Captum's backward hooks and TorchRay's probes do not mix with in-place ReLUs.
    for m in model.modules():
        if isinstance(m, torch.nn.ReLU):
            m.inplace = False
    return model


def _bottleneck_forward(self, x):
    identity = x if self.downsample is None else self.downsample(x)
    out = self.relu1(self.bn1(self.conv1(x)))
    out = self.relu2(self.bn2(self.conv2(out)))
    out = self.bn3(self.conv3(out))
    return self.relu3(out + identity)


def distinct_relus(model: torch.nn.Module) -> torch.nn.Module:
    """Give every Bottleneck of a torchvision ResNet three distinct ReLU modules.

    torchvision's Bottleneck calls its single ``self.relu`` module three times.
    Captum's GuidedBackprop / Deconvolution override ReLU gradients with module
    backward hooks, which misbehave when one module is called several times in a
    forward pass.  The forward function is unchanged; only the module objects
    differ.  (jaxinterp has no such problem: backward rules are functions
    applied per call site with ``jax.custom_vjp``, not hooks on module objects.)
    """
    for m in model.modules():
        if isinstance(m, torchvision.models.resnet.Bottleneck):
            m.relu1, m.relu2, m.relu3 = (torch.nn.ReLU() for _ in range(3))
            m.forward = types.MethodType(_bottleneck_forward, m)
    return model


def build(arch: str, seed: int = 0) -> torch.nn.Module:
    """A torchvision ``vgg16`` or ``resnet50`` with random weights, eval mode, float32, no in-place ReLU.

    Both take normalised NCHW input.  The ResNet gets random batch-norm
    statistics and distinct ReLU modules (:func:`distinct_relus`).
    """
    torch.manual_seed(seed)
    model = getattr(torchvision.models, arch)(weights=None)
    if arch.startswith("resnet"):
        model = distinct_relus(randomise_norms(model, seed))
    for p in model.parameters():
        p.requires_grad_(False)
    return _no_inplace(model.eval())


def jax_params(arch: str, model: torch.nn.Module):
    """Our params for the same weights."""
    return nets.from_state_dict(arch, {k: v.detach().numpy() for k, v in model.state_dict().items()})


class CastParams:
    """``cast(dtype)``: our params as ``dtype`` JAX arrays, converted once per dtype.

    A module-scoped bundle keeps one: converting vgg16's 138 M weights to float64 takes one or
    two seconds, which every test paid again when it converted them itself.
    """

    def __init__(self, params):
        self.params = params
        self._cast: dict = {}

    def __call__(self, dtype) -> dict:
        dtype = np.dtype(dtype)
        if dtype not in self._cast:
            with jax.enable_x64(dtype == np.float64):
                self._cast[dtype] = jax.tree.map(lambda a: jnp.asarray(a, dtype), self.params)
        return self._cast[dtype]


def pixels_model(model: torch.nn.Module, dtype=torch.float32) -> torch.nn.Module:
    """``Sequential(Normalize, model)`` in ``dtype``: a torch model on [0, 1] pixels, like our nets.

    ``model`` is copied when ``dtype`` is not float32.
    """
    if dtype != torch.float32:
        model = copy.deepcopy(model).to(dtype)
    return torch.nn.Sequential(Normalize(dtype), model).eval()


def normalise(x: np.ndarray) -> np.ndarray:
    """ImageNet-normalised pixels (x - mean) / std, computed in x's dtype."""
    return (x - np.asarray(MEAN, x.dtype)) / np.asarray(STD, x.dtype)


def to_torch(x: np.ndarray, normalise_: bool = False) -> torch.Tensor:
    """NHWC NumPy pixels -> NCHW torch tensor of the same dtype (optionally ImageNet-normalised)."""
    if normalise_:
        x = normalise(x)
    return torch.from_numpy(np.ascontiguousarray(np.asarray(x).transpose(0, 3, 1, 2)))


def nhwc(t: torch.Tensor) -> np.ndarray:
    """NCHW torch -> NHWC NumPy."""
    return t.detach().numpy().transpose(0, 2, 3, 1)


def maps(t: torch.Tensor) -> np.ndarray:
    """A single-channel NCHW map (N, 1, h, w) -> (N, h, w) NumPy."""
    a = t.detach().numpy()
    assert a.ndim == 4 and a.shape[1] == 1, a.shape
    return a[:, 0]


def rel_err(ours, theirs) -> float:
    """max |ours - theirs| / max |theirs| in float64; the oracle's map must not be all zero."""
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    assert ours.shape == theirs.shape, (ours.shape, theirs.shape)
    peak = np.abs(theirs).max()
    assert peak > 0, "the oracle's map is identically zero: the comparison would say nothing"
    return float(np.abs(ours - theirs).max() / peak)


def report_errors(errors: dict, title: str, file_stem: str) -> None:
    """Print measured errors; write them as JSON under ``$JAXINTERP_PARITY_OUT`` when it names a folder."""
    if not errors:
        return
    print(f"\n{title}, max |ours - theirs| / max |theirs|:")
    for key, err in sorted(errors.items()):
        print(f"  {key:55s} {err:.2e}")
    out = os.environ.get("JAXINTERP_PARITY_OUT")
    if out:
        os.makedirs(out, exist_ok=True)
        worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
        with open(os.path.join(out, f"{file_stem}_{worker}.json"), "w") as f:
            json.dump(errors, f, indent=1, sort_keys=True)
