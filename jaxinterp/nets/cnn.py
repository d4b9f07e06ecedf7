"""Plain convolutional nets: ``smallcnn``, and torchvision's ``alexnet`` and ``vgg16``.

Split points are torchvision's module names: ``features.i`` for every layer of
the feature extractor (conv, ReLU, max-pool), ``avgpool``, and ``classifier.i``
(dropout layers are identities at inference and are kept as split points so
the names line up with torchvision).
"""

from __future__ import annotations

import functools

from flax import nnx

from jaxinterp.nets import layers as L
from jaxinterp.nets.core import register

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _identity(x, rules):
    return x


def _relu(x, rules):
    return rules.relu(x)


def _flatten(x, rules):
    return L.flatten_chw(x)


def _feature_stages(features: nnx.Dict, spec: list) -> list:
    """Stages 'features.i' from a spec of ('conv', ...), ('bn', channels), ('relu',), ('pool', window, stride)."""
    stages = []
    for i, op in enumerate(spec):
        name = f"features.{i}"
        if op[0] in ("conv", "bn"):
            stages.append((name, features[str(i)]))
        elif op[0] == "relu":
            stages.append((name, _relu))
        else:
            _, window, stride = op
            stages.append((name, functools.partial(_max_pool, window=window, stride=stride)))
    return stages


def _max_pool(x, rules, *, window, stride):
    return rules.max_pool(x, window, stride, 0)


def _build_features(spec: list, rngs: nnx.Rngs) -> nnx.Dict:
    """The conv and batch-norm modules of a spec; a conv followed by a batch norm has no bias."""
    convs = {}
    for i, op in enumerate(spec):
        if op[0] == "conv":
            _, cin, cout, size, stride, padding = op
            bias = i + 1 == len(spec) or spec[i + 1][0] != "bn"
            convs[str(i)] = L.Conv(cin, cout, size, stride=stride, padding=padding, bias=bias, rngs=rngs)
        elif op[0] == "bn":
            convs[str(i)] = L.BatchNorm(op[1])
    return nnx.Dict(convs)


def _classifier_stages(classifier: nnx.Dict, spec: tuple) -> list:
    """Stages 'classifier.i' from a spec of 'linear', 'relu' and 'dropout' (identity)."""
    ops = {"relu": _relu, "dropout": _identity}
    return [(f"classifier.{i}", classifier[str(i)] if op == "linear" else ops[op])
            for i, op in enumerate(spec)]


class SmallCNN(nnx.Module):
    """A small VGG-style CNN with global average pooling, for 64 x 64 images.

    features: 4 x [conv3x3, ReLU] with 2x2 max-pools after the first three
    (widths 32, 64, 128, 128); ``avgpool`` is global average pooling (so CAM
    applies directly); ``classifier`` is one linear layer.  About 0.29M
    parameters; trains to > 90% on the synthetic set in minutes on a CPU.

    ``batch_norm=True`` puts a batch norm between each conv and its ReLU, as
    torchvision's ``vgg*_bn`` (split points renumbered the same way: conv
    ``features.0``, norm ``features.1``, ReLU ``features.2``, ...), with no conv
    bias before a norm, as ResNets (the norm removes it; under an adaptive optimiser
    its zero gradient's rounding noise would move it).  Train it with
    :data:`~jaxinterp.nets.rules.BATCH_STATISTICS`; its stored statistics start at
    mean 0, variance 1 and are set for inference by
    :func:`~jaxinterp.nets.recompute_batch_norm`.
    """

    MEAN = IMAGENET_MEAN
    STD = IMAGENET_STD
    INPUT_SIZE = (64, 64)

    def __init__(self, num_classes: int, widths: tuple = (32, 64, 128, 128), batch_norm: bool = False, *,
                 rngs: nnx.Rngs):
        spec, cin = [], 3
        for k, w in enumerate(widths):
            spec += [("conv", cin, w, 3, 1, 1)] + ([("bn", w)] if batch_norm else []) + [("relu",)]
            if k < len(widths) - 1:
                spec.append(("pool", 2, 2))
            cin = w
        self.spec = tuple(spec)
        self.features = _build_features(spec, rngs)
        self.classifier = L.Linear(cin, num_classes, rngs=rngs)

    def stages(self):
        return _feature_stages(self.features, list(self.spec)) + [
            ("avgpool", L.global_pool),
            ("classifier", self.classifier),
        ]


_ALEXNET = [("conv", 3, 64, 11, 4, 2), ("relu",), ("pool", 3, 2),
            ("conv", 64, 192, 5, 1, 2), ("relu",), ("pool", 3, 2),
            ("conv", 192, 384, 3, 1, 1), ("relu",),
            ("conv", 384, 256, 3, 1, 1), ("relu",),
            ("conv", 256, 256, 3, 1, 1), ("relu",), ("pool", 3, 2)]


def _vgg_spec(cfg) -> list:
    spec, cin = [], 3
    for v in cfg:
        if v == "M":
            spec.append(("pool", 2, 2))
        else:
            spec += [("conv", cin, v, 3, 1, 1), ("relu",)]
            cin = v
    return spec


# torchvision's classifier heads: AlexNet puts dropout before each hidden linear layer,
# VGG after each hidden ReLU.
_CLASSIFIERS = {
    "alexnet": ("dropout", "linear", "relu", "dropout", "linear", "relu", "linear"),
    "vgg16": ("linear", "relu", "dropout", "linear", "relu", "dropout", "linear"),
}

_VGG16 = _vgg_spec([64, 64, "M", 128, 128, "M", 256, 256, 256, "M",
                    512, 512, 512, "M", 512, 512, 512, "M"])


class TorchvisionCNN(nnx.Module):
    """torchvision's AlexNet / VGG layout: features, AdaptiveAvgPool(pool), flatten, classifier."""

    MEAN = IMAGENET_MEAN
    STD = IMAGENET_STD
    INPUT_SIZE = (224, 224)

    def __init__(self, arch: str, num_classes: int, *, rngs: nnx.Rngs):
        spec = {"alexnet": _ALEXNET, "vgg16": _VGG16}[arch]
        self.spec = tuple(spec)
        self.pool = (6, 6) if arch == "alexnet" else (7, 7)
        self.features = _build_features(spec, rngs)
        cin = [op for op in spec if op[0] == "conv"][-1][2] * self.pool[0] * self.pool[1]
        self.classifier_spec = _CLASSIFIERS[arch]
        linear = [i for i, op in enumerate(self.classifier_spec) if op == "linear"]
        widths = [cin, 4096, 4096, num_classes]
        self.classifier = nnx.Dict({str(i): L.Linear(widths[j], widths[j + 1], rngs=rngs)
                                    for j, i in enumerate(linear)})

    def stages(self):
        pool = functools.partial(_avgpool_flat, out_hw=self.pool)
        return (_feature_stages(self.features, list(self.spec))
                + [("avgpool", pool)]
                + _classifier_stages(self.classifier, self.classifier_spec))


def _avgpool_flat(x, rules, *, out_hw):
    """AdaptiveAvgPool2d then torch.flatten(x, 1) in (C, H, W) order."""
    return L.flatten_chw(L.avg_pool_to(x, out_hw, rules))


class AlexNet(TorchvisionCNN):
    """torchvision ``alexnet`` (Krizhevsky et al. 2012, one-GPU variant), 224 x 224 input."""

    def __init__(self, num_classes: int, *, rngs: nnx.Rngs):
        super().__init__("alexnet", num_classes, rngs=rngs)


class VGG16(TorchvisionCNN):
    """torchvision ``vgg16`` (Simonyan and Zisserman 2015, configuration D), 224 x 224 input."""

    def __init__(self, num_classes: int, *, rngs: nnx.Rngs):
        super().__init__("vgg16", num_classes, rngs=rngs)


register("smallcnn", SmallCNN, num_classes=8, widths=(32, 64, 128, 128), batch_norm=False)
register("alexnet", AlexNet, num_classes=1000)
register("vgg16", VGG16, num_classes=1000)
