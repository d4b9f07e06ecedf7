"""Parity with Captum 0.9 of the feature-mask methods: FeatureAblation, ShapleyValueSampling, KernelShap, Lime.

torchvision ``vgg16`` with random weights on both sides (the same state
dict), float64 (``model.double()`` and ``jax.enable_x64``), the two bundled
photographs at 32 px (dithered as in test_attribution_parity.py), one target
per image (several targets per image are lifted by vmap, as in every method:
tests/attribution/test_features.py), a grey baseline 0.5 and 9 features per image (a 3 x 3 grid; the
second image's grid is offset).  Captum gets the segments as ``feature_mask``
(N, 1, H, W), broadcast over the colour channels, and the same random draws as
ours: the permutations replace ``ShapleyValueSampling.permutation_generator``,
and the coalitions are yielded by a ``perturb_func`` generator for ``Lime`` and
``KernelShap`` (which Captum calls per image).  Captum's maps are equal across
channels; we compare channel 0.

Error = max |ours - theirs| / max |theirs| over images, targets and pixels.
Captum rounds to float32 even for a float64 model: ShapleyValueSampling
accumulates its attributions in float32, and Lime /
KernelShap convert the coalitions, scores and weights to float32 before
fitting (lime.py: ``.float()``), then fit with scikit-learn in float32; our
fit is in float64.  The tolerances follow from that (stated per test).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")
captum_attr = pytest.importorskip("captum.attr")
linear_model = pytest.importorskip("captum._utils.models.linear_model")

import _torch_oracles as oracles  # noqa: E402

from jaxinterp import attribution, nets  # noqa: E402
from jaxinterp.data import images  # noqa: E402

pytestmark = [pytest.mark.parity]

ARCH = "vgg16"
SIZE = 32
GRID = 3
F = GRID * GRID
PHOTOS = ("chelsea", "coffee")
TARGETS = np.array([[281], [967]], np.int32)
BASELINE = 0.5
ERRORS: dict[str, float] = {}


def _segments() -> np.ndarray:
    """(2, SIZE, SIZE) int ids 0..8: a 3 x 3 grid, and the same grid shifted by 5 px for the second image."""
    cells = lambda shift: np.minimum((np.arange(SIZE) + shift) * GRID // SIZE, GRID - 1)  # noqa: E731
    return np.stack([cells(s)[:, None] * GRID + cells(s)[None, :] for s in (0, 5)]).astype(np.int64)


class Setup:
    """vgg16 on both sides, the images, the segments and the shared random draws."""

    def __init__(self):
        model = oracles.build(ARCH)
        self.net, self.params = nets.get(ARCH), oracles.jax_params(ARCH, model)
        self.model = oracles.pixels_model(model, torch.float64)
        x = images.batch(PHOTOS, SIZE)
        dither = np.random.default_rng(0).uniform(-1.0, 1.0, x.shape).astype(np.float32) / 255.0
        self.x = np.clip(x + dither, 0.0, 1.0).astype(np.float64)
        self.segments = _segments()
        rng = np.random.default_rng(1)
        self.permutations = np.stack([rng.permutation(F) for _ in range(2)])
        self.samples = np.concatenate([np.ones((1, F), int), np.zeros((1, F), int),
                                       rng.integers(0, 2, (14, F))])

    def ours(self, method, /, **options) -> np.ndarray:
        """method(net, params, x, targets, segments=..., baseline=0.5, **options) under jit in float64."""
        fn = jax.jit(lambda p, x, t, seg: method(self.net, p, x, t, segments=seg, num_features=F,
                                                 baseline=BASELINE, **options))
        with jax.enable_x64(True), jax.default_matmul_precision("highest"):
            params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), self.params)
            out = fn(params, jnp.asarray(self.x), jnp.asarray(TARGETS), jnp.asarray(self.segments))
            return np.asarray(out)

    def xt(self, rows=slice(None)) -> torch.Tensor:
        return oracles.to_torch(self.x[rows])

    def mask(self, rows=slice(None)) -> torch.Tensor:
        return torch.from_numpy(self.segments[rows][:, None])

    def per_target(self, call) -> np.ndarray:
        """(N, T, H, W) from ``call(target column j)`` -> Captum's (N, 3, H, W), channel 0."""
        return np.stack([call(torch.from_numpy(TARGETS[:, j]).long()).detach().numpy()[:, 0]
                         for j in range(TARGETS.shape[1])], axis=1)

    def per_image_target(self, call) -> np.ndarray:
        """(N, T, H, W) from ``call(image n, target)`` -> Captum's (1, 3, H, W), channel 0."""
        return np.stack([np.stack([call(n, int(t)).detach().numpy()[0, 0] for t in TARGETS[n]])
                         for n in range(len(TARGETS))])

    def coalition_generator(self):
        """A ``perturb_func`` for Captum's Lime / KernelShap yielding our coalitions (1, F) in order."""
        samples = self.samples

        def generate(original_inp, **kwargs):
            for z in samples:
                yield torch.from_numpy(z[None]).long()

        return generate


@pytest.fixture(scope="module")
def setup():
    return Setup()


@pytest.fixture(scope="module", autouse=True)
def _report():
    yield
    oracles.report_errors(ERRORS, "feature-mask attribution parity", "captum_features_parity")


def check(name: str, ours, theirs, tol: float) -> None:
    err = oracles.rel_err(ours, theirs)
    ERRORS[f"{name} [{ARCH}]"] = err
    print(f"\n{name} [{ARCH}]: max rel. error {err:.2e}")
    assert err <= tol, f"{name} [{ARCH}]: {err:.2e} > {tol:.0e}"


def test_feature_ablation_captum(setup):
    """Captum ``FeatureAblation``: float64 throughout with a feature mask (7e-14 measured), hence 1e-8."""
    fa = captum_attr.FeatureAblation(setup.model)
    theirs = setup.per_target(lambda t: fa.attribute(setup.xt(), baselines=BASELINE, target=t,
                                                     feature_mask=setup.mask(), perturbations_per_eval=F))
    check("feature_ablation(3x3 grid, baseline=0.5)", setup.ours(attribution.feature_ablation), theirs, 1e-8)


def test_shapley_sampling_captum(setup):
    """Captum ``ShapleyValueSampling`` with our two permutations (it accumulates in float32: 2e-8
    measured, hence 1e-6)."""
    svs = captum_attr.ShapleyValueSampling(setup.model)
    svs.permutation_generator = lambda num_features, n_samples: iter(setup.permutations.tolist())
    theirs = setup.per_target(lambda t: svs.attribute(setup.xt(), baselines=BASELINE, target=t,
                                                      feature_mask=setup.mask(), n_samples=2,
                                                      perturbations_per_eval=F))
    ours = setup.ours(attribution.shapley_sampling, permutations=jnp.asarray(setup.permutations))
    check("shapley_sampling(2 permutations)", ours, theirs, 1e-6)


def test_kernel_shap_captum(setup):
    """Captum ``KernelShap`` on our 16 coalitions (the full and empty ones first, as Captum draws them).

    Its float32 fit, with the full and empty coalitions weighing 1e6, rounds
    more: 1.4e-6 measured, hence 1e-5.
    """
    ks = captum_attr.KernelShap(setup.model)
    ks.perturb_func = setup.coalition_generator()
    theirs = setup.per_image_target(lambda n, t: ks.attribute(
        setup.xt(slice(n, n + 1)), baselines=BASELINE, target=t, feature_mask=setup.mask(slice(n, n + 1)),
        n_samples=len(setup.samples), perturbations_per_eval=len(setup.samples)))
    ours = setup.ours(attribution.kernel_shap, samples=jnp.asarray(setup.samples))
    check("kernel_shap(16 coalitions)", ours, theirs, 1e-5)


def test_lime_captum(setup):
    """Captum ``Lime`` (cosine kernel, width 1) with ``SkLearnRidge(alpha=1)``, our default interpretable
    model (Captum's default is a Lasso; see :func:`jaxinterp.attribution.lime`), on our 16 coalitions.
    The float32 fit rounds: 1e-7 measured, hence 1e-5 (alpha = 0, ``SkLearnLinearRegression``, is the
    Kernel SHAP test's fit)."""
    lime = captum_attr.Lime(setup.model, interpretable_model=linear_model.SkLearnRidge(alpha=1.0),
                            perturb_func=setup.coalition_generator())
    theirs = setup.per_image_target(lambda n, t: lime.attribute(
        setup.xt(slice(n, n + 1)), baselines=BASELINE, target=t, feature_mask=setup.mask(slice(n, n + 1)),
        n_samples=len(setup.samples), perturbations_per_eval=len(setup.samples)))
    ours = setup.ours(attribution.lime, samples=jnp.asarray(setup.samples), alpha=1.0)
    check("lime(ridge alpha=1, 16 coalitions)", ours, theirs, 1e-5)
