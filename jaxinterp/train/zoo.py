"""Pretrained nets of the zoo, trained here once and cached on disk.

    net, params, info = pretrained("smallcnn")
    info["accuracy"]       # {'easy': 0.9.., 'difficult': 0.5..} on held-out synthetic sets

The package ships the trained checkpoint of the default recipe
(``jaxinterp/train/pretrained/<entry>.tar.gz``, 0.9 MB): the first call unpacks it
into ``<cache_dir>/pretrained/<entry>/``, an entry named after the recipe and a
hash of the generator's source, and loads it in seconds.  Without a shipped
checkpoint (another step count, or an edited generator, whose hash differs) the
first call trains the net on fresh batches of the synthetic 'easy' set
(:mod:`jaxinterp.data.synthetic`, minutes on a CPU), measures its accuracy on
held-out sets of both variants drawn from a key that training never uses, and
saves params and info with :mod:`jaxinterp.train.checkpoint` there.

Concurrent callers (pytest-xdist workers, several scripts) serialise on an
``fcntl`` lock next to the cache entry: the first trains, the others wait and
then load.  Training checkpoints to ``<entry>.train/`` as it goes, so a
killed first call resumes where it stopped; the cache entry itself is written
atomically by orbax at the end.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import math
import os
import shutil
import tarfile
import tempfile
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp

from jaxinterp import nets
from jaxinterp.data import synthetic
from jaxinterp.train import classifier, sharding
from jaxinterp.train.checkpoint import Checkpointer

__all__ = ["RECIPES", "pretrained", "default_cache_dir", "cache_entry"]

RECIPES = {
    "smallcnn": {"steps": 1500, "batch_size": 32, "lr": 2e-3, "seed": 0},
}
TEST_SIZE = 2048
TEST_SEED = 2**31 - 1  # key of the held-out sets; training keys come from jax.random.key(seed)
FORMAT = 1             # bump when the cached content changes
SHIPPED = os.path.join(os.path.dirname(__file__), "pretrained")   # trained checkpoints as <entry>.tar.gz


def default_cache_dir() -> str:
    """``$JAXINTERP_CACHE`` if set, else ``~/.cache/jaxinterp``."""
    return os.environ.get("JAXINTERP_CACHE") or os.path.join(os.path.expanduser("~"), ".cache",
                                                             "jaxinterp")


def pretrained(name: str = "smallcnn", *, cache_dir: str | os.PathLike | None = None,
               steps: int | None = None,
               progress: Callable[[str], Any] | None = print) -> tuple[nets.Net, dict, dict]:
    """The zoo net ``name`` trained on the synthetic 'easy' set (trained once, then cached).

    Args:
      name: the net; only ``'smallcnn'`` (8 classes, :data:`synthetic.CLASSES`) so far.
      cache_dir: cache root; None = :func:`default_cache_dir`.
      steps: training steps (None: the recipe's); each value is its own cache entry.
      progress: called with progress lines while training; None = silent.

    Returns:
      (net, params, info): the :class:`jaxinterp.nets.Net`, its params (float32 arrays on
      the default device) and a dict with ``accuracy`` ({'easy', 'difficult'} top-1 on
      held-out sets of ``test_size`` images), ``train_seconds``, ``steps``,
      ``batch_size``, ``lr``, ``seed``.
    """
    if name not in RECIPES:
        raise ValueError(f"name: no pretrained recipe for {name!r}; expected one of {sorted(RECIPES)}")
    recipe = {**RECIPES[name], **({} if steps is None else {"steps": steps})}
    if recipe["steps"] < 1:
        raise ValueError(f"steps: expected an int >= 1, got {steps}")
    net = nets.get(name, num_classes=synthetic.NUM_CLASSES)
    entry = cache_entry(name, cache_dir=cache_dir, steps=steps)
    os.makedirs(os.path.dirname(entry), exist_ok=True)
    with _locked(entry + ".lock"):
        _unpack_shipped(entry)
        with Checkpointer(entry, max_to_keep=1) as ckpt:
            if ckpt.latest_step() is None:
                params, info = _train(net, recipe, entry + ".train", progress)
                ckpt.save(recipe["steps"], params, info)
                shutil.rmtree(entry + ".train", ignore_errors=True)
            params, info = ckpt.restore(like=net.abstract_params())
    return net, params, info


def cache_entry(name: str = "smallcnn", *, cache_dir: str | os.PathLike | None = None,
                steps: int | None = None) -> str:
    """The checkpoint directory :func:`pretrained` uses for ``name`` (the recipe and the data version in its name)."""
    recipe = {**RECIPES[name], **({} if steps is None else {"steps": steps})}
    root = os.path.join(os.fspath(cache_dir or default_cache_dir()), "pretrained")
    return os.path.join(root, f"{name}-easy-v{FORMAT}-data{_data_version()}"
                              f"-steps{recipe['steps']}-seed{recipe['seed']}")


def _unpack_shipped(entry: str) -> None:
    """Unpack the shipped checkpoint of ``entry`` (if there is one) when the cache lacks it.

    Unpacked into a temporary directory beside the entry, then renamed into place, so a
    reader never sees half a checkpoint.
    """
    asset = os.path.join(SHIPPED, os.path.basename(entry) + ".tar.gz")
    if os.path.isdir(entry) or not os.path.exists(asset):
        return
    tmp = tempfile.mkdtemp(dir=os.path.dirname(entry), prefix=".unpack-")
    try:
        with tarfile.open(asset) as tar:
            tar.extractall(tmp, filter="data")
        os.rename(os.path.join(tmp, os.path.basename(entry)), entry)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _train(net: nets.Net, recipe: dict, checkpoint_dir: str, progress) -> tuple[dict, dict]:
    """Fit ``net`` with ``recipe`` (resuming from ``checkpoint_dir``), then test it."""
    if progress is not None:
        progress(f"training {net} on synthetic 'easy' ({recipe}); cached once done")
    devices = jax.devices()[:math.gcd(recipe["batch_size"], jax.device_count())]
    mesh = sharding.data_mesh(devices)
    start = time.perf_counter()
    state, _ = classifier.fit(net, _easy, steps=recipe["steps"], batch_size=recipe["batch_size"],
                              lr=recipe["lr"], seed=recipe["seed"], checkpoint_dir=checkpoint_dir,
                              checkpoint_every=100, log_every=100, progress=progress, mesh=mesh)
    seconds = time.perf_counter() - start
    accuracy = {}
    for variant in synthetic.VARIANTS:
        test = synthetic.generate(jax.random.key(TEST_SEED), TEST_SIZE, variant=variant)
        accuracy[variant] = classifier.evaluate(net, state.params, test["image"], test["label"],
                                                mesh=mesh)
    info = {"name": net.name, "accuracy": accuracy, "test_size": TEST_SIZE, "test_seed": TEST_SEED,
            "train_seconds": seconds, **recipe}
    if progress is not None:
        progress(f"trained {net.name} in {seconds:.0f}s: test accuracy {accuracy}")
    return state.params, info


def _data_version() -> str:
    """The first 8 hex digits of the SHA-256 of synthetic.py: editing the generator retrains."""
    with open(synthetic.__file__, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()[:8]


@functools.partial(jax.jit, static_argnums=1)
def _easy(key: jax.Array, n: int) -> dict:
    """``synthetic.generate(key, n, variant='easy')``, rendering exactly n examples.

    Example i is ``synthetic.sample(fold_in(key, i))`` as in ``generate``, which renders
    whole chunks of 256 examples: for a training batch of 32 this is ~3x faster.
    """
    keys = jax.vmap(jax.random.fold_in, (None, 0))(key, jnp.arange(n))
    return jax.vmap(functools.partial(synthetic.sample, variant="easy"))(keys)


@contextlib.contextmanager
def _locked(path: str):
    """Hold an exclusive ``fcntl`` lock on ``path`` (released on exit or when the process dies)."""
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
