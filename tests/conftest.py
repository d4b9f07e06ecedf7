"""Shared test setup for the whole suite.

Every test process (also each pytest-xdist worker, which imports this file before
any test module) sees 8 CPU devices, so that sharded code is tested against its
single-device result: ``jax_num_cpu_devices`` must be set before JAX initialises
its backends, i.e. before any test module runs a JAX operation.  Tests that need
one device use ``jax.devices()[:1]``.

Most of the suite's time on a CPU is XLA compiling small programs, so XLA compiles
them with two flags that make compiling cheaper (docs/results/test_suite.md has the
figures):

- ``--xla_cpu_use_fusion_emitters=false``: XLA:CPU's newer MLIR fusion emitters cost
  most of the compile time of small programs; without them tests/attribution/test_cam_family.py,
  test_lrp.py and tests/synthesis/test_dip.py ran in 74 s instead of 120 s, and programs
  dominated by running (ResNet-50 gradients, extremal perturbations) run as fast.
- ``--xla_backend_optimization_level=1`` instead of 2: LLVM at level 1 compiles faster
  and runs the tests' programs as fast; level 0 runs them ten times slower.
- ``--xla_backend_extra_options=-disable-lsr``: LLVM's loop strength reduction was the
  largest part of emitting machine code (18 % of compiling EfficientNet-Lite0's backward
  passes, measured with perf); without it three of them compiled in 16-18 s instead of
  22-26 s and ran as fast.

The parity tests (tests/parity) run in the same processes as the rest, so PyTorch is
imported here, before any test module can import TensorFlow.

It also sets jaxinterp's own XLA:CPU flags (:mod:`jaxinterp.xla_cpu`: YNNPACK reduction
fusions off, which made the extremal perturbations' mask generator 4-15x slower).

The flags reach the subprocesses the tests start (notebooks, README examples,
experiments) through the environment; a flag already in ``XLA_FLAGS`` wins, and a flag
this jaxlib does not know (XLA aborts on one) is left out.
"""

import importlib.util
import os
import subprocess
import sys

# The parity oracles' PyTorch before any test module imports TensorFlow (the TFDS tests): torchvision loads
# torch._dynamo, which loads triton, and triton loaded after TensorFlow crashes the process.
if importlib.util.find_spec("torchvision") is not None:
    import torch
    import torchvision  # noqa: F401

    # In a pytest-xdist worker PyTorch gets one thread: the other worker keeps the second core busy, and two
    # torch threads per worker on 2 cores spent their time waiting for each other (AblationCAM's per-row
    # ``torch.min`` took 8 ms instead of 0.1 ms; float64 depthwise convolutions ran 10x slower; the parity
    # modules used 13 % more CPU time).
    if os.environ.get("PYTEST_XDIST_WORKER"):
        torch.set_num_threads(1)

from jaxinterp.xla_cpu import CPU_FLAGS      # imports only os: JAX is not imported yet

_FAST_COMPILE = ("--xla_cpu_use_fusion_emitters=false", "--xla_backend_optimization_level=1",
                 "--xla_backend_extra_options=-disable-lsr")
_FLAGS_CHOSEN = "JAXINTERP_TEST_XLA_FLAGS_CHOSEN"     # set once by the controller; workers inherit it


def _xla_knows(flag: str) -> bool:
    """Whether this jaxlib accepts ``flag`` (XLA aborts the process on an unknown one; LLVM's options
    are parsed at the first compilation)."""
    probe = subprocess.run([sys.executable, "-c", "import jax; jax.jit(lambda x: x + 1)(1.0)"], capture_output=True,
                           env={**os.environ, "XLA_FLAGS": flag, "JAX_PLATFORMS": "cpu"})
    return probe.returncode == 0


if not os.environ.get(_FLAGS_CHOSEN):
    _wanted = [f for f in _FAST_COMPILE + CPU_FLAGS if f.split("=")[0] not in os.environ.get("XLA_FLAGS", "")]
    if not _xla_knows(" ".join(_wanted)):          # one probe when this jaxlib knows them all, else one each
        _wanted = [f for f in _wanted if _xla_knows(f)]
    os.environ["XLA_FLAGS"] = " ".join([os.environ.get("XLA_FLAGS", ""), *_wanted]).strip()
    os.environ[_FLAGS_CHOSEN] = "1"

import jax  # noqa: E402

jax.config.update("jax_num_cpu_devices", 8)

import gc  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402

import pytest  # noqa: E402

_SHARED_CACHE = "JAX_COMPILATION_CACHE_DIR"
_cache_key = pytest.StashKey[str]()        # the directory this run made (controller process only)


def pytest_configure(config):
    """One persistent compilation cache for the whole test run, empty at its start.

    Many modules compile the same programs: the small CNN's methods in the demo, the
    experiments, the notebooks and the README examples; EfficientNet-Lite0's in the
    demo and the parity tests.  ``jax.clear_caches()`` after each module (below) and the
    subprocesses the tests start would compile them again.  The controller process makes
    the directory and puts it in the environment, which the pytest-xdist workers and every
    subprocess inherit (JAX reads ``JAX_COMPILATION_CACHE_DIR`` when it is imported); a
    cache directory the user set already wins.  It is removed when the run ends.
    """
    if hasattr(config, "workerinput") or os.environ.get(_SHARED_CACHE):
        return
    path = tempfile.mkdtemp(prefix="jaxinterp-test-xla-")
    config.stash[_cache_key] = path
    os.environ.update({_SHARED_CACHE: path, "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0.1"})
    jax.config.update("jax_compilation_cache_dir", path)       # this process imported jax already
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.1)


def pytest_unconfigure(config):
    path = config.stash.get(_cache_key, None)
    if path:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def load_bench():
    """``load_bench("dip")`` imports the script bench/dip.py as the module ``bench.dip``, afresh.

    Each call executes the script again (``importlib.reload``): the tests replace functions of
    the module (``bench.measure = None``) to show that a resumed run measures nothing.  The
    repository root is on the import path (tests/ is a package), so ``bench`` is importable.
    """
    import importlib
    import sys

    def load(name: str):
        module = sys.modules.get(f"bench.{name}")
        return importlib.reload(module) if module is not None else importlib.import_module(f"bench.{name}")

    return load


@pytest.fixture(scope="session")
def trained_smallcnn():
    """``(net, params, info)`` of the smallcnn trained on the synthetic 'easy' set.

    The checkpoint ships with the package; :func:`jaxinterp.train.zoo.pretrained` unpacks it
    into ``$JAXINTERP_CACHE`` (default ``~/.cache/jaxinterp``) once, under a lock shared by
    the parallel workers.
    """
    from jaxinterp.train import zoo

    return zoo.pretrained("smallcnn")


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Drop JAX's compiled programs after each test module.

    Every XLA CPU executable keeps its machine code in a few memory mappings of its own.
    A pytest-xdist worker runs half the suite in one process, so these mappings pile up:
    about 51 000 by 95 % of the suite. The kernel's limit is vm.max_map_count (65 530 by
    default). Near it, LLVM's next code allocation fails, and the worker died with a
    segmentation fault inside ``backend_compile_and_load`` (seen in
    tests/test_experiments_dip.py, which runs late). ``jax.clear_caches()`` releases them:
    tests/test_experiments_dip.py and tests/nets/test_batch_norm.py leave 7 900 mappings,
    and 960 after the clear. A module recompiles only what it runs itself.
    """
    yield
    jax.clear_caches()
    gc.collect()


# Modules that take minutes, longest first (their summed test time in a clean run on 2 cores, 2026-12-07).
# ``--dist loadscope --no-loadscope-reorder`` (the Makefile's) hands whole modules to the workers in
# collection order, so starting the long ones first keeps both workers busy to the end (longest processing
# time first) instead of leaving one behind the last.  Without ``--no-loadscope-reorder`` xdist sorts the
# modules by their number of tests, and the notebooks (3 tests, 3 minutes) start last.
_LONG_MODULES = (
    "tests/parity/test_attribution_parity.py", "tests/test_notebooks.py", "tests/train/test_selfsup.py",
    "tests/test_demo.py", "tests/test_cli.py", "tests/test_readme.py", "tests/nets/test_facade.py",
    "tests/synthesis/test_dip.py", "tests/synthesis/test_synthesis_methods.py",
    "tests/parity/test_extremal_parity.py", "tests/parity/test_cam_family_parity.py",
    "tests/attribution/test_gradient.py", "tests/parity/test_efficientnet_attribution_parity.py",
    "tests/test_experiments_sela.py", "tests/perturbation/test_extremal.py",
    "tests/parity/test_captum_deeplift_parity.py", "tests/test_doctests.py", "tests/test_experiments_dip.py",
    "tests/train/test_multiprocess.py", "tests/attribution/test_cam_family.py", "tests/parity/test_pair_parity.py",
    "tests/parity/test_efficientnet_parity.py", "tests/parity/test_zoo_parity.py", "tests/evaluation/test_sanity.py",
    "tests/attribution/test_excitation.py", "tests/synthesis/test_inverter.py", "tests/test_bench.py",
    "tests/test_experiments_dino_gdt.py", "tests/test_experiments.py",
)


def pytest_collection_modifyitems(config, items):
    rank = {module: i for i, module in enumerate(_LONG_MODULES)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))   # stable: the rest keep their order
