"""Bilinear resizing equals torch.nn.functional.interpolate(mode='bilinear', align_corners=False or True)."""

import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from jaxinterp import ops  # noqa: E402


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("shape, hw", [((7, 7), (224, 224)), ((14, 14), (64, 64)), ((5, 9), (17, 11)),
                                       ((28, 28), (7, 7)), ((1, 3), (4, 1))])
def test_resize_bilinear_matches_torch(shape, hw, align_corners):
    a = np.random.default_rng(0).normal(size=(2, 3, *shape)).astype(np.float32)
    ref = torch.nn.functional.interpolate(torch.from_numpy(a), size=hw, mode="bilinear",
                                          align_corners=align_corners).numpy()
    ours = ops.resize_bilinear(jnp.asarray(a), hw, align_corners=align_corners)
    np.testing.assert_allclose(np.asarray(ours), ref, rtol=1e-5, atol=1e-5)
