"""The experiments: one module per pipeline, each a command line over a config of experiments/configs/.

    python -m experiments.<name> --config local --set field=value --id ID
    jaxinterp run <name> --config local --set field=value --id ID     # the same
    jaxinterp run --help                                                # the experiments

Each module has ``main(argv=None) -> int`` (the command line) and ``run(config, run_id)``
(the run, returning its metrics); what several of them share is in :mod:`experiments.common`.
Experiments never import each other.
"""
