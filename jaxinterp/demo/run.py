"""``jaxinterp demo``: runs the chosen sections and writes the report.

The real net's sections are in :mod:`jaxinterp.demo.photos`, the small CNN's in
:mod:`jaxinterp.demo.smallcnn`; :func:`run_demo` writes ``<out>/<id>/`` with
report.html, metrics.json, config.json, saliency.npz and the figures.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Callable

import jax
import numpy as np

from jaxinterp import __version__
from jaxinterp.demo import photos as photo_sections
from jaxinterp.demo.smallcnn import FULL, QUICK, SMALLCNN_SECTIONS, DemoContext, load_model
from jaxinterp.report import Report, Section, write_json
from jaxinterp.train import zoo

__all__ = ["run_demo", "section_names", "chosen_sections"]


def section_names() -> tuple[str, ...]:
    """Every name ``--only`` accepts: the real net's sections, then the small CNN's."""
    return (*photo_sections.SECTIONS, *photo_sections.FULL_SECTIONS, *SMALLCNN_SECTIONS)


def chosen_sections(args) -> list[str]:
    """The sections to run, in report order: --only's, or the default (and --full) ones."""
    if args.only:
        wanted = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = sorted(set(wanted) - set(section_names()) - {"smallcnn"})
        if unknown or not wanted:
            raise ValueError(f"--only: unknown section(s) {unknown or wanted}; expected names of "
                             f"{list(section_names())} or 'smallcnn' (all of its sections)")
        if "smallcnn" in wanted:
            wanted += list(SMALLCNN_SECTIONS)
        return [n for n in section_names() if n in wanted]
    names = list(photo_sections.SECTIONS)
    return names + list(photo_sections.FULL_SECTIONS) + list(SMALLCNN_SECTIONS) if args.full else names


def run_demo(args: argparse.Namespace) -> str:
    """Run the demo; returns the run directory."""
    t0 = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[demo {time.perf_counter() - t0:6.1f}s] {msg}", flush=True)

    chosen = chosen_sections(args)
    if not args.no_compile_cache:
        _use_compilation_cache(args.cache_dir)
    run_id = args.id or time.strftime("%Y%m%d-%H%M%S")
    run_dir = os.path.join(args.out, run_id)
    os.makedirs(run_dir, exist_ok=True)
    log(f"writing to {run_dir}; sections: {', '.join(chosen)}")
    config = {"command": "demo", "id": run_id, "quick": args.quick, "full": args.full, "sections": chosen,
              "jaxinterp": __version__, "jax": jax.__version__, "backend": jax.default_backend()}
    write_json(os.path.join(run_dir, "config.json"), config)
    metrics, arrays, timing = {}, {}, {}
    report = Report("jaxinterp demo")
    if any(n in photo_sections.SECTIONS or n in photo_sections.FULL_SECTIONS for n in chosen):
        ctx = photo_sections.load_context(run_dir, args.quick, log)
        ctx.metrics, ctx.arrays = metrics, arrays
        photo_sections.compile_ahead(ctx, chosen)
        try:
            for name in chosen:
                section = photo_sections.SECTIONS.get(name) or photo_sections.FULL_SECTIONS.get(name)
                if section is not None:
                    timing[name] = _run_section(name, section, ctx, report, log)
        finally:
            ctx.close()
    if any(n in SMALLCNN_SECTIONS for n in chosen):
        net, params, info = load_model(args, log)
        ctx = DemoContext(args=args, run_dir=run_dir, net=net, params=params, info=info,
                          sizes=QUICK if args.quick else FULL, log=log, metrics=metrics, arrays=arrays)
        for name in chosen:
            if name in SMALLCNN_SECTIONS:
                timing[name] = _run_section(name, SMALLCNN_SECTIONS[name], ctx, report, log,
                                            title="Small CNN, synthetic set: ")
    metrics["saliency_shapes"] = {k: list(v.shape) for k, v in arrays.items()}
    metrics["seconds"] = {**timing, "total": time.perf_counter() - t0}
    np.savez_compressed(os.path.join(run_dir, "saliency.npz"), **arrays)
    write_json(os.path.join(run_dir, "metrics.json"), metrics)
    report.add(Section("Run", f"jaxinterp {__version__}, jax {jax.__version__} on {jax.default_backend()}; "
                              f"{metrics['seconds']['total']:.0f} s in all.", command=_command(args))
               ).table([(k, f"{v:.1f}") for k, v in timing.items()], header=("section", "seconds"))
    log(f"wrote {report.write(run_dir)}")
    return run_dir


def _use_compilation_cache(cache_dir) -> None:
    """Keep XLA's compiled programs on disk (``<cache>/xla``), so that a second demo skips compiling.

    On a CPU most of the demo's first run is compiling EfficientNet's backward passes
    (seconds per method); JAX's persistent cache stores programs that took over a second.
    """
    jax.config.update("jax_compilation_cache_dir", os.path.join(cache_dir or zoo.default_cache_dir(), "xla"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


def _run_section(name: str, section: Callable, ctx, report: Report, log, title: str = "") -> float:
    """Add ``section(ctx)`` to the report (its title prefixed with ``title``); returns its seconds."""
    t = time.perf_counter()
    log(f"section {name}")
    sec = report.add(section(ctx))
    sec.title = title + sec.title
    sec.command(f"jaxinterp demo --only {name}")
    return time.perf_counter() - t


def _command(args) -> str:
    """The command line that reproduces this run."""
    parts = ["jaxinterp demo"] + (["--full"] if args.full else []) + (["--quick"] if args.quick else [])
    return " ".join(parts + ([f"--only {args.only}"] if args.only else []))
