"""Steps per second of the deep image prior, against an eager PyTorch loop of the same skip net.

For each image size, precision and number of images per call, in one run on one device:

* ``steps_per_s``: Adam steps per second of :func:`jaxinterp.synthesis.dip.deep_image_prior`
  (``--steps`` steps in one compiled ``lax.scan``, denoising, compiled ahead
  of time, median of ``--iters`` calls; the per-call init of the nets and
  noise is included and is negligible against the steps);
* ``image_steps_per_s`` = steps_per_s x images per call;
* PyTorch (when importable and ``--no-torch`` is not given): an eager loop of
  the same skip net (written here from the paper's description: reflection
  padding, stride-2 convs, BatchNorm in train mode, LeakyReLU 0.2, bilinear
  upsampling, sigmoid) with Adam 0.01 and the perturbation of z, one image,
  float32 with PyTorch's defaults (cuDNN TF32 allowed), as the paper's code
  runs, denormals flushed to zero as XLA does (see :func:`torch_steps_per_s`);
  ``ratio`` = our image-steps/s / PyTorch's steps/s.  docs/references.md (Peer speeds): 77 steps/s
  at 512 px on one H100.

    python -m bench.dip                          # 512 px, paper's 128-channel net, 1 and 16 images, fp32 / bf16
    python -m bench.dip --size 64,256 --steps 10,2 --batches 1,4,16 --precisions fp32 --iters 1   # 2-core CPU
    python -m bench.dip --quick --out /tmp/b     # tiny (32 px, small net): the smoke test

Precisions: 'fp32' (float32 operands at the default matmul precision: TF32 on
NVIDIA Ampere and later, like PyTorch's cuDNN default), 'highest' (true fp32)
and 'bf16' (``compute_dtype=jnp.bfloat16``: conv operands in bfloat16,
accumulation, BatchNorm, Adam in float32).  ``--size`` and ``--steps`` take
one value or a comma-separated list (steps: one per size).  Results go to
``<out>/dip_<size>px_<device>.json`` after every entry; a rerun with the same
configuration skips the entries already there (``--force`` re-measures).
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from bench.ceiling import load_results, time_call, write_results  # noqa: E402

from jaxinterp.xla_cpu import use_cpu_flags  # noqa: E402
from jaxinterp.synthesis import dip  # noqa: E402

PRECISIONS = ("fp32", "highest", "bf16")
PAPER_NET = dict(in_channels=32, down=(128,) * 5, up=(128,) * 5, skip=(4,) * 5)
QUICK_NET = dict(in_channels=4, down=(4, 4), up=(4, 4), skip=(2, 2))


def ours(size: int, batch: int, precision: str, steps: int, iters: int, net: dict) -> float:
    """Adam steps per second of deep_image_prior on ``batch`` noisy images per call."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision: expected one of {PRECISIONS}, got {precision!r}")
    dtype = jnp.bfloat16 if precision == "bf16" else jnp.float32
    x = jax.random.uniform(jax.random.key(1), (batch, size, size, 3))
    fn = jax.jit(lambda x, k: dip.deep_image_prior(x, key=k, steps=steps, compute_dtype=dtype, **net).images)
    with jax.default_matmul_precision("highest" if precision == "highest" else "default"):
        compiled = fn.lower(x, jax.random.key(0)).compile()
        seconds = time_call(compiled, x, jax.random.key(0), iters=iters, warmup=0)
    return steps / seconds


def torch_skip_net(in_channels: int, down, up, skip):
    """The same skip generator as torch modules (for the eager baseline)."""
    import torch.nn as nn

    def conv(cin, cout, k, stride=1):
        layers = [nn.ReflectionPad2d(k // 2)] if k > 1 else []
        return nn.Sequential(*layers, nn.Conv2d(cin, cout, k, stride))

    def block(cin, cout, k, stride=1):
        return [conv(cin, cout, k, stride), nn.BatchNorm2d(cout), nn.LeakyReLU(0.2)]

    class Scale(nn.Module):
        def __init__(self, i, cin):
            super().__init__()
            deeper_out = up[i + 1] if i + 1 < len(down) else down[i]
            self.down = nn.Sequential(*block(cin, down[i], 3, 2), *block(down[i], down[i], 3))
            self.deeper = Scale(i + 1, down[i]) if i + 1 < len(down) else nn.Identity()
            self.upsample = nn.Upsample(scale_factor=2, mode="bilinear")
            self.skip = nn.Sequential(*block(cin, skip[i], 1)) if skip[i] else None
            self.up = nn.Sequential(nn.BatchNorm2d(skip[i] + deeper_out), *block(skip[i] + deeper_out, up[i], 3),
                                    *block(up[i], up[i], 1))

        def forward(self, h):
            import torch
            parts = [self.upsample(self.deeper(self.down(h)))]
            if self.skip is not None:
                parts.insert(0, self.skip(h))
            return self.up(torch.cat(parts, 1))

    return nn.Sequential(Scale(0, in_channels), nn.Conv2d(up[0], 3, 1), nn.Sigmoid())


def torch_steps_per_s(size: int, steps: int, net: dict) -> float:
    """Steps/s of an eager PyTorch DIP denoising loop on one image (float32, PyTorch defaults).

    Denormals are flushed to zero (``torch.set_flush_denormal``, set before
    the first parallel op so that PyTorch's worker threads inherit it), as
    JAX's CPU client does while it runs a program: on a CPU the fit otherwise
    meets denormal numbers within a few steps, and a step took several times
    longer (64 px: 6.2 s against 1.0 s, one loaded 2-core run each).  Seeded (0).
    """
    import torch
    torch.set_flush_denormal(True)
    torch.manual_seed(0)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = torch_skip_net(**net).to(device)
    z = 0.1 * torch.rand(1, net["in_channels"], size, size, device=device)
    y = torch.rand(1, 3, size, size, device=device)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    avg = None

    def step():
        nonlocal avg
        opt.zero_grad()
        out = model(z + torch.randn_like(z) / 30)
        loss = torch.nn.functional.mse_loss(out, y)
        loss.backward()
        opt.step()
        with torch.no_grad():
            avg = out.detach() if avg is None else 0.99 * avg + 0.01 * out.detach()

    for _ in range(3):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps / (time.perf_counter() - t0)


def dip_benchmark(*, size: int = 512, batches=(1, 16), precisions=("fp32", "bf16"), steps: int = 50,
                  iters: int = 2, torch: bool = True, quick: bool = False, out: str | None = "bench/results",
                  force: bool = False, log=print) -> dict:
    """Measure (or resume) the deep image prior's throughput; returns the results dict.

    Args:
      size: image side (default 512, the PyTorch figure of docs/references.md, Peer speeds).
      batches: images per call (default 1 and 16).
      precisions: of :data:`PRECISIONS` (default fp32 and bf16).
      steps: Adam steps per timed call (default 50).
      iters: timed calls per entry (median).
      torch: also time the eager PyTorch loop (one image) when torch imports.
      quick: a tiny net (2 scales of 4 channels) instead of the paper's 128-channel 5-scale net.
      out: results folder (None: no file).
      force: re-measure entries already in the file.
      log: progress printer.

    Returns:
      ``{'device', 'jax', 'config', 'entries'}``; entries ``'<precision>/<batch>'``:
      ``{'steps_per_s', 'image_steps_per_s'[, 'ratio_to_torch']}`` and ``'torch'``:
      ``{'steps_per_s'}`` or ``{'error'}``.
    """
    net = QUICK_NET if quick else PAPER_NET
    device = jax.devices()[0].device_kind
    config = {"size": size, "steps": steps, "net": {k: list(v) if isinstance(v, tuple) else v for k, v in net.items()}}
    result = {"device": device, "jax": jax.__version__, "config": config, "entries": {}}
    path = None
    if out is not None:
        os.makedirs(out, exist_ok=True)
        path = os.path.join(out, f"dip_{size}px_{device.replace(' ', '_')}.json")
        previous = None if force else load_results(path)
        if previous is not None and previous.get("config") == config:
            result = previous
    entries = result["entries"]

    def save():
        if path is not None:
            write_results(path, result)

    if torch and "torch" not in entries:
        try:
            entries["torch"] = {"steps_per_s": torch_steps_per_s(size, max(3, steps // 2), net)}
        except ImportError as e:
            entries["torch"] = {"error": f"not importable: {e}"}
        save()
    torch_rate = entries.get("torch", {}).get("steps_per_s")
    for precision in precisions:
        for batch in batches:
            key = f"{precision}/{batch}"
            if key not in entries:
                rate = ours(size, int(batch), precision, steps, iters, net)
                entries[key] = {"steps_per_s": rate, "image_steps_per_s": rate * int(batch)}
                save()
            e = entries[key]
            if torch_rate:
                e["ratio_to_torch"] = e["image_steps_per_s"] / torch_rate
            log(f"{precision:8s} {batch:3d} images/call: {e['steps_per_s']:.4g} steps/s, "
                f"{e['image_steps_per_s']:.4g} image-steps/s")
    save()
    return result


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",")]


def print_table(result: dict, quick: bool) -> None:
    """The Markdown table of one size's results."""
    entries, config = result["entries"], result["config"]
    print(f"\ndeep image prior, {config['size']} px, {'tiny' if quick else 'paper'} skip net, {config['steps']} steps "
          f"per call, {result['device']} (jax {result['jax']})\n")
    print("| precision | images / call | steps/s | image-steps/s | x PyTorch (1 image, eager) |")
    print("|---|---|---|---|---|")
    for key, e in entries.items():
        if key != "torch":
            p, b = key.split("/")
            ratio = f"{e['ratio_to_torch']:.2f}" if "ratio_to_torch" in e else "-"
            print(f"| {p} | {b} | {e['steps_per_s']:.4g} | {e['image_steps_per_s']:.4g} | {ratio} |")
    t = entries.get("torch")
    if t is not None:
        print(f"PyTorch eager, 1 image: {t.get('steps_per_s', t.get('error'))} steps/s")


def main(argv=None) -> dict[int, dict]:
    use_cpu_flags()                  # before JAX runs anything
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--size", default=None, help="image sides, comma-separated [512; 32 with --quick]")
    ap.add_argument("--batches", default=None, help="images per call [1,16; 1,2 with --quick]")
    ap.add_argument("--precisions", default="fp32,bf16")
    ap.add_argument("--steps", default=None,
                    help="steps per timed call, one value or one per size [50; 3 with --quick]")
    ap.add_argument("--iters", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="tiny net and images (smoke test)")
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--force", action="store_true")
    ap.add_argument("--out", default="bench/results")
    args = ap.parse_args(argv)
    sizes = _ints(args.size or ("32" if args.quick else "512"))
    batches = _ints(args.batches or ("1,2" if args.quick else "1,16"))
    steps = _ints(args.steps or ("3" if args.quick else "50"))
    if len(steps) not in (1, len(sizes)):
        ap.error(f"--steps: expected one value or one per size ({len(sizes)}), got {args.steps}")
    results = {}
    for size, n_steps in zip(sizes, steps * len(sizes) if len(steps) == 1 else steps):
        results[size] = dip_benchmark(size=size, batches=batches, precisions=args.precisions.split(","),
                                      steps=n_steps, iters=args.iters, torch=not args.no_torch, quick=args.quick,
                                      out=args.out, force=args.force)
    for result in results.values():
        print_table(result, args.quick)
    return results


if __name__ == "__main__":
    main()
