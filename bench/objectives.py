"""Sinkhorn self-labelling (and InfoNCE) throughput: our float32 solvers vs SeLa's float64 iterations.

For N images, K clusters and lambda, on near-uniform logits (as at
initialisation) and peaked ones (as after training), one run measures

* ours, for each solver of ``--methods`` (default both):
  :func:`jaxinterp.objectives.sinkhorn_labels` in float32, ``method='scaling'``
  (stabilised scaling steps with absorption, the default; JSON key ``ours``) and
  ``'log'`` (every step in the log domain; ``ours_log``), one
  ``lax.while_loop``, per-element criterion max_k |K q_k - 1| <= tol, sharded
  with ``shard_map`` over ``--devices`` devices when more than one: seconds,
  iterations, seconds per pass over the logits (iterations + 1 passes: the first
  measures the start), final marginal error, SeLa's summed criterion at the end;
* sela64: SeLa's scaling iterations written from the paper (r = 1/K / (P^T c),
  c = 1/N / (P r) on P^lambda in float64, in JAX, stopping when
  sum_n |c / c_new - 1| < ``--sela-tol``, 0.1 as SeLa on ImageNet, checked every
  iteration) on the same logits: seconds, iterations, marginal error;
* the share of images whose labels agree between ours and SeLa's, and the speed-up
  per iteration (SeLa's seconds per iteration over ours per pass);
* optionally (``--infonce-batch``) InfoNCE loss + gradient steps per second for a
  global batch of B x 2 views of D-dim embeddings.

    python -m bench.objectives                              # N = 1.28M, K = 3000, lambda = 25
    python -m bench.objectives --n 100000 --k 3000          # CPU-sized
    python -m bench.objectives --quick                      # tiny: the smoke test
    python -m bench.objectives --labelling-memory           # per-device memory, N = 1.28M, K = 3000

``--labelling-memory`` measures nothing else: it compiles the trainer's
sharded label step (:func:`jaxinterp.train.selfsup.sharded_sinkhorn_labels`)
for ``--memory-devices`` CPU devices (default 8 and 64, made with
``jax_num_cpu_devices``: run it in a fresh process) from abstract shapes
(``jax.ShapeDtypeStruct``: nothing of size N K is allocated) and reports the
per-device argument, temporary and output bytes of ``memory_analysis()``.

Results go to ``<out>/objectives_<device>_N<n>_K<k>.json``, rewritten atomically
after every entry; a restarted run skips entries already there (``--force``
re-measures).  A Markdown table is printed at the end.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from bench.ceiling import load_results, write_results

from jaxinterp.xla_cpu import use_cpu_flags
from jaxinterp.objectives import infonce, sinkhorn_labels
from jaxinterp.objectives.sinkhorn import METHODS
from jaxinterp.train import selfsup, sharding

KINDS = ("near_uniform", "peaked")
OURS = {"scaling": "ours", "log": "ours_log"}
"""JSON key of each solver's measurements."""


def _x64():
    """Float64 for the reference only (a context: the rest of the process keeps float32)."""
    if hasattr(jax, "enable_x64"):
        return jax.enable_x64(True)
    from jax.experimental import enable_x64  # older jax
    return enable_x64()


def make_logits(kind: str, n: int, k: int, seed: int = 0) -> jax.Array:
    """float32 (N, K) logits: ``near_uniform`` N(0, 0.05^2) (a fresh head: p ~ 1/K), or ``peaked``
    N(0, 1) plus 6 on one random cluster per image (a trained head; at K = 3000 the hot
    cluster has p ~ 0.08 against ~ 3e-4 on average, so P^25 sits on one or a few clusters)."""
    key = jax.random.key(seed)
    k1, k2 = jax.random.split(key)
    if kind == "near_uniform":
        return 0.05 * jax.random.normal(k1, (n, k), jnp.float32)
    if kind == "peaked":
        hot = jax.random.randint(k2, (n,), 0, k)
        return (jax.random.normal(k1, (n, k), jnp.float32)
                + 6.0 * jax.nn.one_hot(hot, k, dtype=jnp.float32))
    raise ValueError(f"kind: expected one of {KINDS}, got {kind!r}")


@jax.jit
def _sela64_power(logits, lam):
    logp = jax.nn.log_softmax(logits.astype(jnp.float64), axis=1)
    return jnp.exp(lam * logp)                                      # P^lambda, float64


def _sela64_solve(p, tol, max_iters):
    """SeLa's Sinkhorn-Knopp on P^lambda (N, K) float64: returns (r, c, iterations, err)."""
    n, k = p.shape

    def cond(s):
        return (s[3] >= tol) & (s[2] < max_iters)

    def body(s):
        _, c, it, _ = s
        r = (1.0 / k) / (c @ p)
        c_new = (1.0 / n) / (p @ r)
        return r, c_new, it + 1, jnp.sum(jnp.abs(c / c_new - 1.0))

    s = (jnp.ones(k, jnp.float64) / k, jnp.ones(n, jnp.float64) / n, jnp.int32(0), jnp.float64(jnp.inf))
    return jax.lax.while_loop(cond, body, s)


_sela64_solve_jit = jax.jit(_sela64_solve, static_argnums=(2,))


@jax.jit
def _sela64_finish(p, r, c):
    q = c[:, None] * p * r[None, :]
    k = p.shape[1]
    return jnp.argmax(q, axis=1), jnp.max(jnp.abs(k * jnp.sum(q, axis=0) - 1.0))


@jax.jit
def _our_marginal_error(logits, log_r, lam):
    """max_k |K sum_n Q_nk - 1| of our soft assignment, evaluated in float64."""
    y = lam * logits.astype(jnp.float64) + log_r.astype(jnp.float64)
    q = jax.nn.softmax(y, axis=1)
    return jnp.max(jnp.abs(q.shape[1] * jnp.mean(q, axis=0) - 1.0))


def _timed(fn, repeats: int) -> float:
    """Median seconds of ``fn()`` (already compiled) over ``repeats`` calls."""
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def our_solver(args, mesh, method: str):
    kw = dict(lam=args.lam, tol=args.tol, max_iters=args.max_iters, method=method)
    if mesh is None:
        return jax.jit(lambda l: sinkhorn_labels(l, **kw))
    f = jax.shard_map(lambda l: tuple(sinkhorn_labels(l, axis_name="data", **kw)), mesh=mesh,
                      in_specs=jax.P("data"),
                      out_specs=(jax.P("data"), jax.P(), jax.P(), jax.P(), jax.P()))
    return jax.jit(f)


def _measure_ours(logits, args, mesh, method: str) -> tuple[dict, np.ndarray]:
    """One of our solvers on ``logits``: (its measurements, its labels)."""
    solve = our_solver(args, mesh, method)
    t0 = time.perf_counter()
    out = jax.block_until_ready(solve(logits))
    compile_s = time.perf_counter() - t0
    seconds = _timed(lambda: solve(logits), args.repeats)
    labels, log_r, it, err, sela = out
    it = int(it)
    with _x64():
        merr = float(_our_marginal_error(logits, log_r, args.lam))
    return ({"method": method, "seconds": seconds, "first_call_seconds": compile_s, "iterations": it,
             "seconds_per_pass": seconds / (it + 1), "error": float(err), "sela_error": float(sela),
             "marginal_error_float64": merr}, np.asarray(labels))


def measure_sinkhorn(kind: str, args, mesh) -> dict:
    """Our solvers and SeLa's float64 iterations on one kind of logits (the module docstring's entry)."""
    logits = make_logits(kind, args.n, args.k, args.seed)
    if mesh is not None:
        logits = sharding.shard_batch(logits, mesh)
    jax.block_until_ready(logits)
    entry = {"status": "ok", "kind": kind}
    labels = {}
    for method in args.methods.split(","):
        entry[OURS[method]], labels[method] = _measure_ours(logits, args, mesh, method)
    if args.no_float64:
        return entry
    with _x64():
        entry["sela64"], labels64 = _measure_sela64(logits, args)
    ref = entry["sela64"]
    for method, ours_labels in labels.items():
        ours = entry[OURS[method]]
        ours.update(label_agreement=float(np.mean(ours_labels == labels64)),
                    speedup=ref["seconds"] / ours["seconds"],
                    speedup_per_iteration=ref["seconds_per_iteration"] / ours["seconds_per_pass"])
    entry["label_agreement"] = min(entry[OURS[m]]["label_agreement"] for m in labels)
    return entry


def _measure_sela64(logits, args) -> tuple[dict, np.ndarray]:
    """SeLa's float64 iterations on the same logits (call inside ``_x64()``): (measurements, labels)."""
    t0 = time.perf_counter()
    p = jax.block_until_ready(_sela64_power(logits, args.lam))
    power_s = time.perf_counter() - t0
    r, c, it64, err64 = jax.block_until_ready(_sela64_solve_jit(p, args.sela_tol, args.sela_max_iters))
    t0 = time.perf_counter()
    r, c, it64, err64 = jax.block_until_ready(_sela64_solve_jit(p, args.sela_tol, args.sela_max_iters))
    solve_s = time.perf_counter() - t0
    labels64, merr64 = _sela64_finish(p, r, c)
    it64 = int(it64)
    return ({"seconds": solve_s, "power_seconds": power_s, "iterations": it64,
             "seconds_per_iteration": solve_s / max(it64, 1),
             "sela_error": float(err64), "marginal_error": float(merr64)}, np.asarray(labels64))


def labelling_memory(n: int, k: int, devices: int, batch_size: int, lam: float, method: str) -> dict:
    """Per-device bytes of the trainer's compiled label step on N x K scores over ``devices`` CPU devices.

    The scores are abstract (``jax.ShapeDtypeStruct``), laid out as
    :func:`jaxinterp.train.selfsup.label_scores` makes them: M = ceil(N / B) batches of
    B = ``batch_size`` rounded up to a multiple of the devices, sharded ``P(None, 'data')``.
    """
    cpus = jax.devices("cpu")
    if len(cpus) < devices:
        return {"status": "error", "error": f"{len(cpus)} CPU devices, {devices} asked: set "
                                             "jax_num_cpu_devices before JAX starts (a fresh process)"}
    mesh = sharding.data_mesh(cpus[:devices])
    b = math.ceil(batch_size / devices) * devices
    spec = jax.ShapeDtypeStruct((math.ceil(n / b), b, k), jnp.float32,
                                sharding=jax.NamedSharding(mesh, jax.P(None, sharding.DATA)))
    t0 = time.perf_counter()
    compiled = selfsup.sharded_sinkhorn_labels.lower(spec, n=n, lam=lam, mesh=mesh, method=method).compile()
    mem = compiled.memory_analysis()
    return {"status": "ok", "n": n, "k": k, "devices": devices, "batch": b, "method": method,
            "compile_seconds": time.perf_counter() - t0,
            "scores_bytes_per_device": math.ceil(n / b) * b * k * 4 // devices,
            "argument_bytes": mem.argument_size_in_bytes, "temp_bytes": mem.temp_size_in_bytes,
            "output_bytes": mem.output_size_in_bytes,
            "total_bytes": mem.argument_size_in_bytes + mem.temp_size_in_bytes + mem.output_size_in_bytes}


def measure_infonce(args, mesh) -> dict:
    b, d = args.infonce_batch, args.infonce_dim
    z = jax.random.normal(jax.random.key(args.seed), (b, 2, d), jnp.float32)
    if mesh is None:
        step = jax.jit(jax.value_and_grad(lambda x: infonce(x, temperature=0.1)))
    else:
        z = sharding.shard_batch(z, mesh)
        f = jax.shard_map(lambda x: infonce(x, temperature=0.1, axis_name="data"), mesh=mesh,
                          in_specs=jax.P("data"), out_specs=jax.P())
        step = jax.jit(jax.value_and_grad(f))
    jax.block_until_ready(step(z))
    seconds = _timed(lambda: step(z), args.repeats)
    return {"status": "ok", "batch": b, "views": 2, "dim": d, "seconds": seconds,
            "steps_per_s": 1.0 / seconds}


# --- results file ------------------------------------------------------------------------

def _device(mesh) -> str:
    kind = jax.devices()[0].device_kind
    return kind if mesh is None else f"{mesh.shape['data']}x{kind}"


def results_path(args, device: str) -> str:
    name = f"objectives_{device}_N{args.n}_K{args.k}.json".replace(" ", "_")
    return os.path.join(args.out, name)


def _fmt(v, digits=3):
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}g}" if math.isfinite(v) else str(v)
    return str(v)


def table(result: dict) -> str:
    rows = ["| logits | ours s | ours it | ours s/pass | ours marg. err | ours SeLa crit. | "
            "f64 s | f64 it | f64 s/it | f64 marg. err | label agreement | speed-up per it. | speed-up |",
            "|---" * 13 + "|"]
    for kind in KINDS:
        e = result["entries"].get(f"sinkhorn/{kind}")
        if not e or e.get("status") != "ok":
            continue
        s = e.get("sela64", {})
        for method, key in OURS.items():
            o = e.get(key)
            if o is None:
                continue
            rows.append("| " + " | ".join(_fmt(v) for v in (
                f"{kind}, {method}", o["seconds"], o["iterations"], o["seconds_per_pass"], o["error"],
                o["sela_error"], s.get("seconds"), s.get("iterations"), s.get("seconds_per_iteration"),
                s.get("marginal_error"), o.get("label_agreement"), o.get("speedup_per_iteration"),
                o.get("speedup"))) + " |")
    e = result["entries"].get("infonce")
    if e and e.get("status") == "ok":
        rows.append(f"\nInfoNCE (B = {e['batch']} x 2 views, D = {e['dim']}): "
                    f"{e['steps_per_s']:.3g} loss+grad steps/s")
    return "\n".join(rows)


def memory_table(result: dict) -> str:
    gb = 1e9
    rows = ["| devices | solver | scores / device GB | argument GB | temporaries GB | output MB | total GB |",
            "|---" * 7 + "|"]
    for name, e in result["entries"].items():
        if e.get("status") != "ok":
            rows.append(f"| {name} | {e.get('error')} |")
            continue
        rows.append(f"| {e['devices']} | {e['method']} | {e['scores_bytes_per_device'] / gb:.3g} | "
                    f"{e['argument_bytes'] / gb:.3g} | {e['temp_bytes'] / gb:.3g} | "
                    f"{e['output_bytes'] / 1e6:.3g} | {e['total_bytes'] / gb:.3g} |")
    return "\n".join(rows)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=None, help="images N (1280000)")
    ap.add_argument("--k", type=int, default=None, help="clusters K (3000)")
    ap.add_argument("--lam", type=float, default=25.0, help="lambda (25, SeLa ImageNet)")
    ap.add_argument("--tol", type=float, default=1e-3, help="our per-element tolerance (1e-3)")
    ap.add_argument("--max-iters", type=int, default=1000)
    ap.add_argument("--sela-tol", type=float, default=0.1, help="SeLa's summed criterion (0.1)")
    ap.add_argument("--sela-max-iters", type=int, default=5000)
    ap.add_argument("--kinds", default=",".join(KINDS), help=f"comma-separated of {KINDS}")
    ap.add_argument("--no-float64", action="store_true", help="skip SeLa's float64 reference")
    ap.add_argument("--devices", type=int, default=None,
                    help="shard the batch over this many devices (all; 1 = no shard_map)")
    ap.add_argument("--infonce-batch", type=int, default=None,
                    help="InfoNCE global batch (65536; 0 = skip)")
    ap.add_argument("--infonce-dim", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3, help="timed calls, median (3)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="bench/results")
    ap.add_argument("--force", action="store_true", help="re-measure entries already in the file")
    ap.add_argument("--methods", default=",".join(METHODS), help=f"our solvers, comma-separated of {METHODS}")
    ap.add_argument("--labelling-memory", action="store_true",
                    help="only report the per-device memory of the trainer's compiled label step")
    ap.add_argument("--memory-devices", default="8,64", help="CPU device counts of --labelling-memory (8,64)")
    ap.add_argument("--label-batch", type=int, default=256,
                    help="batch of the label step's scores (256, selfsup.label_scores' default)")
    ap.add_argument("--quick", action="store_true", help="tiny sizes (N=512, K=32, B=64): smoke test")
    args = ap.parse_args(argv)
    big = dict(n=1_280_000, k=3000, infonce_batch=65536)
    small = dict(n=512, k=32, infonce_batch=64)
    for name, value in (small if args.quick else big).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.quick:
        args.repeats = min(args.repeats, 2)
    unknown = set(args.methods.split(",")) - set(METHODS)
    if unknown:
        raise ValueError(f"methods: expected a comma-separated subset of {METHODS}, got {args.methods!r}")
    return args


def memory_main(args) -> dict:
    """``--labelling-memory``: the label step's per-device memory for each device count and solver."""
    counts = [int(d) for d in args.memory_devices.split(",")]
    try:
        jax.config.update("jax_num_cpu_devices", max(counts))
    except RuntimeError:            # JAX already started (e.g. under pytest): the devices it has
        pass
    result = {"config": {"n": args.n, "k": args.k, "lam": args.lam, "label_batch": args.label_batch},
              "jax": jax.__version__, "entries": {}}
    for d in counts:
        for method in args.methods.split(","):
            result["entries"][f"{d}/{method}"] = labelling_memory(args.n, args.k, d, args.label_batch,
                                                                  args.lam, method)
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, f"labelling_memory_N{args.n}_K{args.k}.json")
    write_results(path, result)
    print(f"label step, N = {args.n}, K = {args.k}, per device (memory_analysis of the compiled program)\n")
    print(memory_table(result))
    print(f"\nwritten {path}")
    return result


def main(argv=None) -> dict:
    use_cpu_flags()                  # before JAX runs anything
    args = parse_args(argv)
    if args.labelling_memory:
        return memory_main(args)
    devices = jax.devices()[: args.devices] if args.devices else jax.devices()
    mesh = sharding.data_mesh(devices) if len(devices) > 1 else None
    device = _device(mesh)
    os.makedirs(args.out, exist_ok=True)
    path = results_path(args, device)
    config = {k: v for k, v in vars(args).items() if k not in ("out", "force", "quick")}
    result = load_results(path) or {}
    if result.get("config") != config:
        result = {"config": config, "entries": {}}
    result.update(device=device, jax=jax.__version__, backend=jax.default_backend())
    jobs = [(f"sinkhorn/{k}", lambda k=k: measure_sinkhorn(k, args, mesh))
            for k in args.kinds.split(",") if k]
    if args.infonce_batch:
        jobs.append(("infonce", lambda: measure_infonce(args, mesh)))
    for name, job in jobs:
        if not args.force and result["entries"].get(name, {}).get("status") == "ok":
            print(f"{name}: already measured, skipped")
            continue
        try:
            entry = job()
        except Exception as e:  # record and go on: one failure does not lose the others
            entry = {"status": "error", "error": f"{type(e).__name__}: {e}"}
        result["entries"][name] = entry
        write_results(path, result)
        print(f"{name}: {json.dumps(entry)}")
    print(f"\n{device}, N = {args.n}, K = {args.k}, lambda = {args.lam}, tol = {args.tol}\n")
    print(table(result))
    print(f"\nwritten {path}")
    return result


if __name__ == "__main__":
    main()
