"""The Net facade and the model zoo.

    net = jaxinterp.nets.get("resnet50")
    params = net.init(jax.random.key(0))      # or jaxinterp.nets.load("resnet50", path)
    logits = net.apply(params, x)             # x: (N, H, W, 3) float32 RGB in [0, 1]
    feats = net.apply(params, x, stop="layer3")
    logits = net.apply(params, feats, start="layer3")
    net.apply(params, x, rules=jaxinterp.nets.rules.GUIDED)   # modified backward pass
    params = jaxinterp.nets.pretrained("tf_efficientnet_lite0")  # ImageNet weights from a package
"""

from jaxinterp.nets import rules
from jaxinterp.nets.core import Net, batch_norm_layers, count_params, get, names, recompute_batch_norm, register
from jaxinterp.nets import cnn as _cnn  # noqa: F401  (registers smallcnn, alexnet, vgg16)
from jaxinterp.nets import resnet as _resnet  # noqa: F401  (registers resnet50)
from jaxinterp.nets import vit as _vit  # noqa: F401  (registers vit_s16)
from jaxinterp.nets import efficientnet as _efficientnet  # noqa: F401  (registers tf_efficientnet_lite0/1/2)
from jaxinterp.nets.weights import load, save, from_state_dict, to_state_dict
from jaxinterp.nets.pretrained import pretrained, pretrained_names, pretrained_path

__all__ = ["Net", "get", "names", "register", "rules", "load", "save",
           "from_state_dict", "to_state_dict", "count_params", "batch_norm_layers",
           "recompute_batch_norm", "pretrained", "pretrained_names", "pretrained_path"]
