"""SimCLR (InfoNCE / NT-Xent) of the smallcnn on the synthetic set, with k-NN accuracy.

    python experiments/simclr.py --variant local
    python experiments/simclr.py --variant local --set epochs=2 --id t

The trainer, outputs and resumption of experiments/sela.py, with method 'simclr'.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common  # noqa: E402
import sela  # noqa: E402
from configs import simclr as simclr_config  # noqa: E402


def main(argv=None) -> dict:
    args, config = _common.parse(argv, simclr_config.get_config, __doc__)
    return sela.run(config, args.id, method="simclr", net_outputs=config.embedding)


if __name__ == "__main__":
    main()
