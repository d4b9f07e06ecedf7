"""Every notebook runs top to bottom (they are Jupytext percent scripts)."""

import os
import pathlib
import subprocess
import sys

import pytest

NOTEBOOKS = sorted((pathlib.Path(__file__).parents[1] / "notebooks").glob("*.py"))


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path):
    env = {**os.environ, "JAXINTERP_NOTEBOOK_QUICK": "1"}      # notebooks that read it run shorter loops
    result = subprocess.run([sys.executable, str(path)], capture_output=True, text=True,
                            timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
