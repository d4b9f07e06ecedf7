"""Deep image prior against PyTorch: the skip net forward (train-mode BatchNorm, reflection padding, bilinear
upsampling) and three Adam steps of the fitting loop, with the same weights and noise input."""

import importlib.util
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from jaxinterp import nets  # noqa: E402
from jaxinterp.synthesis import dip  # noqa: E402

NET = dict(in_channels=5, down=(6, 7), up=(5, 4), skip=(3, 0))


def _torch_twin():
    path = Path(__file__).resolve().parents[2] / "bench" / "dip.py"
    spec = importlib.util.spec_from_file_location("bench_dip_parity", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module.torch_skip_net


def _load(model, params):
    """Copy skip_net_init params into the bench's torch twin (HWIO -> OIHW)."""
    def conv(seq, p):
        m = seq[-1] if isinstance(seq, torch.nn.Sequential) else seq
        m.weight.data = torch.from_numpy(np.asarray(p["w"]).transpose(3, 2, 0, 1).copy())
        m.bias.data = torch.from_numpy(np.asarray(p["b"]).copy())

    def bn(m, p):
        m.weight.data = torch.from_numpy(np.asarray(p["scale"]).copy())
        m.bias.data = torch.from_numpy(np.asarray(p["bias"]).copy())

    s, i = model[0], 0
    while True:
        d = params[f"down{i}"]
        conv(s.down[0], d["conv1"]), bn(s.down[1], d["bn1"]), conv(s.down[3], d["conv2"]), bn(s.down[4], d["bn2"])
        if f"skip{i}" in params:
            conv(s.skip[0], params[f"skip{i}"]["conv"]), bn(s.skip[1], params[f"skip{i}"]["bn"])
        u = params[f"up{i}"]
        bn(s.up[0], u["bn0"]), conv(s.up[1], u["conv1"]), bn(s.up[2], u["bn1"])
        conv(s.up[4], u["conv2"]), bn(s.up[5], u["bn2"])
        if isinstance(s.deeper, torch.nn.Identity):
            break
        s, i = s.deeper, i + 1
    conv(model[1], params["out"])


def test_skip_net_forward_and_adam_loop_match_torch():
    key = jax.random.key(3)
    params = nets.skip_net_init(jax.random.fold_in(key, 0), **NET)
    z = dip.dip_noise(jax.random.fold_in(key, 1), (16, 16), NET["in_channels"])
    model = _torch_twin()(**NET).double()
    _load(model, params)
    model = model.double().train()
    zt = torch.from_numpy(np.asarray(z, np.float64).transpose(2, 0, 1)[None])
    ours = np.asarray(jax.jit(nets.skip_net_apply)(params, z))
    theirs = model(zt)[0].detach().numpy().transpose(1, 2, 0)
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=2e-5)

    # three Adam steps of denoising without z perturbation: the last step's output and every loss
    y = np.random.default_rng(0).uniform(size=(16, 16, 3)).astype(np.float32)
    image, losses, _ = dip.restore_one(jax.numpy.asarray(y), key, steps=3, reg_noise_std=0.0, ema=None, **NET)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    yt = torch.from_numpy(y.astype(np.float64).transpose(2, 0, 1)[None])
    want = []
    for _ in range(3):
        opt.zero_grad()
        out = model(zt)
        loss = torch.nn.functional.mse_loss(out, yt)
        loss.backward()
        opt.step()
        want.append(loss.item())
    np.testing.assert_allclose(losses, want, rtol=1e-4)
    np.testing.assert_allclose(image, out[0].detach().numpy().transpose(1, 2, 0), rtol=1e-4, atol=2e-5)
