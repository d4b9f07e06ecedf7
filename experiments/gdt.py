"""A GDT contrast (Patrick et al. ICCV 2021) of the smallcnn on the synthetic set, with k-NN accuracy.

    python experiments/gdt.py --variant local
    python experiments/gdt.py --variant local --set rotation=invariant --id inv

The trainer, outputs and resumption of experiments/sela.py (``metrics.json``: k-NN
accuracy, of the untrained net, chance), with method 'gdt': per image 2 augmented
views x rotation by 0 / 90 degrees, contrasted by GDT's matrix (sample distinctive,
augmentation invariant, rotation ``config.rotation``; configs/gdt.py), on sela.py's SimCLR augmentation.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common  # noqa: E402
import sela  # noqa: E402
from configs import gdt as gdt_config  # noqa: E402

ROTATIONS = ("distinctive", "invariant", "none")


def main(argv=None) -> dict:
    args, config = _common.parse(argv, gdt_config.get_config, __doc__)
    if config.rotation not in ROTATIONS:
        raise ValueError(f"rotation: expected one of {ROTATIONS}, got {config.rotation!r}")
    rotation = None if config.rotation == "none" else config.rotation
    return sela.run(config, args.id, method="gdt", net_outputs=config.embedding,
                    options={"temperature": config.temperature, "rotation": rotation})


if __name__ == "__main__":
    main()
