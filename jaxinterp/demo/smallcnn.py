"""The demo's sections on the small CNN of the zoo, trained on the synthetic set with ground-truth masks.

``jaxinterp demo --full`` (or ``--only smallcnn``) adds them after the real net's
(:mod:`jaxinterp.demo.photos`): accuracy and the synthetic set, energy of the
gradient in the object's mask, every attribution method, extremal perturbations,
the pointing game and the sanity checks, feature visualisation, pre-images,
channel diffing, the deep image prior and self-labelling.  A section is a
function ``section(ctx: DemoContext) -> report.Section`` that records its numbers
in ``ctx.metrics[<its key>]``.  :func:`attribution_methods` and
:func:`extremal_method` are the method table the evaluation experiments share.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp import attribution, evaluation, nets, perturbation, plot, synthesis
from jaxinterp.attribution import gradient
from jaxinterp.demo.methods import (SMALLCNN_EXTREMAL_GEOMETRY, SMALLCNN_LAST_CONV, peer_methods,
                                    smallcnn_methods)
from jaxinterp.data import images, synthetic
from jaxinterp.report import Section
from jaxinterp.train import metrics as cluster_metrics, selfsup, zoo
from jaxinterp.train.sela import SeLa
from jaxinterp.train.augment import AugmentConfig

__all__ = ["Sizes", "DemoContext", "DEMO_SECTIONS", "SMALLCNN_SECTIONS", "QUICK", "FULL", "energy_in_mask",
           "load_model"]

_VARIANTS = synthetic.VARIANTS


@dataclasses.dataclass(frozen=True)
class Sizes:
    shown: int      # synthetic images per variant shown in figures.
    evaluated: int  # synthetic images per variant for accuracy and the energy metric.
    photos: int     # bundled photographs shown (at most).


FULL = Sizes(shown=6, evaluated=256, photos=6)
QUICK = Sizes(shown=2, evaluated=8, photos=2)

_saliency = jax.jit(gradient, static_argnames=("net", "reduce", "rules", "layer", "resize"))
_logits = jax.jit(lambda net, params, x: net.apply(params, x), static_argnums=0)


@dataclasses.dataclass
class DemoContext:
    """What the demo's sections share.

    Attributes:
      args: the parsed command line.
      run_dir: the output directory ``<out>/<id>``.
      net, params: the model explained.
      info: the model's description from the zoo (test accuracies, training time).
      sizes: how many images the sections use.
      log: progress printer.
      metrics: section key -> dict of numbers, written to metrics.json.
      arrays: name -> array, written to saliency.npz.
    """

    args: argparse.Namespace
    run_dir: str
    net: nets.Net
    params: dict
    info: dict
    sizes: Sizes
    log: Callable[[str], None]
    metrics: dict = dataclasses.field(default_factory=dict)
    arrays: dict = dataclasses.field(default_factory=dict)
    _synthetic: dict = dataclasses.field(default_factory=dict, repr=False)

    def path(self, name: str) -> str:
        """A file in the run directory."""
        return os.path.join(self.run_dir, name)

    def synthetic_set(self, variant: str) -> dict[str, np.ndarray]:
        """Held-out synthetic images of ``variant``, their logits and gradient saliency of the true class.

        The images are the first N of the zoo's held-out test set (never used in training).

        Returns:
          dict of NumPy arrays: image (N, 64, 64, 3), label (N,), box (N, 4),
          mask (N, 64, 64), logits (N, K), saliency (N, 64, 64) (= max_c |d y_label / d x|),
          with N = ``sizes.evaluated``.  Computed once per variant.
        """
        if variant in self._synthetic:
            return self._synthetic[variant]
        self.log(f"{variant}: rendering {self.sizes.evaluated} synthetic images, computing saliency")
        ex = synthetic.generate(jax.random.key(zoo.TEST_SEED), self.sizes.evaluated, variant=variant, size=64)
        logits, maps = [], []
        for i in range(0, self.sizes.evaluated, 64):
            x, y = ex["image"][i:i + 64], ex["label"][i:i + 64]
            logits.append(_logits(self.net, self.params, x))
            maps.append(_saliency(self.net, self.params, x, y)[:, 0])
        out = {k: np.asarray(v) for k, v in ex.items()}
        out.update(logits=np.asarray(jnp.concatenate(logits)), saliency=np.asarray(jnp.concatenate(maps)))
        _check_finite(f"saliency of synthetic {variant} images", out["saliency"])
        self.arrays[f"synthetic_{variant}"] = out["saliency"]
        self._synthetic[variant] = out
        return out


# -- sections ------------------------------------------------------------------


def model_section(ctx: DemoContext) -> Section:
    """The model: architecture, size, training and test accuracy on both variants."""
    trained = not ctx.args.quick
    sec = Section("Model", f"{ctx.net!r}, {nets.count_params(ctx.params):,} parameters, "
                  f"classes: {', '.join(synthetic.CLASSES)}.")
    if not trained:
        sec.text("--quick: an untrained net (random initialisation), so accuracies are at chance "
                 "and saliency maps show the architecture's bias, not learned evidence.")
    demo_acc = {}
    for v in _VARIANTS:
        data = ctx.synthetic_set(v)
        demo_acc[v] = float(np.mean(data["logits"].argmax(-1) == data["label"]))
    zoo_acc = ctx.info.get("accuracy", {})
    rows = [(v, zoo_acc.get(v, "n/a"), demo_acc[v]) for v in _VARIANTS]
    sec.table(rows, header=("variant", f"test accuracy ({ctx.info.get('test_size', 0)} held-out images)",
                            f"accuracy on the {ctx.sizes.evaluated} demo images"))
    ctx.metrics["model"] = {
        "trained": trained,
        "params": nets.count_params(ctx.params),
        **{f"test_accuracy_{v}": float(a) for v, a in zoo_acc.items()},
        **{f"demo_accuracy_{v}": a for v, a in demo_acc.items()},
    }
    if trained:
        sec.metrics({k: v for k, v in ctx.info.items() if isinstance(v, (int, float, str))})
    return sec


def synthetic_section(ctx: DemoContext) -> Section:
    """Gradient saliency of the true class on synthetic images, with the ground-truth box."""
    sec = Section("Gradient saliency on synthetic images",
                  "Simonyan et al. (2014): the map is max over colour channels of |d logit / d pixel| "
                  "for the true class.  Green: the object's ground-truth box.  Maps are scaled per "
                  "image (99.5th percentile = brightest).")
    for variant in _VARIANTS:
        data = ctx.synthetic_set(variant)
        cells, titles = [], []
        for i in range(ctx.sizes.shown):
            box = data["box"][i]
            cells += [plot.draw_box(data["image"][i], box), plot.draw_box(plot.heatmap(data["saliency"][i]), box)]
            true, pred = synthetic.CLASSES[data["label"][i]], synthetic.CLASSES[data["logits"][i].argmax()]
            titles += [f"{true} (pred {pred})", "saliency"]
        path = plot.grid(cells, titles, ctx.path(f"synthetic_{variant}.png"))
        sec.figure(path, f"{variant}: image with ground-truth box (title: true class, predicted "
                         "class) and the gradient saliency of the true class.")
    return sec


def photos_section(ctx: DemoContext) -> Section:
    """Gradient saliency of the top class on the bundled photographs (out of distribution)."""
    names = images.names()[:ctx.sizes.photos]
    x = images.batch(names, size=64)
    logits = _logits(ctx.net, ctx.params, x)
    top = jnp.argmax(logits, -1)
    maps = np.asarray(_saliency(ctx.net, ctx.params, x, top)[:, 0])
    _check_finite("saliency of photographs", maps)
    ctx.arrays["photos"] = maps
    cells, titles = [], []
    for name, t, m in zip(names, np.asarray(top), maps):
        big = images.load(name, size=224)
        cells += [big, plot.heatmap(m), plot.overlay(big, m)]
        titles += [name, f"saliency of {synthetic.CLASSES[t]}", "overlay"]
    path = plot.grid(cells, titles, ctx.path("photos.png"))
    ctx.metrics["photos"] = {"count": len(names)}
    return Section("Gradient saliency on photographs").figure(
        path, "Bundled photographs, which belong to none of the synthetic classes: the net saw "
              "each resized to 64 x 64.  The map is the gradient saliency (64 x 64) of the net's "
              "top class, named above the map (a synthetic class, meaningless for a photograph); "
              "the overlay shows it upsampled on the photograph.")


def energy_section(ctx: DemoContext) -> Section:
    """Does the net look at the object?  Saliency energy inside the mask vs the mask's area."""
    rows, metrics = [], {}
    for variant in _VARIANTS:
        data = ctx.synthetic_set(variant)
        e = energy_in_mask(data["saliency"], data["mask"])
        area = data["mask"].mean(axis=(1, 2))
        ok = np.isfinite(e)
        m = {"energy_in_mask": float(e[ok].mean()), "area_fraction": float(area[ok].mean()),
             "lift": float(e[ok].mean() / area[ok].mean()),
             "fraction_above_area": float(np.mean(e[ok] > area[ok])),
             "zero_maps": int((~ok).sum()), "images": len(e)}
        metrics[variant] = m
        rows.append((variant, m["energy_in_mask"], m["area_fraction"], m["lift"],
                     m["fraction_above_area"], m["images"]))
    ctx.metrics["energy"] = metrics
    return Section(
        "Saliency energy inside the object",
        "For each image: the fraction of the saliency map's total (sum of max_c |g|) that falls "
        "inside the object's ground-truth mask, against the fraction of the image the mask "
        "covers (what a uniform map would get).  Lift = mean energy fraction / mean area "
        "fraction; lift > 1 means the gradient concentrates on the object "
        "(the energy-based pointing game of Wang et al., Score-CAM, 2020)."
    ).table(rows, header=("variant", "energy in mask", "mask area", "lift",
                          "images with energy > area", "images"))


def attribution_section(ctx: DemoContext) -> Section:
    """Every attribution method on a few synthetic images and a photograph, for two targets each."""
    data = ctx.synthetic_set("easy")
    k = ctx.sizes.shown // 2 + 1
    x = jnp.concatenate([jnp.asarray(data["image"][:k]), images.batch(images.names()[:1], size=64)])
    logits = np.asarray(_logits(ctx.net, ctx.params, x))
    first = np.concatenate([data["label"][:k], logits[k:].argmax(-1)])
    runner_up = np.where(logits.argsort(-1)[:, -1] == first, logits.argsort(-1)[:, -2], logits.argsort(-1)[:, -1])
    targets = jnp.asarray(np.stack([first, runner_up], 1), jnp.int32)          # (N, 2)
    methods = smallcnn_methods(ctx.args.quick)
    maps, seconds = {}, {}
    for title, method, options in methods:
        ctx.log(f"attribution: {title}")
        t0 = time.perf_counter()
        compiled = evaluation.explain_fn(ctx.net, title, method, options)     # one program per method
        m = np.asarray(jax.block_until_ready(compiled(ctx.params, x, targets)))
        seconds[title] = time.perf_counter() - t0
        _check_finite(f"{title} maps", m)
        maps[title] = m
    ctx.arrays["attribution_images"] = np.asarray(x)
    ctx.arrays["attribution_targets"] = np.asarray(targets)
    for title, m in maps.items():
        ctx.arrays["attribution_" + title.split(" (")[0].replace(" ", "_").replace(".", "")] = m
    cells, titles = [], []
    for n in range(x.shape[0]):
        for j in range(2):
            cells.append(np.asarray(x[n]))
            titles.append(f"{synthetic.CLASSES[int(targets[n, j])]} ({'top' if j == 0 else '2nd'})"
                          if n >= k or j else f"{synthetic.CLASSES[int(targets[n, j])]} (true)")
            for title, m in maps.items():
                signed = bool((m[n, j] < 0).any())
                cells.append(plot.heatmap(m[n, j], signed=signed))
                titles.append(title)
    path = plot.grid(cells, titles, ctx.path("attribution_grid.png"), ncols=len(maps) + 1, cell=1.3)
    ctx.metrics["attribution"] = {"seconds_with_compile": seconds, "images": int(x.shape[0]), "targets": 2}
    sec = Section(
        "Attribution methods",
        f"Every method of jaxinterp.attribution on {k} held-out synthetic images and one bundled "
        "photograph, for two targets each (the true or top class, and the runner-up class), all "
        "images and targets in one compiled call per method.  Signed maps (diverging colours: red positive, "
        "blue negative) and non-negative maps (inferno) are scaled per map.")
    sec.figure(path, "Rows: image and target; columns: methods.  Grad-CAM and CAM are at the "
                     f"8 x 8 resolution of '{SMALLCNN_LAST_CONV}', upsampled bilinearly; linear approx at "
                     "'features.7' (16 x 16); occlusion with 8 x 8 black windows at stride 4; RISE "
                     "with 7 x 7 grids.")
    sec.table([(t, f"{s:.2f}") for t, s in seconds.items()], header=("method", "seconds (incl. compile)"))
    return sec


# -- evaluation sections (pointing game and sanity checks) ----------------------
# The computation is jaxinterp.evaluation.benchmark, shared with experiments/pointing_game.py
# and experiments/sanity.py (the full, resumable runs).

# Held-out synthetic images per variant (--quick, full): the full demo runs 37 methods plus 2 x 9
# deletion / insertion forward passes per method and image; 16 per variant keeps the two sections
# near a minute and a half on two CPU cores (experiments/pointing_game.py runs 512 per variant).
_EVAL_IMAGES = {True: 8, False: 16}
# --quick compiles every method once more at the evaluation shapes, which costs seconds per
# method on a CPU; it keeps three cheap ones (the full demo evaluates every method).
_QUICK_EVAL_METHODS = ("gradient", "guided_backprop", "grad_cam")
_CURVE_STEPS = 8


def _eval_methods(quick: bool) -> list[tuple[str, str, Callable, dict]]:
    """(slug, title, method, options) of the evaluation sections: smallcnn_methods(quick=True),
    and in the full demo the methods after the peers.

    Always the quick sample counts (IG / SmoothGrad 8, RISE 250 masks): with full counts RISE
    alone would take minutes on 128 images; experiments/pointing_game.py has the full counts.
    """
    rows = smallcnn_methods(True) + ([] if quick else peer_methods(64, SMALLCNN_LAST_CONV, samples=8))
    methods = [(evaluation.method_slug(t), t, m, o) for t, m, o in rows]
    return [m for m in methods if m[0] in _QUICK_EVAL_METHODS] if quick else methods


def _eval_batches(ctx: DemoContext) -> list[dict[str, np.ndarray]]:
    """One batch per variant of the first N held-out images: image, target (N, 1), mask (N, 1, H, W)."""
    n = _EVAL_IMAGES[bool(ctx.args.quick)]
    out = []
    for v in _VARIANTS:
        d = ctx.synthetic_set(v)
        out.append({"image": d["image"][:n], "target": d["label"][:n, None].astype(np.int32),
                    "mask": d["mask"][:n, None].astype(bool), "difficult": np.full((n, 1), v == "difficult")})
    return out


def pointing_section(ctx: DemoContext) -> Section:
    """The pointing game (and deletion / insertion AUC) of the attribution methods on held-out synthetic images."""
    batches = _eval_batches(ctx)
    n = batches[0]["image"].shape[0]
    tol = evaluation.scaled_tolerance(batches[0]["image"].shape[1])     # 15 px at 224 -> 4.3 px at 64
    results, names = {}, {}
    for slug, title, method, options in _eval_methods(ctx.args.quick):
        ctx.log(f"pointing game: {title}")
        fn = evaluation.explain_fn(ctx.net, title, method, options)
        t0 = time.perf_counter()
        parts, bad = [], 0
        for b in batches:
            maps = fn(ctx.params, b["image"], b["target"])
            bad += int(np.sum(~np.isfinite(np.asarray(maps))))
            parts.append(evaluation.score_maps(ctx.net, ctx.params, b["image"], evaluation.sanitise_maps(maps),
                                               b["target"], b["mask"], tolerance=tol, curve_steps=_CURVE_STEPS))
        results[slug] = {k: np.concatenate([np.asarray(p[k]) for p in parts]) for k in parts[0]}
        results[slug].update(seconds=time.perf_counter() - t0, nonfinite=bad)
        names[slug] = title
    results["centre"] = {"hits": np.concatenate([np.asarray(evaluation.centre_hits(b["mask"], tolerance=tol))
                                                 for b in batches])}
    names["centre"] = "centre (baseline)"
    cat = {k: np.concatenate([b[k] for b in batches]) for k in ("target", "difficult")}
    rows = evaluation.pointing_rows(results, names, cat["target"], np.ones_like(cat["difficult"]),
                                    cat["difficult"], synthetic.NUM_CLASSES)
    header, body, md = evaluation.pointing_table(rows, curves=True)
    with open(ctx.path("pointing_game.md"), "w") as f:
        f.write(md)
    ctx.arrays["pointing_hits"] = np.stack([results[s]["hits"][:, 0] for s in names])
    ctx.metrics["pointing"] = {
        "images_per_variant": n, "tolerance": tol, "curve_steps": _CURVE_STEPS,
        "methods": {r["slug"]: {k: v for k, v in r.items() if k not in ("method", "slug")} for r in rows}}
    sec = Section(
        "Pointing game",
        f"Zhang et al. (2016), TorchRay's protocol: a map hits when a pixel of the object's mask lies "
        f"within {tol:.1f} px of the map's maximum (TorchRay's 15 px at 224 px, scaled to the 64 px "
        f"images; at 15 px the centre baseline hits nearly every object); accuracy = mean over classes of the per-class hit rate, "
        f"on the first {n} held-out images of each variant ('difficult' = the difficult variant), "
        f"target = the true class.  The centre baseline always points at the image centre.  "
        f"Deletion (to black) and insertion (from a blur) AUC of the target's softmax probability over "
        f"{_CURVE_STEPS} steps (Petsiuk et al. 2018).  Sampling methods use the quick sample counts; "
        "experiments/pointing_game.py runs the full benchmark."
        + ("  --quick: three methods on an untrained net." if ctx.args.quick else ""))
    sec.table(body, header=header)
    return sec


def sanity_section(ctx: DemoContext) -> Section:
    """Cascading parameter randomisation (Adebayo et al. 2018) of the smallcnn: three methods with
    --quick, every method of the evaluation table in the full demo."""
    batch = _eval_batches(ctx)[0]     # the easy batch: the shapes of pointing_section, so no recompilation
    x, t = batch["image"], batch["target"]
    methods = _eval_methods(ctx.args.quick)
    stages = [("original", ctx.params)] + evaluation.cascading_randomisation(ctx.net, ctx.params, jax.random.key(1))
    names = [name for name, _ in stages]
    per, nonfinite = {}, {}
    for slug, title, method, options in methods:
        ctx.log(f"sanity: {title}")
        fn = evaluation.explain_fn(ctx.net, title, method, options)
        original = jnp.nan_to_num(fn(ctx.params, x, t), nan=0.0, posinf=0.0, neginf=0.0)
        per[slug], nonfinite[slug] = {}, 0
        for name, p in stages:
            maps = fn(p, x, t)
            nonfinite[slug] += int(np.sum(~np.isfinite(np.asarray(maps))))
            sims = evaluation.compare_maps(original, jnp.nan_to_num(maps, nan=0.0, posinf=0.0, neginf=0.0))
            per[slug][name] = {k: np.asarray(v)[:, 0] for k, v in sims.items()}
    thr = evaluation.SANITY_THRESHOLD
    summary = evaluation.sanity_summary(per, {m[0]: m[1] for m in methods}, names, thr)
    png = evaluation.sanity_plot(ctx.path("sanity.png"), names, summary, thr)
    fails = [s for s in summary if summary[s]["fails"]]
    ctx.metrics["sanity"] = {
        "images": int(x.shape[0]), "threshold": thr, "stages": len(names),
        "methods": {s: {"spearman": v["spearman"], "ssim": v["ssim"], "hog": v["hog"], "fails": v["fails"],
                        "undefined_spearman": v["undefined_spearman"], "nonfinite": nonfinite[s]}
                    for s, v in summary.items()}}
    sec = Section(
        "Sanity checks: cascading randomisation",
        f"Adebayo et al. (2018): the smallcnn's parameterised layers are re-initialised from the top "
        f"(the classifier first), cumulatively; at each stage the maps of the true class on {x.shape[0]} "
        f"held-out easy images are compared with those of the original net (Spearman rank correlation, "
        f"SSIM and HOG distance of |maps|).  A method fails when its mean Spearman correlation is still "
        f"above {thr} once every layer is randomised: its maps do not depend on what the net learned.  "
        f"Failing: {', '.join(summary[s]['title'] for s in fails) or 'none'}.")
    sec.figure(png, "Similarity to the original maps vs the last layer randomised (left to right: more layers).")
    header, rows = evaluation.sanity_table(summary, names)
    sec.table(rows, header=header)
    return sec


_EXTREMAL_AREAS = (0.05, 0.1, 0.2)
_extremal = jax.jit(perturbation.extremal, static_argnames=("net", "steps", "step", "sigma"))


def extremal_section(ctx: DemoContext) -> Section:
    """Extremal perturbation masks (preserve, blur) for several areas on held-out synthetic images."""
    data = ctx.synthetic_set("easy")
    k = ctx.sizes.shown // 2 + 1
    steps = 20 if ctx.args.quick else 300
    x, y = jnp.asarray(data["image"][:k]), jnp.asarray(data["label"][:k])
    ctx.log(f"extremal perturbations: {k} images x {len(_EXTREMAL_AREAS)} areas, {steps} steps")
    t0 = time.perf_counter()
    masks, history = _extremal(ctx.net, ctx.params, x, y, areas=jnp.asarray(_EXTREMAL_AREAS), steps=steps,
                               **SMALLCNN_EXTREMAL_GEOMETRY)
    masks = np.asarray(masks)[:, 0]                                            # (k, A, 64, 64)
    seconds = time.perf_counter() - t0
    _check_finite("extremal masks", masks)
    ctx.arrays["extremal_masks"] = masks
    gt = data["mask"][:k] > 0.5
    iou = ((masks > 0.5) & gt[:, None]).sum((-1, -2)) / np.maximum(((masks > 0.5) | gt[:, None]).sum((-1, -2)), 1)
    cells, titles = [], []
    for i in range(k):
        cells.append(plot.draw_box(data["image"][i], data["box"][i]))
        titles.append(f"{synthetic.CLASSES[data['label'][i]]} (area {gt[i].mean():.2f})")
        for a, area in enumerate(_EXTREMAL_AREAS):
            cells.append(data["image"][i] * masks[i, a][..., None])
            titles.append(f"area {area}: IoU {iou[i, a]:.2f}")
    path = plot.grid(cells, titles, ctx.path("extremal.png"), ncols=len(_EXTREMAL_AREAS) + 1)
    ctx.metrics["extremal"] = {"steps": steps, "areas": list(_EXTREMAL_AREAS), "images": k,
                               "seconds_with_compile": seconds,
                               "mean_iou_with_object": {str(a): float(iou[:, i].mean())
                                                        for i, a in enumerate(_EXTREMAL_AREAS)},
                               "final_reward": float(np.asarray(history)[..., -1, 0].mean())}
    sec = Section(
        "Extremal perturbations",
        "Fong, Patrick and Vedaldi (ICCV 2019): for each area a, the smooth mask of area a whose "
        "preserved region (the rest blurred) keeps the true class's logit highest; all images and "
        f"areas in one compiled loop of {steps} steps (the paper: 800).  The mask geometry is the "
        "paper's scaled to 64 px (step 2, sigma 6 px instead of 7 and 21).  IoU: mask > 0.5 "
        "against the object's mask.")
    sec.figure(path, "Each row: the image with its ground-truth box, then image x mask for areas "
                     + ", ".join(str(a) for a in _EXTREMAL_AREAS) + ".")
    return sec


_DIFF_LAYER = "features.8"        # the pool after the third block: 8 x 8 x 128
_DIFF_AREA = 0.1                  # fraction of the layer's channels kept


@functools.partial(jax.jit, static_argnames=("net", "steps", "pre_steps"))
def _channel_diffing(net, params, x, y, *, steps, pre_steps):
    masks, history = perturbation.channel_extremal(net, params, x, y, layer=_DIFF_LAYER, areas=_DIFF_AREA,
                                                   steps=steps)
    m = masks[:, 0, 0]                                                          # (N, C)
    diff = synthesis.activation_diffing(net, params, x, m, _DIFF_LAYER, key=jax.random.key(0), steps=pre_steps)
    return m, history[:, 0, 0, -1, 0], diff


def channel_diffing_section(ctx: DemoContext) -> Section:
    """Channel extremal perturbations at one layer, and their activation diffing (pre-images with and without)."""
    steps, pre_steps = (20, 20) if ctx.args.quick else (300, 200)
    data = ctx.synthetic_set("easy")
    k = ctx.sizes.shown // 2
    x, y = jnp.asarray(data["image"][:k]), jnp.asarray(data["label"][:k])
    ctx.log(f"channel extremal perturbations at {_DIFF_LAYER} (area {_DIFF_AREA}) and activation diffing: "
            f"{k} images, {steps} + 2 x {pre_steps} steps")
    m, reward, diff = _channel_diffing(ctx.net, ctx.params, x, y, steps=steps, pre_steps=pre_steps)
    m, reward = np.asarray(m), np.asarray(reward)
    full, kept, difference = (np.asarray(a) for a in diff)
    _check_finite("activation diffing", difference)
    ctx.arrays.update(channel_masks=m, diffing_full=full, diffing_kept=kept, diffing_difference=difference)
    phi = ctx.net.apply(ctx.params, x, stop=_DIFF_LAYER)
    logit = lambda code: np.asarray(ctx.net.apply(ctx.params, code, start=_DIFF_LAYER))[np.arange(k), y]  # noqa: E731
    kept_logit, all_logit = logit(phi * m[:, None, None, :]), logit(phi)
    ctx.metrics["channel_diffing"] = {
        "area": _DIFF_AREA, "steps": steps, "pre_image_steps": pre_steps,
        "channels_kept": (m > 0.5).sum(1).tolist(), "final_reward": reward.tolist(),
        "logit_kept_channels": kept_logit.tolist(), "logit_all_channels": all_logit.tolist()}
    # The difference lies in [-1, 1]: shown as 0.5 + difference / 2 (grey = no change).
    cells, titles = [], []
    for i in range(k):
        cells += [data["image"][i], full[i], kept[i], 0.5 + 0.5 * difference[i]]
        titles += [f"{synthetic.CLASSES[data['label'][i]]}: logit {all_logit[i]:.1f}",
                   f"pre-image, all {m.shape[1]} channels",
                   f"kept {(m[i] > 0.5).sum()} channels: logit {kept_logit[i]:.1f}", "difference"]
    path = plot.grid(cells, titles, ctx.path("channel_diffing.png"), ncols=4)
    sec = Section(
        "Channel attribution and activation diffing",
        f"Fong, Patrick and Vedaldi (ICCV 2019, Sec. 5): for each image, the mask over the "
        f"{m.shape[1]} channels of {_DIFF_LAYER} that keeps a fraction {_DIFF_AREA} of them and the "
        f"true class's logit highest (perturbation.channel_extremal, {steps} steps, the vecsort area "
        "constraint), then the pre-images (synthesis.pre_image) of the full activation and of the "
        "masked one, from the same start: the kept channels' pre-image shows what they encode, the "
        "difference what the removed channels carried.  Titles: the logit with all channels and with "
        "only the kept ones.")
    sec.figure(path, "Each row: the image, the pre-image of all channels, of the kept channels, and "
                     "their difference (grey = none).")
    return sec


_VIS_LAYER = "features.8"
_PRE_IMAGE_LAYERS = ("features.2", "features.5", "features.8", "avgpool")


def pre_image_layers(quick: bool) -> tuple[str, ...]:
    """The depths of the demo's pre-images (two with --quick: each depth is its own compiled loop)."""
    return ("features.5", "avgpool") if quick else _PRE_IMAGE_LAYERS


@functools.partial(jax.jit, static_argnames=("net", "layer", "steps"))
def _visualise(net, params, channels, *, layer, steps):
    unit = synthesis.activation_maximisation(net, params, attribution.Unit(layer, channels), key=jax.random.key(0),
                                             image_size=64, steps=steps, leaky=True)
    classes = synthesis.activation_maximisation(net, params, jnp.arange(net.num_classes), key=jax.random.key(1),
                                                image_size=64, steps=steps)
    return unit.images[:, 0], classes.images[:, 0]


def features_section(ctx: DemoContext) -> Section:
    """Channel and class visualisations (Lucid's recipe, every target in one compiled call)."""
    steps = 16 if ctx.args.quick else 256
    channels = np.arange(8)
    ctx.log(f"feature visualisation: {len(channels)} channels of {_VIS_LAYER} and {ctx.net.num_classes} "
            f"classes, {steps} steps")
    t0 = time.perf_counter()
    units, classes = (np.asarray(a) for a in _visualise(ctx.net, ctx.params, jnp.asarray(channels),
                                                        layer=_VIS_LAYER, steps=steps))
    seconds = time.perf_counter() - t0
    _check_finite("feature visualisations", units)
    ctx.arrays["feature_visualisations"] = units
    data = ctx.synthetic_set("easy")
    unit = lambda x: np.asarray(ctx.net.apply(ctx.params, jnp.asarray(x), stop=_VIS_LAYER).mean(axis=(1, 2)))  # noqa: E731
    rendered = unit(units)[np.arange(len(channels)), channels]
    best_image = unit(data["image"]).max(0)[channels]
    logits = np.asarray(ctx.net.apply(ctx.params, jnp.asarray(classes)))
    ctx.metrics["feature_visualisation"] = {
        "steps": steps, "seconds_with_compile": seconds,
        "channel_activation": rendered.tolist(), "best_held_out_activation": best_image.tolist(),
        "class_logit": np.diag(logits).tolist(), "best_held_out_logit": data["logits"].max(0).tolist()}
    cells = list(units) + list(classes)
    titles = ([f"{_VIS_LAYER}:{c} {r:.1f} (best image {b:.1f})" for c, r, b in zip(channels, rendered, best_image)]
              + [f"{synthetic.CLASSES[c]}: logit {logits[c, c]:.0f}" for c in range(len(classes))])
    path = plot.grid(cells, titles, ctx.path("features.png"), ncols=8)
    sec = Section(
        "Feature visualisation",
        "Images that maximise a channel of " + _VIS_LAYER + " (top row) and each class logit (bottom row): "
        "Fourier parameterisation with decorrelated colour, Lucid's standard transforms (pad, jitter, "
        f"scale, rotate), Adam 0.05, {steps} steps at 64 px; all targets of a row in one compiled call "
        "(synthesis.activation_maximisation).  Channels are optimised through leaky ReLUs (Mahendran and "
        "Vedaldi) so that a channel silent at the start still gets a gradient.  Titles: the rendered "
        "image's activation against the best of the held-out images.")
    sec.figure(path, "Channel visualisations, then class visualisations.")
    return sec


@functools.partial(jax.jit, static_argnames=("net", "layer", "steps"))
def _pre_image(net, params, x, *, layer, steps):
    return synthesis.pre_image(net, params, x, layer, key=jax.random.key(0), steps=steps)


@functools.partial(jax.jit, static_argnames=("net", "layer", "steps"))
def _caricature(net, params, x, *, layer, steps):
    return synthesis.caricature(net, params, x, layer, key=jax.random.key(0), steps=steps).images[:, 0]


def pre_image_section(ctx: DemoContext) -> Section:
    """Mahendran and Vedaldi's pre-images at several depths, and a caricature."""
    steps = 20 if ctx.args.quick else 350
    data = ctx.synthetic_set("easy")
    x = jnp.asarray(np.concatenate([data["image"][:2], images.batch(("chelsea",), size=64)]))
    layers = pre_image_layers(ctx.args.quick)
    ctx.log(f"pre-images: {len(x)} images at {len(layers)} layers, {steps} steps")
    results, losses = {}, {}
    for layer in layers:
        res = _pre_image(ctx.net, ctx.params, x, layer=layer, steps=steps)
        results[layer], losses[layer] = np.asarray(res.images), np.asarray(res.loss)
        _check_finite(f"pre-images at {layer}", results[layer])
    caricatures = np.asarray(_caricature(ctx.net, ctx.params, x, layer="features.5", steps=steps))
    ctx.arrays["pre_images"] = np.stack([results[layer] for layer in layers])
    ctx.metrics["pre_images"] = {"steps": steps, "normalised_feature_loss": {l: v.tolist() for l, v in losses.items()}}
    cells, titles = [], []
    for i in range(len(x)):
        cells.append(np.asarray(x[i]))
        titles.append("image")
        for layer in layers:
            cells.append(results[layer][i])
            titles.append(f"{layer}: loss {losses[layer][i]:.3f}")
        cells.append(caricatures[i])
        titles.append("caricature features.5")
    path = plot.grid(cells, titles, ctx.path("pre_images.png"), ncols=len(layers) + 2)
    sec = Section(
        "Pre-images and caricatures",
        "Mahendran and Vedaldi (IJCV 2016): the image whose representation at a layer matches the "
        "original's, under the natural-image priors (alpha-norm 6, TV^2 with their constants B and V), "
        f"optimised with momentum and an AdaGrad-like step, {steps} steps, jitter stride / 4 "
        "(synthesis.pre_image).  Loss: ||Phi(x) - Phi0||^2 / ||Phi0||^2.  Deeper layers keep less of "
        "the image.  Last column: a caricature, which amplifies what features.5 sees in the image.")
    sec.figure(path, "Each row: the image, its pre-images at " + ", ".join(layers)
                     + ", and its caricature.")
    return sec


_DIP_NET = {"down": (16, 32, 64), "up": (16, 32, 64), "skip": (4, 4, 4)}


@functools.partial(jax.jit, static_argnames=("task", "steps"))
def _dip(observed, clean, mask, *, task, steps):
    return synthesis.deep_image_prior(observed, key=jax.random.key(0), task=task, mask=mask, steps=steps,
                                      reference=clean, **_DIP_NET)


def dip_section(ctx: DemoContext) -> Section:
    """Deep image prior: denoising (sigma 25/255) and inpainting (50% of pixels) of bundled photographs."""
    steps = 20 if ctx.args.quick else 600
    clean = jnp.asarray(images.batch(("chelsea", "coffee"), size=64))
    noisy = jnp.clip(clean + 25 / 255 * jax.random.normal(jax.random.key(1), clean.shape), 0, 1)
    mask = (jax.random.uniform(jax.random.key(2), clean.shape[:3]) < 0.5).astype(jnp.float32)
    ctx.log(f"deep image prior: denoising and inpainting {len(clean)} photographs, {steps} steps")
    rows, metrics = [], {"steps": steps, "net": {k: list(v) for k, v in _DIP_NET.items()}}
    psnr = lambda a: np.asarray(synthesis.dip.psnr(a, clean))          # noqa: E731
    tasks = (("denoise", noisy, None), ("inpaint", clean * mask[..., None], mask))
    for task, observed, m in tasks[:1] if ctx.args.quick else tasks:      # --quick: one compiled loop
        res = _dip(observed, clean, m, task=task, steps=steps)
        restored, curve = np.asarray(res.images[:, 0]), np.asarray(res.psnr[:, 0])
        _check_finite(f"deep image prior ({task})", restored)
        ctx.arrays[f"dip_{task}"] = restored
        metrics[task] = {"observed_psnr": psnr(observed).tolist(), "restored_psnr": psnr(restored).tolist(),
                         "best_psnr": curve.max(1).tolist(), "best_step": curve.argmax(1).tolist()}
        rows.append((task, observed, restored, curve))
    ctx.metrics["deep_image_prior"] = metrics
    cells, titles = [], []
    for i in range(len(clean)):
        for task, observed, restored, _ in rows:
            cells += [np.asarray(observed[i]), restored[i]]
            titles += [f"{task}: observed {metrics[task]['observed_psnr'][i]:.1f} dB",
                       f"restored {metrics[task]['restored_psnr'][i]:.1f} dB"]
        cells.append(np.asarray(clean[i]))
        titles.append("clean")
    path = plot.grid(cells, titles, ctx.path("dip.png"), ncols=2 * len(rows) + 1)
    sec = Section(
        "Deep image prior",
        "Ulyanov, Vedaldi and Lempitsky (CVPR 2018): a randomly initialised skip U-Net fitted to one "
        "degraded image restores it before it fits the noise: the architecture is the prior.  Both "
        f"photographs and both tasks each in one compiled call; {steps} Adam steps (the paper: 3000 for "
        "denoising at full size; here 64 px and a 3-scale net of 16 / 32 / 64 channels).  Denoising "
        "returns the moving average of the outputs, as the paper.")
    sec.figure(path, "Per photograph: noisy (sigma 25/255) and denoised, 50%-masked and inpainted, the clean image.")
    return sec


_SELA_SIZE = 32            # px: the self-labelling run trains its own smallcnn on smaller images
_SELA_CLUSTERS = 32        # K: over-clustering of the 8 classes (SeLa: K > classes helps)
_SELA_VIEWS = 4            # augmented views per image in the label step (experiments/configs/sela.py)


def self_labelling_section(ctx: DemoContext) -> Section:
    """SeLa (Asano, Rupprecht and Vedaldi 2020) on the synthetic set: cluster purity, NMI, k-NN, example clusters."""
    n, held, epochs = (128, 64, 2) if ctx.args.quick else (2048, 512, 40)
    train = synthetic.generate(jax.random.key(1), n, size=_SELA_SIZE)
    test = synthetic.generate(jax.random.key(zoo.TEST_SEED), held, size=_SELA_SIZE)
    x, y = np.asarray(train["image"]), np.asarray(train["label"])
    xt, yt = np.asarray(test["image"]), np.asarray(test["label"])
    net = nets.get("smallcnn", num_classes=_SELA_CLUSTERS)
    aug = AugmentConfig.sela(size=(_SELA_SIZE, _SELA_SIZE))
    ctx.log(f"self-labelling: SeLa, K = {_SELA_CLUSTERS}, {n} images at {_SELA_SIZE} px, {epochs} epochs")
    t0 = time.perf_counter()
    state, history = selfsup.fit(net, x, SeLa(aug=aug, lam=10.0, label_views=_SELA_VIEWS),
                                 selfsup.Settings(epochs=epochs, batch_size=128, lr=2e-3, eval_every=epochs),
                                 classes=y, heldout=(xt, yt), progress=ctx.log)
    seconds = time.perf_counter() - t0
    labels = np.asarray(state.labels)
    untrained = selfsup.evaluate(net, net.init(jax.random.key(0)), (x, y), (xt, yt))
    ctx.arrays["self_labels"] = labels
    result = {"images": n, "size": _SELA_SIZE, "clusters": _SELA_CLUSTERS, "epochs": epochs, "lam": 10.0,
              "label_views": _SELA_VIEWS,
              "seconds": seconds, "purity": cluster_metrics.purity(labels, y), "nmi": cluster_metrics.nmi(labels, y),
              "ari": cluster_metrics.ari(labels, y), "knn_accuracy": history[-1]["knn_accuracy"],
              "linear_probe": history[-1]["linear_probe"], "knn_accuracy_untrained": untrained["knn_accuracy"],
              "linear_probe_untrained": untrained["linear_probe"], "chance": 1.0 / synthetic.NUM_CLASSES,
              "loss": [row["loss"] for row in history]}
    ctx.metrics["self_labelling"] = result
    # The largest clusters, each a row of its first images; titles name the majority class.
    sizes = np.bincount(labels, minlength=_SELA_CLUSTERS)
    shown, per_row = [int(k) for k in np.argsort(-sizes, kind="stable")[:8] if sizes[k]], 8
    cells, titles = [], []
    for k in shown:
        members = np.flatnonzero(labels == k)
        major = np.bincount(y[members], minlength=synthetic.NUM_CLASSES)
        for j, i in enumerate(members[:per_row]):
            cells.append(x[i])
            titles.append(f"c{k}: {synthetic.CLASSES[major.argmax()]} {major.max() / len(members):.0%}"
                          if j == 0 else synthetic.CLASSES[y[i]])
        cells += [np.ones_like(x[0])] * (per_row - min(per_row, len(members)))
        titles += [""] * (per_row - min(per_row, len(members)))
    path = plot.grid(cells, titles, ctx.path("self_labelling.png"), ncols=per_row, cell=1.2)
    sec = Section(
        "Self-labelling",
        f"SeLa without labels: a fresh smallcnn with {_SELA_CLUSTERS} outputs trained on {n:,} synthetic "
        f"'easy' images at {_SELA_SIZE} px for {epochs} epochs, alternating Sinkhorn-Knopp "
        "self-labels (equipartitioned, lambda 10, SeLa's CIFAR value; objectives.sinkhorn_labels) with "
        "cross-entropy on augmented views (train.selfsup.fit).  SeLa clusters p(c | t(x)) under strong "
        "augmentation (its transform: hue jitter 0.4, always; greyscale p 0.2): the label step scores "
        f"the mean log-probabilities of {_SELA_VIEWS} augmented views of each image "
        "(train.selfsup.label_log_probs), so colour, which the jitter scrambles, cannot carry the "
        "clusters.  The true classes are used only to score: purity (each cluster credited with its "
        "majority class), NMI and ARI of the self-labels, and the k-NN (k = 20, cosine) and "
        "linear-probe accuracies of held-out images from the avgpool features, here "
        f"{result['knn_accuracy']:.0%} and {result['linear_probe']:.0%} against "
        f"{result['knn_accuracy_untrained']:.0%} and {result['linear_probe_untrained']:.0%} untrained "
        f"(chance {result['chance']:.1%}).  jaxinterp run sela --config local trains the same recipe "
        "for 100 epochs (README).")
    sec.metrics({k: result[k] for k in ("purity", "nmi", "ari", "knn_accuracy", "knn_accuracy_untrained",
                                        "linear_probe", "linear_probe_untrained", "chance")})
    sec.figure(path, "The largest clusters, one per row: the title of the first image names the cluster's "
                     "majority class and its share, the others each image's true class.")
    return sec


DEMO_SECTIONS: list[Callable[[DemoContext], Section]] = [
    model_section, synthetic_section, energy_section, photos_section, attribution_section,
    extremal_section, pointing_section, sanity_section, features_section, pre_image_section,
    channel_diffing_section, dip_section, self_labelling_section,
]


# -- helpers -------------------------------------------------------------------


def energy_in_mask(saliency: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Fraction of each map's total inside its mask.

    Args:
      saliency: (N, H, W) non-negative maps.
      mask: (N, H, W) bool.

    Returns:
      (N,) float in [0, 1]; NaN where a map is all zero.
    """
    total = saliency.sum(axis=(1, 2))
    inside = np.where(mask, saliency, 0.0).sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, inside / total, np.nan)


def _check_finite(what: str, array: np.ndarray) -> None:
    """Raise FloatingPointError if ``array`` holds NaN or Inf (never write them silently)."""
    bad = int(np.sum(~np.isfinite(array)))
    if bad:
        raise FloatingPointError(f"{what}: {bad} of {array.size} values are NaN or Inf")


def load_model(args, log) -> tuple[nets.Net, dict, dict]:
    if args.quick:
        log("--quick: untrained smallcnn (random initialisation)")
        net = nets.get("smallcnn", num_classes=synthetic.NUM_CLASSES)
        return net, net.init(jax.random.key(0)), {}
    log("loading the pretrained smallcnn (trained and cached on first use)")
    return zoo.pretrained("smallcnn", cache_dir=args.cache_dir, progress=log)


SMALLCNN_SECTIONS: dict[str, Callable[[DemoContext], Section]] = {
    "smallcnn_" + f.__name__.removesuffix("_section"): f for f in DEMO_SECTIONS}
"""The small CNN's sections by ``--only`` name (``smallcnn_model``, ``smallcnn_attribution``, ...)."""
