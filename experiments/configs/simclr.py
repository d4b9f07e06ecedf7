"""Config of experiments/simclr.py: SimCLR (NT-Xent, Chen et al. 2020) of the smallcnn.

The fields of configs/sela.py (``clusters``, ``lam``, ``label_every`` unused) plus
``embedding`` (the smallcnn's output width, its linear head as the projection)
and ``temperature`` (0.1, our choice for small batches; SimCLR: 0.5 at batch 256 on CIFAR).
"""

import ml_collections

from experiments.configs import sela


def get_config(variant: str = "local") -> ml_collections.ConfigDict:
    config = sela.get_config(variant)
    config.epochs = 30 if variant == "local" else 100
    config.augmentation = "simclr"
    config.scale = (0.3, 1.0)       # crop area range (SimCLR: 0.08 on ImageNet, 0.2 on CIFAR)
    config.embedding = 64
    config.temperature = 0.1
    config.out = "runs/simclr"
    return config
