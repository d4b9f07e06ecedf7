"""The benchmark pieces shared by ``jaxinterp demo`` and experiments/pointing_game.py, sanity.py.

Both the demo (small) and the experiments (full, resumable, sharded) run
attribution methods on images, score the maps and tabulate the scores; this
module holds the computation and the tables so that the two never diverge:

* :func:`method_slug`, :func:`explain_fn`: a method as a cached jitted
  ``f(params, x, target) -> maps`` at image resolution;
* :func:`score_maps`: pointing-game hits and deletion / insertion AUC of maps;
* :func:`pointing_rows`, :func:`pointing_table`: the per-method table (mean
  per-class accuracy on all pairs and on the 'difficult' ones, mean AUCs);
* :func:`compare_maps`, :func:`sanity_summary`, :func:`sanity_plot`: similarity
  of maps to those of the original net under parameter randomisation, the
  "fails the check" rule and the similarity-vs-layer figure.
"""

from __future__ import annotations

import functools
import os
import re
from typing import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp import ops
from jaxinterp.evaluation.deletion import curve_auc, deletion_curve, insertion_curve
from jaxinterp.evaluation.pointing import DEFAULT_TOLERANCE, _accuracy, pointing_hits
from jaxinterp.evaluation.similarity import hog_distance, spearman, ssim

__all__ = ["method_slug", "scaled_tolerance", "explain_fn", "sanitise_maps", "score_maps", "pointing_rows", "pointing_table",
           "SIMILARITIES", "SANITY_METHODS", "compare_maps", "sanity_summary", "sanity_table", "sanity_plot",
           "SANITY_THRESHOLD"]

SIMILARITIES = ("spearman", "ssim", "hog")
SANITY_THRESHOLD = 0.5
# The methods of the sanity checks by default (slugs): Adebayo et al.'s gradient, guided backprop,
# IG, SmoothGrad and Grad-CAM, plus LRP and excitation backprop.
SANITY_METHODS = ("gradient", "guided_backprop", "integrated_gradients", "grad_cam", "lrp_epsilon",
                  "excitation_bp", "smoothgrad")


def method_slug(title: str) -> str:
    """'IG blur (8)' -> 'integrated_gradients_blur', 'Grad-CAM' -> 'grad_cam', 'Grad-CAM++' -> 'grad_cam_plus_plus',
    'excitation BP' -> 'excitation_bp'."""
    name = title.split(" (")[0].lower().replace("++", " plus plus")
    name = {"ig": "integrated_gradients", "ig blur": "integrated_gradients_blur"}.get(name, name)
    return re.sub(r"[^a-z0-9]+", "_", name).strip("_")


def scaled_tolerance(image_size: int, tolerance: float = DEFAULT_TOLERANCE, reference: int = 224) -> float:
    """The pointing-game tolerance for images of side ``image_size``: ``tolerance * image_size / reference``.

    TorchRay's 15 px are meant for images of about 224 px; on the 64 px synthetic
    images 15 px is a disc covering a sixth of the image, within which the centre
    baseline hits almost every object, so the demo and the synthetic experiment use
    15 * 64 / 224 = 4.3 px (same fraction of the image).
    """
    return float(tolerance) * float(image_size) / float(reference)


_FNS: dict = {}


def explain_fn(net, title: str, method: Callable, options: Mapping) -> Callable:
    """``jit(f)(params, x (N, H, W, 3), target (N, T)) -> maps (N, T, H, W)`` for ``method(net, ..., **options)``.

    Maps coarser than the image (CAM, Grad-CAM at a layer's resolution when not
    resized by the method) are upsampled to (H, W) with
    :func:`jaxinterp.ops.resize_bilinear`.  Built once per (net, title, method,
    options) and cached, so the demo's sections and an experiment's batches
    share compilations (params are an argument: randomised params of the same
    structure reuse the compiled function).

    A method with a host-side step (``prepare`` and ``apply`` methods, as
    :class:`jaxinterp.attribution.Segmented`: segmentations are made on the host)
    gives a plain function instead: ``prepare(x)`` on the concrete images, then
    the compiled ``apply``.
    """
    key = (net, title, method, repr(sorted(dict(options).items(), key=lambda kv: kv[0])))
    if key not in _FNS:
        options = dict(options)
        prepare = getattr(method, "prepare", None)

        def at_image_size(m, x):
            return m if m.shape[-2:] == x.shape[1:3] else ops.resize_bilinear(m, x.shape[1:3])

        if prepare is None:
            _FNS[key] = jax.jit(lambda params, x, t: at_image_size(method(net, params, x, t, **options), x))
        else:
            apply = jax.jit(lambda params, x, t, extra: at_image_size(
                method.apply(net, params, x, t, extra, **options), x))
            _FNS[key] = lambda params, x, t: apply(params, x, t, prepare(x))
    return _FNS[key]


def sanitise_maps(maps: jax.Array) -> jax.Array:
    """Non-finite map values made harmless: NaN and -Inf -> the lowest float, +Inf -> the largest.

    A NaN pixel is then never the pointing-game maximum and is deleted / inserted
    last.  Callers count non-finite values before (they are a method's failure
    to report, not to hide).
    """
    maps = jnp.asarray(maps)
    fi = jnp.finfo(maps.dtype)
    return jnp.where(jnp.isfinite(maps), maps, jnp.where(maps == jnp.inf, fi.max, fi.min))


@functools.partial(jax.jit, static_argnames=("net", "tolerance", "curve_steps"))
def score_maps(net, params, x: jax.Array, maps: jax.Array, target: jax.Array, masks: jax.Array, *,
               tolerance: float = DEFAULT_TOLERANCE, curve_steps: int = 16) -> dict[str, jax.Array]:
    """Pointing-game hits and deletion / insertion AUC of maps, one jitted call.

    Args:
      net, params: the classifier explained (``net`` static).
      x: images (N, H, W, 3).
      maps: (N, T, h, w) maps of ``target`` (sanitised with :func:`sanitise_maps`).
      target: int (N, T).
      masks: bool (N, T, H, W) ground truth of each target.
      tolerance: pointing radius in pixels (static; 15, TorchRay).
      curve_steps: deletion / insertion steps S (static; 0 = no curves).  Deletion to
        a black image, insertion from a blurred one (RISE's defaults, see
        :mod:`jaxinterp.evaluation.deletion`), score = softmax probability of the target.

    Returns:
      dict: ``hits`` bool (N, T); with curves ``deletion_auc`` and ``insertion_auc`` float (N, T).
    """
    maps = sanitise_maps(maps)
    out = {"hits": pointing_hits(maps, masks, tolerance=tolerance)}
    if curve_steps:
        m = maps if maps.shape[-2:] == x.shape[1:3] else ops.resize_bilinear(maps, x.shape[1:3])
        m = jnp.clip(m, -1e30, 1e30)
        d = deletion_curve(net, x, m, params=params, target=target, steps=curve_steps, batch_size=None)
        i = insertion_curve(net, x, m, params=params, target=target, steps=curve_steps, batch_size=None)
        out["deletion_auc"], out["insertion_auc"] = curve_auc(d), curve_auc(i)
    return out


def _mean_per_class(hits, classes, subset, num_classes):
    """Mean over the classes with pairs in ``subset`` of the per-class hit rate (NaN if none)."""
    if not np.any(subset):
        return float("nan")
    return float(_accuracy(np.asarray(hits, bool), np.asarray(classes, np.int32), num_classes,
                           np.asarray(subset, bool))[1])


def pointing_rows(results: Mapping[str, Mapping[str, np.ndarray]], names: Mapping[str, str],
                  classes: np.ndarray, valid: np.ndarray, difficult: np.ndarray | None,
                  num_classes: int) -> list[dict]:
    """One row per method of the pointing-game table.

    Args:
      results: slug -> dict of host arrays over all (image, target) pairs, shaped
        like ``classes``: ``hits`` and optionally ``deletion_auc``, ``insertion_auc``,
        and scalars / per-batch arrays ``seconds``, ``nonfinite`` (summed).
      names: slug -> title, in table order (e.g. the centre baseline last).
      classes: int (N, T) class of each pair; valid: bool (N, T) pairs scored;
      difficult: bool (N, T) membership of the 'difficult' subset, or None.
      num_classes: C.

    Returns:
      list of dicts: method, slug, accuracy_all, accuracy_difficult (mean per-class
      accuracy, :func:`jaxinterp.evaluation.pointing_accuracy`'s formula; NaN without
      difficult pairs), deletion_auc / insertion_auc (mean over valid pairs) when
      present, seconds, nonfinite.
    """
    valid = np.asarray(valid, bool)
    sub = valid & np.asarray(difficult, bool) if difficult is not None else np.zeros_like(valid)
    rows = []
    for slug, title in names.items():
        r = results[slug]
        row = {"method": title, "slug": slug,
               "accuracy_all": _mean_per_class(r["hits"], classes, valid, num_classes),
               "accuracy_difficult": _mean_per_class(r["hits"], classes, sub, num_classes)}
        for c in ("deletion_auc", "insertion_auc"):
            if c in r:
                row[c] = float(np.asarray(r[c])[valid].mean())
        row["seconds"] = float(np.sum(r.get("seconds", 0.0)))
        row["nonfinite"] = int(np.sum(r.get("nonfinite", 0)))
        rows.append(row)
    return rows


_HEADS = {"accuracy_all": "all (%)", "accuracy_difficult": "difficult (%)",
          "deletion_auc": "deletion AUC (lower = better)", "insertion_auc": "insertion AUC (higher = better)"}


def pointing_table(rows: Sequence[Mapping], *, curves: bool) -> tuple[list[str], list[list[str]], str]:
    """(header, formatted rows, Markdown) of :func:`pointing_rows`' rows.

    Accuracies in percent with one decimal, AUCs with three, '-' for NaN / missing
    (a baseline has no curves).
    """
    cols = ["accuracy_all", "accuracy_difficult"] + (["deletion_auc", "insertion_auc"] if curves else [])

    def fmt(c, v):
        if v is None or v != v:
            return "-"
        return f"{100 * v:.1f}" if c.startswith("accuracy") else f"{v:.3f}"
    header = ["method"] + [_HEADS[c] for c in cols] + ["seconds"]
    body = [[r["method"]] + [fmt(c, r.get(c)) for c in cols] + [f"{r.get('seconds', 0.0):.1f}"] for r in rows]
    md = ["| " + " | ".join(header) + " |", "|---|" + "---|" * (len(header) - 1)]
    md += ["| " + " | ".join(b) + " |" for b in body]
    return header, body, "\n".join(md) + "\n"


@jax.jit
def compare_maps(a: jax.Array, b: jax.Array) -> dict[str, jax.Array]:
    """Per-map similarity of |a| and |b| as in Adebayo et al. (2018), each (N, T).

    * ``spearman``: Spearman rank correlation of |maps| (NaN for a constant map);
    * ``ssim``: SSIM of |maps| each scaled to [0, 1] by its maximum (data_range 1);
    * ``hog``: HOG distance of |maps| (0 = same gradient structure, up to 2).

    Args:
      a, b: float (N, T, H, W), H, W >= 11 (SSIM window); non-finite values must be removed first.
    """
    a, b = jnp.abs(a), jnp.abs(b)
    scale = lambda m: m / jnp.maximum(m.max(axis=(-2, -1), keepdims=True), 1e-30)  # noqa: E731
    return {"spearman": spearman(a, b), "ssim": ssim(scale(a), scale(b), data_range=1.0),
            "hog": hog_distance(a, b)}


def sanity_summary(per: Mapping[str, Mapping[str, Mapping[str, np.ndarray]]], titles: Mapping[str, str],
                   stages: Sequence[str], threshold: float = SANITY_THRESHOLD) -> dict:
    """Similarity-vs-stage series of each method and which methods fail the randomisation check.

    Args:
      per: slug -> stage name -> {'spearman', 'ssim', 'hog'} per-map arrays
        (comparison with the maps of the original net; stage 0 is the original).
      titles: slug -> display title.
      stages: stage names in cascade order ('original', then the last layer randomised).
      threshold: a method *fails* when its mean Spearman correlation (NaN maps
        ignored) is still above ``threshold`` once every layer is randomised
        (0.5; the maps then do not depend on what the net learned).

    Returns:
      slug -> dict: title, spearman / ssim / hog (mean per stage; None where every
      value is undefined), undefined_spearman (count per stage), fails (bool),
      first_below_threshold (stage name or None).
    """
    summary = {}
    for slug, by_stage in per.items():
        series = {"title": titles[slug]}
        for metric in SIMILARITIES:
            vals = [np.asarray(by_stage[n][metric], np.float64) for n in stages]
            series[metric] = [float(np.nanmean(v)) if np.isfinite(v).any() else None for v in vals]
        series["undefined_spearman"] = [int(np.sum(~np.isfinite(by_stage[n]["spearman"]))) for n in stages]
        final = series["spearman"][-1]
        series["fails"] = bool(final is not None and final > threshold)
        below = [n for n, v in zip(stages, series["spearman"]) if v is not None and v <= threshold]
        series["first_below_threshold"] = below[0] if below else None
        summary[slug] = series
    return summary


def sanity_table(summary: Mapping[str, Mapping], stages: Sequence[str]) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the report's sanity table: each method's mean Spearman per stage and whether it fails.

    Args:
      summary: from :func:`sanity_summary`.
      stages: the stage names, in the order of the series.

    Returns:
      header ``['method (mean Spearman)', *stages, 'fails']`` and one row per method:
      its title, the correlations to 2 decimals ('-' where undefined), 'yes' or 'no'.
    """
    rows = [[v["title"]] + ["-" if r is None else f"{r:.2f}" for r in v["spearman"]] + ["yes" if v["fails"] else "no"]
            for v in summary.values()]
    return ["method (mean Spearman)", *stages, "fails"], rows


def sanity_plot(path: str | os.PathLike, stages: Sequence[str], summary: Mapping[str, Mapping],
                threshold: float = SANITY_THRESHOLD) -> str:
    """Write the similarity-vs-randomised-layer figure (Spearman, SSIM, HOG panels) as PNG; returns ``path``.

    Uses a :class:`matplotlib.figure.Figure` on the Agg canvas (no pyplot state).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(15, 4.2))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 3)
    xs = np.arange(len(stages))
    for ax, metric, title in zip(axes, SIMILARITIES, ("Spearman rank correlation of |maps|",
                                                      "SSIM of |maps|", "HOG distance of |maps|")):
        for series in summary.values():
            ys = [np.nan if v is None else v for v in series[metric]]
            ax.plot(xs, ys, marker="o", label=series["title"])
        if metric == "spearman":
            ax.axhline(threshold, color="grey", ls="--", lw=1)
        ax.set_xticks(xs)
        ax.set_xticklabels(stages, rotation=45, ha="right", fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("randomised down to layer")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return str(path)
