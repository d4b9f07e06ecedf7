"""EfficientNet-Lite0/1/2 (Tan and Le 2019; Google's "lite" variants for mobile accelerators).

The architecture of timm's ``tf_efficientnet_lite0/1/2`` and of Google's TF
checkpoints, with timm's module and parameter names, so that a timm state dict
loads directly and the pretrained weights of :func:`jaxinterp.nets.pretrained`
read through a rename table:

* stem: ``conv_stem`` 3x3 stride 2 to 32 channels, ``bn1`` (batch norm + ReLU6);
* ``blocks.S.i``: stage S, block i.  Stage 0 is a depthwise-separable block
  (3x3 depthwise conv, BN + ReLU6, 1x1 conv, BN), the others inverted residuals
  (1x1 expansion by 6, BN + ReLU6, k x k depthwise conv, BN + ReLU6, 1x1
  projection, BN) with a residual sum when stride is 1 and widths agree; no
  squeeze-excitation (the "lite" change, with ReLU6 for swish);
* head: ``conv_head`` 1x1 to 1280, ``bn2`` (BN + ReLU6), ``global_pool``
  (N, 1280), ``classifier`` (N, 1000); dropout is the identity at inference.

Stages for lite0: (expansion, kernel, stride, width, blocks) = (1, 3, 1, 16, 1),
(6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3), (6, 5, 1, 112, 3),
(6, 5, 2, 192, 4), (6, 3, 1, 320, 1).  lite1 and lite2 scale the block counts
by 1.1 and 1.2 (rounded up; the first and last stages fixed) and lite2 the
widths by 1.1 (rounded to multiples of 8; stem and head fixed).

TensorFlow details that change the numbers, kept here: every convolution pads
as TF's 'SAME' (asymmetric on stride-2 convolutions of even inputs), batch
norms use eps 1e-3, and the input is normalised as (255 x - 127) / 128 (the TF
reference's MEAN_RGB = 127, STDDEV_RGB = 128; timm's config says (x - 0.5) / 0.5,
0.4 % different).  Evaluation crops: resize to size / 0.875 (bicubic), centre
crop to 224 (lite0), 240 (lite1) or 260 (lite2) px
(:func:`jaxinterp.data.images.load_centre_crop`).

Split points: ``conv_stem``, ``bn1``, ``blocks.S.i`` for every block, the
aliases ``blocks.S`` (the last block of stage S), ``conv_head``, ``bn2``,
``global_pool``, ``classifier``.

References:
  Tan and Le, "EfficientNet: rethinking model scaling for convolutional neural
  networks", ICML 2019.  Liu and Tan, "Higher accuracy on vision models with
  EfficientNet-Lite", TensorFlow blog, 2020.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from jaxinterp.nets import layers as L
from jaxinterp.nets.core import register
from jaxinterp.nets.rules import Rules

__all__ = ["EfficientNetLite", "LITE_STAGES", "make_divisible", "stage_depths", "stage_widths"]

# (expansion, kernel, stride, width, blocks) of each stage of lite0.
LITE_STAGES = ((1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3),
               (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1))
STEM_WIDTH = 32
HEAD_WIDTH = 1280
BN_EPS = 1e-3


def make_divisible(value: float, divisor: int = 8) -> int:
    """The nearest multiple of ``divisor`` to ``value``, never below 90 % of it (TF / timm rounding)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def _goog_conv_init(groups: int):
    """TF EfficientNet's conv init: normal with std sqrt(2 / fan_out), fan_out = kh kw Cout / groups."""
    def init(key, shape):
        fan_out = shape[0] * shape[1] * shape[3] // groups
        return jax.random.normal(key, shape, jnp.float32) * math.sqrt(2.0 / fan_out)
    return init


def _goog_dense_init(key, shape):
    """TF EfficientNet's classifier init: uniform(-1 / sqrt(out), 1 / sqrt(out))."""
    bound = 1.0 / math.sqrt(shape[1])
    return jax.random.uniform(key, shape, jnp.float32, -bound, bound)


def _conv(cin, cout, size, *, stride=1, groups=1, rngs):
    return L.Conv(cin, cout, size, stride=stride, padding="SAME", groups=groups, bias=False,
                  init=_goog_conv_init(groups), rngs=rngs)


class NormAct(L.BatchNorm):
    """Batch norm (eps 1e-3), then ReLU6 when ``act``: timm's ``BatchNormAct2d``.

    A :class:`~jaxinterp.nets.layers.BatchNorm` subclass, so its parameters sit at
    ``bn1/scale`` etc., where timm's are (``bn1.weight``).
    """

    def __init__(self, channels: int, *, act: bool = True):
        super().__init__(channels, eps=BN_EPS)
        self.act = act

    def __call__(self, x, rules: Rules):
        y = super().__call__(x, rules)
        return rules.relu6(y) if self.act else y


class DepthwiseSeparable(nnx.Module):
    """3x3 depthwise conv, BN + ReLU6, 1x1 conv, BN (timm's ``DepthwiseSeparableConv``, no SE)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, *, rngs: nnx.Rngs):
        self.conv_dw = _conv(cin, cin, kernel, stride=stride, groups=cin, rngs=rngs)
        self.bn1 = NormAct(cin)
        self.conv_pw = _conv(cin, cout, 1, rngs=rngs)
        self.bn2 = NormAct(cout, act=False)
        self.residual = stride == 1 and cin == cout

    def __call__(self, x, rules: Rules):
        y = self.bn1(self.conv_dw(x, rules), rules)
        y = self.bn2(self.conv_pw(y, rules), rules)
        return rules.add(y, x) if self.residual else y


class InvertedResidual(nnx.Module):
    """MBConv without SE: 1x1 expansion, BN + ReLU6, depthwise k x k, BN + ReLU6, 1x1, BN, + x."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expansion: int, *,
                 rngs: nnx.Rngs):
        mid = cin * expansion
        self.conv_pw = _conv(cin, mid, 1, rngs=rngs)
        self.bn1 = NormAct(mid)
        self.conv_dw = _conv(mid, mid, kernel, stride=stride, groups=mid, rngs=rngs)
        self.bn2 = NormAct(mid)
        self.conv_pwl = _conv(mid, cout, 1, rngs=rngs)
        self.bn3 = NormAct(cout, act=False)
        self.residual = stride == 1 and cin == cout

    def __call__(self, x, rules: Rules):
        y = self.bn1(self.conv_pw(x, rules), rules)
        y = self.bn2(self.conv_dw(y, rules), rules)
        y = self.bn3(self.conv_pwl(y, rules), rules)
        return rules.add(y, x) if self.residual else y


def stage_depths(depth_multiplier: float) -> tuple[int, ...]:
    """Blocks per stage: ceil(blocks x multiplier), the first and last stages unscaled."""
    n = len(LITE_STAGES)
    return tuple(b if s in (0, n - 1) else math.ceil(b * depth_multiplier)
                 for s, (_, _, _, _, b) in enumerate(LITE_STAGES))


def stage_widths(width_multiplier: float) -> tuple[int, ...]:
    """Output channels per stage, scaled and rounded by :func:`make_divisible`."""
    return tuple(make_divisible(w * width_multiplier) for _, _, _, w, _ in LITE_STAGES)


class EfficientNetLite(nnx.Module):
    """EfficientNet-Lite with a width and a depth multiplier (see the module docstring)."""

    MEAN = (127.0 / 255.0,) * 3
    STD = (128.0 / 255.0,) * 3
    INPUT_SIZE = (224, 224)
    WIDTH = 1.0
    DEPTH = 1.0

    def __init__(self, num_classes: int, *, rngs: nnx.Rngs):
        self.depths = stage_depths(self.DEPTH)
        widths = stage_widths(self.WIDTH)
        self.conv_stem = _conv(3, STEM_WIDTH, 3, stride=2, rngs=rngs)
        self.bn1 = NormAct(STEM_WIDTH)
        cin, stages = STEM_WIDTH, {}
        for s, ((expansion, kernel, stride, _, _), cout, depth) in enumerate(
                zip(LITE_STAGES, widths, self.depths)):
            blocks = {}
            for i in range(depth):
                st = stride if i == 0 else 1
                blocks[str(i)] = (DepthwiseSeparable(cin, cout, kernel, st, rngs=rngs) if expansion == 1
                                  else InvertedResidual(cin, cout, kernel, st, expansion, rngs=rngs))
                cin = cout
            stages[str(s)] = nnx.Dict(blocks)
        self.blocks = nnx.Dict(stages)
        self.conv_head = _conv(cin, HEAD_WIDTH, 1, rngs=rngs)
        self.bn2 = NormAct(HEAD_WIDTH)
        self.classifier = L.Linear(HEAD_WIDTH, num_classes, init=_goog_dense_init, rngs=rngs)

    @classmethod
    def aliases(cls) -> dict[str, str]:
        return {f"blocks.{s}": f"blocks.{s}.{d - 1}" for s, d in enumerate(stage_depths(cls.DEPTH))}

    def stages(self):
        stages = [("conv_stem", self.conv_stem), ("bn1", self.bn1)]
        for s, depth in enumerate(self.depths):
            stages += [(f"blocks.{s}.{i}", self.blocks[str(s)][str(i)]) for i in range(depth)]
        stages += [("conv_head", self.conv_head), ("bn2", self.bn2), ("global_pool", L.global_pool),
                   ("classifier", self.classifier)]
        return stages


class EfficientNetLite0(EfficientNetLite):
    """``tf_efficientnet_lite0``: 4.65 M parameters, 224 px."""


class EfficientNetLite1(EfficientNetLite):
    """``tf_efficientnet_lite1``: depth x 1.1, 240 px."""

    INPUT_SIZE = (240, 240)
    DEPTH = 1.1


class EfficientNetLite2(EfficientNetLite):
    """``tf_efficientnet_lite2``: width x 1.1, depth x 1.2, 260 px."""

    INPUT_SIZE = (260, 260)
    WIDTH = 1.1
    DEPTH = 1.2


for _cls in (EfficientNetLite0, EfficientNetLite1, EfficientNetLite2):
    _cls.ALIASES = _cls.aliases()

register("tf_efficientnet_lite0", EfficientNetLite0, num_classes=1000)
register("tf_efficientnet_lite1", EfficientNetLite1, num_classes=1000)
register("tf_efficientnet_lite2", EfficientNetLite2, num_classes=1000)
