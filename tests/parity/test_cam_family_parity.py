"""Parity of jaxinterp.attribution's CAM family with pytorch-grad-cam 1.5.7 on the same random weights.

torchvision ``vgg16`` and ``resnet50`` with random weights (the ResNet random
batch-norm statistics too) become our params through
:func:`jaxinterp.nets.from_state_dict` (:mod:`_torch_oracles`); both sides see
the same two dithered photographs at 48 px and two class targets per image,
in float64 (``jax.enable_x64`` on ours, ``model.double()`` on torch), the torch
model wrapped as ``Sequential(Normalize, model)`` so that both take [0, 1]
pixels (Score-CAM's masked pixels are black on both sides).

What is compared.  pytorch-grad-cam's output is ReLU -> min-max scaling of each
map -> cv2 bilinear resize, in float32.  Its raw map before that,
``get_cam_image`` at the layer's resolution, is recorded by wrapping the method
on the oracle object during its ordinary call, and compared with ours with
``relu=False, resize=False`` (no scaling on either side): max |ours - theirs|
/ max |theirs|, tolerance 1e-8.  The final output is compared too, with ours
ReLU'd, min-max scaled, resized (``ops.resize_bilinear``; cv2's bilinear
upsampling has the same half-pixel convention) and min-max scaled again, as the
oracle does, at 1e-5 (the oracle's float32 and its 1e-7 in the scaling).

The oracle rounds a few intermediate results to float32 whatever the model's
dtype (``np.float32`` of the projection in ``get_2d_projection`` and of the
scores in ``AblationCAM``); these conversions are made float64 for the test
(the module's ``np`` replaced by a proxy whose ``float32`` is float64), so the
1e-8 tolerance holds.  Score-CAM, forward passes only, runs in float32 on both
sides against 1e-4 (as RISE in test_attribution_parity.py).

The seven gradient methods share one forward and backward pass of the oracle
(``Bundle.shared_pass``), and the two target columns are stacked into one batch
(image n, target j at row j N + n), so that each oracle runs once per net.

Eigen-CAM's sign is LAPACK's arbitrary choice in the oracle, fixed in ours
(sum_k v_k >= 0, cam_family.py): those two are compared up to one sign per map,
and so are the maps with ``eigen_smooth=True`` (Grad-CAM and Layer-CAM on
resnet50).  ``aug_smooth=True`` (Grad-CAM on resnet50, six augmentations) is
compared with :func:`~jaxinterp.attribution.augmentation_smoothing`, whose
output is already min-max scaled as the oracle's: final maps only, at 1e-5.

Score-CAM and Ablation-CAM cost C forward passes per image.  On resnet50:
Ablation-CAM at ``layer4``, where the tail is the pooled linear head, the
oracle given that tail (see the test); Score-CAM at ``maxpool``, 64 channels,
128 passes of the net on our side, 256 on the oracle's, which repeats them for
each target.  On vgg16 every ablated channel costs a pass of the 120 M-weight
classifier and every Score-CAM channel a full pass, so both run on the first
image and its first target only: Ablation-CAM at ``features.29`` (512
channels, float64, the oracle given the tail after it), Score-CAM at
``features.4`` (64 channels, float32).

pytorch-grad-cam (MIT) is only called as an oracle; none of its code is part of jaxinterp.
"""

from __future__ import annotations

import functools
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")
gradcam = pytest.importorskip("pytorch_grad_cam")

import _torch_oracles as oracles  # noqa: E402
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402

from jaxinterp import attribution, nets, ops  # noqa: E402
from jaxinterp.data import images  # noqa: E402

pytestmark = [pytest.mark.parity]

TOL64 = 1e-8   # raw maps, float64 against float64
TOL_OUT = 1e-5  # the oracle's final float32 output
TOL32 = 1e-4   # float32 against float32 (Score-CAM, forward-only)
SIZE = 48
PHOTOS = ("chelsea", "coffee")
TARGETS = np.array([[281, 7], [967, 504]], np.int32)  # (N, T)
ARCHS = ("vgg16", "resnet50")
CAM_LAYER = {"vgg16": "features.29", "resnet50": "layer4"}
SCORE_LAYER = "maxpool"  # resnet50, (12, 12, 64) at 48 px
CHUNK = 16

# ours -> the oracle's class
GRADIENT_METHODS = {
    "grad_cam_plus_plus": "GradCAMPlusPlus",
    "xgrad_cam": "XGradCAM",
    "hires_cam": "HiResCAM",
    "grad_cam_elementwise": "GradCAMElementWise",
    "layer_cam": "LayerCAM",
    "eigen_cam": "EigenCAM",
    "eigen_grad_cam": "EigenGradCAM",
}
SIGNLESS = ("eigen_cam", "eigen_grad_cam")

ERRORS: dict[str, float] = {}


class _Float64Numpy(types.ModuleType):
    """NumPy with ``float32`` meaning float64: the oracle's roundings to float32 made float64."""

    float32 = staticmethod(np.float64)

    def __getattr__(self, name):
        return getattr(np, name)


def photos(seed: int = 0) -> np.ndarray:
    """The bundled photographs at SIZE px with a +-1/255 dither (as test_attribution_parity.py)."""
    x = images.batch(PHOTOS, SIZE)
    dither = np.random.default_rng(seed).uniform(-1.0, 1.0, x.shape).astype(np.float32) / 255.0
    return np.clip(x + dither, 0.0, 1.0)


def _recording(cam):
    """Wrap ``cam.get_cam_image`` so that its raw maps are appended to the returned list."""
    recorded, get_cam_image = [], cam.get_cam_image
    cam.get_cam_image = lambda *a, **k: recorded.append(get_cam_image(*a, **k)) or recorded[-1]
    return recorded


def _per_target(a: np.ndarray, t: int) -> np.ndarray:
    """Rows (T N, ...) with image n, target j at row j N + n -> (N, T, ...)."""
    return np.swapaxes(np.asarray(a, np.float64).reshape(t, -1, *a.shape[1:]), 0, 1)


class Bundle:
    def __init__(self, arch: str):
        self.arch = arch
        model = oracles.build(arch)
        self.models = {torch.float32: oracles.pixels_model(model),                  # [0, 1] pixels
                       torch.float64: oracles.pixels_model(model, torch.float64)}
        self.model = self.models[torch.float64]
        self.net = nets.get(arch)
        self.params = oracles.jax_params(arch, model)
        self.params_in = oracles.CastParams(self.params)   # params_in(dtype): converted once
        self.x = photos()

    def xt(self, dtype=torch.float64, targets=TARGETS) -> torch.Tensor:
        """The images repeated for each target column, (T N, 3, H, W): image n, target j at row j N + n."""
        x = oracles.to_torch(self.x.astype(np.float64 if dtype == torch.float64 else np.float32))
        return torch.cat([x] * targets.shape[1]).requires_grad_()   # the weights do not require grad

    def ours(self, methods: dict, dtype=np.float64, targets=TARGETS) -> dict:
        """{name: method(net, params, x, targets, **options)} in ONE jit-compiled call in ``dtype``
        (the first len(targets) images)."""
        def run(p, x, t):
            return {name: method(self.net, p, x, t, **options) for name, (method, options) in methods.items()}

        with jax.enable_x64(dtype == np.float64), jax.default_matmul_precision("highest"):
            out = jax.jit(run)(self.params_in(dtype), jnp.asarray(self.x[:len(targets)], dtype), jnp.asarray(targets))
            return {k: np.asarray(v) for k, v in out.items()}

    def activation(self, layer: str) -> torch.Tensor:
        """The torch model's float64 activations at ``layer`` for the rows of :meth:`xt`, (T N, C, h, w)."""
        seen = []
        handle = self.model[1].get_submodule(layer).register_forward_hook(lambda m, i, o: seen.append(o))
        with torch.no_grad():
            self.model(self.xt())
        handle.remove()
        return seen[0]

    def shared_pass(self, classes: dict, layer: str, eigen_smooth: bool = False) -> dict:
        """{name: (raw (N, T, h, w), final (N, T, H, W))} of several gradient CAM classes, one pass for all.

        The objects all hook ``layer``; ``BaseCAM.forward``'s forward pass and
        backward pass of the summed target scores run once, every object's hooks
        record them, and each object then runs its own ``compute_cam_per_layer``
        and ``aggregate_multi_layers`` (the rest of ``BaseCAM.forward``).
        """
        module = self.model[1].get_submodule(layer)
        cams = {name: cls(self.model, [module]) for name, cls in classes.items()}
        x = self.xt()
        targets = [ClassifierOutputTarget(int(c)) for c in TARGETS.T.reshape(-1)]
        outputs = self.model(x)
        sum(target(o) for target, o in zip(targets, outputs)).backward()
        result = {}
        for name, cam in cams.items():
            recorded = _recording(cam)
            out = cam.aggregate_multi_layers(cam.compute_cam_per_layer(x, targets, eigen_smooth))
            assert len(recorded) == 1
            result[name] = (_per_target(recorded[0], TARGETS.shape[1]), _per_target(out, TARGETS.shape[1]))
            cam.activations_and_grads.release()
        return result

    def oracle(self, cls, layer, targets=TARGETS, dtype=torch.float64, model=None, x=None, **attrs):
        """pytorch-grad-cam's raw ``get_cam_image`` maps (N, T, h, w) and final outputs, one call.

        ``layer`` is a name in the torchvision model or a module of ``model``
        (default the pixel model in ``dtype``), which takes ``x`` (default the
        images in ``dtype``, repeated for each target column).
        """
        model = self.models[dtype] if model is None else model
        layer = model[1].get_submodule(layer) if isinstance(layer, str) else layer
        cam = cls(model, [layer])
        for k, v in attrs.items():
            setattr(cam, k, v)
        recorded = _recording(cam)
        out = cam(input_tensor=self.xt(dtype, targets) if x is None else x,
                  targets=[ClassifierOutputTarget(int(c)) for c in targets.T.reshape(-1)])
        cam.activations_and_grads.release()
        assert len(recorded) == 1
        return _per_target(recorded[0], targets.shape[1]), _per_target(out, targets.shape[1])


@pytest.fixture(scope="module", params=ARCHS)
def zoo(request):
    return Bundle(request.param)


@pytest.fixture(scope="module", autouse=True)
def _report():
    yield
    oracles.report_errors(ERRORS, "CAM family parity (pytorch-grad-cam)", "cam_family_parity")


def _final(raw: np.ndarray, hw) -> np.ndarray:
    """pytorch-grad-cam's last steps on our raw maps: ReLU, min-max scaling, bilinear resize to ``hw``,
    min-max scaling again (``aggregate_multi_layers``; bilinear upsampling need not keep the extremes)."""
    def scale(m):
        m = m - m.min(axis=(-2, -1), keepdims=True)
        return m / (m.max(axis=(-2, -1), keepdims=True) + 1e-7)

    with jax.enable_x64(True):
        return scale(np.asarray(ops.resize_bilinear(jnp.asarray(scale(np.maximum(raw, 0.0))), hw)))


def check(name: str, arch: str, ours: np.ndarray, raw: np.ndarray, out: np.ndarray,
          signless: bool = False, tol: float = TOL64) -> None:
    """Record and assert the raw maps' error (<= tol) and the final outputs' (<= max(tol, TOL_OUT))."""
    if signless:   # one sign per map
        sign = np.sign(np.sum(ours * raw, axis=(-2, -1), keepdims=True))
        assert np.all(sign != 0)
        ours = ours * sign
    err = oracles.rel_err(ours, raw)
    err_out = oracles.rel_err(_final(ours, out.shape[-2:]), out)
    ERRORS[f"{name} [{arch}]"] = err
    ERRORS[f"{name} final output [{arch}]"] = err_out
    print(f"\n{name} [{arch}]: raw {err:.2e}, final output {err_out:.2e}")
    assert err <= tol, f"{name} [{arch}]: {err:.2e} > {tol:.0e}"
    tol_out = max(tol, TOL_OUT)
    assert err_out <= tol_out, f"{name} final output [{arch}]: {err_out:.2e} > {tol_out:.0e}"


def test_gradient_methods(zoo, monkeypatch):
    """The seven gradient / projection methods at the last convolutional block, one compiled call."""
    monkeypatch.setattr(gradcam.utils.svd_on_activations, "np", _Float64Numpy("numpy"))
    layer = CAM_LAYER[zoo.arch]
    ours = zoo.ours({name: (getattr(attribution, name), dict(layer=layer, relu=False, resize=False))
                     for name in GRADIENT_METHODS})
    theirs = zoo.shared_pass({name: getattr(gradcam, cls) for name, cls in GRADIENT_METHODS.items()}, layer)
    for name in GRADIENT_METHODS:
        raw, out = theirs[name]
        assert ours[name].shape == raw.shape == (2, 2, *zoo.net.activation_shape(layer, (SIZE, SIZE))[:2])
        check(name, zoo.arch, ours[name], raw, out, signless=name in SIGNLESS)
    # our Eigen-CAM sign: the map correlates positively with the total activation
    a = zoo.activation(layer).numpy()[:2].sum(1)
    e = ours["eigen_cam"][:, 0]
    assert np.all(np.sum((e - e.mean((1, 2), keepdims=True)) * (a - a.mean((1, 2), keepdims=True)),
                         axis=(1, 2)) > 0)
    np.testing.assert_array_equal(ours["eigen_cam"][:, 0], ours["eigen_cam"][:, 1])


@pytest.mark.parametrize("zoo", ["resnet50"], indirect=True)
def test_ablation_cam(zoo, monkeypatch):
    """Ablation-CAM at layer4, float64.

    AblationCAM reruns the whole model for every ablated channel (2 x 2 x 2048
    passes of resnet50): it is given the model's tail after layer4 instead, fed
    layer4's activation through an Identity as its target layer, so that only
    the tail runs; its final output is then at the layer's resolution.
    """
    monkeypatch.setattr(gradcam.ablation_cam, "np", _Float64Numpy("numpy"))
    layer = CAM_LAYER[zoo.arch]
    ours = zoo.ours({"ablation_cam": (attribution.ablation_cam,
                                      dict(layer=layer, relu=False, resize=False, chunk_size=256))})
    resnet = zoo.model[1]
    entry = torch.nn.Identity()
    tail = torch.nn.Sequential(entry, resnet.avgpool, torch.nn.Flatten(1), resnet.fc).eval()
    raw, out = zoo.oracle(gradcam.AblationCAM, entry, model=tail, x=zoo.activation(layer))
    check("ablation_cam", zoo.arch, ours["ablation_cam"], raw, out)


@pytest.mark.parametrize("zoo", ["resnet50"], indirect=True)
def test_score_cam(zoo):
    """Score-CAM at maxpool (64 channels), float32 on both sides against the 1e-4 target.

    Forward passes only, free of cancellation (as RISE in test_attribution_parity.py),
    so float32, where the 2 x 64 passes cost half of float64.  (The oracle runs its
    masked passes again for every target: 256 passes against our 128.)
    """
    ours = zoo.ours({"score_cam": (attribution.score_cam,
                                   dict(layer=SCORE_LAYER, relu=False, resize=False, chunk_size=CHUNK))},
                    dtype=np.float32)["score_cam"]
    assert ours.dtype == np.float32
    raw, out = zoo.oracle(gradcam.ScoreCAM, SCORE_LAYER, dtype=torch.float32, batch_size=CHUNK)
    check("score_cam", zoo.arch, ours, raw, out, tol=TOL32)


VGG_TARGETS = TARGETS[:1, :1]   # one image, one target: C passes of vgg16 per method and side


@pytest.mark.parametrize("zoo", ["vgg16"], indirect=True)
def test_vgg16_ablation_and_score_cam(zoo, monkeypatch):
    """Ablation-CAM at features.29 (512 channels, float64; the oracle runs the tail after it, as on
    resnet50) and Score-CAM at features.4 (64 channels, float32), on one image and one target."""
    monkeypatch.setattr(gradcam.ablation_cam, "np", _Float64Numpy("numpy"))
    layer = CAM_LAYER[zoo.arch]
    ours = zoo.ours({"ablation_cam": (attribution.ablation_cam, dict(layer=layer, relu=False, resize=False,
                                                                     chunk_size=128))}, targets=VGG_TARGETS)
    vgg = zoo.model[1]
    entry = torch.nn.Identity()
    tail = torch.nn.Sequential(entry, vgg.features[30], vgg.avgpool, torch.nn.Flatten(1), vgg.classifier).eval()
    raw, out = zoo.oracle(gradcam.AblationCAM, entry, targets=VGG_TARGETS, model=tail,
                          x=zoo.activation(layer)[:1])
    check("ablation_cam", zoo.arch, ours["ablation_cam"], raw, out)

    ours = zoo.ours({"score_cam": (attribution.score_cam, dict(layer="features.4", relu=False, resize=False,
                                                               chunk_size=CHUNK))},
                    dtype=np.float32, targets=VGG_TARGETS)["score_cam"]
    raw, out = zoo.oracle(gradcam.ScoreCAM, "features.4", targets=VGG_TARGETS, dtype=torch.float32,
                          x=zoo.xt(torch.float32, VGG_TARGETS)[:1], batch_size=CHUNK)
    check("score_cam", zoo.arch, ours, raw, out, tol=TOL32)


@pytest.mark.parametrize("zoo", ["resnet50"], indirect=True)
def test_eigen_smooth(zoo, monkeypatch):
    """eigen_smooth=True: Grad-CAM (the weighted activations' projection, BaseCAM) and Layer-CAM (its own
    get_cam_image) at layer4, float64, one shared oracle pass, up to one sign per map."""
    monkeypatch.setattr(gradcam.utils.svd_on_activations, "np", _Float64Numpy("numpy"))
    layer = CAM_LAYER[zoo.arch]
    names = {"grad_cam": "GradCAM", "layer_cam": "LayerCAM"}
    ours = zoo.ours({name: (getattr(attribution, name), dict(layer=layer, relu=False, resize=False,
                                                             eigen_smooth=True)) for name in names})
    theirs = zoo.shared_pass({name: getattr(gradcam, cls) for name, cls in names.items()}, layer,
                             eigen_smooth=True)
    for name in names:
        check(f"{name} eigen_smooth", zoo.arch, ours[name], *theirs[name], signless=True)


@pytest.mark.parametrize("zoo", ["resnet50"], indirect=True)
def test_aug_smooth(zoo):
    """Grad-CAM with aug_smooth=True (ttach's flip x (0.9, 1, 1.1)) against augmentation_smoothing,
    float64 on both sides; the oracle's output is float32 and scaled with its 1e-7: TOL_OUT."""
    layer = CAM_LAYER[zoo.arch]
    smooth = functools.partial(attribution.augmentation_smoothing, attribution.grad_cam)
    ours = zoo.ours({"aug": (smooth, dict(layer=layer))})["aug"]
    cam = gradcam.GradCAM(zoo.model, [zoo.model[1].get_submodule(layer)])
    out = cam(input_tensor=zoo.xt(), targets=[ClassifierOutputTarget(int(c)) for c in TARGETS.T.reshape(-1)],
              aug_smooth=True)
    cam.activations_and_grads.release()
    theirs = _per_target(out, TARGETS.shape[1])
    assert ours.shape == theirs.shape == (2, 2, SIZE, SIZE)
    err = oracles.rel_err(ours, theirs)
    ERRORS[f"grad_cam aug_smooth final output [{zoo.arch}]"] = err
    print(f"\ngrad_cam aug_smooth [{zoo.arch}]: final output {err:.2e}")
    assert err <= TOL_OUT, f"grad_cam aug_smooth [{zoo.arch}]: {err:.2e} > {TOL_OUT:.0e}"
