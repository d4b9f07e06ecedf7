"""The ``Examples:`` of the package's docstrings run as written (doctest)."""

import doctest
import importlib
import pkgutil

import pytest

import jaxinterp

# Modules whose public functions carry examples; the test fails if one loses them.
DOCUMENTED = ("jaxinterp.nets.core", "jaxinterp.attribution.gradient", "jaxinterp.attribution.cam",
              "jaxinterp.perturbation.extremal", "jaxinterp.objectives.sinkhorn",
              "jaxinterp.objectives.contrastive", "jaxinterp.evaluation.pointing", "jaxinterp.ops",
              "jaxinterp.checks", "jaxinterp.targets", "jaxinterp.synthesis.methods", "jaxinterp.nets.dip_skip",
              "jaxinterp.nets.decoder", "jaxinterp.nets.dino_head")
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def _modules():
    names = [m.name for m in pkgutil.walk_packages(jaxinterp.__path__, "jaxinterp.")]
    return sorted(n for n in names if n != "jaxinterp.data.tfds")     # TensorFlow: tests/data/test_tfds.py


@pytest.mark.parametrize("name", _modules())
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    tests = [t for t in doctest.DocTestFinder().find(module) if t.examples]
    if name in DOCUMENTED:
        assert tests, f"{name} lost its examples"
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    for test in tests:
        runner.run(test)
    assert runner.failures == 0, f"{runner.failures} failing example(s) in {name} (output above)"


def test_documented_modules_exist():
    assert set(DOCUMENTED) <= set(_modules())
