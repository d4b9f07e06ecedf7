"""Weight import and export: PyTorch state dicts <-> jaxinterp params.

A params leaf at path ``a/b/kernel`` is the state-dict entry ``a.b.weight``;
``scale`` is ``weight``; batch-norm ``mean`` / ``var`` are ``running_mean`` /
``running_var`` (``num_batches_tracked`` is ignored).  Conv kernels are stored
HWIO here and OIHW in PyTorch; dense kernels (in, out) here and (out, in) there.
The rule is the same for every net, so :func:`save` needs no net name and
writes files that torchvision / timm can load (``.safetensors``, ``.pth``) or
NumPy can read (``.npz``).

Reading needs no torch: ``.pth`` files are read by
:func:`jaxinterp.nets.torch_files.read_state_dict`, which, like
``torch.load(..., weights_only=True)``, accepts only tensors, so a checkpoint
can never execute code; ``.safetensors`` and ``.npz`` are plain arrays.
Writing ``.pth`` needs torch.
"""

from __future__ import annotations

import os
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp.nets.core import Params, get
from jaxinterp.nets.torch_files import read_state_dict

__all__ = ["load", "save", "from_state_dict", "to_state_dict"]

_TO_TORCH_LEAF = {"kernel": "weight", "scale": "weight", "mean": "running_mean",
                  "var": "running_var"}
_IGNORED_SUFFIXES = ("num_batches_tracked",)


def _flatten(tree, prefix=()) -> dict[tuple, object]:
    out = {}
    for k, v in tree.items():
        if isinstance(v, Mapping):
            out.update(_flatten(v, prefix + (k,)))
        else:
            out[prefix + (k,)] = v
    return out


def _unflatten(flat: dict[tuple, object]) -> dict:
    out: dict = {}
    for path, v in flat.items():
        node = out
        for k in path[:-1]:
            node = node.setdefault(k, {})
        node[path[-1]] = v
    return out


def _torch_key(path: tuple) -> str:
    leaf = _TO_TORCH_LEAF.get(path[-1], path[-1])
    return ".".join(str(p) for p in path[:-1]) + ("." if len(path) > 1 else "") + leaf


def _to_torch_layout(path: tuple, a: np.ndarray) -> np.ndarray:
    if path[-1] == "kernel" and a.ndim == 4:
        return np.transpose(a, (3, 2, 0, 1))
    if path[-1] == "kernel" and a.ndim == 2:
        return a.T
    return a


def _from_torch_layout(path: tuple, a: np.ndarray) -> np.ndarray:
    if path[-1] == "kernel" and a.ndim == 4:
        return np.transpose(a, (2, 3, 1, 0))
    if path[-1] == "kernel" and a.ndim == 2:
        return a.T
    return a


def to_state_dict(params: Params) -> dict[str, np.ndarray]:
    """params -> {torch key: float32 NumPy array in PyTorch layout}."""
    if not isinstance(params, Mapping):
        raise ValueError(f"params: expected a nested dict of arrays, got {type(params).__name__}")
    flat = _flatten(params)
    return {_torch_key(p): np.ascontiguousarray(_to_torch_layout(p, np.asarray(v, np.float32)))
            for p, v in flat.items()}


def from_state_dict(name: str, state_dict: Mapping[str, object], *, prefix: str = "",
                    **config) -> Params:
    """A PyTorch-style state dict -> params of net ``name``, strictly checked.

    Args:
      name: zoo name (``jaxinterp.nets.names()``).
      state_dict: {key: array or torch tensor} in PyTorch layout.
      prefix: a prefix to strip from every key (e.g. ``'module.'`` or ``'backbone.'``).
      **config: constructor overrides of the net (e.g. ``num_classes=0``).

    Returns:
      params (nested dict of float32 jax arrays).

    Raises:
      ValueError: naming ``state_dict`` and the missing, unexpected or mis-shaped keys.
    """
    net = get(name, **config)
    if not isinstance(state_dict, Mapping):
        raise ValueError(f"state_dict: expected a mapping of names to arrays, "
                         f"got {type(state_dict).__name__}")
    sd = {}
    for k, v in state_dict.items():
        if k.endswith(_IGNORED_SUFFIXES):
            continue
        if prefix:
            if not k.startswith(prefix):
                continue
            k = k[len(prefix):]
        sd[k] = v
    expected = _flatten(net.abstract_params())
    by_key = {_torch_key(p): p for p in expected}
    missing = sorted(set(by_key) - set(sd))
    extra = sorted(set(sd) - set(by_key))
    if missing or extra:
        raise ValueError(f"state_dict: does not match {net!r}: missing keys {missing[:8]}"
                         f"{' ...' if len(missing) > 8 else ''}, unexpected keys {extra[:8]}"
                         f"{' ...' if len(extra) > 8 else ''}")
    flat = {}
    bad = []
    for key, path in by_key.items():
        a = _from_torch_layout(path, _to_numpy(sd[key]))
        want = tuple(expected[path].shape)
        if a.shape != want:
            bad.append(f"{key}: got {tuple(_to_numpy(sd[key]).shape)} (torch layout), "
                       f"expected {want} in JAX layout")
        flat[path] = jnp.asarray(a, jnp.float32)
    if bad:
        raise ValueError("state_dict: mis-shaped keys: " + "; ".join(bad[:8]))
    return _unflatten(flat)


def _to_numpy(v) -> np.ndarray:
    if hasattr(v, "detach"):  # a torch tensor
        v = v.detach().cpu().float().numpy()
    return np.asarray(v, np.float32)


def _read(path: str) -> dict:
    ext = os.path.splitext(path)[1].lower()
    if not os.path.exists(path):
        raise ValueError(f"path: no such file {path!r}")
    if ext == ".npz":
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    if ext == ".safetensors":
        from safetensors.numpy import load_file
        return load_file(path)
    if ext in (".pth", ".pt"):  # unwraps {'state_dict' | 'model' | 'teacher': {...}}
        return read_state_dict(path)
    raise ValueError(f"path: expected a .pth, .pt, .safetensors or .npz file, got {path!r}")


def load(name: str, path: str, *, prefix: str = "", **config) -> Params:
    """Load params of net ``name`` from a PyTorch state dict file.

    Args:
      name: zoo name, e.g. ``'resnet50'``.
      path: ``.pth`` / ``.pt`` (tensors only, no code runs), ``.safetensors`` or
        ``.npz``, with PyTorch keys and layout; none needs torch.
      prefix: strip this prefix from keys (``'module.'``, ``'backbone.'``).
      **config: net constructor overrides (``num_classes=...``).

    Returns:
      params for ``jaxinterp.nets.get(name, **config).apply``.
    """
    return from_state_dict(name, _read(os.fspath(path)), prefix=prefix, **config)


def save(params: Params, path: str) -> None:
    """Write params as a PyTorch-layout state dict (``.safetensors``, ``.npz`` or ``.pth``).

    The file is written to a temporary name and renamed, so a reader never sees
    a partial file.
    """
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    sd = to_state_dict(jax.device_get(params))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp" + ext
    if ext == ".npz":
        np.savez(tmp, **sd)
    elif ext == ".safetensors":
        from safetensors.numpy import save_file
        save_file(sd, tmp)
    elif ext in (".pth", ".pt"):
        try:
            import torch
        except ImportError as e:
            raise ValueError("path: writing .pth needs torch; use .safetensors or .npz") from e
        torch.save({k: torch.tensor(v) for k, v in sd.items()}, tmp)
    else:
        raise ValueError(f"path: expected a .safetensors, .npz or .pth file name, got {path!r}")
    os.replace(tmp, path)
