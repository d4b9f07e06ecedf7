"""Config of experiments/gdt.py: a GDT contrast (Patrick et al. ICCV 2021) of the smallcnn.

The fields and variants of configs/sela.py (``clusters``, ``lam``, ``label_every``
unused) plus ``embedding`` (the smallcnn's output width, its linear head as the
projection), ``temperature`` (0.07, GDT) and ``rotation``: how the 90-degree
rotation factor enters the contrast, ``'distinctive'`` (default; GDT's
"distinctive to time reversal"), ``'invariant'`` or ``'none'`` (no rotated views:
SimCLR's contrast).
"""

import ml_collections

from experiments.configs import sela


def get_config(variant: str = "local") -> ml_collections.ConfigDict:
    config = sela.get_config(variant)
    config.epochs = 30 if variant == "local" else 100
    config.augmentation = "simclr"
    config.scale = (0.3, 1.0)       # crop area range (SimCLR: 0.08 on ImageNet, 0.2 on CIFAR)
    config.embedding = 64
    config.temperature = 0.07
    config.rotation = "distinctive"
    config.out = "runs/gdt"
    return config
