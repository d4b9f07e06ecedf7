"""Deep image prior (Ulyanov, Vedaldi and Lempitsky 2018): restorations of bundled photographs and fitting curves.

    python -m experiments.dip --config local --id dip       # well under a minute on a CPU
    python -m experiments.dip --id dip                       # the paper's net and steps, 512 px (a GPU)
    python -m experiments.dip --set tasks="['denoise']" --set images="['astronaut']"

For each task (denoising of Gaussian noise ``sigma``, inpainting of a random
``mask_fraction`` of the pixels, x``factor`` super-resolution from a box-
downsampled image) all images are restored in one compiled call of
:func:`jaxinterp.synthesis.dip.deep_image_prior` (split over the devices when
their number divides the images) and written to ``<out>/<id>/shards/<task>.npz``
(restored images, per-step loss and PSNR against the clean image); the paper's
Fig. 2 fitting curves (image, image + noise, scrambled pixels, noise) go to
``shards/curves.npz``.  A rerun with the same ``--id`` skips finished shards.
``metrics.json`` holds, per task and image, the PSNR of the observation, of
the final restoration, the best PSNR over the steps and its step;
``report.html`` shows the restorations and the curves.
"""

from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp import ops, plot
from jaxinterp.data import images as photos
from jaxinterp.report import Report, write_json
from jaxinterp.synthesis import dip
from jaxinterp.train import sharding

from experiments import common
from experiments.configs.dip import get_config

TASKS = ("denoise", "inpaint", "super_resolution")


def net_options(config) -> dict:
    return dict(in_channels=config.in_channels, down=tuple(config.down), up=tuple(config.up),
                skip=tuple(config.skip), upsample=config.upsample)


def observe(clean: np.ndarray, task: str, config) -> tuple[np.ndarray, np.ndarray | None]:
    """The degraded observation of ``task`` (and the inpainting mask) drawn from ``config.seed``."""
    key = jax.random.fold_in(jax.random.key(config.seed), TASKS.index(task) + 1)
    if task == "denoise":
        noisy = clean + config.sigma * np.asarray(jax.random.normal(key, clean.shape))
        return np.clip(noisy, 0, 1).astype(np.float32), None
    if task == "inpaint":
        mask = (np.asarray(jax.random.uniform(key, clean.shape[:3])) >= config.mask_fraction).astype(np.float32)
        return clean * mask[..., None], mask
    low = jax.vmap(lambda im: dip.degrade(im, "super_resolution", factor=config.factor))(jnp.asarray(clean))
    return np.asarray(low), None


def run_task(task: str, clean: np.ndarray, config, mesh) -> dict[str, np.ndarray]:
    y, mask = observe(clean, task, config)
    x, ref, m = jnp.asarray(y), jnp.asarray(clean), None if mask is None else jnp.asarray(mask)
    if mesh.size > 1 and len(clean) % mesh.size == 0:
        x, ref, m = sharding.shard_batch((x, ref, m), mesh)
    r = dip.deep_image_prior(x, key=jax.random.key(config.seed), task=task, mask=m, factor=config.factor,
                             steps=config.steps[task], lr=config.lr, seeds=config.seeds, reference=ref,
                             **net_options(config))
    out = {"restored": np.asarray(r.images), "loss": np.asarray(r.loss), "psnr": np.asarray(r.psnr),
           "observed": y}
    if mask is not None:
        out["mask"] = mask
    return out


def run_curves(clean: np.ndarray, config) -> dict[str, np.ndarray]:
    c = dip.fitting_curves(jnp.asarray(clean), jax.random.key(config.seed), config.curve_steps, lr=config.lr,
                           **net_options(config))
    return {"loss": np.asarray(c.loss)}


def observed_psnr(task: str, shard, clean: np.ndarray) -> np.ndarray:
    """PSNR of the observation itself: the noisy image, the masked image, the bilinear upsampling of the low-res one."""
    y = shard["observed"]
    if task == "super_resolution":
        y = np.asarray(ops.resize_bilinear(jnp.asarray(y), clean.shape[1:3], axes=(1, 2)))
    return np.asarray(dip.psnr(jnp.asarray(y), jnp.asarray(clean)))


def curves_png(loss: np.ndarray, path: str) -> str:
    """Mean (over images) MSE per step of the four fitting targets, log scale."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 3.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for t, name in enumerate(dip.FITTING_TARGETS):
        ax.plot(np.arange(1, loss.shape[-1] + 1), loss[:, t].mean(0), label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("MSE")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path


def summarise(run_dir, shards, clean, config, log) -> dict:
    metrics = {"tasks": {}}
    cells, titles = [], []
    for task in config.tasks:
        s = shards[task]
        before = observed_psnr(task, s, clean)
        q = s["psnr"][:, 0]
        rows = {}
        for i, name in enumerate(config.images):
            rows[name] = {"psnr_observed": float(before[i]), "psnr_final": float(q[i, -1]),
                          "psnr_best": float(q[i].max()), "best_step": int(q[i].argmax()) + 1}
        metrics["tasks"][task] = rows
    if "curves" in shards:
        late = shards["curves"]["loss"][..., -max(1, config.curve_steps // 10):].mean(-1).mean(0)
        metrics["curves_final_mse"] = {n: float(v) for n, v in zip(dip.FITTING_TARGETS, late)}
    write_json(os.path.join(run_dir, "metrics.json"), metrics)

    for i, name in enumerate(config.images):
        cells.append(clean[i])
        titles.append(name)
        for task in config.tasks:
            s = shards[task]
            cells += [s["observed"][i], s["restored"][i, 0]]
            titles += [f"{task} input", f"{task} {metrics['tasks'][task][name]['psnr_final']:.1f} dB"]
    report = Report(f"Deep image prior {os.path.basename(run_dir)}")
    sec = report.section("Restorations",
                         f"Skip net {list(config.down)} down / {list(config.up)} up / {list(config.skip)} skip, "
                         f"{config.in_channels} input channels, Adam {config.lr}, steps {dict(config.steps)}, "
                         f"{config.image_size} px.  Denoising: Gaussian noise sigma {config.sigma:.4f} (EMA 0.99 of "
                         f"the outputs); inpainting: {config.mask_fraction:.0%} of the pixels dropped at random; "
                         f"super-resolution x{config.factor} from a box-downsampled image.")
    sec.table([(task, name, r["psnr_observed"], r["psnr_final"], r["psnr_best"], r["best_step"])
               for task, rows in metrics["tasks"].items() for name, r in rows.items()],
              header=("task", "image", "PSNR input", "PSNR final", "PSNR best", "best step"))
    sec.figure(plot.grid(cells, titles, os.path.join(run_dir, "restorations.png"), ncols=1 + 2 * len(config.tasks)),
               "Clean image, then the observation and the restoration of each task (PSNR of the final output).")
    if "curves" in shards:
        sec = report.section("Fitting curves (the paper's Fig. 2)",
                             "MSE per step of fitting the same net and input to the image, the image + noise, its "
                             "scrambled pixels and uniform noise: natural images fit fastest.")
        sec.metrics(metrics["curves_final_mse"])
        sec.figure(curves_png(shards["curves"]["loss"], os.path.join(run_dir, "curves.png")), "MSE per step")
    report.write(run_dir)
    log(f"wrote {run_dir}/metrics.json, report.html")
    return metrics


def run(config, run_id: str | None = None) -> dict:
    log = common.logger("dip")
    run_id = run_id or time.strftime("%Y%m%d-%H%M%S")
    unknown = [t for t in config.tasks if t not in TASKS]
    if unknown or not config.tasks:
        raise ValueError(f"tasks: expected some of {TASKS}, got {list(config.tasks)}")
    missing = [t for t in config.tasks if t not in config.steps]
    if missing:
        raise ValueError(f"steps: no step count for tasks {missing}")
    if config.image_size % (2 ** len(config.down)) or (config.image_size // config.factor) < 1:
        raise ValueError(f"image_size: expected a multiple of 2**{len(config.down)}, got {config.image_size}")
    run_dir = common.prepare_run(config, run_id, config.out, log)
    clean = photos.batch(list(config.images), config.image_size)
    mesh = sharding.data_mesh()
    jobs = [(t, lambda t=t: run_task(t, clean, config, mesh), config.steps[t]) for t in config.tasks]
    if config.curve_steps:
        jobs.append(("curves", lambda: run_curves(clean, config), config.curve_steps))
    shards, computed = {}, 0
    for name, job, steps in jobs:
        path = os.path.join(run_dir, "shards", f"{name}.npz")
        done = common.load_npz(path)
        if done is None:
            log(f"{name}: {len(clean)} images x {steps} steps ...")
            t0 = time.perf_counter()
            done = job()
            common.save_npz(path, **done)
            computed += 1
            log(f"{name}: done in {time.perf_counter() - t0:.1f}s")
        shards[name] = done
    log(f"computed {computed} shards, {len(shards) - computed} resumed from disk")
    metrics = summarise(run_dir, shards, clean, config, log)
    return {**metrics, "computed_shards": computed}


def main(argv=None) -> int:
    return common.main(argv, get_config, __doc__, run)


if __name__ == "__main__":
    raise SystemExit(main())
