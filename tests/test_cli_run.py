"""``jaxinterp run``: every experiment listed with its description, an unknown one refused, a run in-process
that ends as the experiment's own ``main``, and the exit status passed on."""

import importlib
import json
import pathlib

import numpy as np
import pytest

from jaxinterp import cli

EXPERIMENTS = sorted(p.stem for p in (pathlib.Path(__file__).parents[1] / "experiments").glob("*.py")
                     if p.stem not in ("__init__", "common"))


def _exit(argv, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


def test_help_lists_demo_and_run(capsys):
    code, out, _ = _exit(["--help"], capsys)
    assert code == 0 and "demo" in out and "run" in out


def test_run_help_lists_every_experiment_with_its_description(capsys):
    assert len(EXPERIMENTS) >= 14 and "sela" in EXPERIMENTS and "pointing_game" in EXPERIMENTS
    code, out, _ = _exit(["run", "--help"], capsys)
    assert code == 0
    listed = {line.split()[0]: line.split(None, 1)[1] for line in out.split("experiments:\n")[1].splitlines()}
    assert sorted(listed) == EXPERIMENTS
    for name in EXPERIMENTS:
        module = importlib.import_module(f"experiments.{name}")
        assert listed[name] == module.__doc__.strip().splitlines()[0], name
        assert callable(module.main) and callable(module.run) and callable(module.get_config), name


def test_unknown_experiment_exits_2_naming_the_argument(capsys):
    code, _, err = _exit(["run", "nope", "--config", "local"], capsys)
    assert code == 2 and "EXPERIMENT" in err and "'nope'" in err
    code, _, err = _exit(["run"], capsys)
    assert code == 2 and "EXPERIMENT" in err


def test_run_passes_the_arguments_and_the_exit_status(monkeypatch):
    from experiments import sanity
    seen = []
    monkeypatch.setattr(sanity, "main", lambda argv=None: seen.append(argv) or 3)
    assert cli.main(["run", "sanity", "--config", "local", "--set", "images=2", "--help"]) == 3
    assert seen == [["--config", "local", "--set", "images=2", "--help"]]


def test_run_in_process_equals_the_experiment_main(tmp_path, capsys):
    """The cheapest experiment (deepdream, untrained smallcnn, one photograph, one octave of one step)."""
    from experiments import deepdream
    args = ["--config", "local", "--id", "t", "--set", "pretrained=False", "--set", "octaves=1",
            "--set", "steps=1", "--set", "photos=['chelsea']"]
    assert cli.main(["run", "deepdream", *args, "--set", f"out={tmp_path / 'cli'}"]) == 0
    assert deepdream.main([*args, "--set", f"out={tmp_path / 'main'}"]) == 0
    assert "features.4: 1 images" in capsys.readouterr().out
    runs = [tmp_path / "cli" / "t", tmp_path / "main" / "t"]
    metrics = [json.loads((run / "metrics.json").read_text()) for run in runs]
    assert metrics[0] == metrics[1] and metrics[0]["images"] == ["chelsea"]
    assert metrics[0]["layers"]["features.4"]["share_raised"] == 1.0
    configs = [json.loads((run / "config.json").read_text())["config"] for run in runs]
    assert configs[0] == {**configs[1], "out": str(tmp_path / "cli")}
    shards = [np.load(run / "shards" / "features.4.npz") for run in runs]
    for key in shards[1].files:
        np.testing.assert_array_equal(shards[0][key], shards[1][key])
