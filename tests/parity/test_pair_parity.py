"""Parity of guided IG, blur IG and XRAI with PAIR ``saliency`` 0.2.1 on a random-weights resnet50.

PAIR's ``saliency.core`` is framework-agnostic: its classes call back a
``call_model_function(x_batch, call_model_args, expected_keys)`` that returns
the gradient of the explained score.  Here that callback is our own resnet50
(:mod:`jaxinterp.nets`, random weights and batch-norm statistics drawn
with NumPy, float64 under ``jax.enable_x64``,
``jax.grad`` of the class logit), so both sides integrate the same gradients
and any difference is the methods'.  Our side runs under ``jax.jit`` in
float64 at the highest matmul precision; PAIR computes in float64 NumPy.

* Guided IG and blur IG: the same steps, per-channel maps compared.
* XRAI: PAIR segments the image itself (``segments=None``: its Felzenszwalb
  masks) and gets the same base attribution (PAIR's own guided IG map, per
  channel) as ours, which gets :func:`~jaxinterp.attribution.xrai_segments`;
  the final XRAI maps are compared, so the segmentation is checked too.

PAIR's guided IG calls ``np.quantile(..., interpolation='lower')``, a keyword
NumPy 2 removed; the oracle's module is given a NumPy whose ``quantile``
maps it to ``method='lower'`` (the same quantile), nothing else changes.

Error = max |ours - theirs| / max |theirs|; tolerance 1e-8 (float64 both
sides).  PAIR is Apache-2.0 and is only called as an oracle.
"""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

saliency_core = pytest.importorskip("saliency.core")
from saliency.core import guided_ig as pair_guided_ig  # noqa: E402

from jaxinterp import attribution, nets  # noqa: E402
from jaxinterp.data import images  # noqa: E402

pytestmark = pytest.mark.parity

TOL64 = 1e-8
SIZE = 32
PHOTOS = ("chelsea",)
TARGETS = np.array([[281]], np.int32)   # (N, T): one image, one target (PAIR explains one at a time)
STEPS = 10
ERRORS: dict[str, float] = {}


class _NumpyWithQuantileInterpolation:
    """NumPy, with ``quantile(..., interpolation=m)`` (removed in NumPy 2) as ``method=m``."""

    def __getattr__(self, name):
        return getattr(np, name)

    @staticmethod
    def quantile(a, q, interpolation="linear", **kwargs):
        return np.quantile(a, q, method=interpolation, **kwargs)


def random_params(net, seed: int = 0):
    """Float64 random params of the net's structure, drawn with NumPy (much cheaper than ``net.init``).

    He-normal kernels, batch norms with random statistics (running variances
    in [0.5, 1.5]) and affine parameters, N(0, 0.1^2) biases.
    """
    rng = np.random.default_rng(seed)

    def leaf(path, a):
        name = jax.tree_util.keystr(path[-1:])
        if "var" in name or "scale" in name:
            value = rng.uniform(0.5, 1.5, a.shape)
        elif "kernel" in name:
            value = rng.normal(size=a.shape) * np.sqrt(2.0 / np.prod(a.shape[:-1]))
        else:                                                     # biases and running means
            value = 0.1 * rng.normal(size=a.shape)
        return jnp.asarray(value, jnp.float64)

    return jax.tree_util.tree_map_with_path(leaf, net.abstract_params())


class Setup:
    """resnet50 with random weights in float64, the photos, and PAIR's callback on the same net."""

    def __init__(self):
        self.net = nets.get("resnet50")
        with jax.enable_x64(True):
            self.params = random_params(self.net)
        dither = np.random.default_rng(0).uniform(-1.0, 1.0, (len(PHOTOS), SIZE, SIZE, 3)) / 255.0
        self.x = np.clip(images.batch(PHOTOS, SIZE).astype(np.float64) + dither, 0.0, 1.0)

        def grads(xb, t):
            return jax.vmap(jax.grad(lambda a: self.net.apply(self.params, a[None])[0, t]))(xb)

        self._grads = jax.jit(grads)

    def callback(self, target: int):
        """PAIR's call_model_function: gradients of logit ``target`` for a batch of images."""
        def call_model_function(x_batch, call_model_args=None, expected_keys=None):
            with jax.enable_x64(True), jax.default_matmul_precision("highest"):
                g = self._grads(jnp.asarray(x_batch, jnp.float64), target)
            return {saliency_core.INPUT_OUTPUT_GRADIENTS: np.asarray(g)}
        return call_model_function

    def ours(self, method, **options) -> np.ndarray:
        """method(net, params, x, TARGETS, **options) under jit in float64; arrays in options are arguments."""
        arrays = {k: v for k, v in options.items() if isinstance(v, np.ndarray)}
        static = {k: v for k, v in options.items() if k not in arrays}
        fn = jax.jit(lambda p, x, t, arr: method(self.net, p, x, t, **arr, **static))
        with jax.enable_x64(True), jax.default_matmul_precision("highest"):
            out = fn(self.params, jnp.asarray(self.x), jnp.asarray(TARGETS), arrays)
            assert out.dtype == jnp.float64
            return np.asarray(out)

    def theirs(self, cls, **options) -> np.ndarray:
        """PAIR's map for each image and its target, stacked (N, T, ...)."""
        return np.stack([cls().GetMask(self.x[n], self.callback(int(TARGETS[n, 0])), **options)
                         for n in range(len(self.x))])[:, None]


@pytest.fixture(scope="module")
def pair():
    return Setup()


@pytest.fixture(scope="module", autouse=True)
def _report():
    yield
    print("\nPAIR saliency parity [resnet50, float64], max |ours - theirs| / max |theirs|:")
    for key, err in sorted(ERRORS.items()):
        print(f"  {key:40s} {err:.2e}")
    out = os.environ.get("JAXINTERP_PARITY_OUT")
    if out and ERRORS:
        os.makedirs(out, exist_ok=True)
        worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
        with open(os.path.join(out, f"pair_parity_{worker}.json"), "w") as f:
            json.dump(ERRORS, f, indent=1, sort_keys=True)


def check(name: str, ours, theirs, tol: float = TOL64) -> None:
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    assert ours.shape == theirs.shape, (ours.shape, theirs.shape)
    assert np.abs(theirs).max() > 0
    err = float(np.abs(ours - theirs).max() / np.abs(theirs).max())
    ERRORS[name] = err
    print(f"\n{name}: max rel. error {err:.2e}")
    assert err <= tol, f"{name}: {err:.2e} > {tol:.0e}"


@pytest.fixture(scope="module")
def pair_guided(pair):
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pair_guided_ig, "np", _NumpyWithQuantileInterpolation())
        return pair.theirs(saliency_core.GuidedIG, x_steps=STEPS, fraction=0.25, max_dist=0.02)


def test_guided_ig_pair(pair, pair_guided):
    """PAIR's defaults (fraction 0.25, max_dist 0.02, black baseline) with 10 steps."""
    ours = pair.ours(attribution.guided_ig, steps=STEPS, fraction=0.25, max_dist=0.02, reduce=None)
    check("guided_ig", ours, pair_guided)


def test_blur_ig_pair(pair):
    """PAIR's max_sigma 50 (kernels wider than the 32 px image) and grad_step 0.01, 10 steps."""
    theirs = pair.theirs(saliency_core.BlurIG, max_sigma=50, steps=STEPS, grad_step=0.01)
    check("blur_ig", pair.ours(attribution.blur_ig, max_sigma=50.0, steps=STEPS, reduce=None), theirs)


def test_xrai_pair(pair, pair_guided):
    """The same base attribution (PAIR's guided IG map); PAIR segments the image itself."""
    base = pair_guided[:, 0]
    theirs = np.stack([saliency_core.XRAI().GetMask(pair.x[n], pair.callback(int(TARGETS[n, 0])),
                                                    base_attribution=base[n]) for n in range(len(base))])
    ours = pair.ours(attribution.xrai, segments=attribution.xrai_segments(pair.x), attributions=base[:, None])
    check("xrai", ours, theirs[:, None])
