"""Extremal perturbations (Fong, Patrick and Vedaldi 2019) over a dataset, resumable and sharded.

    python -m experiments.extremal --config local --id ep         # minutes on a CPU
    python -m experiments.extremal --id ep                         # 800 steps, 4 areas, 1024 images
    python -m experiments.extremal --set dataset=voc07 --set data_dir=~/tfds --set net=vgg16 \
        --set weights=vgg16_voc.npz

Every batch of images gets masks for all of its targets and areas in one
compiled call (split over all devices when there are several), written to
``<out>/<id>/shards/b<batch>.npz`` (masks as float16 (B, T, A, H, W), the final
reward and area terms, targets); a rerun with the same ``--id`` skips the
finished batches.  The summary (``metrics.json``, ``report.html``) gives the
pointing-game accuracy of the extremal saliency (masks summed over areas,
smoothed: TorchRay's protocol), all / difficult, each area's mean mask area and
final reward, and for the synthetic set the IoU of each mask with the object.
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp import ops, plot
from jaxinterp.evaluation import pointing_hits
from jaxinterp.evaluation.benchmark import pointing_rows, scaled_tolerance
from jaxinterp.perturbation import extremal
from jaxinterp.report import Report, write_json

from experiments import common
from experiments.configs.extremal import get_config


@functools.lru_cache(maxsize=None)
def masks_fn(net, areas: tuple, steps: int, variant: str, perturbation: str):
    """jit(params, x, target) -> (masks (B, T, A, H, W), final (B, T, A, 2))."""
    def fn(params, x, target):
        masks, history = extremal(net, params, x, target, areas=areas, steps=steps, variant=variant,
                                  perturbation=perturbation)
        return masks, history[..., -1, :]
    return jax.jit(fn)


def saliency(masks: np.ndarray, smooth: float) -> jax.Array:
    """TorchRay's pointing-game map: masks (B, T, A, H, W) summed over areas, Gaussian-smoothed."""
    maps = jnp.asarray(masks, jnp.float32).sum(axis=2)
    return ops.gaussian_blur(maps[..., None], smooth * max(maps.shape[-2:]), fill=0.0)[..., 0]


def run_batch(net, params, mesh, batch, config) -> dict[str, np.ndarray]:
    k = batch["image"].shape[0]
    x, t = common.device_batch(batch, mesh)
    fn = masks_fn(net, tuple(config.areas), config.steps, config.variant, config.perturbation)
    masks, final = fn(params, x, t)
    return {"masks": np.asarray(masks)[:k].astype(np.float16), "final": np.asarray(final)[:k],
            "target": batch["target"], "valid": batch["valid"], "difficult": batch["difficult"],
            "gt": batch["mask"], "image": np.round(np.asarray(batch["image"]) * 255).astype(np.uint8)}


def summarise(run_dir, shards, config, num_classes, tolerance, log) -> dict:
    data = {k: np.concatenate([s[k] for s in shards]) for k in shards[0]}
    valid, difficult = data["valid"], data["valid"] & data["difficult"]
    hits = np.asarray(pointing_hits(saliency(data["masks"], config.smooth), data["gt"], tolerance=tolerance))
    row = pointing_rows({"extremal": {"hits": hits}}, {"extremal": "extremal perturbation"}, data["target"],
                        valid, difficult, num_classes)[0]
    acc_all = row["accuracy_all"]
    acc_difficult = None if np.isnan(row["accuracy_difficult"]) else row["accuracy_difficult"]
    masks = data["masks"].astype(np.float32) > 0.5                           # (N, T, A, H, W)
    gt = data["gt"][:, :, None]
    iou = (masks & gt).sum((-1, -2)) / np.maximum((masks | gt).sum((-1, -2)), 1)
    per_area = {str(a): {"mask_area": float(data["masks"][..., i, :, :].astype(np.float32).mean(axis=(-1, -2))[valid].mean()),
                         "final_reward": float(data["final"][..., i, 0][valid].mean()),
                         "iou_with_object": float(iou[..., i][valid].mean())}
                for i, a in enumerate(config.areas)}
    metrics = {"pairs": int(valid.sum()), "tolerance": tolerance, "pointing_all": acc_all,
               "pointing_difficult": acc_difficult, "areas": per_area}
    write_json(os.path.join(run_dir, "metrics.json"), metrics)
    shown = min(6, len(data["masks"]))
    cells, titles = [], []
    for i in range(shown):
        image = data["image"][i].astype(np.float32) / 255
        cells.append(image)
        titles.append(f"image {i}, target {data['target'][i, 0]}")
        for a, area in enumerate(config.areas):
            cells.append(image * data["masks"][i, 0, a].astype(np.float32)[..., None])
            titles.append(f"area {area}")
    report = Report(f"Extremal perturbations {os.path.basename(run_dir)}")
    sec = report.section("Extremal perturbations",
                         f"{config.variant} masks, {config.perturbation} perturbation, {config.steps} steps, "
                         f"areas {list(config.areas)}, {metrics['pairs']} (image, target) pairs of "
                         f"{config.dataset}.  Pointing game (tolerance {tolerance:.2f} px) of the masks "
                         f"summed over areas and smoothed (sigma {config.smooth} of the side).")
    sec.table([("pointing accuracy, all", acc_all), ("pointing accuracy, difficult", acc_difficult)]
              + [(f"area {a}: mask area / final reward / IoU with object",
                  f"{v['mask_area']:.3f} / {v['final_reward']:.3f} / {v['iou_with_object']:.3f}")
                 for a, v in per_area.items()], header=("metric", "value"))
    sec.figure(plot.grid(cells, titles, os.path.join(run_dir, "masks.png"), ncols=len(config.areas) + 1),
               "The first images and their first target's masks (image x mask), one column per area.")
    report.write(run_dir)
    log(f"pointing accuracy {acc_all:.3f} (difficult {acc_difficult}); wrote {run_dir}/metrics.json, report.html")
    return metrics


def run(config, run_id: str | None = None) -> dict:
    log = common.logger("extremal")
    run_dir, net, params, mesh = common.setup(config, run_id, log)
    num, batches, num_classes = common.dataset_batches(config, run_dir, net.num_classes)
    size = 64 if config.dataset == "synthetic" else config.image_size
    tolerance = scaled_tolerance(size) if config.tolerance is None else float(config.tolerance)
    shards, computed = common.shards(
        run_dir, batches, lambda batch: run_batch(net, params, mesh, batch, config), log, num,
        lambda batch: f"{int(batch['valid'].sum())} pairs x {len(config.areas)} areas, {config.steps} steps")
    metrics = summarise(run_dir, shards, config, num_classes, tolerance, log)
    return {**metrics, "computed_batches": computed}


def main(argv=None) -> int:
    return common.main(argv, get_config, __doc__, run)


if __name__ == "__main__":
    raise SystemExit(main())
