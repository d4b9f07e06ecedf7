"""The pointing game (Zhang et al. 2016; TorchRay benchmark) of every attribution method.

    python experiments/pointing_game.py --variant local --id pg      # minutes on a CPU
    python experiments/pointing_game.py --id pg --set images=1024
    python experiments/pointing_game.py --list                       # method slugs
    python experiments/pointing_game.py --set dataset=voc07 --set data_dir=~/tfds \
        --set net=vgg16 --set weights=vgg16_voc.npz --set "method_options={'grad_cam': {'layer': 'features.29'}}"

Default data: held-out synthetic ground-truth images (``jaxinterp.data.synthetic``,
easy and difficult variants, key ``zoo.TEST_SEED``) explained by the trained
smallcnn; target = the true class, ground truth = the object mask; 'difficult'
= the difficult variant.  A map hits when its maximum lies within
``tolerance`` px of the mask; accuracy is the mean over classes of the
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
import functools
import io
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import _common  # noqa: E402
from configs import pointing_game as pointing_config  # noqa: E402

from jaxinterp import nets  # noqa: E402
from jaxinterp.data import synthetic  # noqa: E402
from jaxinterp.evaluation import centre_hits, curve_auc, deletion_curve, insertion_curve, pointing_hits  # noqa: E402
from jaxinterp.report import Report, Section, atomic_write, write_json  # noqa: E402
from jaxinterp.train import sharding  # noqa: E402

TFDS_NAMES = {"voc07": ("voc/2007", "test"), "coco14": ("coco/2014", "validation")}


# -- data: batches of image (B, H, W, 3), target / valid / difficult (B, T), mask (B, T, H, W) --


def synthetic_batches(config, run_dir):
    """(number of batches, iterator of (index, batch)) over the synthetic ground-truth set."""
    data = _common.synthetic_set(config.images, cache=os.path.join(run_dir, "data.npz"))
    n, b = len(data["label"]), config.batch_size
    num = -(-n // b)

    def it():
        for i in range(num):
            s = slice(i * b, (i + 1) * b)
            k = len(data["label"][s])
            yield i, {"image": data["image"][s], "target": data["label"][s, None].astype(np.int32),
                      "mask": data["mask"][s, None].astype(bool), "valid": np.ones((k, 1), bool),
                      "difficult": data["difficult"][s, None]}
    return num, it(), synthetic.NUM_CLASSES


def tfds_batches(config, num_classes):
    """(number of batches or None, iterator, C) over VOC07 test / COCO14 val from ``config.data_dir``.

    Targets are the classes present in each image, padded to ``config.max_targets``
    (valid = False on padding); masks are the per-class unions of the boxes
    (``jaxinterp.data.tfds.box_masks``).  'difficult' = the image indices listed in
    ``config.difficult_list`` (all False without one).
    """
    from jaxinterp.data import tfds as tfds_data
    if not config.data_dir:
        raise ValueError(f"data_dir: dataset {config.dataset!r} needs the TFDS data_dir")
    name, split = TFDS_NAMES[config.dataset]
    if config.images:
        split = f"{split}[:{int(config.images)}]"
    listed = set()
    if config.difficult_list:
        with open(os.path.expanduser(config.difficult_list)) as f:
            listed = {int(line.split()[0]) for line in f if line.strip()}
    loader = tfds_data.load(name, os.path.expanduser(config.data_dir), split=split,
                            image_size=config.image_size, batch_size=config.batch_size)
    t_max = config.max_targets

    def it():
        start = 0
        for i, batch in enumerate(loader):
            labels = np.asarray(batch["labels"], bool)                       # (B, C)
            k = labels.shape[0]
            target = np.zeros((k, t_max), np.int32)
            valid = np.zeros((k, t_max), bool)
            for r in range(k):
                present = np.flatnonzero(labels[r])[:t_max]
                target[r, :len(present)], valid[r, :len(present)] = present, True
            masks = np.asarray(tfds_data.box_masks(batch["boxes"], batch["box_labels"], num_classes,
                                                   config.image_size))          # (B, C, S, S)
            mask = np.take_along_axis(masks, target[:, :, None, None], axis=1)
            difficult = np.array([start + r in listed for r in range(k)])[:, None] & valid
            start += k
            yield i, {"image": np.asarray(batch["image"], np.float32), "target": target, "mask": mask,
                      "valid": valid, "difficult": difficult}
    return None, it(), num_classes


def load_net(config, log):
    if config.dataset == "synthetic":
        return _common.load_smallcnn(config, log)
    from jaxinterp.data import tfds as tfds_data
    classes = tfds_data.VOC_CLASSES if config.dataset == "voc07" else tfds_data.COCO_CLASSES
    net = nets.get(config.net, num_classes=len(classes))
    if not config.weights:
        raise ValueError(f"weights: dataset {config.dataset!r} needs converted weights for {config.net}")
    log(f"loading {config.net} from {config.weights}")
    return net, nets.weights.load(config.net, os.path.expanduser(config.weights), num_classes=len(classes)), {}


# -- per-batch computation ----------------------------------------------------


@functools.partial(jax.jit, static_argnames=("tolerance",))
def _hits(maps, masks, tolerance):
    return pointing_hits(maps, masks, tolerance=tolerance)


@functools.partial(jax.jit, static_argnames=("net", "steps"))
def _aucs(net, params, x, maps, target, steps):
    d = deletion_curve(net, x, maps, params=params, target=target, steps=steps, batch_size=None)
    i = insertion_curve(net, x, maps, params=params, target=target, steps=steps, batch_size=None)
    return curve_auc(d), curve_auc(i)


def _pad(batch, n_dev):
    """Pad the batch to a multiple of the device count (repeating the last row)."""
    k = batch["image"].shape[0]
    extra = -k % n_dev
    if not extra:
        return batch
    return {key: np.concatenate([v, np.repeat(v[-1:], extra, axis=0)]) for key, v in batch.items()}


def run_batch(net, params, mesh, title, method, options, batch, config):
    """hits (B, T) and, when curve_steps > 0, deletion / insertion AUC (B, T) of one method on one batch."""
    k = batch["image"].shape[0]
    padded = _pad(batch, mesh.size)
    x, t = padded["image"], padded["target"]
    if mesh.size > 1:
        x, t = sharding.shard_batch((x, t), mesh)
    maps = _common.explain_fn(net, title, method, options)(params, x, t)
    maps_host = np.asarray(maps)[:k]
    bad = int(np.sum(~np.isfinite(maps_host)))
    out = {"nonfinite": np.int64(bad)}
    if bad:
        maps_host = np.nan_to_num(maps_host, nan=-np.inf, posinf=np.finfo(np.float32).max, neginf=-np.inf)
        maps_host = np.where(np.isfinite(maps_host), maps_host, np.finfo(np.float32).min)
    out["hits"] = np.asarray(_hits(jnp.asarray(maps_host), batch["mask"], config.tolerance))
    if config.curve_steps:
        m = jnp.asarray(np.asarray(maps, np.float32))
        m = jnp.where(jnp.isfinite(m), m, 0.0)
        if mesh.size > 1:
            m = sharding.shard_batch(m, mesh)
        dele, ins = _aucs(net, params, x, m, t, config.curve_steps)
        out["deletion_auc"], out["insertion_auc"] = np.asarray(dele)[:k], np.asarray(ins)[:k]
    return out


# -- summary --------------------------------------------------------------------


def mean_per_class(hits, classes, subset):
    """Mean over the classes present in ``subset`` of the per-class hit rate (pointing_accuracy's formula)."""
    hits, classes = hits[subset], classes[subset]
    if hits.size == 0:
        return float("nan")
    return float(np.mean([hits[classes == c].mean() for c in np.unique(classes)]))


def summarise(results, meta, names, config):
    rows = []
    valid, target, difficult = meta["valid"], meta["target"], meta["difficult"]
    for slug in names:
        r = results[slug]
        row = {"method": names[slug], "slug": slug,
               "accuracy_all": mean_per_class(r["hits"], target, valid),
               "accuracy_difficult": mean_per_class(r["hits"], target, valid & difficult)
               if difficult.any() else float("nan")}
        if config.curve_steps:
            for c in ("deletion_auc", "insertion_auc"):
                row[c] = float(r[c][valid].mean()) if c in r else float("nan")
        row["seconds"] = float(r["seconds"].sum()) if "seconds" in r else 0.0
        row["nonfinite"] = int(r["nonfinite"].sum()) if "nonfinite" in r else 0
        rows.append(row)
    return rows


def write_tables(run_dir, rows, config, pairs):
    cols = ["accuracy_all", "accuracy_difficult"] + (["deletion_auc", "insertion_auc"] if config.curve_steps else [])
    heads = {"accuracy_all": "all (%)", "accuracy_difficult": "difficult (%)",
             "deletion_auc": "deletion AUC (lower = better)", "insertion_auc": "insertion AUC (higher = better)"}

    def fmt(c, v):
        if v != v:
            return "-"
        return f"{100 * v:.1f}" if c.startswith("accuracy") else f"{v:.3f}"
    md = ["| method | " + " | ".join(heads[c] for c in cols) + " | seconds |",
          "|---|" + "---|" * (len(cols) + 1)]
    for r in rows:
        md.append(f"| {r['method']} | " + " | ".join(fmt(c, r[c]) for c in cols) + f" | {r['seconds']:.1f} |")
    atomic_write(os.path.join(run_dir, "table.md"), "\n".join(md) + "\n")
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["method", "slug"] + cols + ["seconds", "nonfinite"])
    for r in rows:
        w.writerow([r["method"], r["slug"]] + [r[c] for c in cols] + [r["seconds"], r["nonfinite"]])
    atomic_write(os.path.join(run_dir, "table.csv"), buf.getvalue())
    sec = Section("Pointing game",
                  f"Mean per-class pointing accuracy (tolerance {config.tolerance:g} px) over {pairs} "
                  f"(image, class) pairs of {config.dataset}; 'difficult' = "
                  + ("the difficult synthetic variant." if config.dataset == "synthetic" else
                     "the images of the difficult list.")
                  + (f"  Deletion / insertion: AUC of the target's softmax probability over "
                     f"{config.curve_steps} steps." if config.curve_steps else ""))
    sec.table([[r["method"]] + [fmt(c, r[c]) for c in cols] + [f"{r['seconds']:.1f}"] for r in rows],
              header=["method"] + [heads[c] for c in cols] + ["seconds"])
    return sec, "\n".join(md)


def run(config, run_id: str | None = None) -> dict:
    log = _common.logger("pointing_game")
    run_id = run_id or time.strftime("%Y%m%d-%H%M%S")
    if config.dataset not in ("synthetic", *TFDS_NAMES):
        raise ValueError(f"dataset: expected 'synthetic', 'voc07' or 'coco14', got {config.dataset!r}")
    run_dir = _common.prepare_run(config, run_id, config.out, log)
    methods = _common.method_table(config.quick, config.methods)
    for slug, opts in dict(config.method_options).items():
        if slug not in methods:
            raise ValueError(f"method_options: unknown method {slug!r}")
        t, m, o = methods[slug]
        methods[slug] = (t, m, {**o, **dict(opts)})
    net, params, _ = load_net(config, log)
    mesh = sharding.data_mesh()
    if mesh.size > 1:
        params = sharding.replicate(params, mesh)
        log(f"{mesh.size} devices: batches split over the 'data' axis")
    if config.dataset == "synthetic":
        num, batches, num_classes = synthetic_batches(config, run_dir)
    else:
        num, batches, num_classes = tfds_batches(config, net.num_classes)
    total = f"/{num}" if num else ""
    metas, computed = [], 0
    for b, batch in batches:
        metas.append({k: batch[k] for k in ("target", "valid", "difficult")})
        cpath = os.path.join(run_dir, "shards", _common.CENTRE, f"b{b:05d}.npz")
        if _common.load_npz(cpath) is None:
            _common.save_npz(cpath, hits=np.asarray(centre_hits(batch["mask"], tolerance=config.tolerance)))
        for slug, (title, method, options) in methods.items():
            path = os.path.join(run_dir, "shards", slug, f"b{b:05d}.npz")
            if os.path.exists(path):
                continue
            t0 = time.perf_counter()
            out = run_batch(net, params, mesh, title, method, options, batch, config)
            out["seconds"] = np.float64(time.perf_counter() - t0)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            _common.save_npz(path, **out)
            computed += 1
            acc = out["hits"][batch["valid"]].mean()
            log(f"batch {b + 1}{total} {slug}: hit rate {acc:.3f}"
                + (f", deletion {out['deletion_auc'][batch['valid']].mean():.3f}, insertion "
                   f"{out['insertion_auc'][batch['valid']].mean():.3f}" if config.curve_steps else "")
                + f" ({out['seconds']:.1f}s)" + (f" [{out['nonfinite']} non-finite values]" if out["nonfinite"] else ""))
    log(f"computed {computed} shards, {len(metas) * len(methods) - computed} resumed from disk")
    meta = {k: np.concatenate([m[k] for m in metas]) for k in metas[0]}
    names = {**{s: t for s, (t, _, _) in methods.items()}, _common.CENTRE: "centre (baseline)"}
    results = {}
    for slug in names:
        shards = [_common.load_npz(os.path.join(run_dir, "shards", slug, f"b{b:05d}.npz")) for b in range(len(metas))]
        results[slug] = {k: (np.concatenate([s[k] for s in shards]) if np.ndim(shards[0][k]) else np.array([s[k] for s in shards]))
                         for k in shards[0]}
    rows = summarise(results, meta, names, config)
    pairs = int(meta["valid"].sum())
    sec, md = write_tables(run_dir, rows, config, pairs)
    metrics = {"pairs": pairs, "difficult_pairs": int((meta["valid"] & meta["difficult"]).sum()),
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


def main(argv=None) -> dict:
    return _common.main(argv, pointing_config.get_config, __doc__, run)


if __name__ == "__main__":
    main()
