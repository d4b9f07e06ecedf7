"""SimCLR (InfoNCE / NT-Xent) of the smallcnn on the synthetic set, with k-NN accuracy.

    python -m experiments.simclr --config local
    python -m experiments.simclr --config local --set epochs=2 --id t

The trainer, outputs and resumption of experiments/sela.py, with method 'simclr'.
"""

from __future__ import annotations

from jaxinterp.train.simclr import SimCLR

from experiments import common
from experiments.configs.simclr import get_config


def run(config, run_id: str | None = None) -> dict:
    """Train and write the run (module docstring); returns its metrics."""
    method = SimCLR(aug=common.selfsup_augmentation(config), temperature=config.temperature)
    return common.train_selfsup(config, run_id, method, net_outputs=config.embedding)


def main(argv=None) -> int:
    return common.main(argv, get_config, __doc__, run)


if __name__ == "__main__":
    raise SystemExit(main())
