"""Feature visualisation (Olah et al. 2017) of every channel of a layer of the smallcnn, and of its classes.

    python -m experiments.feature_vis --config local --id fv         # seconds on a CPU
    python -m experiments.feature_vis --id fv                         # 128 channels, 512 steps, 64 px
    python -m experiments.feature_vis --id fv --set layer=features.7 --set pretrained=False

Channels are rendered ``shard_size`` at a time, each shard in one compiled call
of :func:`jaxinterp.synthesis.activation_maximisation` (all its channels
vmapped), and written to ``<out>/<id>/shards/c<first channel>.npz`` (images
as uint8, the objective's history, the render's own channel activation); the
classes go to ``shards/classes.npz``.  A rerun with the same ``--id`` skips
finished shards.

The check (``metrics.json``): activation maximisation should beat nature.
For each channel, the render's mean activation of that channel (the image
itself, no transforms) against the largest mean activation of the channel over
held-out images (``held_out`` synthetic images per variant, never seen in
training, and the bundled photographs); ``fraction_beating_held_out`` is the
share of channels whose render wins.  The same for each class logit.
``report.html`` shows the renders (channels.png, classes.png) and the table.
"""

from __future__ import annotations

import functools
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp import plot
from jaxinterp.targets import Unit
from jaxinterp.data import synthetic
from jaxinterp.report import Report, write_json
from jaxinterp.synthesis import STANDARD, activation_maximisation

from experiments import common
from experiments.configs.feature_vis import get_config


@functools.lru_cache(maxsize=None)
def channel_means_fn(net, layer: str | None):
    """jit(params, x (N, H, W, 3)) -> (N, C): each channel's spatial mean at ``layer`` (None: the logits)."""
    def fn(params, x):
        a = net.apply(params, x, stop=layer)
        return a.reshape(a.shape[0], -1, a.shape[-1]).mean(axis=1)
    return jax.jit(fn)


@functools.lru_cache(maxsize=None)
def render_fn(net, layer: str | None, size: int, steps: int, lr: float, param: str, transforms: str,
              batch: int, diversity: float, leaky: bool, seed: int):
    """jit(params, targets (S,)) -> (images (S, B, H, W, 3), history (S, steps)); layer None: class logits."""
    def fn(params, targets):
        target = targets if layer is None else Unit(layer, targets)
        r = activation_maximisation(net, params, target, key=jax.random.key(seed), image_size=size, param=param,
                                    steps=steps, lr=lr, transforms=STANDARD if transforms == "standard" else (),
                                    batch=batch, diversity=diversity, leaky=leaky)
        return r.images, r.history
    return jax.jit(fn)


def render_shard(net, params, layer, targets: np.ndarray, config) -> dict[str, np.ndarray]:
    """Renders of ``targets`` (padded to a full shard for one compilation) and their own activations."""
    k = len(targets)
    pad = max(config.shard_size, k) - k
    padded = np.concatenate([targets, np.repeat(targets[-1:], pad)]).astype(np.int32)
    fn = render_fn(net, layer, config.image_size, config.steps, config.lr, config.param, config.transforms,
                   config.batch, config.diversity, config.leaky, config.seed)
    images, history = (np.asarray(a)[:k] for a in fn(params, jnp.asarray(padded)))
    quantised = np.round(images * 255).astype(np.uint8)              # what is stored and shown
    flat = quantised.reshape(-1, *quantised.shape[2:]).astype(np.float32) / 255
    means = np.asarray(channel_means_fn(net, layer)(params, jnp.asarray(flat))).reshape(k, config.batch, -1)
    own = means[np.arange(k), :, targets].max(axis=1)                # best of the B images of each target
    return {"target": targets, "images": quantised, "history": history, "activation": own}


def compare(shards, held_out_means: np.ndarray, names: np.ndarray) -> list[dict]:
    """Per target: the render's activation vs the best held-out image's."""
    rows = []
    for s in shards:
        for t, act in zip(s["target"], s["activation"]):
            best = int(np.argmax(held_out_means[:, t]))
            rows.append({"target": int(t), "rendered": float(act), "best_held_out": float(held_out_means[best, t]),
                         "best_held_out_image": str(names[best]),
                         "wins": bool(act > held_out_means[best, t])})
    return rows


def summarise(run_dir, config, net, channel_rows, class_rows, shards, class_shard, log) -> dict:
    def share(rows):
        return float(np.mean([r["wins"] for r in rows])) if rows else None

    metrics = {"layer": config.layer, "channels": len(channel_rows),
               "fraction_beating_held_out": share(channel_rows),
               "median_rendered_over_best": float(np.median([r["rendered"] / max(abs(r["best_held_out"]), 1e-12)
                                                             for r in channel_rows])),
               "per_channel": channel_rows}
    if class_rows is not None:
        metrics["classes"] = class_rows
        metrics["class_fraction_beating_held_out"] = share(class_rows)
    write_json(os.path.join(run_dir, "metrics.json"), metrics)
    report = Report(f"Feature visualisation {os.path.basename(run_dir)}")
    sec = report.section(
        "Channels", f"Every channel of {config.layer} rendered by activation maximisation ({config.param} "
        f"parameterisation, {config.transforms} transforms, Adam {config.lr}, {config.steps} steps, "
        f"{config.image_size} px, {'leaky ReLUs while optimising, ' if config.leaky else ''}"
        f"{'trained' if config.pretrained else 'random-weight'} smallcnn).  A render "
        f"'wins' when its channel mean activation exceeds the best over the held-out images.")
    sec.table([("channels rendered", metrics["channels"]),
               ("fraction beating the best held-out image", metrics["fraction_beating_held_out"]),
               ("median render / best held-out activation", metrics["median_rendered_over_best"])]
              + ([("classes: fraction beating held-out", metrics["class_fraction_beating_held_out"])]
                 if class_rows is not None else []), header=("metric", "value"))
    shown = [(s["images"][i, 0], f"c{t}: {a:.3g}") for s in shards for i, (t, a) in
             enumerate(zip(s["target"], s["activation"]))][: config.show]
    sec.figure(plot.grid([im for im, _ in shown], [t for _, t in shown], os.path.join(run_dir, "channels.png"),
                         ncols=8), "Channel renders with their own channel activation.")
    sec.table([(r["target"], r["rendered"], r["best_held_out"], r["best_held_out_image"], r["wins"])
               for r in channel_rows], header=("channel", "render", "best held-out", "image", "wins"))
    if class_shard is not None:
        cs = report.section("Classes", "Class-logit maximisation for every class (same settings).")
        names = [synthetic.CLASSES[int(t)] if net.num_classes == synthetic.NUM_CLASSES else str(t)
                 for t in class_shard["target"]]
        cs.figure(plot.grid(list(class_shard["images"][:, 0]),
                            [f"{n}: {a:.3g}" for n, a in zip(names, class_shard["activation"])],
                            os.path.join(run_dir, "classes.png"), ncols=8), "Class renders with their logit.")
        cs.table([(n, r["rendered"], r["best_held_out"], r["best_held_out_image"], r["wins"])
                  for n, r in zip(names, class_rows)], header=("class", "render", "best held-out", "image", "wins"))
    report.write(run_dir)
    log(f"{metrics['fraction_beating_held_out']:.2f} of {metrics['channels']} channels beat the held-out images; "
        f"wrote {run_dir}/metrics.json, report.html")
    return metrics


def check_config(config, net) -> np.ndarray:
    """The channels to render; ValueError naming the config field at fault."""
    if config.layer not in net.layers:
        raise ValueError(f"layer: expected a split point of {net.name} {list(net.layers)}, got {config.layer!r}")
    if config.transforms not in ("standard", "none"):
        raise ValueError(f"transforms: expected 'standard' or 'none', got {config.transforms!r}")
    if not isinstance(config.shard_size, int) or config.shard_size < 1:
        raise ValueError(f"shard_size: expected a positive int, got {config.shard_size!r}")
    depth = net.activation_shape(config.layer, (config.image_size, config.image_size))[-1]
    n = depth if config.channels is None else config.channels
    if not isinstance(n, int) or not 1 <= n <= depth:
        raise ValueError(f"channels: expected an int in [1, {depth}] or None, got {config.channels!r}")
    return np.arange(n, dtype=np.int32)


def run(config, run_id: str | None = None) -> dict:
    log = common.logger("feature_vis")
    run_id = run_id or time.strftime("%Y%m%d-%H%M%S")
    net, params, _ = common.load_smallcnn(config, log)
    channels = check_config(config, net)
    run_dir = common.prepare_run(config, run_id, config.out, log)
    held = common.held_out_images(config.held_out, list(config.photos), config.image_size,
                           os.path.join(run_dir, "held_out.npz"))
    held_means = np.asarray(channel_means_fn(net, config.layer)(params, jnp.asarray(held["image"])))
    shards, computed = [], 0
    for start in range(0, len(channels), config.shard_size):
        path = os.path.join(run_dir, "shards", f"c{start:05d}.npz")
        done = common.load_npz(path)
        if done is None:
            t0 = time.perf_counter()
            done = render_shard(net, params, config.layer, channels[start:start + config.shard_size], config)
            common.save_npz(path, **done)
            computed += 1
            log(f"channels {start}..{start + len(done['target']) - 1} of {len(channels)}: {config.steps} steps "
                f"in {time.perf_counter() - t0:.1f}s")
        shards.append(done)
    class_shard = class_rows = None
    if config.classes:
        path = os.path.join(run_dir, "shards", "classes.npz")
        class_shard = common.load_npz(path)
        if class_shard is None:
            t0 = time.perf_counter()
            cfg = config.copy_and_resolve_references()
            cfg.shard_size = net.num_classes
            class_shard = render_shard(net, params, None, np.arange(net.num_classes, dtype=np.int32), cfg)
            common.save_npz(path, **class_shard)
            computed += 1
            log(f"{net.num_classes} classes in {time.perf_counter() - t0:.1f}s")
        logits = np.asarray(channel_means_fn(net, None)(params, jnp.asarray(held["image"])))
        class_rows = compare([class_shard], logits, held["name"])
    log(f"computed {computed} shards, {len(shards) + bool(config.classes) - computed} resumed from disk")
    metrics = summarise(run_dir, config, net, compare(shards, held_means, held["name"]), class_rows, shards,
                        class_shard, log)
    return {**metrics, "computed_shards": computed}


def main(argv=None) -> int:
    return common.main(argv, get_config, __doc__, run)


if __name__ == "__main__":
    raise SystemExit(main())
