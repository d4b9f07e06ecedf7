"""torchvision's ResNet-50 (He et al. 2016, v1.5: stride on the 3x3 conv of the bottleneck).

Split points: ``conv1``, ``bn1``, ``relu``, ``maxpool``, every bottleneck
``layerK.i``, the aliases ``layerK`` (the last block of stage K), ``avgpool``
(global average pooling, (N, 2048)) and ``fc``.
"""

from __future__ import annotations

from flax import nnx

from jaxinterp.nets import layers as L
from jaxinterp.nets.cnn import IMAGENET_MEAN, IMAGENET_STD
from jaxinterp.nets.core import register
from jaxinterp.nets.rules import Rules


class Bottleneck(nnx.Module):
    """1x1 -> 3x3 (stride) -> 1x1 (x4) with batch norms, ReLUs and a projection shortcut."""

    expansion = 4

    def __init__(self, cin: int, width: int, stride: int, *, rngs: nnx.Rngs):
        cout = width * self.expansion
        self.conv1 = L.Conv(cin, width, 1, bias=False, rngs=rngs)
        self.bn1 = L.BatchNorm(width)
        self.conv2 = L.Conv(width, width, 3, stride=stride, padding=1, bias=False, rngs=rngs)
        self.bn2 = L.BatchNorm(width)
        self.conv3 = L.Conv(width, cout, 1, bias=False, rngs=rngs)
        self.bn3 = L.BatchNorm(cout)
        if stride != 1 or cin != cout:
            self.downsample = nnx.Dict({
                "0": L.Conv(cin, cout, 1, stride=stride, bias=False, rngs=rngs),
                "1": L.BatchNorm(cout),
            })
        else:
            self.downsample = None

    def __call__(self, x, rules: Rules):
        y = rules.relu(self.bn1(self.conv1(x, rules), rules))
        y = rules.relu(self.bn2(self.conv2(y, rules), rules))
        y = self.bn3(self.conv3(y, rules), rules)
        if self.downsample is not None:
            x = self.downsample["1"](self.downsample["0"](x, rules), rules)
        return rules.relu(rules.add(y, x))


class ResNet(nnx.Module):
    """torchvision ResNet with bottleneck blocks; ``depths`` blocks per stage."""

    MEAN = IMAGENET_MEAN
    STD = IMAGENET_STD
    INPUT_SIZE = (224, 224)

    def __init__(self, num_classes: int, depths: tuple = (3, 4, 6, 3), *, rngs: nnx.Rngs):
        self.depths = tuple(depths)
        self.conv1 = L.Conv(3, 64, 7, stride=2, padding=3, bias=False, rngs=rngs)
        self.bn1 = L.BatchNorm(64)
        cin = 64
        for k, (depth, width) in enumerate(zip(depths, (64, 128, 256, 512))):
            blocks = {}
            for i in range(depth):
                stride = 2 if (i == 0 and k > 0) else 1
                blocks[str(i)] = Bottleneck(cin, width, stride, rngs=rngs)
                cin = width * Bottleneck.expansion
            setattr(self, f"layer{k + 1}", nnx.Dict(blocks))
        self.fc = L.Linear(cin, num_classes, init=L.normal(0.01), rngs=rngs)

    def stages(self):
        stages = [
            ("conv1", self.conv1),
            ("bn1", self.bn1),
            ("relu", lambda x, rules: rules.relu(x)),
            ("maxpool", lambda x, rules: rules.max_pool(x, 3, 2, 1)),
        ]
        for k in range(len(self.depths)):
            blocks = getattr(self, f"layer{k + 1}")
            stages += [(f"layer{k + 1}.{i}", blocks[str(i)]) for i in range(self.depths[k])]
        stages += [("avgpool", L.global_pool), ("fc", self.fc)]
        return stages


class ResNet50(ResNet):
    """torchvision ``resnet50``: bottleneck depths (3, 4, 6, 3), 224 x 224 input."""

    ALIASES = {"layer1": "layer1.2", "layer2": "layer2.3", "layer3": "layer3.5",
               "layer4": "layer4.2"}

    def __init__(self, num_classes: int, *, rngs: nnx.Rngs):
        super().__init__(num_classes, (3, 4, 6, 3), rngs=rngs)


register("resnet50", ResNet50, num_classes=1000)
