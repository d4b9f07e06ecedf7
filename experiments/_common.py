"""Pieces shared by the evaluation experiments: method table, model loading, resumable shards, CLI.

Not a library module: experiments/ is where everything meets (see ARCHITECTURE.md).
"""

from __future__ import annotations

import argparse
import ast
import io
import os
import time
from typing import Callable

import jax
import numpy as np

from jaxinterp import nets
from jaxinterp import cli
from jaxinterp.data import synthetic
from jaxinterp.evaluation import explain_fn as _explain_fn, method_slug
from jaxinterp.report import atomic_write
from jaxinterp.train import zoo

CENTRE = "centre"


def slug(title: str) -> str:
    """'IG blur (8)' -> 'integrated_gradients_blur', 'Grad-CAM' -> 'grad_cam' (``evaluation.method_slug``)."""
    return method_slug(title)


def method_table(quick: bool, only=()) -> dict[str, tuple[str, Callable, dict]]:
    """slug -> (title, method, options): every method of ``jaxinterp demo`` on the smallcnn, and extremal perturbations.

    Args:
      quick: fewer samples for the sampling methods.
      only: slugs to keep (empty = all), in the order given.
    """
    table = {slug(t): (t, m, o) for t, m, o in [*cli.attribution_methods(quick), cli.extremal_method(quick)]}
    only = list(only)
    unknown = [s for s in only if s not in table]
    if unknown:
        raise ValueError(f"methods: unknown {unknown}; expected some of {list(table)}")
    return {s: table[s] for s in only} if only else table


def load_smallcnn(config, log) -> tuple[nets.Net, dict, dict]:
    """The trained (cached) smallcnn, or a random one when ``config.pretrained`` is False."""
    if not config.pretrained:
        log("pretrained=False: untrained smallcnn (random initialisation)")
        net = nets.get("smallcnn", num_classes=synthetic.NUM_CLASSES)
        return net, net.init(jax.random.key(0)), {}
    log("loading the pretrained smallcnn (trained and cached on first use)")
    return zoo.pretrained("smallcnn", cache_dir=config.cache_dir, progress=log)


def synthetic_set(images: int, cache: str | None = None) -> dict[str, np.ndarray]:
    """``images`` held-out synthetic images of each variant (easy first), with a 'difficult' flag.

    With ``cache`` (an .npz path) the set is read from there if present, else written there
    (rendering compiles for ~20 s on a CPU; a resumed run skips it).
    """
    if cache is not None:
        done = load_npz(cache)
        if done is not None and len(done["label"]) == 2 * images:
            return done
    parts = []
    for variant in synthetic.VARIANTS:
        ex = {k: np.asarray(v) for k, v in
              synthetic.generate(jax.random.key(zoo.TEST_SEED), images, variant=variant, size=64).items()}
        ex["difficult"] = np.full(images, variant == "difficult")
        parts.append(ex)
    data = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    if cache is not None:
        os.makedirs(os.path.dirname(cache) or ".", exist_ok=True)
        save_npz(cache, **data)
    return data


def explain_fn(net, title: str, method: Callable, options: dict) -> Callable:
    """``jit(params, x, target) -> maps`` at image resolution, cached (``evaluation.explain_fn``)."""
    return _explain_fn(net, title, method, options)


def save_npz(path: str, **arrays) -> None:
    """Write an .npz atomically (a killed run never leaves a half-written shard)."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write(path, buf.getvalue())


def load_npz(path: str) -> dict[str, np.ndarray] | None:
    """The arrays of a finished shard, or None if it does not exist."""
    if not os.path.exists(path):
        return None
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def shards(run_dir: str, batches, compute: Callable[[dict], dict], log, num: int | None = None,
           describe: Callable[[dict], str] = lambda batch: "") -> tuple[list[dict], int]:
    """Each batch's results, computed once and kept as ``<run_dir>/shards/b<index>.npz`` (resumable).

    Args:
      batches: iterable of (index, batch); compute: batch -> dict of arrays.
      log: progress printer; num: number of batches, if known; describe: batch -> text of its log line.

    Returns:
      (list of the shards' arrays in batch order, number computed in this call).
    """
    out, computed = [], 0
    for b, batch in batches:
        path = os.path.join(run_dir, "shards", f"b{b:05d}.npz")
        done = load_npz(path)
        if done is None:
            t0 = time.perf_counter()
            done = compute(batch)
            save_npz(path, **done)
            computed += 1
            log(f"batch {b + 1}/{num or '?'}: {describe(batch)} in {time.perf_counter() - t0:.1f}s")
        out.append(done)
    log(f"computed {computed} batches, {len(out) - computed} resumed from disk")
    return out, computed


def logger(name: str) -> Callable[[str], None]:
    t0 = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{name} {time.perf_counter() - t0:7.1f}s] {msg}", flush=True)
    return log


def _value(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse(argv, get_config, doc: str):
    """--variant, --id, --set field=value (repeatable; Python literals or plain strings)."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--variant", default="full",
                    help="'full' or 'local' (some configs have more, e.g. sela's 'cifar10'); "
                         "get_config checks it")
    ap.add_argument("--id", default=None, help="run directory name (default: a timestamp); reuse it to resume")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                    help="override a config field, e.g. --set images=16 --set methods=\"['gradient']\"")
    ap.add_argument("--list", action="store_true", help="list the method slugs and exit")
    args = ap.parse_args(argv)
    config = get_config(args.variant)
    for item in args.set:
        field, sep, text = item.partition("=")
        if not sep or field not in config:
            raise ValueError(f"--set: expected FIELD=VALUE with FIELD in {sorted(config.keys())}, got {item!r}")
        value = _value(text)
        if isinstance(config[field], list) and isinstance(value, (tuple, str)):
            value = list(value) if isinstance(value, tuple) else [value]
        if isinstance(config[field], float) and isinstance(value, int):
            value = float(value)
        config[field] = value
    return args, config


def prepare_run(config, run_id: str, out: str, log) -> str:
    """Create ``<out>/<run_id>`` and write config.json; a rerun must have the same config (resumption).

    Raises:
      ValueError: the directory holds a run of another config (its shards would be reused wrongly).
    """
    import json
    run_dir = os.path.join(out, run_id)
    os.makedirs(run_dir, exist_ok=True)
    path = os.path.join(run_dir, "config.json")
    want = json.loads(json.dumps(config.to_dict()))
    if os.path.exists(path):
        with open(path) as f:
            have = json.load(f).get("config")
        if have is not None and have != want:
            diff = sorted(k for k in set(have) | set(want) if have.get(k) != want.get(k))
            raise ValueError(f"--id: {run_dir} holds a run with another config (fields {diff}); "
                             f"use another --id or the same config to resume")
        log(f"resuming in {run_dir}")
    else:
        log(f"writing to {run_dir}")
    from jaxinterp import __version__
    from jaxinterp.report import write_json
    write_json(path, {"config": want, "id": run_id, "jaxinterp": __version__, "jax": jax.__version__,
                      "devices": jax.device_count(), "backend": jax.default_backend()})
    return run_dir


def main(argv, get_config: Callable, doc: str, run: Callable) -> dict:
    """An experiment's command line: ``--list`` prints the method table, otherwise ``run(config, id)``."""
    args, config = parse(argv, get_config, doc)
    if args.list:
        for name, (title, _, options) in method_table(config.quick).items():
            print(f"{name:28s} {title}  {options}")
        return {}
    return run(config, args.id)
