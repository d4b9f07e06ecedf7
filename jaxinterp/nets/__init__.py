"""The Net facade and the model zoo.

    net = jaxinterp.nets.get("resnet50")
    params = net.init(jax.random.key(0))      # or jaxinterp.nets.load("resnet50", path)
    logits = net.apply(params, x)             # x: (N, H, W, 3) float32 RGB in [0, 1]
    feats = net.apply(params, x, stop="layer3")
    logits = net.apply(params, feats, start="layer3")
    net.apply(params, x, rules=jaxinterp.nets.rules.GUIDED)   # modified backward pass
    params = jaxinterp.nets.pretrained("tf_efficientnet_lite0")  # ImageNet weights from a package

Three networks of the methods are Flax NNX modules here too, each with pure
``init`` / ``apply`` functions on a params dict: the deep image prior's generator
(:class:`SkipNet`: ``skip_net_init``, ``skip_net_apply``), the learned
inverter's decoder (:class:`Decoder`: ``inverter_init``, ``inverter_apply``) and
DINO's projection head (:class:`DinoHead`: ``dino_mlp_init``, ``dino_mlp``).  They
take noise, features or feature vectors rather than RGB images and have no split
points or backward rules, so they are not nets of :func:`get`.
"""

from jaxinterp.nets import rules
from jaxinterp.nets.core import Net, batch_norm_layers, count_params, get, names, recompute_batch_norm, register
from jaxinterp.nets import cnn as _cnn  # noqa: F401  (registers smallcnn, alexnet, vgg16)
from jaxinterp.nets import resnet as _resnet  # noqa: F401  (registers resnet50)
from jaxinterp.nets import vit as _vit  # noqa: F401  (registers vit_s16)
from jaxinterp.nets import efficientnet as _efficientnet  # noqa: F401  (registers tf_efficientnet_lite0/1/2)
from jaxinterp.nets.weights import load, save, from_state_dict, to_state_dict
from jaxinterp.nets.pretrained import pretrained, pretrained_names, pretrained_path
from jaxinterp.nets.dip_skip import SkipNet, skip_net_apply, skip_net_init, skip_net_scales
from jaxinterp.nets.decoder import Decoder, inverter_apply, inverter_image_size, inverter_init
from jaxinterp.nets.dino_head import DinoHead, dino_mlp, dino_mlp_init

__all__ = ["Net", "get", "names", "register", "rules", "load", "save",
           "from_state_dict", "to_state_dict", "count_params", "batch_norm_layers",
           "recompute_batch_norm", "pretrained", "pretrained_names", "pretrained_path",
           "SkipNet", "skip_net_init", "skip_net_apply", "skip_net_scales",
           "Decoder", "inverter_init", "inverter_apply", "inverter_image_size",
           "DinoHead", "dino_mlp_init", "dino_mlp"]
