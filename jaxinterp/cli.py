"""The ``jaxinterp`` command line.

    jaxinterp demo [--out runs/demo] [--id ID] [--full] [--only NAME,...] [--quick] [--cache-dir DIR]
    jaxinterp run EXPERIMENT [--config NAME] [--set FIELD=VALUE ...] [--id ID]

``demo`` explains the pretrained EfficientNet-Lite0 on photographs and writes
``<out>/<id>/`` with report.html, metrics.json, config.json, saliency.npz and the
figures (:mod:`jaxinterp.demo`: the real net's sections in :mod:`.photos`, the
small CNN's in :mod:`.smallcnn`).  ``--full`` adds the longer sections;
``--only`` runs the named ones (``jaxinterp demo --help`` lists them).

``run`` runs an experiment of the ``experiments`` package (``python -m
experiments.EXPERIMENT ARGS``); ``jaxinterp run --help`` lists them.
"""

from __future__ import annotations

import argparse
import os
import sys

from jaxinterp import __version__, xla_cpu
from jaxinterp.demo.run import run_demo, section_names

__all__ = ["main", "experiments"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jaxinterp", description="Understanding vision networks: demos and experiments.")
    parser.add_argument("--version", action="version", version=f"jaxinterp {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="explain a pretrained ImageNet network on photographs (report.html)",
                       description="Explain the pretrained EfficientNet-Lite0 on photographs and write an HTML "
                                   "report.  Sections: " + ", ".join(section_names()) + ".")
    p.add_argument("--out", default=os.path.join("runs", "demo"), help="parent of the run directory")
    p.add_argument("--id", default=None, help="run directory name (default: a timestamp)")
    p.add_argument("--full", action="store_true",
                   help="also the longer sections: feature visualisation and pre-images of the real net, "
                        "and the small CNN on the synthetic set (tens of minutes on a CPU)")
    p.add_argument("--only", default=None, metavar="NAME,...",
                   help="run only these sections ('smallcnn' = all of the small CNN's)")
    p.add_argument("--cache-dir", default=None,
                   help="cache of the small CNN and of compiled programs (default: $JAXINTERP_CACHE or "
                        "~/.cache/jaxinterp)")
    p.add_argument("--no-compile-cache", action="store_true",
                   help="do not keep compiled programs on disk (a second run then compiles again)")
    p.add_argument("--quick", action="store_true",
                   help="few steps and samples, an untrained small CNN (seconds per section; for tests)")
    p.set_defaults(run=run_demo)
    found = experiments()
    listing = ("\n".join(f"  {name:16s} {line}" for name, line in found.items())
               or "  (none: the experiments package is not installed)")
    p = sub.add_parser("run", help="run an experiment: jaxinterp run EXPERIMENT --config local --set FIELD=VALUE ...",
                       description="Run an experiment of experiments/, as python -m experiments.EXPERIMENT ARGS.\n"
                                   "ARGS: --config NAME ('full', 'local', ...), --set FIELD=VALUE (repeatable), "
                                   "--id ID, ...\n(jaxinterp run EXPERIMENT --help lists them).",
                       epilog="experiments:\n" + listing, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("experiment", metavar="EXPERIMENT", choices=list(found), help="one of the experiments below")
    p.add_argument("args", nargs=argparse.REMAINDER, metavar="ARGS", help="the experiment's arguments")
    p.set_defaults(run=run)
    return parser


def experiments() -> dict[str, str]:
    """Experiment name -> the first line of its docstring, for every module of the ``experiments`` package.

    The docstrings are read from the files (with :mod:`ast`), so that listing the experiments imports none
    of them; ``experiments.common`` and ``experiments.configs`` are not experiments.  Empty when the
    package is not installed.
    """
    import ast
    import importlib.util
    import pkgutil
    try:
        import experiments as package
    except ImportError:
        return {}
    found = {}
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda info: info.name):
        if info.ispkg or info.name == "common" or info.name.startswith("_"):
            continue
        spec = importlib.util.find_spec(f"experiments.{info.name}")
        with open(spec.origin, encoding="utf-8") as f:
            doc = ast.get_docstring(ast.parse(f.read())) or ""
        found[info.name] = doc.strip().splitlines()[0] if doc.strip() else ""
    return found


def run(args: argparse.Namespace) -> int:
    """``jaxinterp run EXPERIMENT ARGS``: ``experiments.EXPERIMENT.main(ARGS)``; returns its exit status."""
    import importlib
    return importlib.import_module(f"experiments.{args.experiment}").main(list(args.args))


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``jaxinterp`` console script; returns the exit status."""
    xla_cpu.use_cpu_flags()
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        status = args.run(args)
    except ValueError as e:
        if str(e).startswith("--only"):
            parser.error(str(e))
        raise
    return status if args.command == "run" else 0


if __name__ == "__main__":
    sys.exit(main())
