"""The pointing game (Zhang et al. 2016; TorchRay benchmark) of every attribution method.

    python -m experiments.pointing_game --config local --id pg       # minutes on a CPU
    python -m experiments.pointing_game --id pg --set images=1024
    python -m experiments.pointing_game --list                       # method slugs
    python -m experiments.pointing_game --set dataset=voc07 --set data_dir=~/tfds \
        --set net=vgg16 --set weights=vgg16_voc.npz --set "method_options={'grad_cam': {'layer': 'features.29'}}"

Default data: held-out synthetic ground-truth images (``jaxinterp.data.synthetic``,
easy and difficult variants, key ``zoo.TEST_SEED``) explained by the trained
smallcnn; target = the true class, ground truth = the object mask; 'difficult'
= the difficult variant.  A map hits when its maximum lies within
``tolerance`` px of the mask (default: TorchRay's 15 px at 224 px scaled to the
image size, ``evaluation.scaled_tolerance``: 4.3 px on the 64 px synthetic
images, where 15 px would let the centre baseline hit nearly every object); accuracy is the mean over classes of the
per-class hit rate (``jaxinterp.evaluation.pointing_accuracy``).  The centre
baseline points at the image centre.  With ``curve_steps > 0`` each map also
gets deletion (black baseline) and insertion (blurred baseline) curves of the
softmax probability of the target, summarised by their AUC.

Images are processed in batches (split over all devices with
``jaxinterp.train.sharding`` when there are several); each (method, batch)
writes ``<out>/<id>/shards/<method>/b<batch>.npz`` atomically, and a rerun with
the same ``--id`` skips finished shards.  At the end the script writes
``table.md``, ``table.csv``, ``metrics.json``, ``config.json`` and
``report.html`` to ``<out>/<id>/``.
"""

from __future__ import annotations

import csv
import io
import json
import os
import time

import numpy as np

from jaxinterp.evaluation import (centre_hits, pointing_rows, pointing_table, sanitise_maps,
                                  scaled_tolerance, score_maps)
from jaxinterp.report import Report, Section, atomic_write, write_json
from jaxinterp.train import sharding

from experiments import common
from experiments.configs.pointing_game import get_config


# -- per-batch computation ----------------------------------------------------


def run_batch(net, params, mesh, title, method, options, batch, config, tolerance):
    """hits (B, T) and, when curve_steps > 0, deletion / insertion AUC (B, T) of one method on one batch.

    The scoring is ``jaxinterp.evaluation.score_maps`` (shared with ``jaxinterp demo``);
    non-finite map values are counted, then made harmless by ``sanitise_maps``.
    """
    k = batch["image"].shape[0]
    x, t, masks = common.device_batch(batch, mesh, ("image", "target", "mask"))
    maps = common.explain_fn(net, title, method, options)(params, x, t)
    out = {"nonfinite": np.int64(np.sum(~np.isfinite(np.asarray(maps)[:k])))}
    scores = score_maps(net, params, x, sanitise_maps(maps), t, masks, tolerance=tolerance,
                        curve_steps=config.curve_steps)
    out.update({key: np.asarray(v)[:k] for key, v in scores.items()})
    return out


# -- summary --------------------------------------------------------------------


def write_tables(run_dir, rows, config, pairs, tolerance):
    header, body, md = pointing_table(rows, curves=bool(config.curve_steps))
    atomic_write(os.path.join(run_dir, "table.md"), md)
    cols = ["accuracy_all", "accuracy_difficult"] + (["deletion_auc", "insertion_auc"] if config.curve_steps else [])
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["method", "slug"] + cols + ["seconds", "nonfinite"])
    for r in rows:
        w.writerow([r["method"], r["slug"]] + [r.get(c, float("nan")) for c in cols] + [r["seconds"], r["nonfinite"]])
    atomic_write(os.path.join(run_dir, "table.csv"), buf.getvalue())
    sec = Section("Pointing game",
                  f"Mean per-class pointing accuracy (tolerance {tolerance:.2f} px) over {pairs} "
                  f"(image, class) pairs of {config.dataset}; 'difficult' = "
                  + ("the difficult synthetic variant." if config.dataset == "synthetic" else
                     "the images of the difficult list.")
                  + (f"  Deletion / insertion: AUC of the target's softmax probability over "
                     f"{config.curve_steps} steps." if config.curve_steps else ""))
    sec.table(body, header=header)
    return sec, md.rstrip("\n")


def run(config, run_id: str | None = None) -> dict:
    log = common.logger("pointing_game")
    run_id = run_id or time.strftime("%Y%m%d-%H%M%S")
    if config.dataset not in ("synthetic", *common.TFDS_NAMES):
        raise ValueError(f"dataset: expected 'synthetic', 'voc07' or 'coco14', got {config.dataset!r}")
    run_dir = common.prepare_run(config, run_id, config.out, log)
    methods = common.method_table(config.quick, config.methods)
    for slug, opts in dict(config.method_options).items():
        if slug not in methods:
            raise ValueError(f"method_options: unknown method {slug!r}")
        t, m, o = methods[slug]
        methods[slug] = (t, m, {**o, **dict(opts)})
    net, params, _ = common.load_net(config, log)
    mesh = sharding.data_mesh()
    if mesh.size > 1:
        params = sharding.replicate(params, mesh)
        log(f"{mesh.size} devices: batches split over the 'data' axis")
    if config.dataset == "synthetic":
        num, batches, num_classes = common.synthetic_batches(config, run_dir)
    else:
        num, batches, num_classes = common.tfds_batches(config, net.num_classes)
    size = 64 if config.dataset == "synthetic" else config.image_size
    tolerance = scaled_tolerance(size) if config.tolerance is None else float(config.tolerance)
    log(f"pointing-game tolerance {tolerance:.2f} px at {size} px")
    total = f"/{num}" if num else ""
    metas, computed = [], 0
    for b, batch in batches:
        metas.append({k: batch[k] for k in ("target", "valid", "difficult")})
        cpath = os.path.join(run_dir, "shards", common.CENTRE, f"b{b:05d}.npz")
        if common.load_npz(cpath) is None:
            common.save_npz(cpath, hits=np.asarray(centre_hits(batch["mask"], tolerance=tolerance)))
        for slug, (title, method, options) in methods.items():
            path = os.path.join(run_dir, "shards", slug, f"b{b:05d}.npz")
            if os.path.exists(path):
                continue
            t0 = time.perf_counter()
            out = run_batch(net, params, mesh, title, method, options, batch, config, tolerance)
            out["seconds"] = np.float64(time.perf_counter() - t0)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            common.save_npz(path, **out)
            computed += 1
            acc = out["hits"][batch["valid"]].mean()
            log(f"batch {b + 1}{total} {slug}: hit rate {acc:.3f}"
                + (f", deletion {out['deletion_auc'][batch['valid']].mean():.3f}, insertion "
                   f"{out['insertion_auc'][batch['valid']].mean():.3f}" if config.curve_steps else "")
                + f" ({out['seconds']:.1f}s)" + (f" [{out['nonfinite']} non-finite values]" if out["nonfinite"] else ""))
    log(f"computed {computed} shards, {len(metas) * len(methods) - computed} resumed from disk")
    meta = {k: np.concatenate([m[k] for m in metas]) for k in metas[0]}
    names = {**{s: t for s, (t, _, _) in methods.items()}, common.CENTRE: "centre (baseline)"}
    results = {}
    for slug in names:
        shards = [common.load_npz(os.path.join(run_dir, "shards", slug, f"b{b:05d}.npz")) for b in range(len(metas))]
        results[slug] = {k: (np.concatenate([s[k] for s in shards]) if np.ndim(shards[0][k]) else np.array([s[k] for s in shards]))
                         for k in shards[0]}
    difficult = meta["valid"] & meta["difficult"] if meta["difficult"].any() else None
    rows = pointing_rows(results, names, meta["target"], meta["valid"], difficult, num_classes)
    pairs = int(meta["valid"].sum())
    sec, md = write_tables(run_dir, rows, config, pairs, tolerance)
    metrics = {"pairs": pairs, "tolerance": tolerance, "difficult_pairs": int((meta["valid"] & meta["difficult"]).sum()),
               "computed_shards": computed,
               "methods": {r["slug"]: {k: (None if isinstance(v, float) and v != v else v) for k, v in r.items()}
                           for r in rows}}
    write_json(os.path.join(run_dir, "metrics.json"), metrics)
    report = Report(f"Pointing game {run_id}")
    report.add(sec)
    report.section("Run").text(f"Configuration: {json.dumps(config.to_dict())}")
    report.write(run_dir)
    print(md, flush=True)
    log(f"wrote {run_dir}/table.md, table.csv, metrics.json, report.html")
    return metrics


def main(argv=None) -> int:
    return common.main(argv, get_config, __doc__, run)


if __name__ == "__main__":
    raise SystemExit(main())
