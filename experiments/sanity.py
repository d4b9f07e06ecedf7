"""Sanity checks for saliency maps (Adebayo et al. 2018): cascading randomisation of the smallcnn.

    python -m experiments.sanity --config local --id sanity      # minutes on a CPU
    python -m experiments.sanity --id sanity --set images=64

The trained smallcnn's parameterised layers are re-initialised from the top
(the classifier first) cumulatively (``jaxinterp.evaluation.cascading_randomisation``).
At every stage each method explains the true class of held-out synthetic
images (both variants) and its maps are compared with the maps of the
original net, per image:

* Spearman rank correlation of |maps| (``evaluation.spearman``);
* SSIM of |maps| scaled to [0, 1] by each map's maximum (``evaluation.ssim``, data_range 1);
* HOG distance of |maps| (``evaluation.hog_distance``).

A method *fails* the check when its mean Spearman correlation is still above
``config.threshold`` once every layer is randomised: its maps do not depend on
what the net learned.  Each (method, stage) writes
``<out>/<id>/shards/<method>/s<stage>.npz`` atomically; a rerun with the same
``--id`` resumes.  Writes ``sanity.csv`` (long table), ``metrics.json``,
``sanity.png`` (similarity vs layer per method), ``config.json`` and
``report.html``.
"""

from __future__ import annotations

import csv
import io
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp.evaluation import (SIMILARITIES, cascading_randomisation, compare_maps, sanity_plot,
                                  sanity_summary)
from jaxinterp.report import Report, atomic_write, write_json

from experiments import common
from experiments.configs.sanity import get_config

METRICS = SIMILARITIES


def maps_of(fn, params, data, batch_size):
    out = []
    for i in range(0, len(data["label"]), batch_size):
        x = jnp.asarray(data["image"][i:i + batch_size])
        t = jnp.asarray(data["label"][i:i + batch_size, None], jnp.int32)
        out.append(np.asarray(fn(params, x, t), np.float32))   # at image resolution (explain_fn)
    return np.concatenate(out)


def run(config, run_id: str | None = None) -> dict:
    log = common.logger("sanity")
    run_id = run_id or time.strftime("%Y%m%d-%H%M%S")
    run_dir = common.prepare_run(config, run_id, config.out, log)
    methods = common.method_table(config.quick, config.methods)
    net, params, _ = common.load_smallcnn(config, log)
    data = common.synthetic_set(config.images, cache=os.path.join(run_dir, "data.npz"))
    cascade = cascading_randomisation(net, params, jax.random.key(config.seed))
    stages = [("original", params)] + cascade
    names = [name for name, _ in stages]
    log(f"{len(data['label'])} images, {len(methods)} methods, stages: {names}")
    computed = 0
    per = {}
    for slug, (title, method, options) in methods.items():
        fn = common.explain_fn(net, title, method, options)
        orig_path = os.path.join(run_dir, "shards", slug, "original.npz")
        done = common.load_npz(orig_path)
        if done is None:
            t0 = time.perf_counter()
            original = maps_of(fn, params, data, config.batch_size)
            common.save_npz(orig_path, maps=original)
            computed += 1
            log(f"{slug}: original maps ({time.perf_counter() - t0:.1f}s)")
        else:
            original = done["maps"]
        per[slug] = {}
        for s, (name, p) in enumerate(stages):
            path = os.path.join(run_dir, "shards", slug, f"s{s:02d}.npz")
            res = common.load_npz(path)
            if res is None:
                t0 = time.perf_counter()
                maps = original if s == 0 else maps_of(fn, p, data, config.batch_size)
                bad = int(np.sum(~np.isfinite(maps)))
                maps = np.nan_to_num(maps, nan=0.0, posinf=0.0, neginf=0.0)
                sims = compare_maps(jnp.asarray(original), jnp.asarray(maps))
                rho, sim, hog = (np.asarray(sims[m])[:, 0] for m in METRICS)
                res = {"spearman": rho, "ssim": sim, "hog": hog, "nonfinite": np.int64(bad)}
                common.save_npz(path, **res)
                computed += 1
                log(f"{slug} stage {s}/{len(stages) - 1} ({name}): spearman {np.nanmean(rho):.3f}, "
                    f"ssim {np.nanmean(sim):.3f}, hog {np.nanmean(hog):.3f} "
                    f"({time.perf_counter() - t0:.1f}s)" + (f" [{bad} non-finite values set to 0]" if bad else ""))
            per[slug][name] = res
    log(f"computed {computed} shards, the rest resumed from disk")

    summary = sanity_summary(per, {s: t for s, (t, _, _) in methods.items()}, names, config.threshold)
    fails = [slug for slug, series in summary.items() if series["fails"]]
    rows = [[series["title"], slug, s, n] + [series[m][s] for m in METRICS] + [series["undefined_spearman"][s]]
            for slug, series in summary.items() for s, n in enumerate(names)]
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["method", "slug", "stage", "randomised_down_to"] + list(METRICS) + ["undefined_spearman"])
    w.writerows(rows)
    atomic_write(os.path.join(run_dir, "sanity.csv"), buf.getvalue())
    png = sanity_plot(os.path.join(run_dir, "sanity.png"), names, summary, config.threshold)
    metrics = {"stages": names, "images": int(len(data["label"])), "threshold": config.threshold,
               "fails": fails, "methods": summary, "computed_shards": computed}
    write_json(os.path.join(run_dir, "metrics.json"), metrics)
    fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    md = ["| method (mean Spearman of abs maps) | " + " | ".join(names)
          + f" | Spearman <= {config.threshold} from | fails |", "|---|" + "---|" * (len(names) + 2)]
    for slug, series in summary.items():
        md.append(f"| {series['title']} | " + " | ".join(fmt(v) for v in series["spearman"])
                  + f" | {series['first_below_threshold'] or 'never'} | {'yes' if series['fails'] else 'no'} |")
    atomic_write(os.path.join(run_dir, "sanity.md"), "\n".join(md) + "\n")
    report = Report(f"Sanity checks {run_id}")
    sec = report.section(
        "Cascading randomisation",
        f"Adebayo et al. (2018): the smallcnn's layers are re-initialised from the top, cumulatively; "
        f"the maps of the true class on {len(data['label'])} held-out synthetic images are compared with "
        f"those of the trained net.  A method fails when the mean Spearman correlation of |maps| is "
        f"still above {config.threshold} with every layer randomised.  Failing: "
        f"{', '.join(summary[s]['title'] for s in fails) or 'none'}.")
    sec.figure(png, "Similarity to the original maps vs the last layer randomised (left to right: more layers).")
    sec.table([[summary[s]["title"]] + [fmt(v) for v in summary[s]["spearman"]] + ["yes" if summary[s]["fails"] else "no"]
               for s in summary], header=["method (Spearman)"] + names + ["fails"])
    report.section("Run").text(f"Configuration: {json.dumps(config.to_dict())}")
    report.write(run_dir)
    print("\n".join(md), flush=True)
    log(f"fails the check (Spearman > {config.threshold} after all layers): {fails or 'none'}")
    log(f"wrote {run_dir}/sanity.csv, sanity.md, sanity.png, metrics.json, report.html")
    return metrics


def main(argv=None) -> int:
    return common.main(argv, get_config, __doc__, run)


if __name__ == "__main__":
    raise SystemExit(main())
