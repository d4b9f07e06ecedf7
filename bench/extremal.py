"""Throughput of extremal perturbations against the forward + gradient ceiling of the same net.

For each net, precision and number of images per call, in one run on one device:

* ``images_per_s``: images explained per second by :func:`jaxinterp.perturbation.extremal`
  (``--areas`` areas, ``--steps`` steps, one target per image, jitted once, timed after warm-up);
* ``ceiling``: forward + input-gradient images/s of the net at the same precision
  (:func:`ceiling.measure`, batch ``--ceiling-batch``), divided by areas x steps:
  the images/s a perfect implementation would reach, since one step is one
  forward + backward pass per (image, area);
* ``ratio`` = images_per_s / ceiling (the issue's target on an H100: >= 0.8);
* TorchRay 1.0.0.2's images/s on the torchvision twin (random weights, same
  areas and steps, one image per call as TorchRay works), when torch and
  torchray import and ``--no-torchray`` is not given.

    python -m bench.extremal                                   # resnet50, vgg16; 224 px; 800 steps
    python -m bench.extremal --nets smallcnn --size 64 --steps 20 --batches 1,4 --precisions highest

Precisions: 'highest' (fp32), 'default' (TF32 on recent NVIDIA GPUs), 'bf16'
(params and perturbed images in bfloat16; mask parameters, optimiser and area
term in float32, ``compute_dtype``).  Results are written to
``<out>/extremal_<device>_<size>px_<steps>.json`` after every entry; a rerun skips the entries
already there (``--force`` re-measures).
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from bench.ceiling import PRECISIONS, _cast, load_results, measure, time_call, write_results  # noqa: E402

from jaxinterp.xla_cpu import use_cpu_flags  # noqa: E402
from jaxinterp import nets  # noqa: E402
from jaxinterp.perturbation import extremal  # noqa: E402

GOAL = 0.8


def ours(net, params, args, precision: str, batch: int) -> float:
    """Images/s of extremal() for ``batch`` images per call."""
    dtype = jnp.bfloat16 if precision == "bf16" else None
    p = _cast(params, dtype) if dtype is not None else params
    x = jax.random.uniform(jax.random.key(1), (batch, args.size, args.size, 3))
    t = jnp.arange(batch) % net.num_classes
    areas = tuple(args.areas)
    fn = jax.jit(lambda p, x, t: extremal(net, p, x, t, areas=areas, steps=args.steps, compute_dtype=dtype)[0])
    with jax.default_matmul_precision("highest" if precision == "highest" else "default"):
        jax.block_until_ready(fn(p, x, t))                                     # compile
        seconds = time_call(fn, p, x, t, iters=args.iters, warmup=0)
    return batch / seconds


def torchray_images_per_s(arch: str, args) -> float:
    """TorchRay's extremal_perturbation images/s (one image per call) on the torchvision twin."""
    import torch
    import torchvision
    from torchray.attribution.extremal_perturbation import extremal_perturbation
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = getattr(torchvision.models, arch)(weights=None).eval().to(device)
    for q in model.parameters():
        q.requires_grad_(False)
    x = torch.rand(1, 3, args.size, args.size, device=device)
    extremal_perturbation(model, x, 1, areas=list(args.areas), max_iter=2)      # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    extremal_perturbation(model, x, 1, areas=list(args.areas), max_iter=args.steps)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return 1.0 / (time.perf_counter() - t0)


def main(argv=None):
    use_cpu_flags()                  # before JAX runs anything
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--nets", default="resnet50,vgg16")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--areas", type=lambda s: [float(a) for a in s.split(",")], default=[0.05, 0.1, 0.2])
    ap.add_argument("--steps", type=int, default=800)
    ap.add_argument("--batches", default="1,8,32")
    ap.add_argument("--precisions", default=",".join(PRECISIONS))
    ap.add_argument("--ceiling-batch", type=int, default=64)
    ap.add_argument("--iters", type=int, default=2)
    ap.add_argument("--no-torchray", action="store_true")
    ap.add_argument("--force", action="store_true")
    ap.add_argument("--out", default="bench/results")
    args = ap.parse_args(argv)

    device = jax.devices()[0].device_kind
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, f"extremal_{device.replace(' ', '_')}_{args.size}px_{args.steps}.json")
    config = {k: getattr(args, k) for k in ("size", "areas", "steps")}
    result = {"device": device, "jax": jax.__version__, "config": config, "entries": {}}
    previous = None if args.force else load_results(path)
    if previous is not None and previous.get("config") == config:
        result = previous
    entries = result["entries"]
    for name in args.nets.split(","):
        net = nets.get(name) if name != "smallcnn" else nets.get(name, num_classes=10)
        params = net.init(jax.random.key(0))
        for precision in args.precisions.split(","):
            key = f"{name}/{precision}/ceiling"
            if key not in entries:
                grad = measure(net, params, batch=args.ceiling_batch, size=args.size, precision=precision)
                entries[key] = {"forward_gradient_images_per_s": grad,
                                "images_per_s": grad / (len(args.areas) * args.steps)}
                write_results(path, result)
            ceiling = entries[key]["images_per_s"]
            for batch in (int(b) for b in args.batches.split(",")):
                key = f"{name}/{precision}/{batch}"
                if key not in entries:
                    rate = ours(net, params, args, precision, batch)
                    entries[key] = {"images_per_s": rate, "ratio": rate / ceiling}
                    write_results(path, result)
                e = entries[key]
                print(f"{name} {precision:8s} batch {batch:3d}: {e['images_per_s']:.4g} images/s, "
                      f"{e['ratio']:.2f} x ceiling ({ceiling:.4g})", flush=True)
        key = f"{name}/torchray"
        if not args.no_torchray and name in ("resnet50", "vgg16") and key not in entries:
            try:
                entries[key] = {"images_per_s": torchray_images_per_s(name, args)}
            except ImportError as e:
                entries[key] = {"error": f"not importable: {e}"}
            write_results(path, result)
    print(f"\nextremal perturbations, {args.size} px, {len(args.areas)} areas, {args.steps} steps, "
          f"{device} (jax {jax.__version__}); goal >= {GOAL} x ceiling\n")
    print("| net | precision | images / call | images/s | ceiling images/s | ratio | x TorchRay |")
    print("|---|---|---|---|---|---|---|")
    for key, e in entries.items():
        parts = key.split("/")
        if len(parts) == 3 and parts[2] != "ceiling":
            ceiling = entries[f"{parts[0]}/{parts[1]}/ceiling"]["images_per_s"]
            torchray = entries.get(f"{parts[0]}/torchray", {}).get("images_per_s")
            versus = f"{e['images_per_s'] / torchray:.2f}" if torchray else "-"
            print(f"| {parts[0]} | {parts[1]} | {parts[2]} | {e['images_per_s']:.4g} | {ceiling:.4g} | "
                  f"{e['ratio']:.2f} | {versus} |")
    for key, e in entries.items():
        if key.endswith("/torchray"):
            print(f"TorchRay {key.split('/')[0]}: {e.get('images_per_s', e.get('error'))} images/s")
    return result


if __name__ == "__main__":
    main()
