"""Pieces shared by the experiments: command line, run directories, resumable shards, data, trainers.

Not a library module: experiments/ is where everything meets (see docs/design.md, Package layering).
What more than one experiment needs lives here, so that experiments never import each other:

* the command line of every experiment (:func:`parse`, :func:`main`, :func:`results`) and
  its run directory (:func:`prepare_run`, :func:`shards`, :func:`save_npz`, :func:`load_npz`);
* the attribution method table and the smallcnn (:func:`method_table`, :func:`load_smallcnn`);
* the data of the evaluation experiments pointing_game.py, extremal.py and channel_diffing.py
  (:func:`dataset_batches`, :func:`setup`, :func:`device_batch`);
* the held-out images of feature_vis.py, deepdream.py and pre_image.py (:func:`held_out_images`);
* the self-supervised trainer of sela.py, simclr.py, dino.py and gdt.py (:func:`train_selfsup`,
  :func:`selfsup_data`, :func:`selfsup_augmentation`).
"""

from __future__ import annotations

import argparse
import ast
import io
import os
import sys
import time
from typing import Callable

import jax
import numpy as np

from jaxinterp import nets, xla_cpu
from jaxinterp.demo import methods
from jaxinterp.data import images as photographs, synthetic, tfds as jtfds
from jaxinterp.evaluation import explain_fn as _explain_fn, method_slug
from jaxinterp.report import atomic_write, write_json
from jaxinterp.train import selfsup, sharding, zoo
from jaxinterp.train.augment import AugmentConfig

CENTRE = "centre"


def slug(title: str) -> str:
    """'IG blur (8)' -> 'integrated_gradients_blur', 'Grad-CAM' -> 'grad_cam' (``evaluation.method_slug``)."""
    return method_slug(title)


def method_table(quick: bool, only=()) -> dict[str, tuple[str, Callable, dict]]:
    """slug -> (title, method, options): every method of ``jaxinterp demo`` on the smallcnn, and extremal perturbations.

    Args:
      quick: fewer samples for the sampling methods.
      only: slugs to keep (empty = all), in the order given.
    """
    table = {slug(t): (t, m, o) for t, m, o in [*methods.smallcnn_methods(quick), methods.smallcnn_extremal_method(quick)]}
    only = list(only)
    unknown = [s for s in only if s not in table]
    if unknown:
        raise ValueError(f"methods: unknown {unknown}; expected some of {list(table)}")
    return {s: table[s] for s in only} if only else table


def load_smallcnn(config, log) -> tuple[nets.Net, dict, dict]:
    """The trained (cached) smallcnn, or a random one when ``config.pretrained`` is False."""
    if not config.pretrained:
        log("pretrained=False: untrained smallcnn (random initialisation)")
        net = nets.get("smallcnn", num_classes=synthetic.NUM_CLASSES)
        return net, net.init(jax.random.key(0)), {}
    log("loading the pretrained smallcnn (trained and cached on first use)")
    return zoo.pretrained("smallcnn", cache_dir=config.cache_dir, progress=log)


def synthetic_set(images: int, cache: str | None = None) -> dict[str, np.ndarray]:
    """``images`` held-out synthetic images of each variant (easy first), with a 'difficult' flag.

    With ``cache`` (an .npz path) the set is read from there if present, else written there
    (rendering compiles for ~20 s on a CPU; a resumed run skips it).
    """
    if cache is not None:
        done = load_npz(cache)
        if done is not None and len(done["label"]) == 2 * images:
            return done
    parts = []
    for variant in synthetic.VARIANTS:
        ex = {k: np.asarray(v) for k, v in
              synthetic.generate(jax.random.key(zoo.TEST_SEED), images, variant=variant, size=64).items()}
        ex["difficult"] = np.full(images, variant == "difficult")
        parts.append(ex)
    data = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    if cache is not None:
        os.makedirs(os.path.dirname(cache) or ".", exist_ok=True)
        save_npz(cache, **data)
    return data


def explain_fn(net, title: str, method: Callable, options: dict) -> Callable:
    """``jit(params, x, target) -> maps`` at image resolution, cached (``evaluation.explain_fn``)."""
    return _explain_fn(net, title, method, options)


def save_npz(path: str, **arrays) -> None:
    """Write an .npz atomically (a killed run never leaves a half-written shard)."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write(path, buf.getvalue())


def load_npz(path: str) -> dict[str, np.ndarray] | None:
    """The arrays of a finished shard, or None if it does not exist."""
    if not os.path.exists(path):
        return None
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def shards(run_dir: str, batches, compute: Callable[[dict], dict], log, num: int | None = None,
           describe: Callable[[dict], str] = lambda batch: "") -> tuple[list[dict], int]:
    """Each batch's results, computed once and kept as ``<run_dir>/shards/b<index>.npz`` (resumable).

    Args:
      batches: iterable of (index, batch); compute: batch -> dict of arrays.
      log: progress printer; num: number of batches, if known; describe: batch -> text of its log line.

    Returns:
      (list of the shards' arrays in batch order, number computed in this call).
    """
    out, computed = [], 0
    for b, batch in batches:
        path = os.path.join(run_dir, "shards", f"b{b:05d}.npz")
        done = load_npz(path)
        if done is None:
            t0 = time.perf_counter()
            done = compute(batch)
            save_npz(path, **done)
            computed += 1
            log(f"batch {b + 1}/{num or '?'}: {describe(batch)} in {time.perf_counter() - t0:.1f}s")
        out.append(done)
    log(f"computed {computed} batches, {len(out) - computed} resumed from disk")
    return out, computed


# -- the evaluation experiments' data (pointing_game.py, extremal.py, channel_diffing.py) -------------
# Batches of image (B, H, W, 3), target / valid / difficult (B, T), mask (B, T, H, W).


TFDS_NAMES = {"voc07": ("voc/2007", "test"), "coco14": ("coco/2014", "validation")}


def synthetic_batches(config, run_dir):
    """(number of batches, iterator of (index, batch)) over the synthetic ground-truth set."""
    data = synthetic_set(config.images, cache=os.path.join(run_dir, "data.npz"))
    n, b = len(data["label"]), config.batch_size
    num = -(-n // b)

    def it():
        for i in range(num):
            s = slice(i * b, (i + 1) * b)
            k = len(data["label"][s])
            yield i, {"image": data["image"][s], "target": data["label"][s, None].astype(np.int32),
                      "mask": data["mask"][s, None].astype(bool), "valid": np.ones((k, 1), bool),
                      "difficult": data["difficult"][s, None]}
    return num, it(), synthetic.NUM_CLASSES


def tfds_batches(config, num_classes):
    """(number of batches or None, iterator, C) over VOC07 test / COCO14 val from ``config.data_dir``.

    Targets are the classes present in each image, padded to ``config.max_targets``
    (valid = False on padding); masks are the per-class unions of the boxes
    (``jaxinterp.data.tfds.box_masks``).  'difficult' = the image indices listed in
    ``config.difficult_list`` (all False without one).
    """
    if not config.data_dir:
        raise ValueError(f"data_dir: dataset {config.dataset!r} needs the TFDS data_dir")
    name, split = TFDS_NAMES[config.dataset]
    if config.images:
        split = f"{split}[:{int(config.images)}]"
    listed = set()
    if config.difficult_list:
        with open(os.path.expanduser(config.difficult_list)) as f:
            listed = {int(line.split()[0]) for line in f if line.strip()}
    loader = jtfds.load(name, os.path.expanduser(config.data_dir), split=split,
                            image_size=config.image_size, batch_size=config.batch_size)
    t_max = config.max_targets

    def it():
        start = 0
        for i, batch in enumerate(loader):
            labels = np.asarray(batch["labels"], bool)                       # (B, C)
            k = labels.shape[0]
            target = np.zeros((k, t_max), np.int32)
            valid = np.zeros((k, t_max), bool)
            for r in range(k):
                present = np.flatnonzero(labels[r])[:t_max]
                target[r, :len(present)], valid[r, :len(present)] = present, True
            masks = np.asarray(jtfds.box_masks(batch["boxes"], batch["box_labels"], num_classes,
                                                   config.image_size))          # (B, C, S, S)
            mask = np.take_along_axis(masks, target[:, :, None, None], axis=1)
            difficult = np.array([start + r in listed for r in range(k)])[:, None] & valid
            start += k
            yield i, {"image": np.asarray(batch["image"], np.float32), "target": target, "mask": mask,
                      "valid": valid, "difficult": difficult}
    return None, it(), num_classes


def dataset_batches(config, run_dir: str, num_classes: int):
    """(number of batches or None, iterator of (index, batch), classes) of ``config.dataset``."""
    if config.dataset == "synthetic":
        return synthetic_batches(config, run_dir)
    return tfds_batches(config, num_classes)


def setup(config, run_id: str | None, log):
    """Check ``config.dataset``, prepare the run directory, load the net: (run_dir, net, params, mesh).

    ``params`` are replicated over the data mesh of all devices when there are several.
    """
    run_id = run_id or time.strftime("%Y%m%d-%H%M%S")
    if config.dataset not in ("synthetic", *TFDS_NAMES):
        raise ValueError(f"dataset: expected 'synthetic', 'voc07' or 'coco14', got {config.dataset!r}")
    run_dir = prepare_run(config, run_id, config.out, log)
    net, params, _ = load_net(config, log)
    mesh = sharding.data_mesh()
    if mesh.size > 1:
        params = sharding.replicate(params, mesh)
    return run_dir, net, params, mesh


def load_net(config, log):
    """(net, params, info) of ``config.dataset``: the smallcnn, or ``config.net`` with ``config.weights``."""
    if config.dataset == "synthetic":
        return load_smallcnn(config, log)
    classes = jtfds.VOC_CLASSES if config.dataset == "voc07" else jtfds.COCO_CLASSES
    net = nets.get(config.net, num_classes=len(classes))
    if not config.weights:
        raise ValueError(f"weights: dataset {config.dataset!r} needs converted weights for {config.net}")
    log(f"loading {config.net} from {config.weights}")
    return net, nets.weights.load(config.net, os.path.expanduser(config.weights), num_classes=len(classes)), {}


def _pad(batch, n_dev):
    """Pad the batch to a multiple of the device count (repeating the last row)."""
    k = batch["image"].shape[0]
    extra = -k % n_dev
    if not extra:
        return batch
    return {key: np.concatenate([v, np.repeat(v[-1:], extra, axis=0)]) for key, v in batch.items()}


def device_batch(batch, mesh, keys=("image", "target")) -> tuple:
    """The ``keys`` of a batch padded to a multiple of the devices and, with several, sharded over 'data'."""
    padded = _pad(batch, mesh.size)
    arrays = tuple(padded[k] for k in keys)
    return sharding.shard_batch(arrays, mesh) if mesh.size > 1 else arrays


# -- held-out images (feature_vis.py, deepdream.py, pre_image.py) ----------------------------------------


def held_out_images(num_synthetic: int, photos, size: int, cache: str | None = None) -> dict[str, np.ndarray]:
    """Held-out images (N, size, size, 3) float32 in [0, 1] with a name each (cached in ``cache``, an .npz).

    ``num_synthetic`` images of each synthetic variant (the held-out key
    ``zoo.TEST_SEED``, never used in training), then the named photographs.
    """
    if cache is not None:
        done = load_npz(cache)
        if done is not None:
            return done
    parts, names = [], []
    if num_synthetic:
        for variant in synthetic.VARIANTS:
            ex = synthetic.generate(jax.random.key(zoo.TEST_SEED), num_synthetic, variant=variant, size=size)
            parts.append(np.asarray(ex["image"], np.float32))
            names += [f"{variant} {i} ({synthetic.CLASSES[int(l)]})" for i, l in enumerate(np.asarray(ex["label"]))]
    if photos:
        parts.append(photographs.batch(list(photos), size=size))
        names += list(photos)
    if not parts:
        raise ValueError("held_out: expected held-out synthetic images or photos, got neither")
    data = {"image": np.concatenate(parts), "name": np.asarray(names)}
    if cache is not None:
        save_npz(cache, **data)
    return data


# -- the self-supervised trainer (sela.py, simclr.py, dino.py, gdt.py) -----------------------------------


SELFSUP_DATASETS = ("synthetic", "cifar10", "imagenet2012")
SELFSUP_NUM_CLASSES = {"synthetic": synthetic.NUM_CLASSES, "cifar10": 10, "imagenet2012": 1000}
HELDOUT_SPLIT = {"cifar10": "test", "imagenet2012": "validation"}


def selfsup_data(config, run_dir: str, progress=None):
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
    if dataset not in SELFSUP_DATASETS:
        raise ValueError(f"dataset: expected one of {SELFSUP_DATASETS}, got {dataset!r}")
    if dataset == "synthetic":
        out = []
        for name, n, seed in (("train", config.images, 1), ("heldout", config.heldout, 2)):
            path = os.path.join(run_dir, f"{name}.npz")
            data = load_npz(path)
            if data is None:
                data = {k: np.asarray(v) for k, v in
                        synthetic.generate(jax.random.key(seed), n, size=config.size).items()
                        if k in ("image", "label")}
                save_npz(path, **data)
            out.append(data)
        return out
    if not config.get("data_dir"):
        raise ValueError(f"data_dir: required for dataset {dataset!r} (the TFDS data directory "
                         f"holding it, e.g. --set data_dir=~/tensorflow_datasets)")
    log = progress or logger(dataset)
    cache_dir = config.get("cache_dir") or run_dir
    out = []
    for split, n in (("train", config.images), (HELDOUT_SPLIT[dataset], config.heldout)):
        images, labels = jtfds.cache_split(dataset, os.path.expanduser(config.data_dir),
                                           os.path.expanduser(cache_dir), split=split,
                                           image_size=config.size, num_examples=n, progress=log)
        out.append({"image": images, "label": labels})
    return out


AUGMENTATIONS = ("sela", "simclr")


def selfsup_augmentation(config) -> AugmentConfig:
    """The training augmentation of ``config`` (``augmentation``, ``size``, ``scale``, ``blur_max``)."""
    size, scale = (config.size, config.size), tuple(config.scale)
    if config.augmentation == "sela":
        return AugmentConfig.sela(size=size, scale=scale)
    if config.augmentation == "simclr":
        return AugmentConfig.simclr(size=size, scale=scale, blur_sigma=(0.1, config.blur_max))
    raise ValueError(f"augmentation: expected one of {AUGMENTATIONS}, got {config.augmentation!r}")


def train_selfsup(config, run_id: str | None, method: selfsup.Method, net_outputs: int | None = None) -> dict:
    """Train with ``selfsup.fit(method=method)`` and write the run (experiments/sela.py's docstring):
    the ``run`` of sela.py, simclr.py, dino.py and gdt.py.

    Args:
      method: the :class:`jaxinterp.train.selfsup.Method` (``SeLa``, ``SimCLR``, ``DINO``, ``GDT``)
        built from ``config`` by the experiment (with DINO's ``batch_statistics`` the smallcnn
        has batch norms and the evaluations recompute their statistics, ``precise_bn``).
      net_outputs: the smallcnn's output width (None: ``config.clusters``).

    The :class:`~jaxinterp.train.selfsup.Settings` come from ``config``: ``epochs``,
    ``batch_size``, ``lr``, ``seed``, ``eval_every``, ``knn_k`` and, where the config has
    them, ``optimiser`` and ``weight_decay``.
    """
    log = logger(method.name)
    run_id = run_id or time.strftime("%Y%m%d-%H%M%S")
    run_dir = prepare_run(config, run_id, config.out, log)
    train, held = selfsup_data(config, run_dir)
    bn = bool(getattr(method, "batch_statistics", False))    # DINO's backbone with trained batch norms
    net = nets.get("smallcnn", num_classes=net_outputs or config.clusters, batch_norm=bn)
    settings = selfsup.Settings(epochs=config.epochs, batch_size=config.batch_size, lr=config.lr, seed=config.seed,
                                optimiser_name=config.get("optimiser", "adam"),
                                weight_decay=config.get("weight_decay", 1e-6), eval_every=config.eval_every,
                                knn_k=config.knn_k, checkpoint_dir=os.path.join(run_dir, "ckpt"))
    state, history = selfsup.fit(net, train["image"], method, settings, classes=train["label"],
                                 heldout=(held["image"], held["label"]), progress=log)
    init = net.init(jax.random.key(config.seed))
    baseline = selfsup.evaluate(net, init, (train["image"], train["label"]),
                                (held["image"], held["label"]), k=config.knn_k, precise_bn=bn)
    final = selfsup.evaluate_state(net, state, method, (train["image"], train["label"]),
                                   (held["image"], held["label"]), k=config.knn_k, precise_bn=bn)
    metrics = {"method": method.name, "epochs": config.epochs, "steps": int(state.step), **final,
               **{f"{k}_untrained": v for k, v in baseline.items()},
               "chance": 1.0 / SELFSUP_NUM_CLASSES[config.get("dataset", "synthetic")]}
    if method.name == "sela":
        y = np.asarray(state.labels)
        metrics.update(nmi=selfsup.metrics.nmi(y, train["label"]), ari=selfsup.metrics.ari(y, train["label"]))
    if history:
        write_json(os.path.join(run_dir, "history.json"), history)
    write_json(os.path.join(run_dir, "metrics.json"), metrics)
    log(f"k-NN accuracy {final['knn_accuracy']:.3f}, linear probe {final['linear_probe']:.3f} (untrained "
        f"{baseline['knn_accuracy']:.3f}, {baseline['linear_probe']:.3f}; chance {metrics['chance']:.3f}) "
        f"-> {run_dir}/metrics.json")
    return metrics


# -- command line and run directory ---------------------------------------------------------------------


def logger(name: str) -> Callable[[str], None]:
    t0 = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{name} {time.perf_counter() - t0:7.1f}s] {msg}", flush=True)
    return log


def _value(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parser(doc: str, module: str | None = None) -> argparse.ArgumentParser:
    """The options of every experiment: --config (alias --variant), --id, --set, --list.

    An experiment with options of its own adds them to this parser and passes it to :func:`parse`.

    Args:
      doc: the help text (the experiment's docstring).
      module: the experiment's module name (``__name__``): its usage line reads
        ``python -m experiments.<name>``, also under ``python -m`` and ``jaxinterp run``.
    """
    spec = getattr(sys.modules.get(module or ""), "__spec__", None)
    prog = f"python -m {spec.name}" if spec is not None and spec.name else None
    ap = argparse.ArgumentParser(prog=prog, description=doc, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--config", "--variant", dest="config", default="full", metavar="NAME",
                    help="the config's name, get_config(NAME) of experiments/configs/<experiment>.py: 'full' or "
                         "'local' (some have more, e.g. sela's 'cifar10'); default 'full'")
    ap.add_argument("--id", default=None, help="run directory name (default: a timestamp); reuse it to resume")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                    help="override a config field, e.g. --set images=16 --set methods=\"['gradient']\"")
    ap.add_argument("--list", action="store_true",
                    help="list the method slugs and exit (the experiments whose config has 'methods')")
    return ap


def parse(argv, get_config, doc: str, ap: argparse.ArgumentParser | None = None, module: str | None = None):
    """(args, config): ``get_config(--config)`` with the --set fields (repeatable; Python literals or plain strings).

    Args:
      argv: the arguments (None: ``sys.argv[1:]``).
      get_config: the experiment's config function.
      doc: the help text (the experiment's docstring).
      ap: a parser of :func:`parser` with more options (default: ``parser(doc, module)``).
      module: the experiment's module name, for the usage line (:func:`parser`).
    """
    args = (ap or parser(doc, module)).parse_args(argv)
    config = get_config(args.config)
    if args.list and "methods" not in config:
        raise ValueError("--list: this experiment has no method table (its config has no 'methods' field)")
    for item in args.set:
        field, sep, text = item.partition("=")
        if not sep or field not in config:
            raise ValueError(f"--set: expected FIELD=VALUE with FIELD in {sorted(config.keys())}, got {item!r}")
        value = _value(text)
        if isinstance(config[field], list) and isinstance(value, (tuple, str)):
            value = list(value) if isinstance(value, tuple) else [value]
        if isinstance(config[field], float) and isinstance(value, int):
            value = float(value)
        config[field] = value
    return args, config


def prepare_run(config, run_id: str, out: str, log) -> str:
    """Create ``<out>/<run_id>`` and write config.json; a rerun must have the same config (resumption).

    Raises:
      ValueError: the directory holds a run of another config (its shards would be reused wrongly).
    """
    import json
    run_dir = os.path.join(out, run_id)
    os.makedirs(run_dir, exist_ok=True)
    path = os.path.join(run_dir, "config.json")
    want = json.loads(json.dumps(config.to_dict()))
    if os.path.exists(path):
        with open(path) as f:
            have = json.load(f).get("config")
        if have is not None and have != want:
            diff = sorted(k for k in set(have) | set(want) if have.get(k) != want.get(k))
            raise ValueError(f"--id: {run_dir} holds a run with another config (fields {diff}); "
                             f"use another --id or the same config to resume")
        log(f"resuming in {run_dir}")
    else:
        log(f"writing to {run_dir}")
    from jaxinterp import __version__
    write_json(path, {"config": want, "id": run_id, "jaxinterp": __version__, "jax": jax.__version__,
                      "devices": jax.device_count(), "backend": jax.default_backend()})
    return run_dir


def _execute(argv, get_config: Callable, doc: str, run: Callable) -> dict:
    args, config = parse(argv, get_config, doc, module=getattr(run, "__module__", None))
    if args.list:
        for name, (title, _, options) in method_table(config.quick).items():
            print(f"{name:28s} {title}  {options}")
        return {}
    return run(config, args.id)


def main(argv, get_config: Callable, doc: str, run: Callable) -> int:
    """An experiment's command line: ``--list`` prints the method table, otherwise ``run(config, id)``.

    Returns the exit status, 0 (errors raise).  :func:`results` returns ``run``'s metrics instead.
    """
    xla_cpu.use_cpu_flags()
    _execute(argv, get_config, doc, run)
    return 0


def results(experiment, argv=None) -> dict:
    """What ``experiment.main(argv)`` does, returning the metrics of its ``run`` ({} with --list).

    Args:
      experiment: an experiment module (``from experiments import sanity``), with ``get_config``,
        ``run(config, run_id)`` and its docstring.
      argv: its command line, e.g. ``["--config", "local", "--set", "images=2"]``.
    """
    return _execute(argv, experiment.get_config, experiment.__doc__, experiment.run)
