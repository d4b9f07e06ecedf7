"""Synthesis components against lucent (torch-lucent 0.1.8) and kornia 0.4.1, called as oracles.

* Fourier and pixel parameterisations with lucent's decorrelated colour and sigmoid: <= 1e-5.
* pad: lucent's ``pad(12, 'constant', 0.5)``, exactly.
* translations, rotations and scalings: kornia's ``translate`` and
  ``get_rotation_matrix2d`` + ``warp_affine`` with ``align_corners=True``
  (<= 1e-5).  lucent calls them with kornia's default ``align_corners=False``,
  which stretches every warp by W / (W - 1); the last test shows the stretch
  (see :mod:`jaxinterp.synthesis.transforms`).
* objectives: lucent's channel, neuron, direction, diversity, alignment and
  blur on the same activations (lucent's are losses: some signs flip).
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
kornia = pytest.importorskip("kornia")
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from lucent.optvis import objectives as lobj  # noqa: E402
    from lucent.optvis import transform as ltransform  # noqa: E402
    from lucent.optvis.param import images as limages  # noqa: E402

from jaxinterp.synthesis import objectives as O  # noqa: E402
from jaxinterp.synthesis import params as P  # noqa: E402
from jaxinterp.synthesis import transforms as T  # noqa: E402

pytestmark = pytest.mark.parity


def nhwc(t):
    return t.detach().numpy()[0].transpose(1, 2, 0)


@pytest.mark.parametrize("h, w", [(16, 16), (15, 17), (128, 128)])
@pytest.mark.parametrize("fft", [True, False])
def test_parameterisations_match_lucent(h, w, fft):
    torch.manual_seed(0)
    tensors, image_f = limages.image(w, h, sd=0.5, fft=fft, decorrelate=True)
    t = tensors[0].detach().numpy()[0]
    ours = (P.fourier((h, w)) if fft else P.pixel((h, w)))
    p = t.transpose(1, 2, 0, 3) if fft else t.transpose(1, 2, 0)      # (3, h, wf, 2) -> (h, wf, 3, 2)
    assert p.shape == jax.eval_shape(ours.init, jax.random.key(0)).shape
    np.testing.assert_allclose(np.asarray(ours.to_image(jnp.asarray(p))), nhwc(image_f()), atol=1e-5)


def test_pad_matches_lucent():
    x = torch.rand(1, 3, 10, 13)
    ours = T.pad(12, 0.5)(None, jnp.asarray(nhwc(x)))
    np.testing.assert_array_equal(np.asarray(ours), nhwc(ltransform.pad(12, mode="constant", constant_value=0.5)(x)))


@pytest.mark.parametrize("angle, scale", [(7.0, 1.0), (-10.0, 1.0), (3.0, 1.08), (0.0, 0.9)])
def test_rotation_and_scale_match_kornia(angle, scale):
    x = torch.rand(1, 3, 21, 18)
    centre = torch.tensor([[(18 - 1) / 2, (21 - 1) / 2]])
    m = kornia.get_rotation_matrix2d(centre, torch.tensor([angle]), torch.ones(1, 2) * scale)
    ref = kornia.warp_affine(x, m, dsize=(21, 18), align_corners=True)
    np.testing.assert_allclose(np.asarray(T.affine(jnp.asarray(nhwc(x)), angle, scale)), nhwc(ref), atol=1e-5)


@pytest.mark.parametrize("dy, dx", [(0, 0), (5, 3), (7, 1)])
def test_translation_matches_kornia(dy, dx):
    from kornia.geometry.transform import translate
    x = torch.rand(1, 3, 16, 20)
    ref = translate(x, torch.tensor([[float(dx), float(dy)]]), align_corners=True)
    np.testing.assert_allclose(np.asarray(T._shift(jnp.asarray(nhwc(x)), dy, dx, 0.0)), nhwc(ref), atol=1e-5)


def test_lucent_warps_are_stretched_by_w_over_w_minus_1():
    """lucent's jitter(d) (kornia default align_corners=False) shifts by d W / (W - 1), not d."""
    w = 9
    x = torch.zeros(1, 1, 5, w)
    x[..., 2] = 1.0
    from kornia.geometry.transform import translate
    out = translate(x, torch.tensor([[2.0, 0.0]])).numpy()[0, 0, 2]      # what lucent's jitter does
    centre = float(np.sum(out * np.arange(w)) / np.sum(out))
    assert centre == pytest.approx(2 + 2 * w / (w - 1), abs=1e-4)        # 4.25, not 4
    ours = np.asarray(T._shift(jnp.asarray(x.numpy()[0].transpose(1, 2, 0)), 0, 2, 0.0))[2, :, 0]
    assert np.argmax(ours) == 4 and ours.max() == 1.0


@pytest.fixture
def acts():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4, 6, 6, 5)).astype(np.float32)
    x = rng.random((4, 8, 8, 3)).astype(np.float32)
    t = {"l": torch.tensor(a.transpose(0, 3, 1, 2)), "input": torch.tensor(x.transpose(0, 3, 1, 2))}
    return {"l": jnp.asarray(a)}, jnp.asarray(x), (lambda name: t[name])


def test_objectives_match_lucent(acts):
    a, x, model = acts
    close = lambda ours, theirs: np.testing.assert_allclose(float(ours(a, x)), float(theirs(model)),  # noqa: E731
                                                            rtol=1e-5, atol=1e-6)
    close(O.channel("l", 2), -1 * lobj.channel("l", 2))
    close(O.neuron("l", 3), -1 * lobj.neuron("l", 3))                         # centre of a square map
    close(O.neuron("l", 1, y=4, x=1), -1 * lobj.neuron("l", 1, x=1, y=4))
    v = np.arange(5.0, dtype=np.float32) - 1
    close(O.direction("l", v), -1 * lobj.direction("l", torch.tensor(v)))
    close(O.diversity("l"), lobj.diversity("l"))                             # the same number (see objectives)
    close(O.alignment("l"), lobj.alignment("l"))
    close(4 * O.blur(), -1 * lobj.blur_input_each_step())      # lucent sums over the batch; ours averages
