"""Parity of jaxinterp.attribution.fullgrad with pytorch-grad-cam 1.5.7's ``FullGrad`` on the same random weights.

torchvision ``vgg16`` (13 convolutions with a bias) and ``resnet50`` (53 batch
norms with random statistics and affine terms, convolutions without bias) with
random weights become our params (:mod:`_torch_oracles`); both sides see the two
dithered photographs at 48 px and one class target each, in float64
(``jax.enable_x64`` on ours, ``model.double()`` on torch), the torch model
wrapped as ``Sequential(Normalize, model)`` so that both take [0, 1] pixels.

What is compared.  pytorch-grad-cam sums the post-processed terms in
``compute_cam_per_layer`` (each term rounded to float32 by its
``scale_cam_image``), then min-max scales the sum in ``aggregate_multi_layers``.
The sum is recorded by wrapping ``compute_cam_per_layer`` during the ordinary
call and compared with ours (max |ours - theirs| / max |theirs|), and the
final output with ours min-max scaled as the oracle does; both against 1e-5
(the oracle's float32 roundings).  The effective batch-norm bias
``beta - mean gamma / sqrt(var + eps)`` is the same on both sides.

pytorch-grad-cam (MIT) is only called as an oracle; none of its code is part of jaxinterp.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")
gradcam = pytest.importorskip("pytorch_grad_cam")

import _torch_oracles as oracles  # noqa: E402
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402

from jaxinterp import attribution, nets  # noqa: E402
from jaxinterp.data import images  # noqa: E402

pytestmark = [pytest.mark.parity]

TOL = 1e-5
SIZE = 48
PHOTOS = ("chelsea", "coffee")
TARGETS = np.array([[281], [504]], np.int32)  # (N, T): one target per image (the oracle loops over channels in Python)
ERRORS: dict[str, float] = {}


@pytest.fixture(scope="module", autouse=True)
def _report():
    yield
    oracles.report_errors(ERRORS, "FullGrad parity (pytorch-grad-cam)", "fullgrad_parity")


def _scale(m: np.ndarray) -> np.ndarray:
    """pytorch-grad-cam's ``scale_cam_image`` of each map (..., H, W)."""
    m = m - m.min(axis=(-2, -1), keepdims=True)
    return m / (m.max(axis=(-2, -1), keepdims=True) + 1e-7)


@pytest.mark.parametrize("arch", ["vgg16", "resnet50"])
def test_fullgrad(arch):
    model = oracles.build(arch)
    x = images.batch(PHOTOS, SIZE)
    x = np.clip(x + np.random.default_rng(0).uniform(-1, 1, x.shape) / 255.0, 0.0, 1.0)
    with jax.enable_x64(True), jax.default_matmul_precision("highest"):
        params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), oracles.jax_params(arch, model))
        ours = np.asarray(jax.jit(attribution.fullgrad, static_argnums=0)(
            nets.get(arch), params, jnp.asarray(x, jnp.float64), jnp.asarray(TARGETS)))
    assert ours.shape == (2, 1, SIZE, SIZE)

    # pytorch-grad-cam pairs the biases, in module order, with the gradients, in the order the layers
    # ran: torchvision's Bottleneck runs its downsample last, as it is registered, while the forward
    # of oracles.distinct_relus runs it first; FullGrad has no ReLU hooks, so torchvision's forward is restored.
    for m in model.modules():
        vars(m).pop("forward", None)
    cam = gradcam.FullGrad(oracles.pixels_model(model, torch.float64), [])
    recorded, per_layer = [], cam.compute_cam_per_layer
    cam.compute_cam_per_layer = lambda *a, **k: recorded.append(per_layer(*a, **k)) or recorded[-1]
    rows = torch.cat([oracles.to_torch(x.astype(np.float64))] * TARGETS.shape[1])   # image n, target j: row j N + n
    out = cam(input_tensor=rows, targets=[ClassifierOutputTarget(int(c)) for c in TARGETS.T.reshape(-1)])
    cam.activations_and_grads.release()
    assert len(cam.bias_data) == {"vgg16": 13, "resnet50": 53}[arch]

    def per_target(a):   # rows (T N, H, W) -> (N, T, H, W)
        return np.swapaxes(np.asarray(a, np.float64).reshape(TARGETS.shape[1], -1, SIZE, SIZE), 0, 1)

    for name, mine, theirs in (("sum", ours, per_target(recorded[0][:, 0])),
                               ("final output", _scale(ours), per_target(out))):
        err = oracles.rel_err(mine, theirs)
        ERRORS[f"fullgrad {name} [{arch}]"] = err
        print(f"\nfullgrad {name} [{arch}]: {err:.2e}")
        assert err <= TOL, f"fullgrad {name} [{arch}]: {err:.2e} > {TOL:.0e}"
