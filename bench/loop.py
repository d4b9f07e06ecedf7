"""What running a net inside a compiled loop costs: one step alone, steps written out, steps in a scan.

Every iterative method of jaxinterp (extremal and meaningful perturbations, pre-images,
activation maximisation, PGD, the deep image prior) runs its steps in one compiled
``lax.scan``.  A step there should cost what the same step costs outside a loop.  For a
zoo net, one image, milliseconds per step of "x <- x - eta * d(logit)/dx":

* ``one_call``: one step per jitted call;
* ``written_out``: ``--steps`` steps written out in one jitted function (XLA shares the
  loop-invariant work between them: the floor);
* ``scan``: the same steps as a ``lax.scan`` in one jitted function (what the methods run);
* ``scan_over_written`` = scan / written_out (1.0: the loop costs nothing).

    python -m bench.loop                                   # vgg16 and resnet50 at 96 px
    python -m bench.loop --nets vgg16 --size 224 --steps 5

Writes ``<out>/loop_<device>_<size>px.json`` after every net (a rerun skips the nets already
there; ``--force`` re-measures) and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os

import jax

from bench.ceiling import load_results, time_call, write_results
from jaxinterp.xla_cpu import use_cpu_flags
from jaxinterp import nets


def make_steps(net: nets.Net, steps: int):
    """The three jitted functions ``(params, x) -> x`` of the module docstring (one target logit, eta 1e-3)."""
    def step(params, x):
        return x - 1e-3 * jax.grad(lambda x: net.apply(params, x)[0, 0])(x)

    def written_out(params, x):
        for _ in range(steps):
            x = step(params, x)
        return x

    def scan(params, x):
        return jax.lax.scan(lambda x, _: (step(params, x), None), x, None, length=steps)[0]

    return {"one_call": jax.jit(step), "written_out": jax.jit(written_out), "scan": jax.jit(scan)}


def measure(net: nets.Net, *, size: int, steps: int, iters: int) -> dict:
    """Milliseconds per step of each variant for one random image, and scan / written_out."""
    params = net.init(jax.random.key(0))
    x = jax.random.uniform(jax.random.key(1), (1, size, size, 3))
    per_call = {"one_call": 1, "written_out": steps, "scan": steps}
    row = {name: 1e3 * time_call(fn, params, x, iters=iters, warmup=1) / per_call[name]
           for name, fn in make_steps(net, steps).items()}
    row["scan_over_written"] = row["scan"] / row["written_out"]
    return row


def main(argv=None):
    use_cpu_flags()                  # before JAX runs anything
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--nets", default="vgg16,resnet50")
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--force", action="store_true")
    ap.add_argument("--out", default="bench/results")
    args = ap.parse_args(argv)

    device = jax.devices()[0].device_kind
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, f"loop_{device.replace(' ', '_')}_{args.size}px.json")
    result = (None if args.force else load_results(path)) or {
        "size": args.size, "steps": args.steps, "device": device, "jax": jax.__version__,
        "xla_flags": os.environ.get("XLA_FLAGS", ""), "rows": {}}
    for name in args.nets.split(","):
        if name in result["rows"]:
            print(f"{name}: done earlier, skipped", flush=True)
            continue
        result["rows"][name] = measure(nets.get(name), size=args.size, steps=args.steps, iters=args.iters)
        write_results(path, result)
        print(f"{name}: " + ", ".join(f"{k} {v:.2f}" for k, v in result["rows"][name].items()), flush=True)
    print(f"\none image, {result['size']} px, {result['steps']} steps per call, {device} (jax {result['jax']})\n")
    print("| net | one call (ms/step) | written out (ms/step) | lax.scan (ms/step) | scan / written out |")
    print("|---|---|---|---|---|")
    for name, r in result["rows"].items():
        print(f"| {name} | {r['one_call']:.1f} | {r['written_out']:.1f} | {r['scan']:.1f} | "
              f"{r['scan_over_written']:.2f} |")
    return result


if __name__ == "__main__":
    main()
