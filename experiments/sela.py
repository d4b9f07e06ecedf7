"""SeLa self-labelling of the smallcnn on the synthetic set, with NMI / ARI and k-NN accuracy.

    python experiments/sela.py --variant local             # a few minutes on a CPU
    python experiments/sela.py --variant local --set epochs=2 --id t

Trains with :func:`jaxinterp.train.selfsup.fit` (method 'sela'), checkpointing
every epoch under ``<out>/<id>/ckpt`` (rerun with the same --id to resume), and
writes ``<out>/<id>/config.json``, ``history.json`` (per-epoch loss, NMI, ARI,
k-NN accuracy) and ``metrics.json`` (the final ones, the k-NN accuracy of the
untrained net and chance).
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common  # noqa: E402
from configs import sela as sela_config  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402

from jaxinterp import nets  # noqa: E402
from jaxinterp.data import synthetic  # noqa: E402
from jaxinterp.report import write_json  # noqa: E402
from jaxinterp.train import selfsup  # noqa: E402
from jaxinterp.train.augment import AugmentConfig  # noqa: E402

METHOD = "sela"


def load_data(config, run_dir: str):
    """Training and held-out synthetic 'easy' images (cached as .npz in the run directory)."""
    out = []
    for name, n, seed in (("train", config.images, 1), ("heldout", config.heldout, 2)):
        path = os.path.join(run_dir, f"{name}.npz")
        data = _common.load_npz(path)
        if data is None:
            data = {k: np.asarray(v) for k, v in
                    synthetic.generate(jax.random.key(seed), n, size=config.size).items() if k in ("image", "label")}
            _common.save_npz(path, **data)
        out.append(data)
    return out


def run(config, run_id: str | None, method: str = METHOD, net_outputs: int | None = None) -> dict:
    import time
    log = _common.logger(method)
    run_id = run_id or time.strftime("%Y%m%d-%H%M%S")
    run_dir = _common.prepare_run(config, run_id, config.out, log)
    train, held = load_data(config, run_dir)
    net = nets.get("smallcnn", num_classes=net_outputs or config.clusters)
    aug = AugmentConfig.simclr(size=(config.size, config.size), scale=tuple(config.scale),
                               blur_sigma=(0.1, config.blur_max))
    extra = {"lam": config.lam, "label_every": config.label_every} if method == "sela" else \
        {"temperature": config.temperature}
    state, history = selfsup.fit(
        net, train["image"], epochs=config.epochs, batch_size=config.batch_size, method=method,
        lr=config.lr, seed=config.seed, aug=aug, classes=train["label"],
        heldout=(held["image"], held["label"]), eval_every=config.eval_every, knn_k=config.knn_k,
        checkpoint_dir=os.path.join(run_dir, "ckpt"), progress=log, **extra)
    init = net.init(jax.random.key(config.seed))
    baseline = selfsup.evaluate_knn(net, init, (train["image"], train["label"]),
                                    (held["image"], held["label"]), k=config.knn_k)
    final = selfsup.evaluate_knn(net, state.params, (train["image"], train["label"]),
                                 (held["image"], held["label"]), k=config.knn_k)
    metrics = {"method": method, "epochs": config.epochs, "steps": int(state.step),
               "knn_accuracy": final, "knn_accuracy_untrained": baseline,
               "chance": 1.0 / synthetic.NUM_CLASSES}
    if method == "sela":
        y = np.asarray(state.labels)
        metrics.update(nmi=selfsup.metrics.nmi(y, train["label"]), ari=selfsup.metrics.ari(y, train["label"]))
    if history:
        write_json(os.path.join(run_dir, "history.json"), history)
    write_json(os.path.join(run_dir, "metrics.json"), metrics)
    log(f"k-NN accuracy {final:.3f} (untrained {baseline:.3f}, chance {metrics['chance']:.3f}) "
        f"-> {run_dir}/metrics.json")
    return metrics


def main(argv=None) -> dict:
    args, config = _common.parse(argv, sela_config.get_config, __doc__)
    return run(config, args.id)


if __name__ == "__main__":
    main()
