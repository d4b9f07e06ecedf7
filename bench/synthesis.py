"""Throughput of feature visualisation (channels/s) against the forward + gradient ceiling of the same net.

For each net, precision and number of channels per call, in one run on one device:

* ``channels_per_s``: channels of ``--layer`` (resnet50: 'layer4') rendered per
  second by :func:`jaxinterp.synthesis.activation_maximisation` (as visualise_layer) (Lucid's defaults:
  Fourier parameterisation, decorrelated colour, standard transforms, Adam
  0.05; ``--size`` 128 px, ``--steps`` 512, one image per channel), jitted
  once, compiled ahead of time and timed over ``--iters`` calls (median);
  calls of more than ``--chunk`` channels are mapped ``--chunk`` at a time
  (``chunk_size``);
* ``ceiling``: forward + input-gradient images/s of the same net at the same
  size and precision (:func:`ceiling.measure`, batch ``--ceiling-batch``)
  divided by ``steps``: the channels/s of a perfect implementation, one
  forward + backward pass per channel and step;
* ``ratio`` = channels_per_s / ceiling channels/s;
* lucent 0.1.8 (when torch and lucent import and ``--no-lucent`` is not given):
  ``render_vis`` on torchvision's resnet50 (random weights) with the objective
  'layer4:c', ``--steps`` steps, one channel per call and ``--lucent-batch``
  channels in one call (``param.image(size, batch=B)`` and the sum of the B
  per-element channel objectives), ``progress=False, show_image=False``.
  lucent upsamples images smaller than 224 px to 224 before the net (its
  default, kept: its net sees (224 / 140)^2 = 2.6x the pixels ours sees at
  128 px, so compare ratios to each side's ceiling too).  lucent's standard
  transforms need kornia 0.4.1, installed with it by the Makefile.  docs/references.md (Peer speeds) quotes lucent on an H100: 9.3 s for one channel, 30.6 s for
  64 channels in one batch;
* deep image prior: ``bench/dip.py``'s ``dip_benchmark`` when that file exists
  (``--no-dip`` skips it).

Precisions: 'highest' (fp32), 'default' (TF32 on recent NVIDIA GPUs), 'bf16'
(params cast to bfloat16 and ``compute_dtype=jnp.bfloat16``: the net runs in
bf16; the image parameters, the optimiser and the transforms stay in float32).

Target: >= 40 channels/s in bf16 on an H100 for resnet50 'layer4' at 128 px,
512 steps (2048 channels in under a minute; lucent: 64 channels in 30.6 s,
about 2 channels/s).

    python -m bench.synthesis                          # resnet50, 128 px, 512 steps, 1,64,512,2048 channels
    python -m bench.synthesis --channels 1,64 --precisions bf16 --no-lucent
    python -m bench.synthesis --quick --out /tmp/bench # smallcnn, 32 px, 2 steps, no transforms (smoke test)

Results are written to ``<out>/synthesis_<device>.json`` after every entry; a
rerun with the same configuration skips the entries already there (``--force``
re-measures; a file measured with another configuration is not overwritten
without ``--force``).  Progress lines are printed as entries finish.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import inspect
import operator
import os
import sys
import time
import types

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
from bench.ceiling import PRECISIONS, _cast, load_results, measure, time_call, write_results  # noqa: E402

from jaxinterp.xla_cpu import use_cpu_flags  # noqa: E402
from jaxinterp import nets  # noqa: E402
from jaxinterp.targets import Unit  # noqa: E402
from jaxinterp.synthesis import STANDARD, activation_maximisation  # noqa: E402

GOAL_CHANNELS_PER_S = 40.0          # bf16, H100, resnet50 layer4, 128 px, 512 steps
LAYERS = {"resnet50": "layer4", "vgg16": "features.29", "smallcnn": "features.10"}
LUCENT_H100_SECONDS = {"1": 9.3, "64": 30.6}       # docs/references.md, Peer speeds


def get_net(name: str) -> nets.Net:
    return nets.get(name, num_classes=10) if name == "smallcnn" else nets.get(name)


def render_fn(net: nets.Net, layer: str, *, size: int, steps: int, chunk: int | None, dtype,
              transforms: str = "standard"):
    """jit(params, channels (T,)) -> images (T, 1, size, size, 3) of visualise_layer's renders (key 0).

    Calls :func:`activation_maximisation` with ``Unit(layer, channels)``, which is
    what ``visualise_layer(net, params, layer, channels)`` does, since
    visualise_layer converts ``channels`` with np.asarray and so cannot take
    them traced.
    """
    def fn(params, channels):
        return activation_maximisation(net, params, Unit(layer, channels), key=jax.random.key(0),
                                       image_size=size, steps=steps, chunk_size=chunk, compute_dtype=dtype,
                                       transforms=STANDARD if transforms == "standard" else ()).images
    return jax.jit(fn)


def ours(net, params, layer: str, args, precision: str, channels: int) -> dict:
    """channels/s of visualise_layer for ``channels`` channels per call, and the compile time."""
    dtype = jnp.bfloat16 if precision == "bf16" else None
    p = _cast(params, dtype) if dtype is not None else params
    depth = net.activation_shape(layer, (args.size, args.size))[-1]
    ch = jnp.arange(channels, dtype=jnp.int32) % depth
    chunk = args.chunk if channels > args.chunk else None
    fn = render_fn(net, layer, size=args.size, steps=args.steps, chunk=chunk, dtype=dtype,
                   transforms=args.transforms)
    with jax.default_matmul_precision("highest" if precision == "highest" else "default"):
        t0 = time.perf_counter()
        compiled = fn.lower(p, ch).compile()
        compile_s = time.perf_counter() - t0
        images = compiled(p, ch)                                     # warm-up (first-call allocations)
        finite = bool(np.isfinite(np.asarray(images, np.float32)).all())
        seconds = time_call(compiled, p, ch, iters=args.iters, warmup=0)
    return {"channels_per_s": channels / seconds, "seconds_per_call": seconds, "compile_s": compile_s,
            "chunk_size": chunk, "finite": finite}


# -- lucent ---------------------------------------------------------------------------------------


_LUCENT_NOTE: str | None = None       # how lucent was imported (set by _import_lucent)


def _ipython_stub() -> dict[str, types.ModuleType]:
    """Modules named like IPython and IPython.display whose functions raise (lucent imports them)."""
    def _missing(*_, **__):
        raise ImportError("IPython is absent (stub)")
    stub = types.ModuleType("IPython")
    stub.display = types.ModuleType("IPython.display")
    stub.display.display = stub.display.HTML = stub.display.Image = _missing
    return {"IPython": stub, "IPython.display": stub.display}


def _import_lucent() -> tuple[object, object, str]:
    """(render module, objectives module, transforms note); ImportError if torch, lucent or kornia are absent.

    lucent 0.1.8 imports IPython (display helpers) at module level; when it is
    absent (the Makefile installs lucent, kornia 0.4.1 and ``decorator`` only)
    a stub stands in while lucent imports, then leaves ``sys.modules``:
    ``render_vis(show_image=False)`` never calls it.
    """
    importlib.import_module("torch")
    importlib.import_module("kornia")      # lucent's standard transforms
    if importlib.util.find_spec("lucent") is None:
        raise ImportError("lucent is not installed")
    global _LUCENT_NOTE
    if _LUCENT_NOTE is None:
        added = []
        if importlib.util.find_spec("IPython") is None:
            stubs = _ipython_stub()
            sys.modules.update(stubs)
            added = list(stubs)
        try:
            importlib.import_module("lucent.optvis.render")
        finally:
            for name in added:             # lucent holds its references; nothing else sees the stubs
                sys.modules.pop(name, None)
        _LUCENT_NOTE = "standard"
    from lucent.optvis import objectives, render
    return render, objectives, _LUCENT_NOTE


def lucent_seconds(model, layer: str, channels, *, steps: int, size: int,
                   fixed_image_size: int | None = None) -> tuple[float, str]:
    """Seconds of one lucent ``render_vis`` call rendering ``channels`` (one batch element each).

    Args:
      model: a torch module in eval mode on its device.
      layer: lucent's layer name (module path with '_' for '.', e.g. 'layer4').
      channels: the channel of each batch element (B,).
      steps, size: optimisation steps and image side.
      fixed_image_size: lucent's resize before the net (None: its default, 224 for smaller images).

    Returns:
      (seconds, transforms note).
    """
    import torch
    render, objectives, note = _import_lucent()
    from lucent.optvis import param
    channels = [int(c) for c in channels]
    if len(channels) == 1:
        objective = f"{layer}:{channels[0]}"
    else:
        objective = functools.reduce(operator.add, [objectives.channel(layer, c, batch=b)
                                                    for b, c in enumerate(channels)])
    device = next(model.parameters()).device
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    render.render_vis(model, objective, param_f=lambda: param.image(size, batch=len(channels)),
                      thresholds=(steps,), progress=False, show_image=False,
                      fixed_image_size=fixed_image_size)
    sync()
    return time.perf_counter() - t0, note


def lucent_entries(args, entries: dict, path: str, result: dict) -> None:
    """lucent on torchvision's resnet50 (random weights): one channel, then ``--lucent-batch`` channels."""
    try:
        import torch
        import torchvision
        _import_lucent()
    except ImportError as e:
        entries.setdefault("lucent", {"error": f"not importable: {e}"})
        write_results(path, result)
        return
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = torchvision.models.resnet50(weights=None).eval().to(device)
    for q in model.parameters():
        q.requires_grad_(False)
    lucent_seconds(model, "layer4", [0], steps=2, size=args.size)                # warm-up
    for batch in (1, args.lucent_batch):
        key = f"lucent/{batch}"
        if key in entries:
            continue
        print(f"lucent: {batch} channel(s), {args.steps} steps ...", flush=True)
        seconds, note = lucent_seconds(model, "layer4", range(batch), steps=args.steps, size=args.size)
        entries[key] = {"channels_per_s": batch / seconds, "seconds_per_call": seconds, "transforms": note,
                        "torch_device": str(device), "net_input": max(args.size, 224),
                        "h100_reference_s": LUCENT_H100_SECONDS.get(str(batch))}
        write_results(path, result)
        print(f"lucent {batch:4d} channel(s): {seconds:.3g} s ({batch / seconds:.3g} channels/s; "
              f"transforms {note})", flush=True)


# -- deep image prior (bench/dip.py, written separately) -----------------------------------------


def dip_entry(args) -> dict:
    """Runs ``bench/dip.py``'s ``dip_benchmark`` if that file exists (imported lazily).

    Passed (where its signature declares them): quick, out, force, iters,
    torch (= not --no-lucent: the peer runs), precisions (ours named as dip's:
    highest -> 'highest', default -> 'fp32', bf16 -> 'bf16') and, with --quick,
    this run's size and steps and one image per call; its own defaults
    otherwise (512 px, batches 1 and 16).  Its return value is stored.
    """
    path = os.path.join(BENCH_DIR, "dip.py")
    if not os.path.exists(path):
        return {"skipped": "bench/dip.py does not exist"}
    spec = importlib.util.spec_from_file_location("bench_dip", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    accepted = inspect.signature(module.dip_benchmark).parameters
    names = {"highest": "highest", "default": "fp32", "bf16": "bf16"}
    offered = {"quick": args.quick, "out": args.out, "force": args.force, "iters": args.iters,
               "torch": not args.no_lucent,
               "precisions": tuple(names[p] for p in args.precisions.split(","))}
    if args.quick:
        offered.update(size=args.size, steps=args.steps, batches=(1,))
    kwargs = {k: v for k, v in offered.items() if k in accepted}
    value = module.dip_benchmark(**kwargs)
    return value if isinstance(value, dict) else {"result": repr(value)}


# -- command line ---------------------------------------------------------------------------------


def parse(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--nets", default="resnet50")
    ap.add_argument("--layer", default=None, help="split point (default: resnet50 layer4, vgg16 features.29, "
                                                  "smallcnn features.10)")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=512)
    ap.add_argument("--channels", default="1,64,512,2048")
    ap.add_argument("--transforms", default="standard", choices=("standard", "none"),
                    help="Lucid's standard transforms, or none (as lucent without kornia)")
    ap.add_argument("--chunk", type=int, default=256, help="channels per vmapped chunk (chunk_size)")
    ap.add_argument("--precisions", default=",".join(PRECISIONS))
    ap.add_argument("--ceiling-batch", type=int, default=64)
    ap.add_argument("--iters", type=int, default=1, help="timed calls after compilation and warm-up (median)")
    ap.add_argument("--lucent-batch", type=int, default=64)
    ap.add_argument("--no-lucent", action="store_true")
    ap.add_argument("--no-dip", action="store_true")
    ap.add_argument("--force", action="store_true")
    ap.add_argument("--quick", action="store_true", help="smallcnn, 32 px, 2 steps, channels 1,2, fp32, no transforms, no lucent")
    ap.add_argument("--out", default="bench/results")
    args = ap.parse_args(argv)
    if args.quick:                         # the tiny configuration, for options left at their defaults
        quick = {"nets": "smallcnn", "size": 32, "steps": 2, "channels": "1,2", "precisions": "highest",
                 "ceiling_batch": 4, "no_lucent": True, "lucent_batch": 2, "transforms": "none"}
        for field, value in quick.items():
            if getattr(args, field) == ap.get_default(field):
                setattr(args, field, value)
    for name in args.precisions.split(","):
        if name not in PRECISIONS:
            raise ValueError(f"--precisions: expected some of {PRECISIONS}, got {name!r}")
    return args


def table(entries: dict) -> list[str]:
    lines = ["| net | layer | precision | channels / call | channels/s | ceiling channels/s | ratio |",
             "|---|---|---|---|---|---|---|"]
    for key, e in entries.items():
        parts = key.split("/")
        if len(parts) == 4 and parts[3] != "ceiling":
            ceiling = entries["/".join(parts[:3] + ["ceiling"])]["channels_per_s"]
            lines.append(f"| {parts[0]} | {parts[1]} | {parts[2]} | {parts[3]} | {e['channels_per_s']:.4g} | "
                         f"{ceiling:.4g} | {e['ratio']:.2f} |")
    return lines


def main(argv=None) -> dict:
    use_cpu_flags()                  # before JAX runs anything
    args = parse(argv)
    device = jax.devices()[0].device_kind
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, f"synthesis_{device.replace(' ', '_')}.json")
    config = {"size": args.size, "steps": args.steps, "chunk": args.chunk, "ceiling_batch": args.ceiling_batch,
              "param": "fourier", "transforms": args.transforms, "images_per_channel": 1}
    result = {"device": device, "backend": jax.default_backend(), "jax": jax.__version__, "config": config,
              "goal": {"channels_per_s": GOAL_CHANNELS_PER_S, "precision": "bf16", "device": "H100"},
              "entries": {}}
    previous = None if args.force else load_results(path)
    if previous is not None:
        if previous.get("config") != config:
            raise ValueError(f"--out: {path} was measured with another configuration "
                             f"({previous.get('config')}); pass --force or another --out")
        result = previous
    entries = result["entries"]
    counts = [int(c) for c in args.channels.split(",")]
    t_start = time.perf_counter()
    for name in args.nets.split(","):
        net = get_net(name)
        layer = args.layer or LAYERS.get(name) or net.layers[-3]
        params = net.init(jax.random.key(0))
        for precision in args.precisions.split(","):
            key = f"{name}/{layer}/{precision}/ceiling"
            if key not in entries:
                grad = measure(net, params, batch=args.ceiling_batch, size=args.size, precision=precision)
                entries[key] = {"forward_gradient_images_per_s": grad, "channels_per_s": grad / args.steps}
                write_results(path, result)
            ceiling = entries[key]["channels_per_s"]
            print(f"[{time.perf_counter() - t_start:7.1f}s] {name} {precision}: ceiling {ceiling:.4g} channels/s "
                  f"({entries[key]['forward_gradient_images_per_s']:.4g} forward+gradient images/s)", flush=True)
            for channels in counts:
                key = f"{name}/{layer}/{precision}/{channels}"
                if key not in entries:
                    e = ours(net, params, layer, args, precision, channels)
                    entries[key] = {**e, "ratio": e["channels_per_s"] / ceiling}
                    write_results(path, result)
                e = entries[key]
                print(f"[{time.perf_counter() - t_start:7.1f}s] {name} {layer} {precision:8s} {channels:5d} "
                      f"channels/call: {e['channels_per_s']:.4g} channels/s, {e['ratio']:.2f} x ceiling",
                      flush=True)
    if not args.no_lucent:
        lucent_entries(args, entries, path, result)
    if not args.no_dip and "skipped" in entries.get("dip", {"skipped": True}):
        # Deep image prior: bench/dip.py is written by another helper; skipped while it is absent.
        entries["dip"] = dip_entry(args)
        if "skipped" not in entries["dip"]:
            write_results(path, result)
    write_results(path, result)
    print(f"\nfeature visualisation, {args.size} px, {args.steps} steps, {device} (jax {jax.__version__}); "
          f"goal >= {GOAL_CHANNELS_PER_S:g} channels/s in bf16 on an H100\n")
    print("\n".join(table(entries)))
    for key in ("lucent/1", f"lucent/{args.lucent_batch}", "lucent"):
        if key in entries:
            e = entries[key]
            print(f"{key}: {e.get('seconds_per_call', e.get('error'))} s per call")
    return result


if __name__ == "__main__":
    main()
