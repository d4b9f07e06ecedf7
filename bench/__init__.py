"""Speed benchmarks (bench/README.md): scripts run from the repository root as ``python -m bench.<name>``.

A package so that the scripts import their siblings as ``from bench.ceiling import ...``.
"""
