"""The hardware ceiling every iterative method is measured against.

Forward-only and forward + input-gradient throughput (images/s) of a zoo net,
for fp32 at the highest matmul precision, the device's default precision (TF32
on NVIDIA Ampere and later) and bf16 (params and images cast to bfloat16).
Later benchmarks import :func:`measure` and report their speed as a ratio of
this ceiling measured in the same run on the same device.

    python -m bench.ceiling                      # resnet50, 224 px, batch 256
    python -m bench.ceiling --net vgg16 --batch 64 --out bench/results

Writes ``<out>/ceiling_<net>_<device>.json`` and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import jax
import jax.numpy as jnp

from jaxinterp.xla_cpu import use_cpu_flags
from jaxinterp import nets

PRECISIONS = ("highest", "default", "bf16")


def _cast(tree, dtype):
    return jax.tree.map(lambda a: a.astype(dtype), tree)


def make_step(net: nets.Net, mode: str):
    """A jitted step: 'forward' returns logits, 'gradient' d(sum of target logits)/d(images)."""
    def forward(params, x, target):
        return net.apply(params, x)

    def gradient(params, x, target):
        def score(x):
            logits = net.apply(params, x)
            return jnp.sum(jnp.take_along_axis(logits, target[:, None], axis=1).astype(jnp.float32))
        return jax.grad(score)(x)

    return jax.jit({"forward": forward, "gradient": gradient}[mode])


def write_results(path: str, result: dict) -> None:
    """Write a benchmark's JSON atomically (NaN allowed: a method that failed or was skipped)."""
    with open(path + ".tmp", "w") as f:
        json.dump(result, f, indent=2, allow_nan=True)
    os.replace(path + ".tmp", path)


def load_results(path: str) -> dict | None:
    """A benchmark's earlier JSON (to resume), or None."""
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def time_call(fn, *args, iters: int = 10, warmup: int = 2) -> float:
    """Median wall time (s) of ``fn(*args)`` after compilation and warm-up."""
    for _ in range(warmup):
        jax.block_until_ready(fn(*args))
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure(net: nets.Net, params, *, batch: int, size: int, precision: str,
            mode: str = "gradient", iters: int = 10) -> float:
    """Images per second of ``mode`` ('forward' or 'gradient') at ``precision``.

    Args:
      net, params: a zoo net and its params (float32).
      batch, size: images per call and their side in pixels.
      precision: 'highest' (fp32), 'default' (TF32 on recent NVIDIA GPUs) or 'bf16'.
      mode: 'forward' or 'gradient' (forward + gradient of the target logit w.r.t. the input).
      iters: timed repetitions (median).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision: expected one of {PRECISIONS}, got {precision!r}")
    dtype = jnp.bfloat16 if precision == "bf16" else jnp.float32
    x = jax.random.uniform(jax.random.key(0), (batch, size, size, 3), dtype)
    target = jnp.arange(batch) % max(net.num_classes, 1)
    p = _cast(params, dtype)
    with jax.default_matmul_precision("highest" if precision == "highest" else "default"):
        step = make_step(net, mode)
        seconds = time_call(step, p, x, target, iters=iters)
    return batch / seconds


def main(argv=None):
    use_cpu_flags()                  # before JAX runs anything
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--net", default="resnet50")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--precisions", default=",".join(PRECISIONS))
    ap.add_argument("--out", default="bench/results")
    args = ap.parse_args(argv)

    net = nets.get(args.net)
    params = net.init(jax.random.key(0))
    device = jax.devices()[0].device_kind
    rows = []
    for precision in args.precisions.split(","):
        row = {"precision": precision}
        for mode in ("forward", "gradient"):
            row[mode] = measure(net, params, batch=args.batch, size=args.size,
                                precision=precision, mode=mode, iters=args.iters)
            print(f"{args.net} {precision:8s} {mode:8s} {row[mode]:10.1f} images/s", flush=True)
        rows.append(row)
    result = {"net": args.net, "batch": args.batch, "size": args.size, "device": device,
              "backend": jax.default_backend(), "jax": jax.__version__, "rows": rows}
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, f"ceiling_{args.net}_{device.replace(' ', '_')}.json")
    write_results(path, result)
    print(f"\n{args.net}, {args.size} px, batch {args.batch}, {device} (jax {jax.__version__})\n")
    print("| precision | forward (img/s) | forward + input gradient (img/s) |")
    print("|---|---|---|")
    for r in rows:
        print(f"| {r['precision']} | {r['forward']:.1f} | {r['gradient']:.1f} |")
    return result


if __name__ == "__main__":
    main()
