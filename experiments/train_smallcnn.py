"""Train (or load from the cache) the smallcnn on the synthetic set and record its accuracy.

    python experiments/train_smallcnn.py                 # the cached recipe (minutes on a CPU)
    python experiments/train_smallcnn.py --variant local --steps 50

Training checkpoints as it goes (a killed run resumes) and the result is cached,
so later runs, the tests and ``jaxinterp demo`` load it.  Writes
``<out>/<id>/config.json`` and ``metrics.json`` (held-out accuracy on the easy
and difficult variants, training time).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from configs import smallcnn as smallcnn_config  # noqa: E402

from jaxinterp.report import write_json  # noqa: E402
from jaxinterp.train import zoo  # noqa: E402


def run(config, run_id: str) -> dict:
    """Train or load the net described by ``config``; write and return its metrics."""
    _, _, info = zoo.pretrained("smallcnn", steps=config.steps, cache_dir=config.cache_dir,
                                progress=lambda line: print(line, flush=True))
    out = os.path.join(config.out, run_id)
    os.makedirs(out, exist_ok=True)
    write_json(os.path.join(out, "config.json"), config.to_dict())
    write_json(os.path.join(out, "metrics.json"), info)
    print(f"accuracy {info['accuracy']} -> {out}/metrics.json")
    return info


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--variant", default="full", choices=("full", "local"))
    ap.add_argument("--steps", type=int, help="override config.steps")
    ap.add_argument("--out", help="override config.out")
    ap.add_argument("--cache-dir", help="override config.cache_dir")
    ap.add_argument("--id", default=time.strftime("%Y%m%d-%H%M%S"))
    args = ap.parse_args(argv)
    config = smallcnn_config.get_config(args.variant)
    for field in ("steps", "out", "cache_dir"):
        if getattr(args, field) is not None:
            setattr(config, field, getattr(args, field))
    return run(config, args.id)


if __name__ == "__main__":
    main()
