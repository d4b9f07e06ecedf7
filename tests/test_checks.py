"""jaxinterp.checks: what each shared check accepts, and the argument its ValueError names."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinterp import checks

FINITE_POSITIVE = {"minimum": 0, "open_min": True, "maximum": np.inf, "open_max": True}


@pytest.mark.parametrize("value", [0.5, 2, np.float32(0.5), np.int64(3), np.asarray(0.5), jnp.asarray(0.5)])
def test_check_scalar_returns_real_scalars_unchanged(value):
    assert checks.check_scalar(value, "lr", **FINITE_POSITIVE) is value


@pytest.mark.parametrize("value, match", [
    (0.0, r"^lr: expected a number in \(0, inf\), got 0.0"),
    (float("inf"), r"^lr: expected a number in \(0, inf\), got inf"),
    (float("nan"), r"^lr: expected a number in \(0, inf\), got nan"),
    (True, r"^lr: expected a real number, got bool"),
    ("0.1", r"^lr: expected a real number, got str"),
    (jnp.ones(2), r"^lr: expected a real scalar, got shape \(2,\)"),
    (np.asarray(True), r"^lr: expected a real scalar, got shape \(\) dtype bool"),
])
def test_check_scalar_rejects(value, match):
    with pytest.raises(ValueError, match=match):
        checks.check_scalar(value, "lr", **FINITE_POSITIVE)


def test_check_scalar_lets_tracers_through_jit_and_vmap():
    scaled = jax.vmap(lambda e: checks.check_scalar(e, "epsilon", minimum=0) * 2)(jnp.array([-1.0, 1.0]))
    np.testing.assert_array_equal(scaled, [-2.0, 2.0])


@pytest.mark.parametrize("kwargs, value, want", [
    ({}, (0, 0), (0.0, 0.0)),
    ({"strict": True}, [0, 1.5], (0.0, 1.5)),
    ({"positive": True}, (np.float32(0.5), 2), (0.5, 2.0)),
])
def test_check_range_accepts(kwargs, value, want):
    assert checks.check_range(value, "r", **kwargs) == want


@pytest.mark.parametrize("kwargs, value, match", [
    ({"strict": True}, (1, 1), r"^clip: expected \(lo, hi\) numbers with lo < hi, got \(1, 1\)"),
    ({}, (2, 1), r"^clip: expected \(lo, hi\) numbers with lo <= hi"),
    ({"positive": True}, (0, 1), r"^clip: expected \(lo, hi\) numbers with 0 < lo <= hi"),
    ({}, (0, 1, 2), r"^clip: expected \(lo, hi\)"),
    ({}, (False, 1), r"^clip: expected \(lo, hi\)"),
    ({}, 1.0, r"^clip: expected \(lo, hi\)"),
])
def test_check_range_rejects(kwargs, value, match):
    with pytest.raises(ValueError, match=match):
        checks.check_range(value, "clip", **kwargs)


def test_check_areas_broadcasts_to_images_by_areas():
    np.testing.assert_array_equal(checks.check_areas(0.1, 3), np.full((3, 1), 0.1))
    np.testing.assert_array_equal(checks.check_areas((0.05, 0.2), 2), [[0.05, 0.2], [0.05, 0.2]])
    per_image = np.array([[0.1, 0.2], [0.3, 0.4]])
    np.testing.assert_array_equal(checks.check_areas(per_image, 2), per_image)
    traced = jax.jit(lambda a: checks.check_areas(a, 4))(jnp.array([0.1, 0.2]))
    assert traced.shape == (4, 2)


@pytest.mark.parametrize("value, match", [
    ((0.0, 0.5), r"^mask_areas: expected fractions in \(0, 1\)"),
    (1, r"^mask_areas: expected fractions in \(0, 1\)"),
    (np.full((3, 1), 0.1), r"^mask_areas: expected a number, \(A,\) or \(2, A\)"),
    ((), r"^mask_areas: expected a number, \(A,\) or \(2, A\) with A >= 1"),
    ("0.1", r"^mask_areas: expected fractions in \(0, 1\), got str"),
])
def test_check_areas_rejects(value, match):
    with pytest.raises(ValueError, match=match):
        checks.check_areas(value, 2, "mask_areas")
