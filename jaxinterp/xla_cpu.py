"""XLA:CPU flags that jaxinterp's entry points set: the CLI, the experiments, the bench scripts, the tests.

XLA reads ``XLA_FLAGS`` when JAX creates its first backend, so :func:`use_cpu_flags`
works when it is called before JAX runs anything (importing jax and jaxinterp is
fine).  A flag already named in ``XLA_FLAGS`` wins; on GPUs and TPUs the flags do
nothing.  In your own scripts, call it first, or export the flags yourself:

    XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=-REDUCE python my_experiment.py

The flags (jaxlib 0.10.2, 2 CPU cores; figures in docs/results/test_suite.md):

* ``--xla_cpu_experimental_ynn_fusion_type=-REDUCE``: XLA:CPU hands reductions to
  YNNPACK library fusions by default.  For the smooth-max reductions of the
  extremal perturbations' mask generator (81 neighbours per pixel, forward and
  backward), those fusions write their broadcast operands and products out to
  memory: one step of :func:`jaxinterp.perturbation.extremal` on the small CNN
  with 10 images at 64 px took 244 ms with them and 58 ms without, and the mask
  generator alone 195 ms against 13 ms.  XLA's own loop emitters then compile the
  reductions, as before YNNPACK; compile times are unchanged.
"""

from __future__ import annotations

import os

__all__ = ["CPU_FLAGS", "use_cpu_flags"]

CPU_FLAGS: tuple[str, ...] = ("--xla_cpu_experimental_ynn_fusion_type=-REDUCE",)
"""The flags :func:`use_cpu_flags` adds."""


def use_cpu_flags(environ=os.environ) -> str:
    """Add each of :data:`CPU_FLAGS` whose name ``XLA_FLAGS`` does not name yet; returns the new value.

    Examples:
      >>> from jaxinterp.xla_cpu import use_cpu_flags
      >>> use_cpu_flags({"XLA_FLAGS": "--xla_cpu_use_fusion_emitters=false"})
      '--xla_cpu_use_fusion_emitters=false --xla_cpu_experimental_ynn_fusion_type=-REDUCE'
      >>> use_cpu_flags({"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type="})   # yours wins
      '--xla_cpu_experimental_ynn_fusion_type='
    """
    flags = environ.get("XLA_FLAGS", "")
    for flag in CPU_FLAGS:
        if flag.split("=")[0] not in flags:
            flags = f"{flags} {flag}".strip()
    environ["XLA_FLAGS"] = flags
    return flags
