"""DINO self-distillation (Caron et al. ICCV 2021) of the smallcnn on the synthetic set, with k-NN accuracy.

    python -m experiments.dino --config local             # 200 epochs, about an hour on one CPU core
    python -m experiments.dino --config local --set epochs=2 --id t

The trainer, outputs and resumption of experiments/sela.py (``metrics.json``: k-NN
and linear-probe accuracy of the teacher, as DINO evaluates, ``student_*`` of the
student, those of the untrained net, chance), with method 'dino': 2 global crops and
``n_local`` local crops per image (configs/dino.py).  ``history.json`` and the
progress lines also hold DINO's collapse monitors per epoch: ``teacher_entropy``,
``teacher_marginal_entropy`` and ``kl`` (:class:`jaxinterp.train.dino.DINO`;
both entropies near ln K = the targets went uniform).
"""

from __future__ import annotations

from jaxinterp.train.augment import AugmentConfig
from jaxinterp.train.dino import DINO

from experiments import common
from experiments.configs.dino import get_config


def method(config) -> DINO:
    """DINO from ``config``: the multi-crop, the schedules and the head (the optimiser is the Settings')."""
    size, local = (config.size, config.size), (config.local_size, config.local_size)
    shared = {"blur_sigma": (0.1, config.blur_max), "hue": config.hue, "jitter_p": config.jitter_p}
    glob = tuple(config.global_scale)
    aug = (AugmentConfig.dino_global(1, size=size, scale=glob, **shared),
           AugmentConfig.dino_global(2, size=size, scale=glob, **shared),
           AugmentConfig.dino_local(size=local, scale=tuple(config.local_scale), **shared))
    return DINO(aug=aug, n_local=config.n_local, student_temp=config.student_temp,
                teacher_temp=config.teacher_temp, warmup_teacher_temp=config.warmup_teacher_temp,
                warmup_teacher_epochs=round(config.warmup_teacher_fraction * config.epochs),
                momentum_teacher=config.momentum_teacher, centre_momentum=config.centre_momentum,
                head=(config.head_hidden, config.head_bottleneck) if config.head_hidden else None,
                freeze_last_layer=config.freeze_last_layer, batch_statistics=config.backbone_batch_norm)


def run(config, run_id: str | None = None) -> dict:
    """Train and write the run (module docstring); returns its metrics."""
    return common.train_selfsup(config, run_id, method(config), net_outputs=config.head_dim)


def main(argv=None) -> int:
    return common.main(argv, get_config, __doc__, run)


if __name__ == "__main__":
    raise SystemExit(main())
