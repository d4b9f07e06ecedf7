"""Channel extremal perturbations and activation diffing (Fong, Patrick and Vedaldi 2019, Sec. 5) over a dataset.

    python -m experiments.channel_diffing --config local --id cd      # minutes on a CPU
    python -m experiments.channel_diffing --id cd                      # 800 steps, 256 images per variant
    python -m experiments.channel_diffing --set dataset=voc07 --set data_dir=~/tfds --set net=vgg16 \
        --set weights=vgg16_voc.npz --set layer=features.29

For every image and target, the mask over the channels of split point
``layer`` that keeps a fraction a of them (each area of ``areas``) and the
target's score highest (:func:`jaxinterp.perturbation.channel_extremal`), all
targets and areas of a batch in one compiled call; then, for the first area,
the activation diffing of :func:`jaxinterp.synthesis.activation_diffing`: the
pre-images of the full activation and of the masked one (same start and
jitter), whose difference shows what the removed channels carried.  Batches
are written to ``<out>/<id>/shards/b<batch>.npz`` (masks float16 (B, T, A, C),
the target's score with all and with the kept channels, the pre-images of the
first target as uint8) and a rerun with the same ``--id`` skips the finished
ones.  The summary (``metrics.json``, ``report.html``) gives, per area, the mean
score with all channels and with the kept ones, and per class how often each
channel is kept (``channel_frequency.npy`` (classes, C): the channels a class
relies on), with a figure of the first images' diffing.
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp import plot
from jaxinterp.perturbation import channel_extremal
from jaxinterp.report import Report, write_json
from jaxinterp.synthesis import activation_diffing

from experiments import common
from experiments.configs.channel_diffing import get_config


def target_scores(net, params, phi, target, masks, layer: str):
    """Scores of ``target`` (B, T) from the activation ``phi`` (B, ..., C) with all channels and with ``masks``.

    Returns:
      (all (B, T), kept (B, T, A)): the target logits of the rest of the net run on
      phi and on masks[b, t, a] * phi.
    """
    b, t, a, c = masks.shape
    tail = lambda code: net.apply(params, code, start=layer)                           # noqa: E731
    full = jnp.take_along_axis(tail(phi), target, axis=-1)                              # (B, T)
    coded = masks.reshape(b, t * a, *[1] * (phi.ndim - 2), c) * phi[:, None]           # (B, T*A, ..., C)
    logits = jax.vmap(tail, in_axes=1, out_axes=1)(coded).reshape(b, t, a, -1)         # (B, T, A, K)
    return full, jnp.take_along_axis(logits, target[:, :, None, None], axis=-1)[..., 0]


@functools.lru_cache(maxsize=None)
def diffing_fn(net, layer: str, areas: tuple, steps: int, pre_image_steps: int):
    """jit(params, x, target) -> dict of masks (B, T, A, C), scores and the first target's diffing."""
    def fn(params, x, target):
        masks, _ = channel_extremal(net, params, x, target, layer=layer, areas=areas, steps=steps)
        phi = net.apply(params, x, stop=layer)
        full, kept = target_scores(net, params, phi, target, masks, layer)
        diff = activation_diffing(net, params, x, masks[:, 0, 0], layer, key=jax.random.key(0),
                                  steps=pre_image_steps)
        return {"masks": masks, "score_all": full, "score_kept": kept,
                "pre_full": diff.full, "pre_kept": diff.kept}
    return jax.jit(fn)


def run_batch(net, params, mesh, batch, config) -> dict[str, np.ndarray]:
    k = batch["image"].shape[0]
    x, t = common.device_batch(batch, mesh)
    out = diffing_fn(net, config.layer, tuple(config.areas), config.steps, config.pre_image_steps)(params, x, t)
    out = {name: np.asarray(v)[:k] for name, v in out.items()}
    as_uint8 = lambda a: np.round(np.clip(a, 0, 1) * 255).astype(np.uint8)           # noqa: E731
    return {"masks": out["masks"].astype(np.float16), "score_all": out["score_all"], "score_kept": out["score_kept"],
            "pre_full": as_uint8(out["pre_full"]), "pre_kept": as_uint8(out["pre_kept"]),
            "image": as_uint8(np.asarray(batch["image"])), "target": batch["target"], "valid": batch["valid"]}


def channel_frequency(masks: np.ndarray, target: np.ndarray, valid: np.ndarray, num_classes: int) -> np.ndarray:
    """(classes, C): over the valid (image, target) pairs of each class, the share whose first-area mask keeps each channel.

    Args:
      masks: (N, T, A, C) channel masks; target, valid: (N, T).
    Rows of classes without a valid pair are NaN.
    """
    kept = masks[..., 0, :].astype(np.float32) > 0.5                                   # (N, T, C)
    counts = np.zeros((num_classes, kept.shape[-1]))
    pairs = np.zeros(num_classes)
    np.add.at(counts, target[valid], kept[valid])
    np.add.at(pairs, target[valid], 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return counts / pairs[:, None]


def summarise(run_dir, shards, config, num_classes, log) -> dict:
    data = {k: np.concatenate([s[k] for s in shards]) for k in shards[0]}
    valid = data["valid"]
    freq = channel_frequency(data["masks"], data["target"], valid, num_classes)
    np.save(os.path.join(run_dir, "channel_frequency.npy"), freq)
    all_score = data["score_all"][valid]
    per_area = {str(a): {"score_kept": float(data["score_kept"][..., i][valid].mean()),
                         "kept_beats_all": float((data["score_kept"][..., i][valid] > all_score).mean()),
                         "channels_kept": float((data["masks"][..., i, :].astype(np.float32) > 0.5).sum(-1)[valid].mean())}
                for i, a in enumerate(config.areas)}
    present = ~np.isnan(freq).all(1)
    metrics = {"pairs": int(valid.sum()), "layer": config.layer, "score_all": float(all_score.mean()),
               "areas": per_area,
               "channels_ever_kept": int((np.nan_to_num(freq[present]) > 0).any(0).sum()),
               "channels": int(freq.shape[1])}
    write_json(os.path.join(run_dir, "metrics.json"), metrics)
    shown = min(6, len(data["image"]))
    cells, titles = [], []
    for i in range(shown):
        full, kept = (data[k][i].astype(np.float32) / 255 for k in ("pre_full", "pre_kept"))
        cells += [data["image"][i].astype(np.float32) / 255, full, kept, 0.5 + 0.5 * (full - kept)]
        titles += [f"image {i}: {data['score_all'][i, 0]:.1f}", "pre-image, all channels",
                   f"kept channels: {data['score_kept'][i, 0, 0]:.1f}", "difference"]
    report = Report(f"Channel attribution {os.path.basename(run_dir)}")
    sec = report.section(
        "Channel extremal perturbations and activation diffing",
        f"Masks over the {metrics['channels']} channels of {config.layer} keeping fractions "
        f"{list(config.areas)} of them, {config.steps} steps, {metrics['pairs']} (image, target) pairs of "
        f"{config.dataset}; pre-images ({config.pre_image_steps} steps) of the full and of the masked "
        "activation (first area).  Scores: the target's logit.")
    sec.table([("score, all channels", metrics["score_all"])]
              + [(f"area {a}: channels kept / score kept / share of pairs where kept > all",
                  f"{v['channels_kept']:.1f} / {v['score_kept']:.3f} / {v['kept_beats_all']:.2f}")
                 for a, v in per_area.items()]
              + [("channels kept for some class (first area)", metrics["channels_ever_kept"])],
              header=("metric", "value"))
    sec.figure(plot.grid(cells, titles, os.path.join(run_dir, "diffing.png"), ncols=4),
               "Each row: the image (title: its target's logit), the pre-images of all and of the kept "
               "channels (title: the logit with the kept channels only), and their difference (grey = none).")
    sec.figure(plot.grid([np.nan_to_num(freq)], [f"channel kept frequency per class ({config.layer})"],
                         os.path.join(run_dir, "channel_frequency.png"), cell=4.0),
               "Rows: classes; columns: channels; value: the share of the class's pairs whose mask keeps the channel.")
    report.write(run_dir)
    log(f"score all {metrics['score_all']:.3f}, kept {per_area[str(config.areas[0])]['score_kept']:.3f}; "
        f"wrote {run_dir}/metrics.json, report.html")
    return metrics


def run(config, run_id: str | None = None) -> dict:
    log = common.logger("channel_diffing")
    run_dir, net, params, mesh = common.setup(config, run_id, log)
    if config.layer not in net.layers:
        raise ValueError(f"layer: unknown split point {config.layer!r} of {net.name}; expected one of {list(net.layers)}")
    num, batches, num_classes = common.dataset_batches(config, run_dir, net.num_classes)
    shards, computed = common.shards(
        run_dir, batches, lambda batch: run_batch(net, params, mesh, batch, config), log, num,
        lambda batch: (f"{int(batch['valid'].sum())} pairs x {len(config.areas)} areas, "
                       f"{config.steps} + 2 x {config.pre_image_steps} steps"))
    metrics = summarise(run_dir, shards, config, num_classes, log)
    return {**metrics, "computed_batches": computed}


def main(argv=None) -> int:
    return common.main(argv, get_config, __doc__, run)


if __name__ == "__main__":
    raise SystemExit(main())
