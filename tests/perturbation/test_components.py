"""Extremal-perturbation components against float64 NumPy brute force written from the paper's definitions.

(TorchRay 1.0.0.2 as an oracle for the same components: tests/parity/test_extremal_parity.py.)
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinterp.perturbation import (apply_pyramid, area_penalty, area_reference, blur_pyramid, fade_pyramid,
                                    mask_geometry, smooth_mask, vecsort_penalty)
from jaxinterp.perturbation.extremal import sgd_dampened


def brute_force_mask(p, image_size, step, sigma, coldness):
    """The full and cropped smooth mask of cells p (gh, gw), pixel by pixel, float64.

    Cell (i, j) of the zero-padded grid is centred at image coordinates (step i, step j);
    full-mask pixel u sits at image coordinate u - margin and looks at the
    (2r + 1)^2 cells whose index is floor(u / step) + k - padding, k = 0..2r.
    """
    geo = mask_geometry(image_size, step, sigma)
    margin, r, pad = geo.margin, geo.radius, geo.padding
    gh, gw = p.shape
    fh, fw = geo.full_shape
    full = np.zeros((fh, fw))
    for uy in range(fh):
        for ux in range(fw):
            values = []
            for ky in range(2 * r + 1):
                for kx in range(2 * r + 1):
                    i, j = uy // step + ky - pad, ux // step + kx - pad
                    cell = p[i, j] if 0 <= i < gh and 0 <= j < gw else 0.0
                    d = math.hypot(uy - margin - step * i, ux - margin - step * j)
                    values.append(math.exp(-2 * max(d / sigma - 0.5, 0.0) ** 2) * cell)
            v = np.array(values)
            if math.isinf(coldness):
                full[uy, ux] = v.max()
            else:
                e = np.exp(coldness * (v - v.max()))
                full[uy, ux] = np.sum(v * e / e.sum())
    full = np.clip(full, 0, 1)
    h, w = image_size
    return full[margin:margin + h, margin:margin + w], full


@pytest.mark.parametrize("image_size, step, sigma, coldness", [
    ((24, 24), 7, 21.0, 20.0),      # the paper's kernel on a small image
    ((13, 19), 4, 6.0, 20.0),       # odd sizes, a grid that does not divide the image
    ((16, 12), 3, 5.0, math.inf),   # hard max
])
def test_smooth_mask_matches_brute_force(image_size, step, sigma, coldness):
    geo = mask_geometry(image_size, step, sigma)
    p = np.random.default_rng(0).uniform(size=geo.grid_shape)
    mask, full = jax.jit(smooth_mask, static_argnums=(1, 2))(jnp.asarray(p, jnp.float32), geo, coldness)
    want_mask, want_full = brute_force_mask(p, image_size, step, sigma, coldness)
    assert full.shape == want_full.shape and mask.shape == image_size
    np.testing.assert_allclose(full, want_full, atol=2e-6)
    np.testing.assert_allclose(mask, want_mask, atol=2e-6)


def test_mask_geometry_of_the_paper():
    geo = mask_geometry((224, 224))
    assert (geo.grid_shape, geo.radius, geo.padding, geo.margin, geo.full_shape) == \
        ((32, 32), 4, 7, 21, (260, 260))


def test_smooth_mask_is_one_inside_a_blob_and_zero_far_away():
    geo = mask_geometry((64, 64))
    p = np.zeros(geo.grid_shape, np.float32)
    p[0:3, 0:3] = 1.0                        # cells centred at pixels 0, 7, 14
    mask, _ = smooth_mask(jnp.asarray(p), geo, math.inf)
    assert float(mask[7, 7]) == pytest.approx(1.0)      # within sigma / 2 of a cell: weight 1
    assert float(mask[63, 63]) < 1e-5                   # 69 px from the nearest cell: exp(-2 (69/21 - 1/2)^2)


def test_smooth_mask_rejects_a_wrong_grid():
    geo = mask_geometry((32, 32))
    with pytest.raises(ValueError, match=r"^p: expected trailing shape \(5, 5\)"):
        smooth_mask(jnp.ones((4, 4)), geo)
    with pytest.raises(ValueError, match=r"^image_size"):
        mask_geometry((0, 3))
    with pytest.raises(ValueError, match=r"^step"):
        mask_geometry((8, 8), step=0)
    with pytest.raises(ValueError, match=r"^sigma"):
        mask_geometry((8, 8), sigma=-1.0)


def numpy_blur(x, sigma, fill):
    """Separable Gaussian, radius ceil(4 sigma), constant padding ``fill``, float64."""
    r = math.ceil(4 * sigma)
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k /= k.sum()
    h, w, _ = x.shape
    xp = np.pad(x - fill, ((r, r), (r, r), (0, 0)))
    rows = np.stack([np.tensordot(k, xp[i:i + 2 * r + 1], axes=(0, 0)) for i in range(h)])
    cols = np.stack([np.tensordot(k, rows[:, j:j + 2 * r + 1], axes=(0, 1)) for j in range(w)], 1)
    return cols + fill


def test_blur_pyramid_levels_match_numpy():
    x = np.random.default_rng(1).uniform(size=(20, 17, 3))
    fill = np.array([0.485, 0.456, 0.406])
    pyr = np.asarray(blur_pyramid(jnp.asarray(x, jnp.float32), levels=8, max_sigma=20.0, fill=fill))
    assert pyr.shape == (8, 20, 17, 3)
    for level in range(7):
        sigma = (1 - level / 7) * 20
        np.testing.assert_allclose(pyr[level], numpy_blur(x, sigma, fill), atol=2e-6)
    np.testing.assert_allclose(pyr[7], x, atol=1e-7)


def test_apply_pyramid_interpolates_levels_and_fade_is_exact():
    rng = np.random.default_rng(2)
    pyr = rng.uniform(size=(8, 6, 5, 3))
    m = rng.uniform(size=(2, 6, 5))
    m[0, 0] = 1.0
    m[0, 1] = 0.0
    m[0, 2, :3] = [1 / 7, 2 / 7, 6 / 7]
    want = np.zeros((2, 6, 5, 3))
    for b, i, j in np.ndindex(2, 6, 5):
        w = m[b, i, j] * 7
        k = min(int(np.floor(w)), 6)
        want[b, i, j] = (1 - (w - k)) * pyr[k, i, j] + (w - k) * pyr[k + 1, i, j]
    got = apply_pyramid(jnp.asarray(pyr, jnp.float32), jnp.asarray(m, jnp.float32))
    np.testing.assert_allclose(got, want, atol=1e-6)
    x = rng.uniform(size=(6, 5, 3))
    fill = np.array([0.2, 0.5, 0.7])
    faded = apply_pyramid(fade_pyramid(jnp.asarray(x, jnp.float32), fill=fill), jnp.asarray(m, jnp.float32))
    np.testing.assert_allclose(faded, fill + m[..., None] * (x - fill), atol=1e-6)


def test_vecsort_penalty_and_reference():
    ref = np.asarray(area_reference(10, 0.3))
    np.testing.assert_array_equal(ref, [0] * 7 + [1] * 3)
    # float64 count: 0.1 of 67600 pixels is 6760 ones (float32 arithmetic gives 6761).
    assert int(area_reference(67600, 0.1).sum()) == 6760
    rng = np.random.default_rng(3)
    binary = np.zeros((8, 8))
    binary.flat[rng.permutation(64)[:16]] = 1.0
    assert float(vecsort_penalty(jnp.asarray(binary), area_reference(64, 0.25))) == 0.0
    m = rng.uniform(size=(3, 8, 8))
    ref = area_reference(64, 0.25)
    want = np.mean((np.sort(m.reshape(3, -1), axis=1) - np.asarray(ref)) ** 2, axis=1)
    np.testing.assert_allclose(vecsort_penalty(jnp.asarray(m), ref), want, rtol=1e-6)
    # The gradient of a sort is the inverse permutation: 2 (sort(m) - r) / n sent back to each value.
    g = jax.grad(lambda a: vecsort_penalty(a, ref))(jnp.asarray(m[0], jnp.float32))
    order = np.argsort(m[0].reshape(-1))
    want_g = np.zeros(64)
    want_g[order] = 2 * (np.sort(m[0].reshape(-1)) - np.asarray(ref)) / 64
    np.testing.assert_allclose(np.asarray(g).reshape(-1), want_g, atol=1e-7)


def test_sgd_dampened_is_torchs_recurrence():
    rng = np.random.default_rng(4)
    grads = rng.normal(size=(5, 3))
    p, buf = np.zeros(3), np.zeros(3)
    ours_p, ours_buf = jnp.zeros(3), jnp.zeros(3)
    for t, g in enumerate(grads):
        buf = g if t == 0 else 0.9 * buf + 0.1 * g     # torch.optim.SGD(momentum=0.9, dampening=0.9)
        p = p - 0.01 * buf
        ours_p, ours_buf = sgd_dampened(ours_p, jnp.asarray(g, jnp.float32), ours_buf, t,
                                        lr=0.01, momentum=0.9, dampening=0.9)
    np.testing.assert_allclose(ours_p, p, rtol=1e-5)


def _sorted_targets(flat: np.ndarray, zeros: int, ties: str) -> np.ndarray:
    """NumPy reference of the targets: the places of a sort (0 below ``zeros``), ties ordered by ``ties``.

    'index': a stable sort; 'average': each tie group shares its places' targets.
    """
    order = np.argsort(flat, kind="stable")
    t = np.zeros(flat.size)
    t[order] = (np.arange(flat.size) >= zeros).astype(float)
    if ties == "average":
        for value in np.unique(flat):
            t[flat == value] = t[flat == value].mean()
    return t


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_area_penalty_is_the_vecsort_penalty_without_a_sort(dtype):
    """Value: the sort-based definition; gradient: 2 (m - t) / n, ties by index or shared equally."""
    rng = np.random.default_rng(6)
    m = rng.uniform(size=(3, 4, 50))
    m[0, :, :20] = 1.0                                     # 20 tied ones straddling every cut
    m[1, :, ::3] = 0.25                                    # a tie group inside
    m[2, 1] = -m[2, 1]                                     # negative values and -0.0 order too
    m[2, 1, :5] = -0.0
    m[2, 1, 5:10] = 0.0
    zeros = np.array([0, 17, 33, 49])                      # per area (broadcast over the first axis)
    with jax.enable_x64(dtype == jnp.float64):
        mj = jnp.asarray(m, dtype)
        ref = (np.arange(50)[None] >= zeros[:, None]).astype(float)
        want = np.mean((np.sort(m, axis=-1) - ref) ** 2, axis=-1)
        got = area_penalty(mj, zeros)
        np.testing.assert_allclose(got, want, rtol=1e-6 if dtype == jnp.float32 else 1e-13)
        np.testing.assert_allclose(got, vecsort_penalty(mj[..., None], jnp.asarray(ref, dtype)), rtol=1e-6)
        for ties in ("average", "index"):
            np.testing.assert_allclose(area_penalty(mj, zeros, ties=ties), want, rtol=1e-6)
            g = np.asarray(jax.grad(lambda a: area_penalty(a, zeros, ties=ties).sum())(mj))
            for i, k in np.ndindex(3, 4):
                flat = np.asarray(mj[i, k], np.float64)
                t = _sorted_targets(flat, zeros[k], ties)
                np.testing.assert_allclose(g[i, k], 2 * (flat - t) / 50, atol=1e-7)
        g_sort = jax.grad(lambda a: vecsort_penalty(a[..., None], jnp.asarray(ref, dtype)).sum())(mj)
        np.testing.assert_allclose(jax.grad(lambda a: area_penalty(a, zeros, ties="index").sum())(mj), g_sort,
                                   atol=1e-7)
    with pytest.raises(ValueError, match=r"^ties: expected"):
        area_penalty(mj, zeros, ties="stable")
    with pytest.raises(ValueError, match=r"^zeros: expected"):
        area_penalty(mj, jnp.zeros(5, jnp.int32))
    with pytest.raises(ValueError, match=r"^values: expected"):
        area_penalty(jnp.ones((4, 50), jnp.int32), zeros)


def test_area_penalty_ties_share_the_gradient_of_their_places():
    m = jnp.array([[1.0, 1.0, 0.2, 1.0, 0.5, 0.5]])
    g = np.asarray(jax.grad(lambda a: area_penalty(a, 3).sum())(m))[0]
    # sorted: 0.2 0.5 0.5 | 1 1 1 (3 zeros): the cut falls between distinct values, each value's own target
    np.testing.assert_allclose(g, 2 * (np.asarray(m[0]) - np.array([1, 1, 0, 1, 0, 0])) / 6, atol=1e-7)
    g = np.asarray(jax.grad(lambda a: area_penalty(a, 4).sum())(m))[0]
    # 4 zeros: one of the three tied ones is below the cut; each of them gets target 2/3
    np.testing.assert_allclose(g, 2 * (np.asarray(m[0]) - np.array([2 / 3, 2 / 3, 0, 2 / 3, 0, 0])) / 6, atol=1e-7)


