"""SeLa self-labelling of the smallcnn on the synthetic set, CIFAR-10 or ImageNet, with NMI / ARI and k-NN accuracy.

    python -m experiments.sela --config local              # 8.5 minutes on two CPU cores
    python -m experiments.sela --config local --set epochs=2 --id t
    python -m experiments.sela --config cifar10 --set data_dir=~/tensorflow_datasets   # TFDS, prepared
    python -m experiments.sela --config imagenet --set data_dir=... --set cache_dir=...

The TFDS variants ('cifar10', 'imagenet'; configs/sela.py) first write each split
once as a uint8 .npy memmap (:func:`experiments.common.selfsup_data`; resumable, with
progress lines).

Trains with :func:`jaxinterp.train.selfsup.fit` (:class:`jaxinterp.train.sela.SeLa`), checkpointing
every epoch under ``<out>/<id>/ckpt`` (rerun with the same --id to resume), and
writes ``<out>/<id>/config.json``, ``history.json`` (per-epoch loss, NMI, ARI,
k-NN and linear-probe accuracy) and ``metrics.json`` (the final ones, the same
accuracies of the untrained net, and chance).  The trainer,
:func:`experiments.common.train_selfsup`, is shared with simclr.py, dino.py and gdt.py.
"""

from __future__ import annotations

from jaxinterp.train.sela import SeLa

from experiments import common
from experiments.configs.sela import get_config


def run(config, run_id: str | None = None) -> dict:
    """Train and write the run (module docstring); returns its metrics."""
    method = SeLa(aug=common.selfsup_augmentation(config), lam=config.lam, label_every=config.label_every,
                  label_views=config.label_views)
    return common.train_selfsup(config, run_id, method)


def main(argv=None) -> int:
    return common.main(argv, get_config, __doc__, run)


if __name__ == "__main__":
    raise SystemExit(main())
