"""SeLa self-labelling of the smallcnn on the synthetic set, CIFAR-10 or ImageNet, with NMI / ARI and k-NN accuracy.

    python experiments/sela.py --variant local             # 8.5 minutes on two CPU cores
    python experiments/sela.py --variant local --set epochs=2 --id t
    python experiments/sela.py --variant cifar10 --set data_dir=~/tensorflow_datasets   # TFDS, prepared
    python experiments/sela.py --variant imagenet --set data_dir=... --set cache_dir=...

The TFDS variants ('cifar10', 'imagenet'; configs/sela.py) first write each split
once as a uint8 .npy memmap (:func:`load_data`; resumable, with progress lines).

Trains with :func:`jaxinterp.train.selfsup.fit` (method 'sela'), checkpointing
every epoch under ``<out>/<id>/ckpt`` (rerun with the same --id to resume), and
writes ``<out>/<id>/config.json``, ``history.json`` (per-epoch loss, NMI, ARI,
k-NN and linear-probe accuracy) and ``metrics.json`` (the final ones, the same
accuracies of the untrained net, and chance).
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
from jaxinterp.data import tfds as jtfds  # noqa: E402
from jaxinterp.report import write_json  # noqa: E402
from jaxinterp.train import selfsup  # noqa: E402
from jaxinterp.train.augment import AugmentConfig  # noqa: E402

METHOD = "sela"


DATASETS = ("synthetic", "cifar10", "imagenet2012")
NUM_CLASSES = {"synthetic": synthetic.NUM_CLASSES, "cifar10": 10, "imagenet2012": 1000}
HELDOUT_SPLIT = {"cifar10": "test", "imagenet2012": "validation"}


def load_data(config, run_dir: str, progress=None):
    """Training and held-out images and labels of ``config.dataset``.

    * ``'synthetic'`` (also when the config has no ``dataset`` field): the synthetic
      'easy' set, float32 (N, S, S, 3) in [0, 1], cached as .npz in the run directory.
    * ``'cifar10'`` / ``'imagenet2012'``: the first ``config.images`` examples of the
      TFDS 'train' split and the first ``config.heldout`` of 'test' (CIFAR-10) /
      'validation' (ImageNet), read from ``config.data_dir`` and resized to
      ``config.size`` (CIFAR-10: the whole image, the identity at 32 px; ImageNet:
      shorter side to round(S / 0.875), centre crop), as uint8 (N, S, S, 3)
      read-only memmaps of .npy files written once, resumably, in
      ``config.cache_dir`` or the run directory (:func:`jaxinterp.data.tfds.cache_split`:
      a rerun after a kill continues at the first uncommitted row without decoding
      the finished ones).

    Args:
      config: the experiment config (``dataset``, ``data_dir``, ``cache_dir``, ``size``,
        ``images``, ``heldout``).
      run_dir: the run directory.
      progress: called with the cache's progress lines (default: a logger).

    Returns:
      [train, heldout], each {'image': (N, S, S, 3), 'label': (N,) int}.

    Raises:
      ValueError: ``dataset`` unknown, or ``data_dir`` empty for a TFDS set.
    """
    dataset = config.get("dataset", "synthetic")
    if dataset not in DATASETS:
        raise ValueError(f"dataset: expected one of {DATASETS}, got {dataset!r}")
    if dataset == "synthetic":
        out = []
        for name, n, seed in (("train", config.images, 1), ("heldout", config.heldout, 2)):
            path = os.path.join(run_dir, f"{name}.npz")
            data = _common.load_npz(path)
            if data is None:
                data = {k: np.asarray(v) for k, v in
                        synthetic.generate(jax.random.key(seed), n, size=config.size).items()
                        if k in ("image", "label")}
                _common.save_npz(path, **data)
            out.append(data)
        return out
    if not config.get("data_dir"):
        raise ValueError(f"data_dir: required for dataset {dataset!r} (the TFDS data directory "
                         f"holding it, e.g. --set data_dir=~/tensorflow_datasets)")
    log = progress or _common.logger(dataset)
    cache_dir = config.get("cache_dir") or run_dir
    out = []
    for split, n in (("train", config.images), (HELDOUT_SPLIT[dataset], config.heldout)):
        images, labels = jtfds.cache_split(dataset, os.path.expanduser(config.data_dir),
                                           os.path.expanduser(cache_dir), split=split,
                                           image_size=config.size, num_examples=n, progress=log)
        out.append({"image": images, "label": labels})
    return out


AUGMENTATIONS = ("sela", "simclr")


def augmentation(config) -> AugmentConfig:
    """The training augmentation of ``config`` (``augmentation``, ``size``, ``scale``, ``blur_max``)."""
    size, scale = (config.size, config.size), tuple(config.scale)
    if config.augmentation == "sela":
        return AugmentConfig.sela(size=size, scale=scale)
    if config.augmentation == "simclr":
        return AugmentConfig.simclr(size=size, scale=scale, blur_sigma=(0.1, config.blur_max))
    raise ValueError(f"augmentation: expected one of {AUGMENTATIONS}, got {config.augmentation!r}")


def _method_options(config, method: str) -> dict:
    if method == "sela":
        return {"lam": config.lam, "label_every": config.label_every, "label_views": config.label_views}
    return {"temperature": config.temperature}


def run(config, run_id: str | None, method: str = METHOD, net_outputs: int | None = None,
        options: dict | None = None) -> dict:
    """Train with ``selfsup.fit(method=method)`` and write the run (module docstring); also used by
    experiments/simclr.py, dino.py and gdt.py.

    Args:
      net_outputs: the smallcnn's output width (None: ``config.clusters``).
      options: extra ``fit`` keyword arguments of the method, overriding the augmentation
        built here by :func:`augmentation` (e.g. DINO's ``aug`` tuple and ``n_local``;
        with ``batch_statistics`` the smallcnn has batch norms and the evaluations
        recompute their statistics, ``precise_bn``);
        None = SeLa's ``lam`` / ``label_every`` / ``label_views`` or, for the other
        methods, ``config.temperature``.
    """
    import time
    log = _common.logger(method)
    run_id = run_id or time.strftime("%Y%m%d-%H%M%S")
    run_dir = _common.prepare_run(config, run_id, config.out, log)
    train, held = load_data(config, run_dir)
    options = _method_options(config, method) if options is None else options
    bn = bool(options.get("batch_statistics", False))    # DINO's backbone with trained batch norms
    net = nets.get("smallcnn", num_classes=net_outputs or config.clusters, batch_norm=bn)
    extra = {"aug": augmentation(config), **options}
    state, history = selfsup.fit(
        net, train["image"], epochs=config.epochs, batch_size=config.batch_size, method=method,
        lr=config.lr, seed=config.seed, classes=train["label"],
        heldout=(held["image"], held["label"]), eval_every=config.eval_every, knn_k=config.knn_k,
        checkpoint_dir=os.path.join(run_dir, "ckpt"), progress=log, **extra)
    init = net.init(jax.random.key(config.seed))
    baseline = selfsup.evaluate(net, init, (train["image"], train["label"]),
                                (held["image"], held["label"]), k=config.knn_k, precise_bn=bn)
    final = selfsup.evaluate_state(net, state, method, (train["image"], train["label"]),
                                   (held["image"], held["label"]), k=config.knn_k, precise_bn=bn)
    metrics = {"method": method, "epochs": config.epochs, "steps": int(state.step), **final,
               **{f"{k}_untrained": v for k, v in baseline.items()},
               "chance": 1.0 / NUM_CLASSES[config.get("dataset", "synthetic")]}
    if method == "sela":
        y = np.asarray(state.labels)
        metrics.update(nmi=selfsup.metrics.nmi(y, train["label"]), ari=selfsup.metrics.ari(y, train["label"]))
    if history:
        write_json(os.path.join(run_dir, "history.json"), history)
    write_json(os.path.join(run_dir, "metrics.json"), metrics)
    log(f"k-NN accuracy {final['knn_accuracy']:.3f}, linear probe {final['linear_probe']:.3f} (untrained "
        f"{baseline['knn_accuracy']:.3f}, {baseline['linear_probe']:.3f}; chance {metrics['chance']:.3f}) "
        f"-> {run_dir}/metrics.json")
    return metrics


def main(argv=None) -> dict:
    args, config = _common.parse(argv, sela_config.get_config, __doc__)
    return run(config, args.id)


if __name__ == "__main__":
    main()
