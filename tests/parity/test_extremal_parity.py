"""Extremal perturbations against TorchRay 1.0.0.2 (called as an oracle, never ported).

Components: the smooth mask generator, the blur and fade pyramids and applying
a mask, <= 1e-5.  Optimisation: torchvision vgg16 with random weights, the
bundled photograph at 48 px, TorchRay's defaults (blur, jitter) at area 0.16
(not 0.1: see AREA): the reward and area terms of the first 50 steps track
TorchRay's to <= 1e-3 (measured 8e-6; at area 0.1, 9.5e-4 on one machine and
above the bound on another), and so does the mask after them (4e-6).  Both sides run in float32 (TorchRay's blur
builds float32 kernels, so it cannot run in float64).  In float32 a
trajectory can agree to ~1e-5 for some steps and then drift once a near-tie
of the vecsort or a ReLU flips: at 64 px with areas 0.05 / 0.1 / 0.3, area
0.1 tracked to 1e-5 over all 50 steps while 0.3 drifted to 20% of the reward
by step 50, with identical first steps.  The full
800-step optimisation is too slow for CPU CI; run once (vgg16, the photograph
at 64 px, area 0.1, defaults) it gave masks with max |ours - TorchRay| =
9.5e-7 and IoU 1.0 of the masks thresholded at 0.5.

TorchRay perturbs the *normalised* image (zero padding, fade to zero); ours
perturbs the [0, 1] image with ``fill = net.mean``, the same operator: the
comparisons below map our pyramids through the normalisation.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
ep = pytest.importorskip("torchray.attribution.extremal_perturbation")

import _torch_oracles as oracles  # noqa: E402

from jaxinterp import nets  # noqa: E402
from jaxinterp.data import images  # noqa: E402
from jaxinterp.perturbation import (apply_pyramid, area_zeros, blur_pyramid, extremal, fade_pyramid,  # noqa: E402
                                    mask_geometry, smooth_mask)


pytestmark = pytest.mark.parity

SIZE = 48
TARGET = 281
STEPS = 50
# The area of the optimisation test.  TorchRay's default is 0.1, but at 48 px the initial mask (all
# parameters 1) has groups of exactly equal values, and at area 0.1 one of them straddles the area
# penalty's cut (the rank where the reference steps from 0 to 1): which of the tied values are pushed
# down then depends on how a sort orders exact ties, ours by index, TorchRay's by its rounding, so the
# trajectories part at step 0 by amounts that differ between machines.  At 0.16 the cut falls in a gap
# of 6e-6 between distinct values, which float rounding cannot reorder (checked below).
AREA = 0.16


@pytest.mark.parametrize("image_size", [(224, 224), (64, 48), (50, 61)])
def test_mask_generator_matches_torchray(image_size):
    generator = ep.MaskGenerator(image_size, 7, 21)
    geo = mask_geometry(image_size)
    assert tuple(generator.shape_out) == geo.full_shape
    p = np.random.default_rng(0).uniform(size=(2, 1, *geo.grid_shape)).astype(np.float32)
    pt = torch.from_numpy(p).requires_grad_(True)
    crop_t, full_t = generator.generate(pt)
    crop, full = smooth_mask(jnp.asarray(p[:, 0]), geo)
    np.testing.assert_allclose(full, full_t.detach().numpy()[:, 0], atol=1e-5)
    np.testing.assert_allclose(crop, crop_t.detach().numpy()[:, 0], atol=1e-5)
    # The gradient (written out in masks._smooth_max_of_products) against torch's autograd.
    w = np.random.default_rng(3).normal(size=full.shape).astype(np.float32)
    (full_t[:, 0] * torch.from_numpy(w)).sum().backward()
    g = jax.grad(lambda q: jnp.sum(smooth_mask(q, geo)[1] * w))(jnp.asarray(p[:, 0]))
    g_t = pt.grad.numpy()[:, 0]
    np.testing.assert_allclose(g, g_t, atol=1e-4 * np.abs(g_t).max())


@pytest.mark.parametrize("kind, pyramid", [("blur", blur_pyramid), ("fade", fade_pyramid)])
def test_pyramids_and_apply_match_torchray(kind, pyramid):
    x = np.random.default_rng(1).uniform(size=(1, 40, 52, 3)).astype(np.float32)
    theirs = ep.Perturbation(oracles.to_torch(x, normalise_=True), num_levels=8, max_blur=20, type=kind)
    ours = pyramid(jnp.asarray(x[0]), fill=oracles.MEAN)
    np.testing.assert_allclose(oracles.normalise(np.asarray(ours)), theirs.pyramid.numpy().transpose(0, 2, 3, 1),
                               atol=1e-5)
    m = np.random.default_rng(2).uniform(size=(3, 1, 40, 52)).astype(np.float32)
    m[0, 0, :5], m[0, 0, 5:10] = 1.0, 0.0
    applied = oracles.normalise(np.asarray(apply_pyramid(ours, jnp.asarray(m[:, 0]))))
    np.testing.assert_allclose(applied, oracles.nhwc(theirs.apply(torch.from_numpy(m))), atol=1e-5)


@pytest.fixture(scope="module")
def vgg16():
    model = oracles.build("vgg16")
    x = images.batch(("chelsea",), SIZE)
    return model, oracles.jax_params("vgg16", model), nets.get("vgg16"), x


def _torchray_run(model, x, variant):
    mask, hist = ep.extremal_perturbation(model, oracles.to_torch(x, True), TARGET, areas=[AREA],
                                          max_iter=STEPS, variant=variant)
    return mask.numpy()[0, 0], hist.numpy()[0]           # (H, W), (2, steps): reward, -area term


def test_the_initial_mask_has_no_tie_at_the_area_cut():
    """The precondition of the trajectory test: no exact tie of the initial mask across the area cut."""
    geo = mask_geometry((SIZE, SIZE))
    _, full = smooth_mask(jnp.ones((1, *geo.grid_shape), jnp.float32), geo)
    values = np.sort(np.asarray(full).ravel())
    cut = int(area_zeros(values.size, AREA))
    assert values[cut] - values[cut - 1] > 1e-6
    assert values[int(area_zeros(values.size, 0.1))] == values[int(area_zeros(values.size, 0.1)) - 1]  # why not 0.1


@pytest.mark.parametrize("variant", ["preserve"])   # delete / dual: closed forms in tests/perturbation
def test_first_50_steps_track_torchray(vgg16, variant):
    model, params, net, x = vgg16
    mask_t, hist_t = _torchray_run(model, x, variant)
    with jax.default_matmul_precision("highest"):
        # TorchRay returns the mask of its last step, i.e. after STEPS - 1 updates: ours with
        # STEPS - 1 steps gives that mask and the history of the first STEPS - 1 steps.
        mask, history = jax.jit(lambda p, x: extremal(net, p, x, jnp.array([TARGET]), areas=(AREA,),
                                                      steps=STEPS - 1, variant=variant))(params, jnp.asarray(x))
    history = np.asarray(history)[0, 0, 0]                     # (steps - 1, 2)
    reward, area = history[:, 0], history[:, 1]
    scale = np.abs(hist_t[0]).max()
    assert np.abs(reward - hist_t[0, :-1]).max() <= 1e-3 * scale
    np.testing.assert_allclose(area, -hist_t[1, :-1], rtol=1e-3)
    assert np.abs(np.asarray(mask)[0, 0, 0] - mask_t).max() <= 1e-3
    assert math.isfinite(scale)

