"""jaxinterp.xla_cpu: the suite runs with jaxinterp's XLA:CPU flags, and they keep reductions out of YNNPACK."""

import os

import jax
import jax.numpy as jnp

from jaxinterp import xla_cpu
from jaxinterp.perturbation.masks import mask_geometry, smooth_mask


def test_the_suite_runs_with_the_flags():
    flags = os.environ["XLA_FLAGS"].split()
    assert all(flag in flags for flag in xla_cpu.CPU_FLAGS), flags


def test_the_mask_generators_gradient_compiles_without_ynnpack_fusions():
    """The pattern that was slow: the vmapped gradient of a smooth mask read through its crop.

    With YNNPACK's reduction fusions, its compiled program holds ``ynn_fusion`` computations that write
    the (..., 4, 81) products out (docs/results/test_suite.md); with the flag, XLA fuses them itself.
    """
    g = mask_geometry((64, 64), 2, 6.0)
    weights = jax.random.uniform(jax.random.key(0), (64, 64))
    grad = jax.jit(jax.vmap(jax.grad(lambda p: (smooth_mask(p, g)[0] * weights).sum())))
    hlo = grad.lower(jnp.ones((2, 1) + g.grid_shape)).compile().as_text()
    assert "reduce" in hlo and "ynn_fusion" not in hlo
