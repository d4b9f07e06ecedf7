"""Throughput of every attribution method against the hardware ceiling of its net.

For each net and precision this measures, in one run on one device:

* the ceiling (:mod:`ceiling`): forward-only and forward + input-gradient
  images/s of the net;
* images/s of every attribution method, each jitted once (net and options
  static) and timed after warm-up;
* their ratio to the ceiling divided by the method's cost in passes
  (IG steps, SmoothGrad samples, occlusion windows, RISE masks; 1 otherwise);
* Captum's images/s for the same method on the same torchvision architecture
  (random weights), when torch is importable and ``--no-captum`` is not given.

    python -m bench.attribution                          # resnet50, vgg16; 224 px; all precisions
    python -m bench.attribution --nets vgg16 --precisions highest --methods gradient,occlusion
    python -m bench.attribution --quick --no-captum      # smallcnn, 32 px, a minute on a CPU

Results go to ``<out>/attribution_<net>_<device>.json`` as they are measured
(rewritten atomically after every entry); a restarted run skips the entries
already there (``--force`` re-measures them).  A Markdown table per net and
precision is printed at the end.  See bench/README.md for the columns.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import math
import os
import time
import traceback

# JAX and torch share the accelerator when Captum runs: JAX must not take 75% of its
# memory up front (set before JAX starts; no effect if it already has).
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from bench.ceiling import PRECISIONS, _cast, load_results, measure, time_call, write_results  # noqa: E402

from jaxinterp.xla_cpu import use_cpu_flags  # noqa: E402
from jaxinterp import nets  # noqa: E402

GOAL = 0.9
"""Fraction of the ceiling-based throughput the iterative methods should reach (issue's target)."""


@dataclasses.dataclass(frozen=True)
class Method:
    """How to run and account for one attribution method.

    cost: what one image costs in passes of the net ('single', 'steps', 'samples',
      'windows', 'masks', 'references' (DeepLIFT-SHAP), 'channels' (Score-CAM,
      Ablation-CAM: one pass per channel of the CAM layer), 'features' (feature
      ablation: one per grid feature and the image), 'permutations' (Shapley
      sampling: samples x (features + 1)), 'xrai' (its IG: 2 x steps));
      ceiling: the ceiling it is compared with ('gradient' for forward + input
      gradient, 'forward' for forward only); goal: whether the issue sets a >= 0.9
      target for it; keyed: whether it takes a PRNG key.
    """
    name: str
    module: str
    cost: str = "single"
    ceiling: str = "gradient"
    goal: bool = False
    keyed: bool = False


METHODS = {m.name: m for m in (
    Method("gradient", "gradient"),
    Method("input_x_gradient", "gradient"),
    Method("integrated_gradients", "gradient", cost="steps", goal=True),
    Method("smoothgrad", "gradient", cost="samples", goal=True, keyed=True),
    Method("deconvnet", "gradient"),
    Method("guided_backprop", "gradient"),
    Method("grad_cam", "cam"),
    Method("cam", "cam"),
    Method("linear_approx", "cam"),
    Method("occlusion", "occlusion", cost="windows", ceiling="forward", goal=True),
    Method("rise", "rise", cost="masks", ceiling="forward", goal=True, keyed=True),
    Method("lrp", "lrp"),
    Method("excitation_backprop", "excitation"),
    Method("contrastive_excitation_backprop", "excitation"),
    Method("grad_cam_plus_plus", "cam_family"),
    Method("xgrad_cam", "cam_family"),
    Method("hires_cam", "cam_family"),
    Method("layer_cam", "cam_family"),
    Method("eigen_cam", "cam_family"),
    Method("score_cam", "cam_family", cost="channels", ceiling="forward"),
    Method("ablation_cam", "cam_family", cost="channels", ceiling="forward"),
    Method("fullgrad", "fullgrad"),
    Method("deeplift", "deeplift"),
    Method("deeplift_shap", "deeplift", cost="references"),
    Method("gradient_shap", "deeplift", cost="samples"),
    Method("layer_conductance", "conductance", cost="steps"),
    Method("internal_influence", "conductance", cost="steps"),
    Method("guided_ig", "pair", cost="steps"),
    Method("blur_ig", "pair", cost="steps"),
    Method("xrai", "pair", cost="xrai"),
    Method("feature_ablation", "features", cost="features", ceiling="forward"),
    Method("shapley_sampling", "features", cost="permutations", ceiling="forward", keyed=True),
    Method("kernel_shap", "surrogates", cost="samples", ceiling="forward", keyed=True),
    Method("lime", "surrogates", cost="samples", ceiling="forward", keyed=True),
)}

GRID = 4
"""The region methods' features: a GRID x GRID grid of squares (XRAI: that grid and a 2 x 2 one)."""
REFERENCES = 3
"""DeepLIFT-SHAP and gradient SHAP references: black, grey and white images."""

# Split points of the CAM family (the last convolutional block, as TorchRay / Captum
# examples) and of contrastive excitation backprop (TorchRay's contrast layers).
CAM_LAYER = {"resnet50": "layer4", "vgg16": "features.29", "alexnet": "features.11",
             "smallcnn": "features.10"}
CONTRAST_LAYER = {"resnet50": "avgpool", "vgg16": "features.30", "alexnet": "features.12",
                  "smallcnn": "avgpool"}


def _cam_layer(net, size: int) -> str:
    if net.name in CAM_LAYER:
        return CAM_LAYER[net.name]
    spatial = [l for l in net.layers if len(net.activation_shape(l, (size, size))) == 3]
    if not spatial:
        raise ValueError(f"{net.name} has no spatial split point")
    return spatial[-1]


def array_options(name: str, x: jax.Array) -> dict:
    """The array arguments of a method for images x (N, H, W, 3): grid segments, SHAP references."""
    n, h, w = x.shape[:3]

    def grid(cells):
        rows, cols = np.arange(h) * cells // h, np.arange(w) * cells // w
        return rows[:, None] * cells + cols[None, :]

    if name in ("feature_ablation", "shapley_sampling", "kernel_shap", "lime"):
        return {"segments": jnp.broadcast_to(jnp.asarray(grid(GRID), jnp.int32), (n, h, w))}
    if name == "xrai":
        masks = np.concatenate([grid(c)[None] == np.arange(c * c)[:, None, None] for c in (2, GRID)])
        return {"segments": jnp.broadcast_to(jnp.asarray(masks), (n, *masks.shape))}
    if name in ("deeplift_shap", "gradient_shap"):
        levels = jnp.linspace(0.0, 1.0, REFERENCES, dtype=x.dtype)
        refs = {"baselines": jnp.broadcast_to(levels[:, None, None, None], (REFERENCES, h, w, 3))}
        return {**refs, "key": jax.random.key(2)} if name == "gradient_shap" else refs
    return {}


def windows_per_image(size: int, window: int, stride: int) -> int:
    """Occlusion windows of an image of side ``size`` (Captum's count: every pixel covered)."""
    per_side = math.ceil((size - window) / stride) + 1
    return per_side * per_side


def method_options(name: str, net, args) -> dict:
    """The static options each method is benchmarked with."""
    if name == "integrated_gradients":
        return {"steps": args.steps, "chunk_size": min(args.chunk, args.steps)}
    if name == "smoothgrad":
        return {"samples": args.samples, "chunk_size": min(args.chunk, args.samples)}
    if name in ("grad_cam", "cam", "linear_approx", "grad_cam_plus_plus", "xgrad_cam", "hires_cam", "layer_cam",
                "eigen_cam"):
        return {"layer": _cam_layer(net, args.size)}
    if name in ("score_cam", "ablation_cam"):
        return {"layer": _cam_layer(net, args.size), "chunk_size": args.perturbation_chunk}
    if name in ("deeplift_shap", "gradient_shap"):
        extra = {"n_samples": args.samples} if name == "gradient_shap" else {}
        return {**extra, "chunk_size": min(args.chunk, args.samples if extra else REFERENCES)}
    if name in ("layer_conductance", "internal_influence"):
        return {"layer": _cam_layer(net, args.size), "steps": args.steps, "chunk_size": min(args.chunk, args.steps)}
    if name == "guided_ig":
        return {"steps": args.steps}
    if name == "blur_ig":
        return {"steps": args.steps, "chunk_size": min(args.chunk, args.steps)}
    if name == "xrai":
        return {"ig_steps": args.steps, "chunk_size": min(args.chunk, args.steps), "min_pixel_diff": 1}
    if name in ("feature_ablation", "shapley_sampling", "kernel_shap", "lime"):
        extra = {} if name == "feature_ablation" else {"n_samples": args.samples}
        return {**extra, "num_features": GRID * GRID, "chunk_size": args.perturbation_chunk}
    if name == "occlusion":
        return {"window": args.window, "stride": args.stride,
                "chunk_size": min(args.perturbation_chunk,
                                  windows_per_image(args.size, args.window, args.stride))}
    if name == "rise":
        return {"num_masks": args.masks, "chunk_size": min(args.perturbation_chunk, args.masks)}
    if name == "contrastive_excitation_backprop":
        return {"contrast_layer": CONTRAST_LAYER.get(net.name, net.layers[-2])}
    return {}


def cost_units(name: str, args, net=None) -> int:
    """Passes of the net one image of method ``name`` costs (``net``: for 'channels', the CAM layer's width)."""
    cost = METHODS[name].cost
    if cost == "channels":
        return net.activation_shape(_cam_layer(net, args.size), (args.size, args.size))[-1]
    features = GRID * GRID
    return {"single": 1, "steps": args.steps, "samples": args.samples, "masks": args.masks,
            "windows": windows_per_image(args.size, args.window, args.stride), "references": REFERENCES,
            "features": features + 1, "permutations": args.samples * (features + 1),
            "xrai": 2 * args.steps}[cost]


def batch_of(name: str, args) -> int:
    return args.batch if METHODS[name].cost == "single" else args.iter_batch


def resolve(name: str):
    """The method's function, or raise ImportError/AttributeError if it is not (yet) there."""
    module = importlib.import_module(f"jaxinterp.attribution.{METHODS[name].module}")
    return getattr(module, name)


def timed(fn, *args, min_time: float, max_iters: int) -> float:
    """Median seconds per call of an already compiled and warmed-up ``fn(*args)``.

    One timed call, then, if it took less than ``min_time`` seconds, enough
    more (at most ``max_iters``) to spend about ``min_time``, timed by
    :func:`ceiling.time_call` (median); a single call when it alone takes
    longer than ``min_time`` (slow CPU runs).
    """
    warm = time_call(fn, *args, iters=1, warmup=0)
    if warm >= min_time:
        return warm
    iters = max(1, min(max_iters, math.ceil(min_time / warm)))
    return time_call(fn, *args, iters=iters, warmup=0)


# --- Captum ----------------------------------------------------------------------------------

class _Torch:
    """Captum on the torchvision twin of a net: random weights, ImageNet normalisation inside.

    Imported only when used, so that ``--no-captum`` never imports torch.
    """

    ARCHS = ("resnet50", "vgg16")

    def __init__(self, args):
        import warnings

        import captum
        import torch
        import torchvision
        warnings.filterwarnings("ignore", message="Input Tensor 0 did not already require grad")
        warnings.filterwarnings("ignore", message="Setting forward, backward hooks")
        self.torch, self.torchvision, self.captum = torch, torchvision, captum
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.args = args
        self.models = {}

        class Normalize(torch.nn.Module):
            """(x - mean) / std on NCHW [0, 1] pixels: what our nets do inside."""

            def __init__(self, mean, std):
                super().__init__()
                self.register_buffer("mean", mean)
                self.register_buffer("std", std)

            def forward(self, x):
                return (x - self.mean) / self.std

        self.Normalize = Normalize

    def describe(self) -> dict:
        name = (self.torch.cuda.get_device_name(0) if self.device.type == "cuda" else "cpu")
        return {"torch": self.torch.__version__, "captum": self.captum.__version__,
                "torch_device": name}

    def model(self, arch: str, precision: str):
        torch = self.torch
        if arch not in self.ARCHS:
            raise NotImplementedError(f"no torchvision twin of {arch} in this benchmark")
        key = (arch, precision)
        if key not in self.models:
            torch.manual_seed(0)
            m = getattr(self.torchvision.models, arch)(weights=None)
            for mod in m.modules():
                if isinstance(mod, torch.nn.ReLU):
                    mod.inplace = False  # Captum's backward hooks do not mix with in-place ReLUs
            if arch.startswith("resnet"):
                _distinct_relus(m, torch, self.torchvision)
            for p in m.parameters():
                p.requires_grad_(False)
            dtype = torch.bfloat16 if precision == "bf16" else torch.float32
            mean = torch.tensor((0.485, 0.456, 0.406)).reshape(1, 3, 1, 1)
            std = torch.tensor((0.229, 0.224, 0.225)).reshape(1, 3, 1, 1)
            net = torch.nn.Sequential(self.Normalize(mean, std), m)
            self.models[key] = net.eval().to(self.device, dtype)
        return self.models[key]

    def _set_precision(self, precision: str):
        torch = self.torch
        tf32 = precision == "default"
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32

    def attribute_fn(self, name: str, arch: str, precision: str, batch: int):
        """(captum_name, zero-argument callable running the attribution on one batch)."""
        a, torch, cm = self.args, self.torch, self.captum.attr
        model = self.model(arch, precision)
        dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        g = torch.Generator().manual_seed(0)
        x = torch.rand((batch, 3, a.size, a.size), generator=g).to(self.device, dtype)
        target = (torch.arange(batch) % 1000).to(self.device)
        last_conv = {"resnet50": lambda m: m[1].layer4, "vgg16": lambda m: m[1].features[29]}
        if name == "gradient":
            return "Saliency", lambda: cm.Saliency(model).attribute(x, target=target)
        if name == "input_x_gradient":
            return "InputXGradient", lambda: cm.InputXGradient(model).attribute(x, target=target)
        if name == "integrated_gradients":
            ig = cm.IntegratedGradients(model)
            return ("IntegratedGradients", lambda: ig.attribute(
                x, target=target, n_steps=a.steps, method="gausslegendre",
                internal_batch_size=batch * min(a.chunk, a.steps)))
        if name == "smoothgrad":
            nt = cm.NoiseTunnel(cm.Saliency(model))
            return ("NoiseTunnel(Saliency)", lambda: nt.attribute(
                x, target=target, nt_type="smoothgrad", nt_samples=a.samples, stdevs=0.15,
                nt_samples_batch_size=min(a.chunk, a.samples)))
        if name == "deconvnet":
            return "Deconvolution", lambda: cm.Deconvolution(model).attribute(x, target=target)
        if name == "guided_backprop":
            return "GuidedBackprop", lambda: cm.GuidedBackprop(model).attribute(x, target=target)
        if name == "grad_cam":
            gc = cm.LayerGradCam(model, last_conv[arch](model))
            return "LayerGradCam", lambda: gc.attribute(x, target=target, relu_attributions=True)
        if name == "occlusion":
            occ = cm.Occlusion(model)
            per_eval = min(a.perturbation_chunk, windows_per_image(a.size, a.window, a.stride))
            return ("Occlusion", lambda: occ.attribute(
                x, target=target, sliding_window_shapes=(3, a.window, a.window),
                strides=(3, a.stride, a.stride), baselines=0.0, perturbations_per_eval=per_eval))
        nchw = lambda a: torch.from_numpy(np.array(np.moveaxis(np.asarray(a), -1, 1)))  # noqa: E731  (a copy)
        if name in ("deeplift", "deeplift_shap", "gradient_shap"):
            refs = torch.linspace(0, 1, REFERENCES).reshape(-1, 1, 1, 1).expand(REFERENCES, 3, a.size, a.size)
            refs = refs.to(self.device, dtype)
            if name == "deeplift":
                dl = cm.DeepLift(model)
                return "DeepLift", lambda: dl.attribute(x, target=target)
            if name == "deeplift_shap":
                dls = cm.DeepLiftShap(model)
                return "DeepLiftShap", lambda: dls.attribute(x, baselines=refs, target=target)
            gs = cm.GradientShap(model)
            return "GradientShap", lambda: gs.attribute(x, baselines=refs, target=target, n_samples=a.samples)
        if name in ("layer_conductance", "internal_influence"):
            cls = cm.LayerConductance if name == "layer_conductance" else cm.InternalInfluence
            method = cls(model, last_conv[arch](model))
            return cls.__name__, lambda: method.attribute(x, target=target, n_steps=a.steps,
                                                          internal_batch_size=batch * min(a.chunk, a.steps))
        if name in ("feature_ablation", "shapley_sampling", "kernel_shap", "lime"):
            segments = array_options(name, jnp.zeros((batch, a.size, a.size, 3)))["segments"]
            mask = nchw(segments[..., None])[:, :1].to(self.device)
            kw = {"feature_mask": mask, "baselines": 0.0, "target": target}
            if name == "feature_ablation":
                fa = cm.FeatureAblation(model)
                return "FeatureAblation", lambda: fa.attribute(x, perturbations_per_eval=a.perturbation_chunk, **kw)
            if name == "shapley_sampling":
                sv = cm.ShapleyValueSampling(model)
                return "ShapleyValueSampling", lambda: sv.attribute(
                    x, n_samples=a.samples, perturbations_per_eval=a.perturbation_chunk, **kw)
            cls = cm.KernelShap if name == "kernel_shap" else cm.Lime
            method = cls(model)
            # Captum's KernelShap / Lime explain one image per call: a loop over the batch
            return cls.__name__, lambda: [method.attribute(
                x[i:i + 1], n_samples=a.samples, perturbations_per_eval=a.perturbation_chunk,
                feature_mask=mask[i:i + 1], baselines=0.0, target=target[i:i + 1]) for i in range(batch)]
        if name == "lrp":
            if arch != "vgg16":
                raise NotImplementedError("Captum's LRP is benchmarked on vgg16 only "
                                          "(its rules miss the residual additions of resnet50)")
            from captum.attr._utils.lrp_rules import IdentityRule

            def run_lrp():
                # The normalisation passes relevance through; Captum deletes every
                # rule after each call, so it is set again before each.
                model[0].rule = IdentityRule()
                return cm.LRP(model).attribute(x, target=target)
            return "LRP", run_lrp
        raise NotImplementedError(f"Captum has no {name}")

    def measure(self, name: str, arch: str, precision: str, batch: int) -> dict:
        try:
            return self._measure(name, arch, precision, batch)
        finally:
            if self.device.type == "cuda":
                self.torch.cuda.empty_cache()  # give the memory back for JAX's next method

    def _measure(self, name: str, arch: str, precision: str, batch: int) -> dict:
        captum_name, fn = self.attribute_fn(name, arch, precision, batch)
        self._set_precision(precision)
        sync = self.torch.cuda.synchronize if self.device.type == "cuda" else (lambda: None)

        def once():
            t0 = time.perf_counter()
            fn()
            sync()
            return time.perf_counter() - t0

        first = once()  # warm-up (cuDNN autotuning, allocator)
        warm = once()
        times = [warm]
        if warm < self.args.min_time:
            iters = max(1, min(self.args.max_iters, math.ceil(self.args.min_time / warm)))
            times = [once() for _ in range(iters)]
        seconds = float(np.median(times))
        return {"name": captum_name, "status": "ok", "images_per_s": batch / seconds,
                "seconds_per_call": seconds, "first_call_s": first, "batch": batch}


def _distinct_relus(model, torch, torchvision):
    """Three ReLU modules per torchvision Bottleneck (it calls one module three times,
    which Captum's GuidedBackprop / Deconvolution hooks do not handle); same forward."""
    import types

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.relu2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu3(out + identity)

    for m in model.modules():
        if isinstance(m, torchvision.models.resnet.Bottleneck):
            m.relu1, m.relu2, m.relu3 = (torch.nn.ReLU() for _ in range(3))
            m.forward = types.MethodType(forward, m)


# --- results file ----------------------------------------------------------------------------

def _device_kind() -> str:
    return jax.devices()[0].device_kind


def results_path(out: str, net: str, device: str) -> str:
    return os.path.join(out, f"attribution_{net}_{device.replace(' ', '_')}.json")


def _config(args) -> dict:
    return {k: getattr(args, k) for k in ("size", "batch", "iter_batch", "ceiling_batch", "chunk",
                                          "perturbation_chunk", "steps", "samples", "masks",
                                          "window", "stride")}


def _finished(entry: dict | None) -> bool:
    """Whether our side of an entry is done: measured or failed (a skipped method is retried)."""
    return entry is not None and entry.get("status") in ("ok", "failed")


# --- measuring -------------------------------------------------------------------------------

def _error(e: BaseException) -> str:
    return f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"[:500]


def measure_method(name: str, net, params, args, precision: str) -> dict:
    """One (net, precision, method) entry: our throughput, or the failure."""
    spec = METHODS[name]
    entry = {"method": name, "precision": precision, "cost": spec.cost,
             "cost_units": cost_units(name, args, net), "ceiling_mode": spec.ceiling,
             "batch": batch_of(name, args)}
    try:
        fn = resolve(name)
    except (ImportError, AttributeError) as e:
        entry.update(status="skipped", reason=f"not available in this checkout ({_error(e)})")
        return entry
    options = method_options(name, net, args)
    entry["options"] = options
    dtype = jnp.bfloat16 if precision == "bf16" else jnp.float32
    batch = entry["batch"]
    x = jax.random.uniform(jax.random.key(1), (batch, args.size, args.size, 3), dtype)
    target = jnp.arange(batch) % max(net.num_classes, 1)
    p = _cast(params, dtype)
    arrays = array_options(name, x)
    try:
        with jax.default_matmul_precision("highest" if precision == "highest" else "default"):
            if spec.keyed:
                step = jax.jit(lambda p, x, t, a, k: fn(net, p, x, t, k, **options, **a))
                call_args = (p, x, target, arrays, jax.random.key(2))
            else:
                step = jax.jit(lambda p, x, t, a: fn(net, p, x, t, **options, **a))
                call_args = (p, x, target, arrays)
            t0 = time.perf_counter()
            step = step.lower(*call_args).compile()
            compile_s = time.perf_counter() - t0
            out = jax.block_until_ready(step(*call_args))  # the warm-up call
            shape, out_dtype = tuple(out.shape), str(out.dtype)
            finite = bool(jnp.all(jnp.isfinite(out.astype(jnp.float32))))
            seconds = timed(step, *call_args, min_time=args.min_time, max_iters=args.max_iters)
    except Exception as e:  # noqa: BLE001 - recorded, the run goes on
        entry.update(status="failed", reason=_error(e))
        if args.verbose:
            traceback.print_exc()
        return entry
    entry.update(status="ok", images_per_s=batch / seconds, seconds_per_call=seconds,
                 compile_s=compile_s, output_shape=shape, output_dtype=out_dtype, finite=finite)
    if not finite:
        entry["reason"] = "the maps contain NaN or Inf"
    return entry


def add_ratios(entry: dict, ceilings: dict) -> dict:
    """Ceiling-based target, ratio and ours/Captum of an entry (in place)."""
    if entry.get("status") != "ok" or not ceilings:
        return entry
    ceiling = ceilings[entry["ceiling_mode"]]
    ideal = ceiling / entry["cost_units"]
    entry["ceiling_images_per_s"] = ceiling
    entry["target_images_per_s"] = ideal
    entry["ratio"] = entry["images_per_s"] / ideal
    if METHODS[entry["method"]].goal:
        entry["goal"] = GOAL
        entry["meets_goal"] = entry["ratio"] >= GOAL
    captum = entry.get("captum") or {}
    if captum.get("status") == "ok":
        entry["ours_over_captum"] = entry["images_per_s"] / captum["images_per_s"]
    return entry


def run_net(net_name: str, args, torch_side) -> dict:
    net = nets.get(net_name)
    params = net.init(jax.random.key(0))
    device = _device_kind()
    path = results_path(args.out, net_name, device)
    old = load_results(path)
    if old is not None and old.get("config") != _config(args):
        if not args.force:
            raise SystemExit(f"{path} holds results of another configuration {old.get('config')}; "
                             f"pass --force to replace them or --out to write elsewhere")
        old = None
    result = old or {"net": net_name, "device": device, "backend": jax.default_backend(),
                     "jax": jax.__version__, "config": _config(args), "ceilings": {},
                     "entries": {}}
    if torch_side is not None:
        result.update(torch_side.describe())
    os.makedirs(args.out, exist_ok=True)
    started = time.perf_counter()
    for precision in args.precisions:
        ceilings = None if args.force else result["ceilings"].get(precision)
        if ceilings is None:
            ceilings = {}
            for mode in ("forward", "gradient"):
                ceilings[mode] = measure(net, params, batch=args.ceiling_batch, size=args.size,
                                         precision=precision, mode=mode, iters=args.ceiling_iters)
                print(f"[{net_name} {precision}] ceiling {mode:8s} {ceilings[mode]:10.2f} images/s "
                      f"({time.perf_counter() - started:.0f} s)", flush=True)
            result["ceilings"][precision] = ceilings
            for entry in result["entries"].values():  # kept entries: ratios to the new ceiling
                if entry["precision"] == precision:
                    add_ratios(entry, ceilings)
            write_results(path, result)
        for name in args.methods:
            key = f"{precision}/{name}"
            done = None if args.force else result["entries"].get(key)
            if _finished(done) and (torch_side is None or "captum" in done):
                print(f"[{net_name} {precision}] {name}: already measured, skipped", flush=True)
                continue
            print(f"[{net_name} {precision}] {name}: measuring...", flush=True)
            if _finished(done):
                entry = done  # ours measured, Captum still missing
            else:
                entry = measure_method(name, net, params, args, precision)
            if torch_side is not None and "captum" not in entry:
                entry["captum"] = _captum_entry(torch_side, name, net_name, precision, args)
            add_ratios(entry, ceilings)
            result["entries"][key] = entry
            write_results(path, result)
            print(f"[{net_name} {precision}] {_progress(entry)} "
                  f"({time.perf_counter() - started:.0f} s)", flush=True)
    return result


def _captum_entry(torch_side, name, net_name, precision, args) -> dict:
    try:
        return torch_side.measure(name, net_name, precision, batch_of(name, args))
    except NotImplementedError as e:
        return {"status": "n/a", "reason": str(e)}
    except Exception as e:  # noqa: BLE001
        if args.verbose:
            traceback.print_exc()
        return {"status": "failed", "reason": _error(e)}


def _progress(entry: dict) -> str:
    if entry["status"] != "ok":
        return f"{entry['method']}: {entry['status']} ({entry.get('reason', '')})"
    s = f"{entry['method']}: {entry['images_per_s']:.3g} images/s"
    if "ratio" in entry:
        s += f", ratio {entry['ratio']:.2f}"
    c = entry.get("captum") or {}
    if c.get("status") == "ok":
        s += f", Captum {c['images_per_s']:.3g} images/s"
    elif c:
        s += f", Captum {c['status']}"
    return s


# --- report ----------------------------------------------------------------------------------

def _fmt(v) -> str:
    if v is None:
        return "-"
    return f"{v:.0f}" if v >= 100 else f"{v:.3g}"


def table(result: dict, precision: str, methods) -> str:
    c = result["config"]
    ceilings = result["ceilings"].get(precision, {})
    lines = [f"### {result['net']}, {c['size']} px, {precision}, {result['device']} "
             f"(jax {result['jax']}"
             + (f", torch {result['torch']}, Captum {result['captum']} on {result['torch_device']}"
                if "torch" in result else "") + ")", ""]
    if ceilings:
        lines.append(f"Ceiling (batch {c['ceiling_batch']}): forward {_fmt(ceilings['forward'])} "
                     f"images/s, forward + input gradient {_fmt(ceilings['gradient'])} images/s.")
        lines.append("")
    lines += ["| method | ours img/s | ceiling-based target | ratio | Captum img/s | ours/Captum |",
              "|---|---|---|---|---|---|"]
    for name in methods:
        e = result["entries"].get(f"{precision}/{name}")
        if e is None:
            continue
        label = name
        units = e["cost_units"]
        if units != 1:
            label += f" ({units} {e['cost']})"
        if e["status"] != "ok":
            lines.append(f"| {label} | {e['status']}: {e.get('reason', '')} | | | | |")
            continue
        ratio = _fmt(e.get("ratio"))
        if "meets_goal" in e:
            ratio += " (>= 0.9 ✓)" if e["meets_goal"] else " (< 0.9 ✗)"
        if not e.get("finite", True):
            ratio += " NaN/Inf in maps"
        target = e.get("target_images_per_s")
        target_s = "-" if target is None else (
            f"{_fmt(target)} ({'fwd' if e['ceiling_mode'] == 'forward' else 'fwd+grad'}"
            + (f" / {units}" if units != 1 else "") + ")")
        cap = e.get("captum") or {}
        cap_s = _fmt(cap["images_per_s"]) if cap.get("status") == "ok" else (
            cap.get("status", "-") if cap else "-")
        lines.append(f"| {label} | {_fmt(e['images_per_s'])} | {target_s} | {ratio} | {cap_s} | "
                     f"{_fmt(e.get('ours_over_captum'))} |")
    return "\n".join(lines)


# --- command line ----------------------------------------------------------------------------

QUICK = {"nets": "smallcnn", "size": 32, "batch": 2, "iter_batch": 2, "ceiling_batch": 2,
         "steps": 2, "samples": 2, "masks": 4, "window": 16, "stride": 8, "chunk": 2,
         "perturbation_chunk": 4, "precisions": "highest", "min_time": 0.0, "max_iters": 2,
         "ceiling_iters": 2}


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--nets", default=None, help="comma-separated zoo nets (resnet50,vgg16)")
    ap.add_argument("--size", type=int, default=None, help="image side in pixels (224)")
    ap.add_argument("--batch", type=int, default=None,
                    help="images per call of the single-pass methods (16)")
    ap.add_argument("--iter-batch", type=int, default=None,
                    help="images per call of IG, SmoothGrad, occlusion and RISE (8)")
    ap.add_argument("--ceiling-batch", type=int, default=None, help="batch of the ceiling (128)")
    ap.add_argument("--ceiling-iters", type=int, default=None,
                    help="timed calls of the ceiling (10)")
    ap.add_argument("--chunk", type=int, default=None,
                    help="IG steps / SmoothGrad samples per vmapped chunk (25)")
    ap.add_argument("--perturbation-chunk", type=int, default=None,
                    help="occlusion windows / RISE masks per forward pass (64)")
    ap.add_argument("--precisions", default=None, help=f"comma-separated, of {PRECISIONS}")
    ap.add_argument("--methods", default=None,
                    help="comma-separated (all: " + ",".join(METHODS) + ")")
    ap.add_argument("--steps", type=int, default=None, help="IG steps (50)")
    ap.add_argument("--samples", type=int, default=None, help="SmoothGrad samples (50)")
    ap.add_argument("--masks", type=int, default=None, help="RISE masks (8000)")
    ap.add_argument("--window", type=int, default=None, help="occlusion window side (16)")
    ap.add_argument("--stride", type=int, default=None, help="occlusion stride (8)")
    ap.add_argument("--min-time", type=float, default=None,
                    help="seconds of timed calls per method after warm-up (2.0)")
    ap.add_argument("--max-iters", type=int, default=None,
                    help="at most this many timed calls (10)")
    ap.add_argument("--no-captum", action="store_true", help="do not import torch / Captum")
    ap.add_argument("--out", default="bench/results")
    ap.add_argument("--force", action="store_true", help="re-measure entries already in the file")
    ap.add_argument("--quick", action="store_true",
                    help="tiny run (smallcnn, 32 px, 2 steps...) for the smoke test")
    ap.add_argument("--verbose", action="store_true", help="print tracebacks of failures")
    args = ap.parse_args(argv)
    defaults = {"nets": "resnet50,vgg16", "size": 224, "batch": 16, "iter_batch": 8,
                "ceiling_batch": 128, "ceiling_iters": 10, "chunk": 25, "perturbation_chunk": 64,
                "precisions": ",".join(PRECISIONS), "methods": ",".join(METHODS), "steps": 50,
                "samples": 50, "masks": 8000, "window": 16, "stride": 8, "min_time": 2.0,
                "max_iters": 10}
    if args.quick:
        defaults.update(QUICK)
    for k, v in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    args.nets = [n for n in args.nets.split(",") if n]
    args.precisions = [p for p in args.precisions.split(",") if p]
    args.methods = [m for m in args.methods.split(",") if m]
    for p in args.precisions:
        if p not in PRECISIONS:
            ap.error(f"--precisions: unknown {p!r}, expected some of {PRECISIONS}")
    for m in args.methods:
        if m not in METHODS:
            ap.error(f"--methods: unknown {m!r}, expected some of {list(METHODS)}")
    return args


def _torch_side(args):
    if args.no_captum:
        return None
    try:
        return _Torch(args)
    except ImportError as e:
        print(f"Captum not measured: {_error(e)}", flush=True)
        return None


def main(argv=None) -> dict:
    use_cpu_flags()                  # before JAX runs anything
    args = parse_args(argv)
    torch_side = _torch_side(args)
    for name in args.methods:
        try:
            resolve(name)
        except (ImportError, AttributeError):
            print(f"note: {name} is not available in this checkout; it is recorded as skipped",
                  flush=True)
    results = {}
    for net_name in args.nets:
        results[net_name] = run_net(net_name, args, torch_side)
    for net_name, result in results.items():
        path = results_path(args.out, net_name, result["device"])
        for precision in args.precisions:
            print("\n" + table(result, precision, args.methods))
        print(f"\n(written to {path})")
    return results


if __name__ == "__main__":
    main()
