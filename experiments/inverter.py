"""Learned inverters (Dosovitskiy and Brox 2016) at several depths of the smallcnn, resumable.

    python -m experiments.inverter --config local --id inv      # < 1 min on a CPU
    python -m experiments.inverter --id inv                      # 5 layers x 3000 steps
    python -m experiments.inverter --id inv --set "layers=['features.1','avgpool']"

For every layer of ``config.layers`` a decoder D is trained on synthetic 'easy'
images to minimise ||x - D(phi(x))||^2 (``jaxinterp.synthesis.inverter``),
then reconstructs held-out images.  The training set is drawn once and kept in
``<out>/<id>/data.npz``; each layer checkpoints its training to
``ckpt/<layer>/`` (a killed run resumes there) and writes its reconstructions to
``layers/<layer>.npz`` when done (a rerun skips it).  ``metrics.json`` has the
held-out MSE and PSNR per layer next to the mean-image baseline (predicting
the training set's mean image for every input), ``reconstructions.png`` the
originals and each layer's reconstructions, and ``report.html`` both.
"""

from __future__ import annotations

import math
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp import plot
from jaxinterp.data import synthetic
from jaxinterp.report import Report, write_json
from jaxinterp.synthesis.inverter import invert, train_inverter
from jaxinterp.train import zoo

from experiments import common
from experiments.configs.inverter import get_config


def psnr(mse: float) -> float:
    """Peak signal-to-noise ratio in dB of images in [0, 1]: 10 log10(1 / MSE)."""
    return float(10 * math.log10(1.0 / mse)) if mse > 0 else float("inf")


def dataset(config, run_dir: str) -> dict[str, np.ndarray]:
    """{'train': (M, S, S, 3), 'test': (T, S, S, 3)} float32, cached in run_dir/data.npz.

    Training images from ``fold_in(key(seed), 1)``, held-out ones from the zoo's
    held-out key (which neither the smallcnn's nor the inverters' training sees).
    """
    path = os.path.join(run_dir, "data.npz")
    done = common.load_npz(path)
    if done is not None:
        return done
    key = jax.random.fold_in(jax.random.key(config.seed), 1)
    data = {"train": np.asarray(synthetic.generate(key, config.train_images, size=config.size)["image"]),
            "test": np.asarray(synthetic.generate(jax.random.key(zoo.TEST_SEED), config.test_images,
                                                  size=config.size)["image"])}
    common.save_npz(path, **data)
    return data


def run_layer(net, params, layer: str, data: dict, config, run_dir: str, log) -> dict[str, np.ndarray]:
    """Train (or resume) the inverter of ``layer`` and reconstruct the held-out images."""
    safe = layer.replace("/", "_")
    inv, history = train_inverter(
        net, params, layer, data["train"], steps=config.steps, batch_size=config.batch_size,
        lr=config.lr, key=jax.random.fold_in(jax.random.key(config.seed), 2),
        widths=tuple(config.widths), num_convs=config.num_convs, fc_width=config.fc_width,
        steps_per_call=config.steps_per_call, checkpoint_dir=os.path.join(run_dir, "ckpt", safe),
        progress=log)
    recon = np.concatenate([np.asarray(invert(net, params, inv, jnp.asarray(data["test"][i:i + 64]), layer))
                            for i in range(0, len(data["test"]), 64)])
    return {"recon": recon.astype(np.float32), "loss": history["loss"]}


def summarise(run_dir: str, results: dict, data: dict, config, log) -> dict:
    test = data["test"].astype(np.float64)
    mean_image = data["train"].astype(np.float64).mean(axis=0)
    base = float(np.mean((test - mean_image) ** 2))
    layers = {}
    for layer in config.layers:
        err = (results[layer]["recon"].astype(np.float64) - test) ** 2
        mse = float(err.mean())
        layers[layer] = {"mse": mse, "psnr": psnr(mse), "relative_mse": mse / base,
                         "psnr_per_image": float(np.mean([psnr(e) for e in err.mean(axis=(1, 2, 3))])),
                         "final_train_loss": float(np.mean(results[layer]["loss"][-10:]))}
    metrics = {"test_images": int(len(test)), "baseline": {"mse": base, "psnr": psnr(base)},
               "layers": layers}
    write_json(os.path.join(run_dir, "metrics.json"), metrics)
    shown = min(config.shown, len(test))
    cells, titles = [], []
    for i in range(shown):
        cells.append(data["test"][i])
        titles.append(f"held-out {i}")
        for layer in config.layers:
            cells.append(np.clip(results[layer]["recon"][i], 0, 1))
            titles.append(f"from {layer}")
    figure = plot.grid(cells, titles, os.path.join(run_dir, "reconstructions.png"), ncols=len(config.layers) + 1)
    report = Report(f"Learned inverters {os.path.basename(run_dir)}")
    sec = report.section(
        "Inverting the smallcnn layer by layer",
        f"A decoder per split point trained to minimise ||x - D(phi(x))||^2 (Dosovitskiy and Brox 2016) on "
        f"{config.train_images} synthetic images for {config.steps} steps (batch {config.batch_size}, Adam "
        f"lr {config.lr}); errors on {len(test)} held-out images.  The baseline predicts the training set's "
        f"mean image for every input.  Deeper layers are more invariant: their reconstructions lose detail.")
    sec.table([("mean image (baseline)", base, psnr(base), 1.0)]
              + [(layer, v["mse"], v["psnr"], v["relative_mse"]) for layer, v in layers.items()],
              header=("features", "MSE", "PSNR (dB)", "MSE / baseline"))
    sec.figure(figure, "Held-out images (left) and their reconstructions from each layer, shallow to deep.")
    report.write(run_dir)
    log("  ".join(f"{layer}: PSNR {v['psnr']:.1f} dB" for layer, v in layers.items())
        + f"  (mean image {psnr(base):.1f} dB); wrote {run_dir}/metrics.json, report.html")
    return metrics


def run(config, run_id: str | None = None) -> dict:
    log = common.logger("inverter")
    run_id = run_id or time.strftime("%Y%m%d-%H%M%S")
    if not config.layers:
        raise ValueError("layers: expected at least one split point")
    run_dir = common.prepare_run(config, run_id, config.out, log)
    net, params, _ = common.load_smallcnn(config, log)
    unknown = [layer for layer in config.layers if layer not in net.layers]
    if unknown:
        raise ValueError(f"layers: unknown split points {unknown} of {net.name}; expected some of {list(net.layers)}")
    data = dataset(config, run_dir)
    results, computed = {}, 0
    for layer in config.layers:
        path = os.path.join(run_dir, "layers", layer.replace("/", "_") + ".npz")
        done = common.load_npz(path)
        if done is None:
            t0 = time.perf_counter()
            log(f"training the inverter of {layer} ({config.steps} steps)")
            done = run_layer(net, params, layer, data, config, run_dir, log)
            common.save_npz(path, **done)
            computed += 1
            log(f"{layer} done in {time.perf_counter() - t0:.1f}s")
        results[layer] = done
    log(f"trained {computed} inverters, {len(results) - computed} resumed from disk")
    metrics = summarise(run_dir, results, data, config, log)
    return {**metrics, "computed_layers": computed}


def main(argv=None) -> int:
    return common.main(argv, get_config, __doc__, run)


if __name__ == "__main__":
    raise SystemExit(main())
