"""Parity of the DeepLIFT and conductance families with Captum 0.9, float64, random weights.

torchvision ``vgg16`` with random weights on one bundled photograph at 32 px
(dithered as in test_attribution_parity.py), two targets; both sides
take [0, 1] pixels (the torch model is ``Sequential(Normalize, vgg16)``) and run
in float64.  vgg16 has the max-pools that DeepLIFT treats specially; its pools
do not overlap, where our max-pool rule and Captum's ``max_unpool`` agree
(:mod:`jaxinterp.nets.deeplift_rules`).  DeepLIFT alone also runs on resnet50
(residual sums; an overlapping max-pool, with Captum's unpooling made to add).
Captum gets the same baselines and,
for gradient SHAP, its own random draws are recorded and fed to ours.

Captum's max-pool rule and a ReLU just before the pool.  Captum's hooks are
tensor hooks: a ReLU records the gradient of its output tensor with a hook
registered in its forward pass, and the next module's pre-hook registers, on
the same tensor (the pool's input), the hook that replaces the gradient by the
max-pool's DeepLIFT multiplier.  Tensor hooks run in registration order, so the
ReLU records the pool's *ordinary* gradient and its rescale rule then uses that
one: in a plain torchvision vgg16 (every pool follows a ReLU) Captum's max-pool
handler never reaches the layers below, and its attributions do not sum to the
score's change (delta -0.016 for a change of 0.015 measured on one photo).  The
torch model here has a copy (``x.clone()``, a new tensor, same values) before
each max-pool; Captum then meets completeness (delta 8e-17) and is compared
with ours.

Error = max |ours - theirs| / max |theirs|, printed with ``pytest -s``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")
captum_attr = pytest.importorskip("captum.attr")

import _torch_oracles as oracles  # noqa: E402

from jaxinterp import nets  # noqa: E402
from jaxinterp import attribution  # noqa: E402
from jaxinterp.data import images  # noqa: E402

pytestmark = [pytest.mark.parity, pytest.mark.filterwarnings("ignore::UserWarning")]

TOL64 = 1e-8
SIZE = 32
ARCH = "vgg16"
TARGETS = np.array([[281, 7]], np.int32)   # one photograph, two targets (test time)
LAYER = "features.22"          # ReLU after conv4_3's predecessor: (4, 4, 512) at 32 px
STEPS = 3
ERRORS: dict[str, float] = {}


class Copy(torch.nn.Module):
    """x.clone(): a new tensor between a ReLU and a max-pool for Captum's hooks (module docstring)."""

    def forward(self, x):
        return x.clone()


def _copy_before_pools(model: torch.nn.Module) -> torch.nn.Module:
    for i, module in enumerate(model.features):
        if isinstance(module, torch.nn.MaxPool2d):
            model.features[i] = torch.nn.Sequential(Copy(), module)
    return model


@pytest.fixture(scope="module")
def zoo():
    model = oracles.pixels_model(_copy_before_pools(oracles.build(ARCH)), torch.float64)
    x = images.batch(("chelsea",), SIZE)
    x = np.clip(x + np.random.default_rng(0).uniform(-1, 1, x.shape) / 255.0, 0.0, 1.0)
    refs = np.random.default_rng(1).uniform(size=(2, SIZE, SIZE, 3))
    with jax.enable_x64(True):
        params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), oracles.jax_params(ARCH, model[1]))
    yield dict(model=model, net=nets.get(ARCH), params=params, x=x.astype(np.float64), refs=refs)
    oracles.report_errors(ERRORS, "Captum DeepLIFT / conductance parity", "captum_deeplift_parity")


def ours(zoo, method, arrays=None, targets=TARGETS, **options) -> np.ndarray:
    """method(net, params, x, targets, **arrays, **options) under jit in float64."""
    fn = jax.jit(lambda p, x, t, arr: method(zoo["net"], p, x, t, **arr, **options))
    with jax.enable_x64(True), jax.default_matmul_precision("highest"):
        arrays = jax.tree.map(jnp.asarray, arrays or {})
        return np.asarray(fn(zoo["params"], jnp.asarray(zoo["x"]), jnp.asarray(targets), arrays))


def theirs(zoo, call, convert=oracles.nhwc) -> np.ndarray:
    """(N, T, ...) from ``call(images NCHW, target column)`` per target column."""
    return np.stack([convert(call(oracles.to_torch(zoo["x"]).requires_grad_(),
                                  torch.from_numpy(TARGETS[:, j]).long()))
                     for j in range(TARGETS.shape[1])], axis=1)


def check(name: str, a, b, tol: float = TOL64, arch: str = ARCH) -> None:
    err = oracles.rel_err(a, b)
    ERRORS[f"{name} [{arch}]"] = err
    print(f"\n{name} [{arch}]: max rel. error {err:.2e}")
    assert err <= tol, f"{name}: {err:.2e} > {tol:.0e}"


def _scatter_add_unpool(values, indices, kernel_size, stride, padding, output_size):
    """``max_unpool2d`` that adds the values of windows sharing an argmax (it writes one of them)."""
    out = torch.zeros(*output_size, dtype=values.dtype).flatten(2)
    return out.scatter_add_(2, indices.flatten(2), values.flatten(2)).view(*output_size)


def test_deeplift_resnet50_captum(zoo, monkeypatch):
    """``DeepLift`` on resnet50 (residual sums, the stem's overlapping 3 x 3 / 2 max-pool), a random reference.

    Captum routes the max-pool's output change with ``max_unpool2d``, which keeps
    one value where overlapping windows share their argmax; ours adds them
    (completeness).  As Captum calls ``F.max_unpool2d`` through the module
    ``torch.nn.functional``, it is patched here to add: Captum then meets
    completeness (delta 6e-14, against 9.7 for a score change of -18.3 unpatched,
    where our maps differ from its by 0.79 of their peak) and equals ours.  The
    stem's pool gets a copy before it (module docstring).
    """
    model = oracles.pixels_model(oracles.build("resnet50"), torch.float64)
    model[1].maxpool = torch.nn.Sequential(Copy(), model[1].maxpool)
    monkeypatch.setattr(torch.nn.functional, "max_unpool2d", _scatter_add_unpool)
    base = zoo["refs"][:1]
    dl = captum_attr.DeepLift(model)
    their = theirs(zoo, lambda x, t: dl.attribute(x, baselines=oracles.to_torch(base), target=t))
    net = nets.get("resnet50")
    with jax.enable_x64(True), jax.default_matmul_precision("highest"):
        params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), oracles.jax_params("resnet50", model[1]))
        fn = jax.jit(lambda p, x, t, b: attribution.deeplift(net, p, x, t, baseline=b, reduce=None))
        mine = np.asarray(fn(params, jnp.asarray(zoo["x"]), jnp.asarray(TARGETS), jnp.asarray(base[0])))
    check("deeplift", mine, their, arch="resnet50")
    with torch.no_grad():
        change = (model(oracles.to_torch(zoo["x"])) - model(oracles.to_torch(base))).numpy()
    np.testing.assert_allclose(mine.sum((2, 3, 4)), np.take_along_axis(change, TARGETS, 1), rtol=1e-9)


def test_deeplift_shap_captum(zoo):
    """``DeepLiftShap`` over two reference images, one per chunk: DeepLIFT on vgg16's pools, unpatched
    (they do not overlap), and its completeness."""
    dls = captum_attr.DeepLiftShap(zoo["model"])
    their = theirs(zoo, lambda x, t: dls.attribute(x, baselines=oracles.to_torch(zoo["refs"]), target=t))
    mine = ours(zoo, attribution.deeplift_shap, dict(baselines=zoo["refs"]), reduce=None, chunk_size=1)
    check("deeplift_shap", mine, their)
    with torch.no_grad():
        change = (zoo["model"](oracles.to_torch(zoo["x"])) - zoo["model"](oracles.to_torch(zoo["refs"])).mean(0)).numpy()
    np.testing.assert_allclose(mine.sum((2, 3, 4)), np.take_along_axis(change, TARGETS, 1), rtol=1e-9)


def test_gradient_shap_captum(zoo, monkeypatch):
    """``GradientShap`` (4 samples, stdevs 0.1, first target) with Captum's own draws recorded and fed to ours.

    Captum draws the references with ``np.random.choice`` (rows i * S + s),
    the noise with ``torch.normal`` in ``NoiseTunnel._add_noise_to_input`` and
    the alphas with ``np.random.uniform``; the three are wrapped to record them.
    Each target column is one Captum call, with its own draws: the first only (test time).
    """
    n, s, stdevs = len(zoo["x"]), 4, 0.1
    drawn = {}
    choice, uniform, add_noise = np.random.choice, np.random.uniform, captum_attr.NoiseTunnel._add_noise_to_input

    def record(name, fn):
        def wrapped(*args, **kwargs):
            out = fn(*args, **kwargs)
            drawn[name] = out
            return out
        return wrapped

    monkeypatch.setattr(np.random, "choice", record("index", choice))
    monkeypatch.setattr(np.random, "uniform", record("alpha", uniform))
    monkeypatch.setattr(captum_attr.NoiseTunnel, "_add_noise_to_input", staticmethod(record("noisy", add_noise)))
    np.random.seed(3)
    torch.manual_seed(3)
    gs = captum_attr.GradientShap(zoo["model"])
    their = oracles.nhwc(gs.attribute(oracles.to_torch(zoo["x"]).requires_grad_(),
                                      baselines=oracles.to_torch(zoo["refs"]), n_samples=s,
                                      stdevs=stdevs, target=torch.from_numpy(TARGETS[:, 0]).long()))
    noisy = oracles.nhwc(drawn["noisy"]).reshape(n, s, SIZE, SIZE, 3)
    samples = attribution.ShapSamples(np.asarray(drawn["index"]).reshape(n, s),
                                   np.asarray(drawn["alpha"]).reshape(n, s), noisy - zoo["x"][:, None])
    mine = ours(zoo, attribution.gradient_shap, dict(baselines=zoo["refs"], samples=samples),
                targets=TARGETS[:, :1], reduce=None, chunk_size=3)
    check("gradient_shap", mine[:, 0], their)


def _layer(zoo):
    return zoo["model"][1].get_submodule(LAYER)


def test_layer_conductance_captum(zoo):
    """``LayerConductance`` at features.22, 3 segments (4 Gauss-Legendre nodes), a grey baseline."""
    lc = captum_attr.LayerConductance(zoo["model"], _layer(zoo))
    their = theirs(zoo, lambda x, t: lc.attribute(x, baselines=0.5, target=t, n_steps=STEPS))
    mine = ours(zoo, attribution.layer_conductance, layer=LAYER, baseline=0.5, steps=STEPS,
                reduce=None, resize=False, chunk_size=3)
    check("layer_conductance", mine, their)


def test_internal_influence_captum(zoo):
    ii = captum_attr.InternalInfluence(zoo["model"], _layer(zoo))
    their = theirs(zoo, lambda x, t: ii.attribute(x, baselines=0.5, target=t, n_steps=STEPS))
    # Float32 quadrature weights on Captum's side, as for neuron conductance: 1e-6.
    check("internal_influence", ours(zoo, attribution.internal_influence, layer=LAYER, baseline=0.5,
                                     steps=STEPS, reduce=None, resize=False), their, tol=1e-6)


def test_neuron_conductance_captum(zoo):
    """``NeuronConductance`` of neuron (y, x, c) = (1, 2, 5), Captum's selector (5, 1, 2), Gauss-Legendre."""
    nc = captum_attr.NeuronConductance(zoo["model"], _layer(zoo))
    their = theirs(zoo, lambda x, t: nc.attribute(x, neuron_selector=(5, 1, 2), baselines=0.5, target=t,
                                                  n_steps=STEPS, method="gausslegendre"))
    # Captum rounds the quadrature weights to float32 (``torch.tensor(step_sizes)`` of a
    # Python list): a uniform relative offset of ~5e-8 (measured), hence 1e-6.
    check("neuron_conductance", ours(zoo, attribution.neuron_conductance, layer=LAYER, neuron=(1, 2, 5),
                                     baseline=0.5, steps=STEPS, reduce=None), their, tol=1e-6)
