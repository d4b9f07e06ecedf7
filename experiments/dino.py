"""DINO self-distillation (Caron et al. ICCV 2021) of the smallcnn on the synthetic set, with k-NN accuracy.

    python experiments/dino.py --variant local             # 200 epochs, about an hour on one CPU core
    python experiments/dino.py --variant local --set epochs=2 --id t

The trainer, outputs and resumption of experiments/sela.py (``metrics.json``: k-NN
and linear-probe accuracy of the teacher, as DINO evaluates, ``student_*`` of the
student, those of the untrained net, chance), with method 'dino': 2 global crops and
``n_local`` local crops per image (configs/dino.py).  ``history.json`` and the
progress lines also hold DINO's collapse monitors per epoch: ``teacher_entropy``,
``teacher_marginal_entropy`` and ``kl`` (:func:`jaxinterp.train.selfsup.train_step`;
both entropies near ln K = the targets went uniform).
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common  # noqa: E402
import sela  # noqa: E402
from configs import dino as dino_config  # noqa: E402

from jaxinterp.train.augment import AugmentConfig  # noqa: E402


def options(config) -> dict:
    """``selfsup.fit`` keyword arguments of DINO from ``config``: the multi-crop and the schedules."""
    size, local = (config.size, config.size), (config.local_size, config.local_size)
    common = {"blur_sigma": (0.1, config.blur_max), "hue": config.hue, "jitter_p": config.jitter_p}
    glob = tuple(config.global_scale)
    aug = (AugmentConfig.dino_global(1, size=size, scale=glob, **common),
           AugmentConfig.dino_global(2, size=size, scale=glob, **common),
           AugmentConfig.dino_local(size=local, scale=tuple(config.local_scale), **common))
    return {"aug": aug, "n_local": config.n_local, "student_temp": config.student_temp,
            "teacher_temp": config.teacher_temp, "warmup_teacher_temp": config.warmup_teacher_temp,
            "warmup_teacher_epochs": round(config.warmup_teacher_fraction * config.epochs),
            "momentum_teacher": config.momentum_teacher, "center_momentum": config.center_momentum,
            "head": (config.head_hidden, config.head_bottleneck) if config.head_hidden else None,
            "freeze_last_layer": config.freeze_last_layer, "optimizer_name": config.optimizer,
            "weight_decay": config.weight_decay, "batch_statistics": config.backbone_batch_norm}


def main(argv=None) -> dict:
    args, config = _common.parse(argv, dino_config.get_config, __doc__)
    return sela.run(config, args.id, method="dino", net_outputs=config.head_dim, options=options(config))


if __name__ == "__main__":
    main()
