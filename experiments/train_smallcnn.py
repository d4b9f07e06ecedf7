"""Train (or load from the cache) the smallcnn on the synthetic set and record its accuracy.

    python -m experiments.train_smallcnn                 # the cached recipe (minutes on a CPU)
    python -m experiments.train_smallcnn --config local --set steps=50

Training checkpoints as it goes (a killed run resumes) and the result is cached,
so later runs, the tests and ``jaxinterp demo`` load it.  Writes
``<out>/<id>/config.json`` and ``metrics.json`` (held-out accuracy on the easy
and difficult variants, training time).
"""

from __future__ import annotations

import os
import time

from jaxinterp.report import write_json
from jaxinterp.train import zoo

from experiments import common
from experiments.configs.smallcnn import get_config


def run(config, run_id: str | None = None) -> dict:
    """Train or load the net described by ``config``; write and return its metrics."""
    run_id = run_id or time.strftime("%Y%m%d-%H%M%S")
    _, _, info = zoo.pretrained("smallcnn", steps=config.steps, cache_dir=config.cache_dir,
                                progress=lambda line: print(line, flush=True))
    out = os.path.join(config.out, run_id)
    os.makedirs(out, exist_ok=True)
    write_json(os.path.join(out, "config.json"), config.to_dict())
    write_json(os.path.join(out, "metrics.json"), info)
    print(f"accuracy {info['accuracy']} -> {out}/metrics.json")
    return info


def main(argv=None) -> int:
    ap = common.parser(__doc__, __name__)
    ap.add_argument("--steps", type=int, help="override config.steps (= --set steps=N)")
    ap.add_argument("--out", help="override config.out (= --set out=DIR)")
    ap.add_argument("--cache-dir", help="override config.cache_dir (= --set cache_dir=DIR)")
    args, config = common.parse(argv, get_config, __doc__, ap)
    for field in ("steps", "out", "cache_dir"):
        if getattr(args, field) is not None:
            config[field] = getattr(args, field)
    run(config, args.id)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
