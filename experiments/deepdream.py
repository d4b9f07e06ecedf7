"""DeepDream (Mordvintsev, Olah and Tyka 2015; google/deepdream) at several layers of the smallcnn.

    python -m experiments.deepdream --config local --id dd         # seconds on a CPU
    python -m experiments.deepdream --id dd                         # 3 layers, 4 octaves x 10 steps, 64 px

Held-out synthetic images and bundled photographs are dreamed at each layer of
``layers`` (:func:`jaxinterp.synthesis.deepdream`, all images in one compiled
call per layer), one shard ``<out>/<id>/shards/<layer>.npz`` per layer: a rerun
with the same ``--id`` skips finished layers.

``metrics.json`` gives, per layer and image, the dream's objective
``0.5 ||a||^2`` at the layer before and after (computed here from the stored
8-bit images) and their ratio: DeepDream must raise it.  ``report.html``
shows each image and its dreams, one column per layer.
"""

from __future__ import annotations

import functools
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp import plot
from jaxinterp.report import Report, write_json
from jaxinterp.synthesis import deepdream

from experiments import common
from experiments.configs.deepdream import get_config


@functools.lru_cache(maxsize=None)
def dream_fn(net, layer: str, octaves: int, octave_scale: float, steps: int, step_size: float, jitter: int,
             seed: int):
    """jit(params, x (N, H, W, 3)) -> dreamed images (N, H, W, 3)."""
    def fn(params, x):
        return deepdream(net, params, x, layer, key=jax.random.key(seed), octaves=octaves,
                         octave_scale=octave_scale, steps=steps, step_size=step_size, jitter=jitter)
    return jax.jit(fn)


@functools.lru_cache(maxsize=None)
def energy_fn(net, layer: str):
    """jit(params, x) -> (N,) DeepDream's objective 0.5 ||a||^2 at ``layer`` per image."""
    def fn(params, x):
        a = net.apply(params, x, stop=layer)
        return 0.5 * jnp.sum((a ** 2).reshape(a.shape[0], -1), axis=1)
    return jax.jit(fn)


def dream_layer(net, params, x: np.ndarray, layer: str, config) -> dict[str, np.ndarray]:
    fn = dream_fn(net, layer, config.octaves, config.octave_scale, config.steps, config.step_size, config.jitter,
                  config.seed)
    dreams = np.round(np.asarray(fn(params, jnp.asarray(x))) * 255).astype(np.uint8)
    energy = energy_fn(net, layer)
    return {"images": dreams,
            "energy_before": np.asarray(energy(params, jnp.asarray(x))),
            "energy_after": np.asarray(energy(params, jnp.asarray(dreams, jnp.float32) / 255))}


def check_config(config, net) -> None:
    """ValueError naming the config field at fault."""
    for layer in config.layers:
        if layer not in net.layers:
            raise ValueError(f"layers: expected split points of {net.name} {list(net.layers)}, got {layer!r}")
    if not config.layers:
        raise ValueError("layers: expected at least one split point")


def summarise(run_dir, config, data, results, log) -> dict:
    layers = {}
    for layer, r in results.items():
        gain = r["energy_after"] / np.maximum(r["energy_before"], 1e-12)
        layers[layer] = {"energy_before": r["energy_before"].tolist(), "energy_after": r["energy_after"].tolist(),
                         "gain": gain.tolist(), "median_gain": float(np.median(gain)),
                         "share_raised": float(np.mean(r["energy_after"] > r["energy_before"]))}
    metrics = {"images": [str(n) for n in data["name"]], "layers": layers}
    write_json(os.path.join(run_dir, "metrics.json"), metrics)
    report = Report(f"DeepDream {os.path.basename(run_dir)}")
    sec = report.section("DeepDream", f"{config.octaves} octaves (scale {config.octave_scale}) of {config.steps} "
                         f"steps of {config.step_size:.4g} / mean|g|, roll jitter {config.jitter} px, "
                         f"{config.image_size} px, {'trained' if config.pretrained else 'random-weight'} smallcnn. "
                         f"Gain: 0.5 ||a||^2 at the layer after / before.")
    sec.table([(l, e["median_gain"], e["share_raised"]) for l, e in layers.items()],
              header=("layer", "median gain", "share of images raised"))
    cells, titles = [], []
    for i, name in enumerate(data["name"]):
        cells.append(data["image"][i])
        titles.append(str(name)[:18])
        for layer, r in results.items():
            cells.append(r["images"][i])
            titles.append(f"{layer} x{layers[layer]['gain'][i]:.3g}")
    sec.figure(plot.grid(cells, titles, os.path.join(run_dir, "dreams.png"), ncols=1 + len(results)),
               "Each image and its dreams, one column per layer (gain of the layer's objective).")
    report.write(run_dir)
    log(f"median gains {[round(e['median_gain'], 3) for e in layers.values()]}; wrote {run_dir}/metrics.json, "
        f"report.html")
    return metrics


def run(config, run_id: str | None = None) -> dict:
    log = common.logger("deepdream")
    run_id = run_id or time.strftime("%Y%m%d-%H%M%S")
    net, params, _ = common.load_smallcnn(config, log)
    check_config(config, net)
    run_dir = common.prepare_run(config, run_id, config.out, log)
    data = common.held_out_images(config.held_out, list(config.photos), config.image_size,
                                       os.path.join(run_dir, "images.npz"))
    results, computed = {}, 0
    for layer in config.layers:
        path = os.path.join(run_dir, "shards", f"{layer}.npz")
        done = common.load_npz(path)
        if done is None:
            t0 = time.perf_counter()
            done = dream_layer(net, params, data["image"], layer, config)
            common.save_npz(path, **done)
            computed += 1
            log(f"{layer}: {len(data['image'])} images in {time.perf_counter() - t0:.1f}s")
        results[layer] = done
    log(f"computed {computed} layers, {len(results) - computed} resumed from disk")
    metrics = summarise(run_dir, config, data, results, log)
    return {**metrics, "computed_shards": computed}


def main(argv=None) -> int:
    return common.main(argv, get_config, __doc__, run)


if __name__ == "__main__":
    raise SystemExit(main())
