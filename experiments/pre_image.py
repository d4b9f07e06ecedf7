"""Pre-images and caricatures (Mahendran and Vedaldi, CVPR 2015 / IJCV 2016) at several depths.

    python -m experiments.pre_image --config local --id pi         # seconds on a CPU
    python -m experiments.pre_image --id pi                         # 5 smallcnn layers + vgg16, 350 steps

Held-out synthetic images and bundled photographs are inverted from their code
at each layer of ``layers`` with both energies of ``variants``
(:func:`jaxinterp.synthesis.pre_image`, all images in one compiled call per
layer and variant); caricatures (:func:`jaxinterp.synthesis.caricature`) at
``caricature_layers``; optionally vgg16 (random weights) at ``vgg16_layers``.
Every (net, layer) is one shard ``<out>/<id>/shards/<net>_<layer>.npz`` (or
``caricature_<layer>.npz``): a rerun with the same ``--id`` skips finished
layers.

``metrics.json`` gives, per net, layer and variant, the normalised feature
loss ``||Phi(x) - Phi0||^2 / ||Phi0||^2`` of each pre-image and, as the
reference a pre-image must beat, the loss of the uniform mean-colour image
(what a reconstruction without information reaches).  ``report.html`` shows
the images and their reconstructions layer by layer.
"""

from __future__ import annotations

import functools
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp import nets, plot
from jaxinterp.report import Report, write_json
from jaxinterp.synthesis import caricature, feature_loss, pre_image

from experiments import common
from experiments.configs.pre_image import get_config


@functools.lru_cache(maxsize=None)
def pre_image_fn(net, layer: str, variant: str, steps: int, lr: float, C: float, seed: int):
    """jit(params, x (N, H, W, 3)) -> (pre-images (N, H, W, 3), normalised feature loss (N,))."""
    def fn(params, x):
        r = pre_image(net, params, x, layer, key=jax.random.key(seed), variant=variant, steps=steps, lr=lr, C=C)
        return r.images, r.loss
    return jax.jit(fn)


@functools.lru_cache(maxsize=None)
def caricature_fn(net, layer: str, steps: int, lr: float, C: float, seed: int):
    """jit(params, x) -> caricatures (N, H, W, 3)."""
    def fn(params, x):
        return caricature(net, params, x, layer, key=jax.random.key(seed), steps=steps, lr=lr, C=C).images[:, 0]
    return jax.jit(fn)


@functools.lru_cache(maxsize=None)
def mean_image_loss_fn(net, layer: str):
    """jit(params, x) -> the normalised feature loss of the uniform mean-colour image against each x's code."""
    def fn(params, x):
        grey = jnp.broadcast_to(jnp.asarray(net.mean, x.dtype), x.shape)
        return feature_loss(net, params, grey, net.apply(params, x, stop=layer), layer)
    return jax.jit(fn)


def invert_layer(net, params, x: np.ndarray, layer: str, variants, config) -> dict[str, np.ndarray]:
    out = {"mean_image_loss": np.asarray(mean_image_loss_fn(net, layer)(params, jnp.asarray(x)))}
    for variant in variants:
        images, loss = pre_image_fn(net, layer, variant, config.steps, config.lr, config.C, config.seed)(
            params, jnp.asarray(x))
        out[f"{variant}_images"] = np.round(np.asarray(images) * 255).astype(np.uint8)
        out[f"{variant}_loss"] = np.asarray(loss)
    return out


def check_config(config, net) -> None:
    """ValueError naming the config field at fault."""
    for field, layers in (("layers", config.layers), ("caricature_layers", config.caricature_layers)):
        for layer in layers:
            if layer not in net.layers:
                raise ValueError(f"{field}: expected split points of {net.name} {list(net.layers)}, got {layer!r}")
    for v in config.variants:
        if v not in ("ijcv", "cvpr"):
            raise ValueError(f"variants: expected 'ijcv' or 'cvpr', got {v!r}")
    vgg = nets.get("vgg16")
    for layer in config.vgg16_layers:
        if layer not in vgg.layers:
            raise ValueError(f"vgg16_layers: expected split points of vgg16, got {layer!r}")


def shard(run_dir: str, name: str, compute, log) -> tuple[dict, bool]:
    path = os.path.join(run_dir, "shards", f"{name}.npz")
    done = common.load_npz(path)
    if done is not None:
        return done, False
    t0 = time.perf_counter()
    done = compute()
    common.save_npz(path, **done)
    log(f"{name} in {time.perf_counter() - t0:.1f}s")
    return done, True


def summarise(run_dir, config, data, results, caricatures, log) -> dict:
    layers = {}
    for (net_name, layer), r in results.items():
        entry = {"mean_image_loss": r["mean_image_loss"].tolist()}
        for v in (config.variants if net_name == "smallcnn" else ["ijcv"]):
            entry[v] = {"loss": r[f"{v}_loss"].tolist(), "mean_loss": float(r[f"{v}_loss"].mean()),
                        "beats_mean_image": float(np.mean(r[f"{v}_loss"] < r["mean_image_loss"]))}
        layers.setdefault(net_name, {})[layer] = entry
    metrics = {"images": [str(n) for n in data["name"]], "layers": layers, "caricature_layers": list(caricatures)}
    write_json(os.path.join(run_dir, "metrics.json"), metrics)
    report = Report(f"Pre-images {os.path.basename(run_dir)}")
    rows = [(n, l, v, e[v]["mean_loss"], float(np.mean(e["mean_image_loss"])), e[v]["beats_mean_image"])
            for n, ls in layers.items() for l, e in ls.items() for v in e if v != "mean_image_loss"]
    sec = report.section("Pre-images", f"Normalised feature loss ||Phi(x) - Phi0||^2 / ||Phi0||^2 of the "
                         f"reconstructions ({config.steps} steps, C = {config.C}, {config.image_size} px, "
                         f"{'trained' if config.pretrained else 'random-weight'} smallcnn), against the "
                         f"uniform mean-colour image's.")
    sec.table(rows, header=("net", "layer", "variant", "mean loss", "mean-image loss", "share beating it"))
    originals = [im.astype(np.float32) for im in data["image"]]
    for (net_name, layer), r in results.items():
        cells, titles = [], []
        for i, name in enumerate(data["name"]):
            cells.append(originals[i] if net_name == "smallcnn" else r["input"][i])
            titles.append(str(name)[:18])
            for v in (config.variants if net_name == "smallcnn" else ["ijcv"]):
                cells.append(r[f"{v}_images"][i])
                titles.append(f"{v} {r[f'{v}_loss'][i]:.2f}")
        ncols = 1 + (len(config.variants) if net_name == "smallcnn" else 1)
        sec.figure(plot.grid(cells, titles, os.path.join(run_dir, f"{net_name}_{layer}.png"), ncols=ncols * 2),
                   f"{net_name} {layer}: image, then its pre-images (normalised feature loss).")
    if caricatures:
        cs = report.section("Caricatures", f"Started from the image, maximising C <Phi(x), max(Phi0, 0)> / "
                            f"||Phi0||^2 with the pre-image priors ({config.caricature_steps} steps).")
        cells, titles = [], []
        for i, name in enumerate(data["name"]):
            cells.append(originals[i])
            titles.append(str(name)[:18])
            for layer, c in caricatures.items():
                cells.append(c["images"][i])
                titles.append(layer)
        cs.figure(plot.grid(cells, titles, os.path.join(run_dir, "caricatures.png"), ncols=1 + len(caricatures)),
                  "Each image and its caricatures, one column per layer.")
    report.write(run_dir)
    log(f"wrote {run_dir}/metrics.json, report.html")
    return metrics


def run(config, run_id: str | None = None) -> dict:
    log = common.logger("pre_image")
    run_id = run_id or time.strftime("%Y%m%d-%H%M%S")
    net, params, _ = common.load_smallcnn(config, log)
    check_config(config, net)
    run_dir = common.prepare_run(config, run_id, config.out, log)
    data = common.held_out_images(config.held_out, list(config.photos), config.image_size,
                                       os.path.join(run_dir, "images.npz"))
    x = data["image"]
    results, caricatures, computed, total = {}, {}, 0, 0
    for layer in config.layers:
        results[("smallcnn", layer)], new = shard(
            run_dir, f"smallcnn_{layer}", lambda: invert_layer(net, params, x, layer, config.variants, config), log)
        computed, total = computed + new, total + 1
    for layer in config.caricature_layers:
        caricatures[layer], new = shard(
            run_dir, f"caricature_{layer}", lambda: {"images": np.round(np.asarray(caricature_fn(
                net, layer, config.caricature_steps, config.lr, config.C, config.seed)(params, jnp.asarray(x)))
                * 255).astype(np.uint8)}, log)
        computed, total = computed + new, total + 1
    if config.vgg16_layers:
        vgg = nets.get("vgg16")
        vgg_params = vgg.init(jax.random.key(config.seed))
        xv = common.held_out_images(config.held_out, list(config.photos), config.vgg16_size,
                                         os.path.join(run_dir, "images_vgg16.npz"))["image"]
        for layer in config.vgg16_layers:
            results[("vgg16", layer)], new = shard(
                run_dir, f"vgg16_{layer}", lambda: {**invert_layer(vgg, vgg_params, xv, layer, ["ijcv"], config),
                                                    "input": xv}, log)
            computed, total = computed + new, total + 1
    log(f"computed {computed} shards, {total - computed} resumed from disk")
    metrics = summarise(run_dir, config, data, results, caricatures, log)
    return {**metrics, "computed_shards": computed}


def main(argv=None) -> int:
    return common.main(argv, get_config, __doc__, run)


if __name__ == "__main__":
    raise SystemExit(main())
