"""Extremal perturbation masks against TorchRay 1.0.0.2's, at the paper's scale.

For every net, photograph and variant, in one run: TorchRay's
``extremal_perturbation`` and :func:`jaxinterp.perturbation.extremal` with the
same defaults (blur, jitter, lr 0.01, lambda 300 x 1.0035^t, areas 0.05, 0.1,
0.2), float32, the same weights and image.  Reported per area:

* ``iou``: intersection over union of the two masks thresholded at 0.5;
* ``reward`` / ``area``: the reward and the area term lambda R_a of the last
  step, ours and TorchRay's (equally good optima have equal values);
* ``stable_iou``: ours against ours with the image and the weights perturbed
  at float32 rounding level (x (1 + 2^-23 u), u uniform in [-1, 1]): a result
  that depends on how exact ties or rounding fall would show here;
* ``torchray_stable_iou``: the same for TorchRay against itself, which says
  whether the setting itself is chaotic (then no float32 implementation can
  match another's masks, and the end values are what to compare).

Nets: ``vgg16`` and ``resnet50`` with random weights (torchvision, seed 0;
the ResNet with random batch-norm statistics) on their TorchRay twins, and the
pretrained ``tf_efficientnet_lite0`` on the PyTorch reference code
(``efficientnet-lite-pytorch``) with the photograph's own top class.  The
paper's setting is 224 px and 800 steps (TorchRay's ``max_iter``; ours
``steps = max_iter - 1``, as TorchRay returns the mask before its last update):

    python -m bench.extremal_agreement                                   # 224 px, 800 steps
    python -m bench.extremal_agreement --size 96 --steps 200 --nets vgg16

Results go to ``<out>/extremal_agreement_<size>px_<steps>.json`` after every
entry; a rerun skips the entries already there.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp.xla_cpu import use_cpu_flags
from jaxinterp import nets
from jaxinterp.data import images
from jaxinterp.perturbation import extremal

RANDOM_TARGET = 281          # any class of a random-weight net
MEAN, STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])


def _torch_twin(name: str):
    """(torch model on normalised NCHW input, jaxinterp params) for ``name``."""
    import torch
    import torchvision
    torch.manual_seed(0)
    if name.startswith("tf_efficientnet_lite"):
        import efficientnet_lite_pytorch as lite
        model = lite.EfficientNet.from_pretrained(name[3:].replace("_", "-"), weights_path=nets.pretrained_path(name))
        params = nets.pretrained(name)
    else:
        model = getattr(torchvision.models, name)(weights=None)
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, torch.nn.BatchNorm2d):      # random statistics: a non-trivial ResNet
                    m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=g))
                    m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
                    m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
                    m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
                elif isinstance(m, torch.nn.ReLU):
                    m.inplace = False
        params = nets.from_state_dict(name, {k: v.numpy() for k, v in model.state_dict().items()})
    model = model.eval()
    for q in model.parameters():
        q.requires_grad_(False)
    return model, params


def torch_input(name: str, x: np.ndarray):
    """The torch twin's normalised input (1, 3, H, W) for an image x (H, W, 3) in [0, 1]."""
    import torch
    z = (x * 255 - 127) / 128 if name.startswith("tf_efficientnet_lite") else (x - MEAN) / STD
    return torch.from_numpy(z.astype(np.float32).transpose(2, 0, 1)[None].copy())


def torchray_masks(model, xt, target: int, areas, steps: int, variant: str):
    """TorchRay's masks (A, H, W) and its last-step (reward, area term) (A, 2) for one normalised image xt."""
    from torchray.attribution.extremal_perturbation import extremal_perturbation
    masks, hist = extremal_perturbation(model, xt, target, areas=list(areas), max_iter=steps, variant=variant)
    hist = hist.numpy()                                   # (A, 2, steps): reward, -area term
    return masks.numpy()[:, 0], np.stack([hist[:, 0, -2], -hist[:, 1, -2]], -1)


def our_masks(net, params, x: np.ndarray, target: int, areas, steps: int, variant: str):
    """Our masks (A, H, W) and the (reward, area term) (A, 2) of the step TorchRay reports last."""
    with jax.default_matmul_precision("highest"):
        fn = jax.jit(lambda p, x: extremal(net, p, x, jnp.array([target]), areas=tuple(areas),
                                           steps=steps - 1, variant=variant))
        masks, history = fn(params, jnp.asarray(x[None], jnp.float32))
    return np.asarray(masks)[0, 0], np.asarray(history)[0, 0, :, -1]


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU per area of masks (A, H, W) thresholded at 0.5 (1 where both are empty)."""
    a, b = a > 0.5, b > 0.5
    union = (a | b).sum((-2, -1))
    return np.where(union > 0, (a & b).sum((-2, -1)) / np.maximum(union, 1), 1.0)


def perturbed(tree, seed: int):
    """Every float array of ``tree`` times (1 + 2^-23 u), u uniform in [-1, 1]: a float32 rounding."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda a: (np.asarray(a) * (1 + 2.0 ** -23 * rng.uniform(-1, 1, np.shape(a))))
                        .astype(np.asarray(a).dtype), tree)


def perturbed_torch(model, seed: int):
    """A copy of the torch model with every parameter and buffer times (1 + 2^-23 u), as :func:`perturbed`."""
    import copy
    import torch
    rng = np.random.default_rng(seed)
    model = copy.deepcopy(model)
    with torch.no_grad():
        for t in list(model.parameters()) + list(model.buffers()):
            if t.is_floating_point():
                t.mul_(torch.from_numpy((1 + 2.0 ** -23 * rng.uniform(-1, 1, tuple(t.shape))).astype(np.float32)))
    return model


def entry(name: str, photo: str, variant: str, args, cache: dict) -> dict:
    """One comparison: IoU, end values and stability for every area."""
    if name not in cache:
        cache[name] = _torch_twin(name)
    model, params = cache[name]
    net = nets.get(name)
    x = images.batch_centre_crop((photo,), args.size)[0] if name.startswith("tf_") else \
        images.batch((photo,), args.size)[0]
    x = np.asarray(x, np.float32)
    target = int(np.argmax(net.apply(params, x[None])[0])) if name.startswith("tf_") else RANDOM_TARGET
    t0 = time.perf_counter()
    theirs, theirs_end = torchray_masks(model, torch_input(name, x), target, args.areas, args.steps, variant)
    t1 = time.perf_counter()
    ours, ours_end = our_masks(net, params, x, target, args.areas, args.steps, variant)
    t2 = time.perf_counter()
    again, _ = our_masks(net, perturbed(params, 1), perturbed(x, 2), target, args.areas, args.steps, variant)
    theirs_again, _ = torchray_masks(perturbed_torch(model, 3), torch_input(name, perturbed(x, 4)), target,
                                     args.areas, args.steps, variant)
    return {"target": target, "areas": list(args.areas), "iou": iou(ours, theirs).tolist(),
            "stable_iou": iou(ours, again).tolist(), "torchray_stable_iou": iou(theirs, theirs_again).tolist(),
            "reward": {"ours": ours_end[:, 0].tolist(), "torchray": theirs_end[:, 0].tolist()},
            "area": {"ours": ours_end[:, 1].tolist(), "torchray": theirs_end[:, 1].tolist()},
            "max_abs_diff": np.abs(ours - theirs).max((-2, -1)).tolist(),
            "seconds": {"torchray": t1 - t0, "ours_with_compile": t2 - t1}}


def main(argv=None):
    use_cpu_flags()                  # before JAX runs anything
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--nets", default="vgg16,resnet50,tf_efficientnet_lite0")
    ap.add_argument("--photos", default="chelsea")
    ap.add_argument("--variants", default="preserve")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--steps", type=int, default=800, help="TorchRay's max_iter (ours: steps - 1)")
    ap.add_argument("--areas", type=lambda s: [float(a) for a in s.split(",")], default=[0.05, 0.1, 0.2])
    ap.add_argument("--out", default="bench/results")
    args = ap.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, f"extremal_agreement_{args.size}px_{args.steps}.json")
    result = json.load(open(path)) if os.path.exists(path) else {"jax": jax.__version__, "entries": {}}
    cache: dict = {}
    todo = [(n, p, v) for n in args.nets.split(",") for p in args.photos.split(",") for v in args.variants.split(",")]
    for i, (name, photo, variant) in enumerate(todo):
        key = f"{name}/{photo}/{variant}"
        if key not in result["entries"]:
            print(f"[{i + 1}/{len(todo)}] {key}: running", flush=True)
            result["entries"][key] = entry(name, photo, variant, args, cache)
            with open(path + ".tmp", "w") as f:
                json.dump(result, f, indent=1)
            os.replace(path + ".tmp", path)
        e = result["entries"][key]
        print(f"[{i + 1}/{len(todo)}] {key}: IoU " + " ".join(f"{v:.3f}" for v in e["iou"]) +
              ", stable " + " ".join(f"{v:.3f}" for v in e["stable_iou"]) +
              ", TorchRay stable " + " ".join(f"{v:.3f}" for v in e.get("torchray_stable_iou", [])) +
              ", reward ours/TorchRay " + " ".join(f"{a:.4g}/{b:.4g}" for a, b in
                                                   zip(e["reward"]["ours"], e["reward"]["torchray"])), flush=True)
    print(f"\n{args.size} px, {args.steps} steps, areas {args.areas}\n")
    print("| net | photo | variant | area | IoU | stable IoU ours | TorchRay | reward ours | TorchRay | "
          "area term ours | TorchRay |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for key, e in result["entries"].items():
        for j, a in enumerate(e["areas"]):
            print(f"| {' | '.join(key.split('/'))} | {a} | {e['iou'][j]:.3f} | {e['stable_iou'][j]:.3f} | "
                  f"{e.get('torchray_stable_iou', [float('nan')] * 3)[j]:.3f} | "
                  f"{e['reward']['ours'][j]:.4g} | {e['reward']['torchray'][j]:.4g} | "
                  f"{e['area']['ours'][j]:.3g} | {e['area']['torchray'][j]:.3g} |")
    return result


if __name__ == "__main__":
    sys.exit(main() is None)
