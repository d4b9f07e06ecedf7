"""Parity of jaxinterp.attribution with Captum 0.9 and TorchRay 1.0 on the same random weights.

torchvision ``vgg16`` and ``resnet50`` get random weights (the ResNet random
batch-norm statistics too); the same state dict becomes our params through
:func:`jaxinterp.nets.from_state_dict`.  Both sides see the same bundled
photographs (:mod:`jaxinterp.data.images`, 48 px, slightly dithered, two
images, two targets per image).  Our nets normalise inside, so the torch model
is wrapped as ``Sequential(Normalize(mean, std), model)`` and both sides take
[0, 1] pixels; exceptions are stated in the tests.  Our side runs under
``jax.jit`` at the highest matmul precision.

Error = max |ours - theirs| / max |theirs| over all images, targets, pixels
(and colour channels where the method keeps them).

Precision.  Methods that backpropagate to the pixels run in float64 on both
sides (``jax.enable_x64`` on ours, ``model.double()`` on torch), with a
tolerance of 1e-8.  In float32 the two implementations' activations differ by
~1e-7 relative, and with ~10^6 ReLUs and max-pool windows in a net on two
64 px images about one pre-activation or max-pool gap lies within that
rounding: its ReLU mask or pool switch flips, and the pixel gradient jumps by
up to 1e-2 of its peak in that unit's receptive field (measured at 64 px:
2.6e-2 on vgg16 from a max-pool near-tie of gap 1.5e-7 at features.9, and
9e-2 after dithering, from another near-tie at features.4).  That is the
discontinuity of the gradient of a piecewise-linear net, not a disagreement of
the methods; float64 moves the rounding to 1e-15, where such flips do not
happen, and the 1e-4 target of float32 forward passes becomes a much stronger
1e-8 (1e-6 where the oracle itself rounds to float32, stated in the test).
RISE, forward-only and free of cancellation, runs in float32 against float32
with the 1e-4 target.

Every measured error is printed (``pytest -s``) and, when
``$JAXINTERP_PARITY_OUT`` names a folder, written there as JSON.

Captum and TorchRay (CC-BY-NC) are only called as oracles; none of their code
is part of jaxinterp.
"""

from __future__ import annotations

import copy

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")
captum_attr = pytest.importorskip("captum.attr")

import _torch_oracles as oracles  # noqa: E402

from jaxinterp import attribution, nets  # noqa: E402
from jaxinterp.data import images  # noqa: E402

pytestmark = [pytest.mark.parity,
              pytest.mark.filterwarnings("ignore:Setting backward hooks on ReLU:UserWarning")]

TOL = 1e-4     # float32 against float32 (RISE, forward-only)
TOL64 = 1e-8   # float64 against float64 (see the module docstring)
SIZE = 48
PHOTOS = ("chelsea", "coffee")
TARGETS = np.array([[281, 7], [967, 504]], np.int32)  # (N, T): two targets per image
ARCHS = ("vgg16", "resnet50")
# Split point of Grad-CAM and the TorchRay methods: the last convolutional block.
CAM_LAYER = {"vgg16": "features.29", "resnet50": "layer4"}

ERRORS: dict[str, float] = {}


# --------------------------------------------------------------------------- harness


class Bundle:
    """One architecture on both sides: the torch models, our net and params, the images."""

    def __init__(self, arch: str):
        self.arch = arch
        self.model = oracles.build(arch)                   # float32, normalised NCHW input
        self.models = {torch.float32: self.model, torch.float64: copy.deepcopy(self.model).double()}
        self.net = nets.get(arch)
        self.params = oracles.jax_params(arch, self.model)
        self.params_in = oracles.CastParams(self.params)   # params_in(dtype): converted once
        self.x = photos()                                  # (N, H, W, 3) float32 in [0, 1]
        self.targets = TARGETS

    def torch_model(self, dtype=torch.float64, pixels: bool = True) -> torch.nn.Module:
        """The torch net in ``dtype``, on [0, 1] pixels (``pixels``) or on normalised input."""
        model = self.models[dtype]
        return oracles.pixels_model(model, dtype) if pixels else model

    def xt(self, dtype=torch.float64, normalise: bool = False) -> torch.Tensor:
        """The images as an NCHW torch tensor in ``dtype`` (normalised with ``normalise``)."""
        x = self.x.astype(np.float64 if dtype == torch.float64 else np.float32)
        return oracles.to_torch(x, normalise).requires_grad_()

    def ours(self, method, /, dtype=np.float64, arrays=None, **options) -> np.ndarray:
        """method(net, params, x, targets, **arrays, **options) under jit, in ``dtype``.

        ``arrays`` (noise, masks) are jit arguments, ``options`` static; the
        matmul precision is the highest.
        """
        fn = jax.jit(lambda p, x, t, arr: method(self.net, p, x, t, **arr, **options))
        with jax.enable_x64(dtype == np.float64), jax.default_matmul_precision("highest"):
            arrays = {k: jnp.asarray(v, dtype) for k, v in (arrays or {}).items()}
            out = fn(self.params_in(dtype), jnp.asarray(self.x, dtype), jnp.asarray(self.targets), arrays)
            assert out.dtype == dtype, out.dtype
            return np.asarray(out)

    def per_target(self, call, convert) -> np.ndarray:
        """Stack ``convert(call(target column j))`` over targets -> (N, T, ...)."""
        return np.stack([convert(call(torch.from_numpy(self.targets[:, j]).long()))
                         for j in range(self.targets.shape[1])], axis=1)


def photos(seed: int = 0) -> np.ndarray:
    """The bundled photographs at SIZE px with a +-1/255 dither, (N, H, W, 3) float32 in [0, 1].

    The 8-bit photographs have flat patches where a convolution gives
    bit-identical values at neighbouring positions in torch; a max-pool then
    ties exactly, torch routes the gradient to the first position and we, whose
    values may differ in the last bit, possibly to another.  The dither breaks
    these exact ties.
    """
    x = images.batch(PHOTOS, SIZE)
    dither = np.random.default_rng(seed).uniform(-1.0, 1.0, x.shape).astype(np.float32) / 255.0
    return np.clip(x + dither, 0.0, 1.0)


@pytest.fixture(scope="module", params=ARCHS)
def zoo(request):
    return Bundle(request.param)


@pytest.fixture(scope="module", autouse=True)
def _report():
    yield
    oracles.report_errors(ERRORS, "attribution parity", "attribution_parity")


rel_err = oracles.rel_err


def check(name: str, arch: str, ours, theirs, tol: float | None = None) -> float:
    """Record and assert max |ours - theirs| / max |theirs| <= tol (by default by the dtype of ``ours``)."""
    if tol is None:
        tol = TOL64 if np.asarray(ours).dtype == np.float64 else TOL
    err = rel_err(ours, theirs)
    ERRORS[f"{name} [{arch}]"] = err
    print(f"\n{name} [{arch}]: max rel. error {err:.2e}")
    assert err <= tol, f"{name} [{arch}]: {err:.2e} > {tol:.0e}"
    return err


# --------------------------------------------------------------------------- Captum: gradient family
#
# What a method adds to the net's gradient (the product with the input, the quadrature
# of IG, the noise of SmoothGrad) and occlusion / RISE, which only run the net forward,
# do not depend on the architecture: they are checked on vgg16 only.  The gradient
# itself, and the methods that change the backward pass (guided backprop, deconvnet,
# Grad-CAM, the TorchRay methods), are checked on both nets.

ON_VGG16_ONLY = pytest.mark.parametrize("zoo", ["vgg16"], indirect=True)


def test_saliency_captum(zoo):
    """Captum ``Saliency``: abs=False == our per-channel gradient (``reduce=None``), abs=True == its |.|,
    and our default map (max_c |g|, Simonyan et al.) == Captum's abs saliency maxed over channels."""
    sal = captum_attr.Saliency(zoo.torch_model())
    signed = zoo.per_target(lambda t: sal.attribute(zoo.xt(), target=t, abs=False), oracles.nhwc)
    absolute = zoo.per_target(lambda t: sal.attribute(zoo.xt(), target=t, abs=True), oracles.nhwc)
    ours = zoo.ours(attribution.gradient, reduce=None)
    check("saliency(abs=False)", zoo.arch, ours, signed)
    check("saliency(abs=True)", zoo.arch, np.abs(ours), absolute)
    check("saliency max_abs map", zoo.arch, zoo.ours(attribution.gradient), absolute.max(axis=-1))


@ON_VGG16_ONLY
def test_input_x_gradient_captum(zoo):
    ixg = captum_attr.InputXGradient(zoo.torch_model())
    theirs = zoo.per_target(lambda t: ixg.attribute(zoo.xt(), target=t), oracles.nhwc)
    check("input_x_gradient", zoo.arch, zoo.ours(attribution.input_x_gradient, reduce=None), theirs)


STEPS = 8


@ON_VGG16_ONLY
@pytest.mark.parametrize("method", ["riemann_trapezoid", "gausslegendre"])
def test_integrated_gradients_captum(zoo, method):
    """8 quadrature nodes, per-channel maps; a zero (black) baseline for Gauss-Legendre, a random one
    for the trapezoid rule.

    The trapezoid rule evaluates the gradient at the baseline itself, and a
    black image is constant: its convolutions tie exactly in every max-pool
    window, where torch and we route the gradient by rounding (1.6e-2 measured
    on vgg16).  Gauss-Legendre nodes are interior, so it keeps the black image;
    the trapezoid gets a random image as baseline (our array baseline).

    Captum's ``riemann_trapezoid`` weights are (1/2, 1, ..., 1, 1/2) / n, not
    / (n - 1) (captum/attr/_utils/approximation_methods.py): they sum to
    (n - 1) / n, so its map is (n - 1) / n times the trapezoid rule on
    linspace(0, 1, n), which is ours (completeness holds for ours, not for
    Captum's).  We compare with Captum's map times n / (n - 1).
    """
    if method == "riemann_trapezoid":
        base = np.random.default_rng(2).uniform(size=zoo.x.shape).astype(np.float32)
        ours_base, their_base = base, oracles.to_torch(base.astype(np.float64))
    else:
        ours_base, their_base = "zero", 0.0
    ig = captum_attr.IntegratedGradients(zoo.torch_model())
    theirs = zoo.per_target(
        lambda t: ig.attribute(zoo.xt(), baselines=their_base, target=t, n_steps=STEPS,
                               method=method), oracles.nhwc)
    if method == "riemann_trapezoid":
        theirs = theirs * STEPS / (STEPS - 1)
        ours = zoo.ours(attribution.integrated_gradients, arrays=dict(baseline=ours_base),
                        steps=STEPS, method=method, reduce=None)
    else:
        ours = zoo.ours(attribution.integrated_gradients, steps=STEPS, method=method,
                        baseline=ours_base, reduce=None)
    # Captum rounds its quadrature weights to float32 even for a float64 model
    # (integrated_gradients.py: ``torch.tensor(step_sizes).float()``; its trapezoid
    # nodes come from a float32 ``torch.linspace``): 3e-8 measured, hence 1e-6.
    check(f"integrated_gradients({method})", zoo.arch, ours, theirs, tol=1e-6)


def test_guided_backprop_captum(zoo):
    """Captum hooks ReLU *modules*: the ResNet gets distinct ReLUs per call (_torch_oracles.distinct_relus)."""
    gbp = captum_attr.GuidedBackprop(zoo.torch_model())
    theirs = zoo.per_target(lambda t: gbp.attribute(zoo.xt(), target=t), oracles.nhwc)
    check("guided_backprop", zoo.arch, zoo.ours(attribution.guided_backprop, reduce=None), theirs)


def test_deconvnet_captum(zoo):
    """Captum's ``Deconvolution``; ReLU modules made distinct in the ResNet as for guided backprop."""
    dec = captum_attr.Deconvolution(zoo.torch_model())
    theirs = zoo.per_target(lambda t: dec.attribute(zoo.xt(), target=t), oracles.nhwc)
    check("deconvnet", zoo.arch, zoo.ours(attribution.deconvnet, reduce=None), theirs)


SAMPLES, SIGMA = 2, 0.15  # two samples suffice to tell the three variants apart


@ON_VGG16_ONLY
@pytest.mark.parametrize("variant", ["smoothgrad", "smoothgrad_sq", "vargrad"])
def test_smoothgrad_captum(zoo, variant, monkeypatch):
    """``NoiseTunnel(Saliency(abs=False))`` with the same perturbations on both sides.

    Captum draws its noise in ``NoiseTunnel._add_noise_to_input`` as one
    ``torch.normal`` of shape (N * samples, C, H, W), sample s of image i at row
    i * samples + s (``repeat_interleave``).  We replace that static method by
    one adding a fixed NumPy draw e (samples, N, H, W, 3) in that layout, and pass
    the same e to ``smoothgrad(noise=e)``.  Saliency with ``abs=False`` (signed
    gradients), since our inner method is the signed :func:`gradient`; VarGrad of
    |g| and of g differ.
    """
    noise = (SIGMA * np.random.default_rng(1).standard_normal((SAMPLES, *zoo.x.shape))
             ).astype(np.float32)
    noise_nchw = torch.from_numpy(np.ascontiguousarray(
        noise.transpose(1, 0, 4, 2, 3).reshape(-1, 3, SIZE, SIZE)))

    def add_noise(inp, stdev, nt_samples_partition):
        assert nt_samples_partition == SAMPLES and stdev == SIGMA
        return inp.repeat_interleave(nt_samples_partition, dim=0) + noise_nchw

    monkeypatch.setattr(captum_attr.NoiseTunnel, "_add_noise_to_input", staticmethod(add_noise))
    nt = captum_attr.NoiseTunnel(captum_attr.Saliency(zoo.torch_model()))
    theirs = zoo.per_target(
        lambda t: nt.attribute(zoo.xt(), nt_type=variant, nt_samples=SAMPLES, stdevs=SIGMA,
                               target=t, abs=False), oracles.nhwc)
    ours = zoo.ours(attribution.smoothgrad, arrays=dict(noise=noise), variant=variant, reduce=None)
    check(f"smoothgrad({variant})", zoo.arch, ours, theirs)


# --------------------------------------------------------------------------- Captum: CAM family, occlusion, LRP


def test_layer_grad_cam_captum(zoo):
    """Captum ``LayerGradCam`` (no ReLU by default, layer resolution) == ``grad_cam(relu=False, resize=False)``."""
    model = zoo.torch_model()
    gc = captum_attr.LayerGradCam(model, model[1].get_submodule(CAM_LAYER[zoo.arch]))
    theirs = zoo.per_target(lambda t: gc.attribute(zoo.xt(), target=t), oracles.maps)
    ours = zoo.ours(attribution.grad_cam, layer=CAM_LAYER[zoo.arch], relu=False, resize=False)
    check("grad_cam(relu=False, resize=False) vs LayerGradCam", zoo.arch, ours, theirs)


def test_guided_grad_cam_captum(zoo):
    """Captum ``GuidedGradCam`` = guided backprop * upsampled ReLU Grad-CAM, per colour channel.

    Built here from ``guided_backprop(reduce=None)`` and ``grad_cam(relu=True,
    resize=True)``.  Captum upsamples with ``interpolate_mode='nearest'`` by
    default; our Grad-CAM resizes bilinearly (``align_corners=False``), so Captum
    is called with ``interpolate_mode='bilinear'`` (same ``F.interpolate``
    convention).
    """
    model = zoo.torch_model()
    ggc = captum_attr.GuidedGradCam(model, model[1].get_submodule(CAM_LAYER[zoo.arch]))
    theirs = zoo.per_target(
        lambda t: ggc.attribute(zoo.xt(), target=t, interpolate_mode="bilinear"), oracles.nhwc)
    gbp = zoo.ours(attribution.guided_backprop, reduce=None)
    cam = zoo.ours(attribution.grad_cam, layer=CAM_LAYER[zoo.arch], relu=True, resize=True)
    # jaxinterp.ops.resize_bilinear computes its interpolation weights in float32
    # whatever the dtype (source coordinates (i + 1/2) h / H - 1/2): exact when
    # h / H is a power of two (vgg16, 3 -> 48), 8e-8 for resnet50 (2 -> 48),
    # hence 1e-6 here.
    check("guided_backprop * grad_cam vs GuidedGradCam", zoo.arch, gbp * cam[..., None], theirs,
          tol=1e-6)


@ON_VGG16_ONLY
def test_occlusion_captum(zoo):
    """Captum ``Occlusion``, windows (3, 24, 24), strides (3, 16, 16), grey baseline 0.5.

    The stride does not divide 48 - 24, so the last windows overhang the border
    and are cut (Captum's ceil((H - w) / s) + 1 = 3 positions per axis).
    Captum's per-channel maps are equal across channels; we compare channel 0.
    The map is a difference of logits, so float32 loses digits to cancellation
    (4e-5 measured at 64 px against the 1e-4 target): float64 like the other methods.
    """
    occ = captum_attr.Occlusion(zoo.torch_model())
    theirs = zoo.per_target(
        lambda t: occ.attribute(zoo.xt(), sliding_window_shapes=(3, 24, 24), strides=(3, 16, 16),
                                baselines=0.5, target=t, perturbations_per_eval=16),
        lambda a: a.detach().numpy()[:, 0])
    ours = zoo.ours(attribution.occlusion, window=24, stride=16, baseline=0.5)
    # Captum divides overlapping windows' sums in float32 even for a float64 model
    # (feature_ablation.py: ``single_attrib.float() / weight``): 3e-8 measured, hence 1e-6.
    check("occlusion(window=24, stride=16, baseline=0.5)", zoo.arch, ours, theirs, tol=1e-6)


def _method(module: str, name: str):
    """``jaxinterp.attribution.<module>.<name>``; the test is skipped while the module does not exist."""
    return getattr(pytest.importorskip(f"jaxinterp.attribution.{module}"), name)


@pytest.mark.parametrize("zoo", ["vgg16"], indirect=True)
def test_lrp_epsilon_captum(zoo):
    """Captum ``LRP`` (epsilon rule, eps 1e-9, on every layer) on vgg16, per colour channel.

    Captum's LRP only knows torch layer types, so it gets the plain torchvision
    model on *normalised* input x_n; its attribution is the relevance of x_n.
    Our ``lrp`` defines the pixel map as the relevance of the normalised image
    (R = x_n * g_n, lrp.py), so the two are compared directly.  (A ResNet has
    residual sums Captum's LRP does not support: vgg16 only.)
    """
    model = copy.deepcopy(zoo.torch_model(pixels=False))  # Captum sets .rule on modules
    lrp = captum_attr.LRP(model)
    theirs = zoo.per_target(lambda t: lrp.attribute(zoo.xt(normalise=True), target=t), oracles.nhwc)
    ours = zoo.ours(_method("lrp", "lrp"), rule="epsilon", eps=1e-9, reduce=None)
    check("lrp(epsilon)", zoo.arch, ours, theirs)


# --------------------------------------------------------------------------- zennit: LRP rules
#
# zennit 0.5.1 (LGPL, an oracle only) on the plain torchvision vgg16 on normalised
# input, as Captum's LRP above.  Its rules map one to one onto ours: ``Gamma`` is the
# generalised gamma rule (rules.py), ``ZPlus`` alpha1-beta0, ``ZBox`` the zB rule with
# the bounds of the normalised [0, 1] pixels, ``Pass`` on the ReLUs, and ``Epsilon`` on
# the max-pools and the adaptive average pool: on a max-pool it gives the winner
# R z / (z + eps sign z), as ours.  The relevance starts at the target's logit.


def _zennit_lrp(zoo, conv, dense, first=None):
    """zennit's relevance of the normalised pixels (N, T, H, W, 3), float64, eps 1e-9, gamma 0.25."""
    zennit_rules = pytest.importorskip("zennit.rules")
    from zennit.attribution import Gradient
    from zennit.composites import SpecialFirstLayerMapComposite

    make = {"gamma": lambda: zennit_rules.Gamma(gamma=0.25, stabilizer=1e-9),
            "epsilon": lambda: zennit_rules.Epsilon(epsilon=1e-9),
            "alpha1beta0": lambda: zennit_rules.ZPlus(stabilizer=1e-9),
            "zB": lambda: zennit_rules.ZBox(low=torch.tensor(oracles.normalise(np.zeros((1, 1, 1, 3)))[0, 0, 0])
                                            .reshape(1, 3, 1, 1).double(),
                                            high=torch.tensor(oracles.normalise(np.ones((1, 1, 1, 3)))[0, 0, 0])
                                            .reshape(1, 3, 1, 1).double(), stabilizer=1e-9)}
    layer_map = [(torch.nn.ReLU, zennit_rules.Pass()), (torch.nn.Conv2d, make[conv]()),
                 (torch.nn.Linear, make[dense]()), (torch.nn.MaxPool2d, make["epsilon"]()),
                 (torch.nn.AdaptiveAvgPool2d, make["epsilon"]())]
    first_map = [(torch.nn.Conv2d, make[first or conv]())]
    composite = SpecialFirstLayerMapComposite(layer_map=layer_map, first_map=first_map)
    model = copy.deepcopy(zoo.torch_model(pixels=False))

    def one(t):
        with Gradient(model=model, composite=composite) as attributor:
            x = zoo.xt(normalise=True)
            _, relevance = attributor(x, lambda out: out * torch.nn.functional.one_hot(t, out.shape[1]))
        return oracles.nhwc(relevance)

    return zoo.per_target(one, lambda a: a)


@pytest.mark.parametrize("zoo", ["vgg16"], indirect=True)
@pytest.mark.parametrize("rule, composite", [
    ("gamma", ("gamma", "gamma")),                              # first conv on signed input, negative logits
    ("EPSILON_GAMMA_BOX", ("gamma", "epsilon", "zB")),
    ("EPSILON_PLUS", ("alpha1beta0", "epsilon")),
])
def test_lrp_zennit(zoo, rule, composite):
    """zennit's rules and composites against ``lrp`` on vgg16, per colour channel, float64.

    With ``rule='gamma'`` the first convolution applies the gamma rule to inputs of
    both signs, and the first image's target 281 has a negative logit (-0.02) on these
    random weights, so the rule's negative-output branch starts its relevance.  The
    plain (W + gamma W+) rule, which ``lrp`` applied before, is 6e2 away from zennit here.
    """
    ours = zoo.ours(_method("lrp", "lrp"), rule=getattr(attribution, rule, rule), eps=1e-9, gamma=0.25,
                    reduce=None)
    theirs = _zennit_lrp(zoo, *composite)
    check(f"lrp({rule}) zennit", zoo.arch, ours, theirs)


# --------------------------------------------------------------------------- TorchRay
#
# TorchRay 1.0.0.2 runs under torch 2.14: its patches of torch.nn.functional
# (excitation backprop) and its probes (forward hooks) still work.  It is given
# the plain torchvision model on *normalised* input, as TorchRay expects, and
# its layer names (our split points have the same names).

torchray_attr = pytest.importorskip("torchray.attribution")


def _torchray(fn, zoo, dtype=torch.float64, model=None, **kwargs):
    """TorchRay's single-channel maps (N, T, h, w) for our targets."""
    model = zoo.torch_model(dtype, pixels=False) if model is None else model
    return zoo.per_target(lambda t: fn(model, zoo.xt(dtype, normalise=True), t, **kwargs),
                          oracles.maps)


def test_grad_cam_torchray(zoo):
    """TorchRay ``grad_cam`` (ReLU, layer resolution) == ``grad_cam(relu=True, resize=False)``."""
    from torchray.attribution.grad_cam import grad_cam
    layer = CAM_LAYER[zoo.arch]
    theirs = _torchray(grad_cam, zoo, saliency_layer=layer)
    ours = zoo.ours(attribution.grad_cam, layer=layer, relu=True, resize=False)
    check("grad_cam(relu=True, resize=False) vs TorchRay", zoo.arch, ours, theirs)


def test_linear_approx_torchray(zoo):
    """TorchRay ``linear_approx`` (sum_c A * dA, layer resolution) == ``linear_approx(resize=False)``."""
    from torchray.attribution.linear_approx import linear_approx
    layer = CAM_LAYER[zoo.arch]
    theirs = _torchray(linear_approx, zoo, saliency_layer=layer)
    ours = zoo.ours(attribution.linear_approx, layer=layer, resize=False)
    check("linear_approx(resize=False) vs TorchRay", zoo.arch, ours, theirs)


# Excitation backprop: the saliency layer (TorchRay's benchmark uses a middle
# block), the contrast layer and the classifier of contrastive EBP.
EBP_LAYERS = {"vgg16": ("features.23", "features.30", "classifier.6"),
              "resnet50": ("layer3", "avgpool", "fc")}


def _ebp_model(zoo):
    """The float64 torch model for TorchRay's EBP; the ResNet with TorchRay's ``update_resnet``.

    Without ``update_resnet`` TorchRay's EBP passes the full probability through
    both summands of a residual sum (an ordinary gradient); with it the sum
    splits it in proportion, P_a = a / (a + b) P, as ours does (excitation.py)
    and as the EBP paper's probabilistic reading requires.
    """
    model = zoo.torch_model(pixels=False)
    if zoo.arch.startswith("resnet"):
        from torchray.attribution.excitation_backprop import update_resnet
        model = update_resnet(copy.deepcopy(model))
    return model


@pytest.mark.parametrize("at", ["layer", "pixels"])
def test_excitation_backprop_torchray(zoo, at):
    """TorchRay ``excitation_backprop`` (MWP summed over channels) at a middle layer and at the pixels.

    At the pixels TorchRay probes the model's input, the normalised image; our
    map is the MWP of the normalised image too (excitation.py).
    """
    from torchray.attribution.excitation_backprop import excitation_backprop
    layer = EBP_LAYERS[zoo.arch][0] if at == "layer" else None
    theirs = _torchray(excitation_backprop, zoo, model=_ebp_model(zoo), saliency_layer=layer or "")
    ours = zoo.ours(_method("excitation", "excitation_backprop"), layer=layer, resize=False)
    check(f"excitation_backprop(layer={layer})", zoo.arch, ours, theirs)


def test_contrastive_excitation_backprop_torchray(zoo):
    from torchray.attribution.excitation_backprop import contrastive_excitation_backprop
    layer, contrast, classifier = EBP_LAYERS[zoo.arch]
    theirs = _torchray(contrastive_excitation_backprop, zoo, model=_ebp_model(zoo),
                       saliency_layer=layer, contrast_layer=contrast, classifier_layer=classifier)
    ours = zoo.ours(_method("excitation", "contrastive_excitation_backprop"), layer=layer,
                    contrast_layer=contrast, classifier_layer=classifier, resize=False)
    check("contrastive_excitation_backprop", zoo.arch, ours, theirs)


RISE_MASKS = 32


@ON_VGG16_ONLY
def test_rise_torchray(zoo):
    """TorchRay ``rise`` with our masks (``filter_masks``), float32 on both sides.

    TorchRay's conventions (rise.py docstring): sigmoid of each logit, a 1 / M
    normaliser (ours is 1 / (M p): pass p=1.0), masks multiplied into the
    normalised input (masked pixels become the mean colour: baseline=MEAN).
    Forward-only and no cancellation, hence float32 and the 1e-4 target.
    """
    from torchray.attribution.rise import rise
    masks = np.asarray(attribution.rise_masks(jax.random.key(0), RISE_MASKS, (SIZE, SIZE)))
    model = zoo.torch_model(torch.float32, pixels=False)
    with torch.no_grad():
        full = rise(model, zoo.xt(torch.float32, normalise=True).detach(), num_masks=RISE_MASKS,
                    filter_masks=torch.from_numpy(masks[:, None].copy()), batch_size=16).numpy()
    theirs = np.take_along_axis(full, zoo.targets[:, :, None, None], axis=1)
    # masks are a jit argument: rise() range-checks concrete masks with jnp.min, which
    # fails on a concrete array closed over inside jit (reported to the lead).
    ours = zoo.ours(attribution.rise, dtype=np.float32, arrays=dict(masks=masks), p=1.0,
                    score="sigmoid", baseline=np.asarray(oracles.MEAN, np.float32), chunk_size=16)
    check("rise(sigmoid, p=1, baseline=mean) vs TorchRay", zoo.arch, ours, theirs)
