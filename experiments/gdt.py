"""A GDT contrast (Patrick et al. ICCV 2021) of the smallcnn on the synthetic set, with k-NN accuracy.

    python -m experiments.gdt --config local
    python -m experiments.gdt --config local --set rotation=invariant --id inv

The trainer, outputs and resumption of experiments/sela.py (``metrics.json``: k-NN
accuracy, of the untrained net, chance), with method 'gdt': per image 2 augmented
views x rotation by 0 / 90 degrees, contrasted by GDT's matrix (sample distinctive,
augmentation invariant, rotation ``config.rotation``; configs/gdt.py), on the SimCLR augmentation of
:func:`experiments.common.selfsup_augmentation`.
"""

from __future__ import annotations

from jaxinterp.train.gdt import GDT

from experiments import common
from experiments.configs.gdt import get_config

ROTATIONS = ("distinctive", "invariant", "none")


def run(config, run_id: str | None = None) -> dict:
    """Train and write the run (module docstring); returns its metrics."""
    if config.rotation not in ROTATIONS:
        raise ValueError(f"rotation: expected one of {ROTATIONS}, got {config.rotation!r}")
    rotation = None if config.rotation == "none" else config.rotation
    method = GDT(aug=common.selfsup_augmentation(config), temperature=config.temperature, rotation=rotation)
    return common.train_selfsup(config, run_id, method, net_outputs=config.embedding)


def main(argv=None) -> int:
    return common.main(argv, get_config, __doc__, run)


if __name__ == "__main__":
    raise SystemExit(main())
