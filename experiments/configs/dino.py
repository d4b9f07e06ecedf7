"""Config of experiments/dino.py: DINO self-distillation (Caron et al. ICCV 2021) of the smallcnn.

The fields and variants of configs/sela.py (``clusters``, ``lam``, ``label_every``,
``scale`` unused) plus:

* ``head_dim``: K, the smallcnn's output width; its linear classifier is the head
  (DINO: an MLP to 65536, see :mod:`jaxinterp.train.selfsup`).
* ``n_local``, ``local_size``: the local crops per image (DINO: 8 at 96 of 224 px;
  here 4 at 7/16 of ``size``, 14 px at 32, fewer for a CPU run).
* ``global_scale`` (0.4, 1), ``local_scale`` (0.05, 0.4): crop area ranges (DINO).
* ``student_temp`` 0.1, ``teacher_temp`` 0.07, ``warmup_teacher_temp`` 0.04 (DINO),
  ``warmup_teacher_fraction``: the warm-up lasts round(fraction x epochs) epochs
  (0.3: DINO's 30 of 100).
* ``momentum_teacher``: the teacher EMA momentum at the start, cosine to 1 (DINO
  0.996 over ~10^5 updates; 0.99 for the 480 updates of 'local', where 0.996 would
  leave the teacher near its initialisation).
* ``center_momentum`` 0.9 (DINO).
"""

import ml_collections

from configs import sela


def get_config(variant: str = "local") -> ml_collections.ConfigDict:
    config = sela.get_config(variant)
    config.epochs = 30 if variant == "local" else 100
    config.head_dim = 256
    config.n_local = 4
    config.local_size = round(config.size * 7 / 16)
    config.global_scale = (0.4, 1.0)
    config.local_scale = (0.05, 0.4)
    config.student_temp = 0.1
    config.teacher_temp = 0.07
    config.warmup_teacher_temp = 0.04
    config.warmup_teacher_fraction = 0.3
    config.momentum_teacher = 0.99 if variant == "local" else 0.996
    config.center_momentum = 0.9
    config.out = "runs/dino"
    return config
