"""Parity of jaxinterp.perturbation.adversarial with Captum 0.9's ``FGSM`` and ``PGD`` (float64).

The net is a small random ``smallcnn`` (widths 4-6-8-8, 5 classes, random
biases); the same weights go into an equivalent torch module through
:func:`jaxinterp.nets.weights.to_state_dict`, wrapped as
``Sequential(Normalize, net, Softmax)``: Captum's default loss is -log of the
model's output, i.e. the cross-entropy when the model returns probabilities.
Both sides run in float64 on the same two random 16 px images, two targets per
image (Captum: one call per target column).

Conventions mapped onto ours (each is an argument of ours, so the comparison
is exact):

* Captum's ``FGSM`` leaves pixels whose gradient has |g| <= 1e-6 unchanged
  (``zero_thresh``): ``grad_threshold=1e-6``.
* Captum's ``PGD`` takes sign (L-inf) steps also for its L2 ball, where Madry
  et al. and our default take normalised-gradient steps: ``step_norm='linf'``.
* PGD without random start (deterministic), as Captum's default.
* Captum projects on the L2 ball with ``torch.renorm``, which scales by
  radius / (norm + 1e-7): the projected perturbation is shorter by a factor
  1 - 1e-7 / radius, ~1e-7 of a pixel here (tolerance 1e-6; L-inf cases are
  exact to rounding).

Error = max |ours - theirs| / max |theirs| over images, targets, pixels.
Captum is only called as an oracle.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
robust = pytest.importorskip("captum.robust")

import _torch_oracles as oracles  # noqa: E402

from jaxinterp import nets  # noqa: E402
from jaxinterp.nets.weights import to_state_dict  # noqa: E402
from jaxinterp.perturbation.adversarial import fgsm, pgd  # noqa: E402

pytestmark = [pytest.mark.parity,
              pytest.mark.filterwarnings("ignore:Input Tensor 0 did not already require:UserWarning")]

WIDTHS, CLASSES, SIZE = (4, 6, 8, 8), 5, 16
TARGETS = np.array([[0, 3], [4, 1]])
TOL = 1e-6


class TorchSmallCNN(torch.nn.Module):
    """Our smallcnn in torch: 4 x [conv3x3 pad 1, ReLU] with 2x2 max-pools between, global mean, linear."""

    def __init__(self, widths, num_classes):
        super().__init__()
        layers, cin = [], 3
        for k, w in enumerate(widths):
            layers += [torch.nn.Conv2d(cin, w, 3, padding=1), torch.nn.ReLU()]
            if k < len(widths) - 1:
                layers.append(torch.nn.MaxPool2d(2, 2))
            cin = w
        self.features = torch.nn.Sequential(*layers)
        self.classifier = torch.nn.Linear(cin, num_classes)

    def forward(self, x):
        return self.classifier(self.features(x).mean(dim=(2, 3)))


@pytest.fixture(scope="module")
def setup():
    net = nets.get("smallcnn", num_classes=CLASSES, widths=WIDTHS)
    rng = np.random.default_rng(0)

    def leaf(path, a):
        if "bias" in jax.tree_util.keystr(path):
            return jnp.asarray(0.1 * rng.normal(size=a.shape), jnp.float32)
        return jnp.asarray(rng.normal(size=a.shape) * np.sqrt(2.0 / np.prod(a.shape[:-1])), jnp.float32)

    params = jax.tree_util.tree_map_with_path(leaf, net.abstract_params())
    model = TorchSmallCNN(WIDTHS, CLASSES)
    model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in to_state_dict(params).items()})
    model = torch.nn.Sequential(oracles.Normalize(torch.float64), model.double(),
                                torch.nn.Softmax(dim=-1)).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    x = np.random.default_rng(1).uniform(0.05, 0.95, (2, SIZE, SIZE, 3))
    # the torch model agrees with ours before any attack
    with jax.enable_x64(True):
        p64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params)
        ours = np.asarray(jax.nn.softmax(net.apply(p64, jnp.asarray(x))))
    np.testing.assert_allclose(model(oracles.to_torch(x)).numpy(), ours, rtol=1e-10, atol=1e-13)
    return net, params, model, x


def _ours(setup, method, **kw):
    net, params, _, x = setup
    with jax.enable_x64(True), jax.default_matmul_precision("highest"):
        p64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params)
        out = np.asarray(method(net, p64, jnp.asarray(x), jnp.asarray(TARGETS), **kw))
    assert out.dtype == np.float64 and out.shape == (2, 2, SIZE, SIZE, 3)
    return out


def _theirs(setup, call):
    _, _, model, x = setup
    return np.stack([oracles.nhwc(call(model, oracles.to_torch(x), torch.from_numpy(TARGETS[:, j])))
                     for j in range(TARGETS.shape[1])], axis=1)


def _check(name, ours, theirs, x):
    err = float(np.abs(ours - theirs).max() / np.abs(theirs).max())
    moved = float(np.abs(theirs - x[:, None]).max())
    print(f"\n{name}: max rel. error {err:.2e} (largest pixel change {moved:.3f})")
    assert moved > 0, "the oracle did not move: the comparison would say nothing"
    assert err <= TOL, f"{name}: {err:.2e} > {TOL:.0e}"


@pytest.mark.parametrize("targeted", [False, True])
def test_fgsm_captum(setup, targeted):
    eps = 0.03
    theirs = _theirs(setup, lambda m, xt, t: robust.FGSM(m, lower_bound=0.0, upper_bound=1.0).perturb(
        xt, epsilon=eps, target=t, targeted=targeted))
    ours = _ours(setup, fgsm, epsilon=eps, targeted=targeted, grad_threshold=1e-6)
    _check(f"FGSM(targeted={targeted})", ours, theirs, setup[3])


@pytest.mark.parametrize("norm, eps, step, targeted", [
    ("linf", 0.05, 0.01, False), ("linf", 0.05, 0.01, True), ("l2", 0.5, 0.02, False)])
def test_pgd_captum(setup, norm, eps, step, targeted):
    """Captum PGD (no random start, 10 steps) == ours with sign steps (``step_norm='linf'``)."""
    theirs = _theirs(setup, lambda m, xt, t: robust.PGD(m, lower_bound=0.0, upper_bound=1.0).perturb(
        xt, radius=eps, step_size=step, step_num=10, target=t, targeted=targeted, random_start=False,
        norm={"linf": "Linf", "l2": "L2"}[norm]))
    ours = _ours(setup, pgd, epsilon=eps, step_size=step, steps=10, norm=norm, step_norm="linf",
                 targeted=targeted, random_start=False, grad_threshold=1e-6)
    _check(f"PGD(norm={norm}, targeted={targeted})", ours, theirs, setup[3])
    d = (theirs - setup[3][:, None]).reshape(4, -1)
    bound = np.abs(d).max(1) if norm == "linf" else np.linalg.norm(d, axis=1)
    assert np.all(bound <= eps * (1 + 1e-9)) and bound.max() > 0.5 * eps
