"""A small resumable trainer for self-supervised objectives: SeLa self-labelling and SimCLR (InfoNCE).

    net = nets.get("smallcnn", num_classes=32)            # logits = cluster scores (SeLa)
    state, history = fit(net, images, epochs=20, batch_size=128, method="sela",
                         classes=labels, heldout=(test_images, test_labels),
                         checkpoint_dir="runs/sela/ckpt")

Methods (``method``):

* ``'sela'`` (Asano, Rupprecht and Vedaldi, ICLR 2020): the net's logits are the
  scores of K clusters.  Every ``label_every`` epochs (from epoch 0) the labels of
  the whole data set are re-estimated by :func:`jaxinterp.objectives.sinkhorn_labels`
  on the logits of the un-augmented images (equipartitioned, lambda ``lam``); in
  between, the net is trained by cross-entropy on one augmented view of each
  image against its current label.  One head (SeLa uses 10 on ImageNet; one
  suffices to show the effect on the synthetic set).
* ``'simclr'`` (Chen et al. 2020): two augmented views per image, the net's output
  (``num_classes`` = embedding dimension; the linear ``classifier`` of the
  smallcnn plays SimCLR's projection head) under
  :func:`jaxinterp.objectives.nt_xent` with ``temperature``.

Every update is one jitted call (augmentation included, on device, one key per
step: ``fold_in(fold_in(state.key, 0), step)``); epoch e visits the images in the
order ``permutation(fold_in(fold_in(state.key, 1), e))`` and drops the last
partial batch.  So a run is a pure function of its arguments: a run killed and
restarted with the same arguments resumes from its last checkpoint (written at
the end of each epoch, with the self-labels) and ends with the same params.
With several devices the batch is split over the ``'data'`` mesh axis and the
state replicated, as in :mod:`jaxinterp.train.classifier`.

Metrics per epoch (the ``history`` list and the progress lines): mean training
loss; for SeLa the NMI and ARI of the self-labels against ``classes`` (which are
used for nothing else); every ``eval_every`` epochs and at the end, the k-NN
accuracy (:func:`jaxinterp.train.metrics.knn_accuracy`) of the features at
split point ``feature_layer`` (default ``'avgpool'``) of the ``heldout`` images
against the training images.
"""

from __future__ import annotations

import functools
import math
import time
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxinterp import objectives
from jaxinterp.train import metrics, sharding
from jaxinterp.train.augment import AugmentConfig, augment
from jaxinterp.train.checkpoint import Checkpointer
from jaxinterp.train.classifier import optimizer, resume_from

__all__ = ["METHODS", "SelfSupState", "train_step", "features", "self_labels", "evaluate_knn", "fit"]

METHODS = ("sela", "simclr")


class SelfSupState(NamedTuple):
    """Everything a run needs to continue.

    Attributes:
      step: () int32 updates applied so far.
      params: the net's params.
      opt_state: optax state.
      key: the run's key (augmentation and epoch-order streams, module docstring).
      labels: (N,) int32 SeLa self-labels of the training images (zeros for SimCLR).
    """

    step: jax.Array
    params: Any
    opt_state: Any
    key: jax.Array
    labels: jax.Array


def _loss(net, method: str, aug: AugmentConfig, temperature: float, params, key, images, labels):
    if method == "sela":
        views = augment(key, images, aug)
        return objectives.cross_entropy(net.apply(params, views), labels)
    a = augment(jax.random.fold_in(key, 0), images, aug)
    b = augment(jax.random.fold_in(key, 1), images, aug)
    z = net.apply(params, jnp.concatenate([a, b]))
    n = images.shape[0]
    return objectives.nt_xent(z[:n], z[n:], temperature=temperature)


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3, 4))
def train_step(net, tx: optax.GradientTransformation, method: str, aug: AugmentConfig,
               temperature: float, state: SelfSupState, images: jax.Array,
               labels: jax.Array) -> tuple[SelfSupState, jax.Array]:
    """One update on a batch (jitted; ``net``, ``tx``, ``method``, ``aug``, ``temperature`` static).

    Args:
      state: the current :class:`SelfSupState`.
      images: (B, H, W, 3) float32 in [0, 1] (possibly sharded over ``'data'``).
      labels: (B,) int32 self-labels of these images (ignored by SimCLR).

    Returns:
      (state, loss): the updated state and the batch loss before the update.
    """
    key = jax.random.fold_in(jax.random.fold_in(state.key, 0), state.step)
    loss, grads = jax.value_and_grad(
        lambda p: _loss(net, method, aug, temperature, p, key, images, labels))(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return SelfSupState(state.step + 1, params, opt_state, state.key, state.labels), loss


@functools.partial(jax.jit, static_argnums=(0, 3))
def _forward(net, params, images, stop):
    return net.apply(params, images, stop=stop)


def features(net, params, images, *, stop: str | None = None, batch_size: int = 256,
             mesh: jax.sharding.Mesh | None = None) -> np.ndarray:
    """``net.apply(params, images, stop=stop)`` in padded batches over ``mesh``, as a float32 numpy array."""
    mesh = sharding.data_mesh() if mesh is None else mesh
    devices = mesh.shape[sharding.DATA]
    n = len(images)
    batch_size = min(math.ceil(batch_size / devices), math.ceil(n / devices)) * devices
    params = sharding.replicate(params, mesh)
    out = []
    for i in range(0, n, batch_size):
        x = np.asarray(images[i:i + batch_size], np.float32)
        pad = batch_size - len(x)
        x = np.pad(x, ((0, pad), (0, 0), (0, 0), (0, 0)))
        y = np.asarray(_forward(net, params, sharding.shard_batch(x, mesh), stop))
        out.append(y[:len(y) - pad].reshape(len(y) - pad, -1))
    return np.concatenate(out)


def self_labels(net, params, images, *, lam: float = 25.0, mesh=None) -> objectives.SinkhornResult:
    """SeLa's label step: :func:`sinkhorn_labels` of the logits of all ``images`` (un-augmented)."""
    return objectives.sinkhorn_labels(jnp.asarray(features(net, params, images, mesh=mesh)), lam=lam)


def evaluate_knn(net, params, train, heldout, *, layer: str = "avgpool", k: int = 20, mesh=None) -> float:
    """k-NN accuracy of held-out images from the features at ``layer`` of the training images.

    Args:
      train, heldout: (images (N, H, W, 3), labels (N,)) pairs.
    """
    ftr = features(net, params, train[0], stop=layer, mesh=mesh)
    fte = features(net, params, heldout[0], stop=layer, mesh=mesh)
    return metrics.knn_accuracy(ftr, np.asarray(train[1]), fte, np.asarray(heldout[1]), k=min(k, len(ftr)))


def fit(net, images, *, epochs: int, batch_size: int, method: str = "sela", lr: float = 1e-3,
        seed: int = 0, aug: AugmentConfig | None = None, lam: float = 25.0, label_every: int = 1,
        temperature: float = 0.1, classes=None, heldout=None, eval_every: int = 5, knn_k: int = 20,
        feature_layer: str = "avgpool", checkpoint_dir: str | None = None,
        until_epoch: int | None = None, progress: Callable[[str], Any] | None = print,
        mesh: jax.sharding.Mesh | None = None) -> tuple[SelfSupState, list[dict]]:
    """Train ``net`` without labels on ``images`` (module docstring).

    Args:
      net: a :class:`jaxinterp.nets.Net`; for SeLa ``num_classes`` = number of clusters K
        (K <= N), for SimCLR the embedding dimension.
      images: (N, H, W, 3) float32 in [0, 1] (host memory; the whole training set).
      epochs: passes over the data (a resumed run counts the restored ones), >= 1.
      batch_size: images per update, a multiple of the devices of ``mesh``, <= N.
      method: ``'sela'`` or ``'simclr'``.
      lr: peak Adam learning rate (``classifier.optimizer``: warm-up then cosine).
        SeLa and SimCLR use SGD / LARS at larger batch sizes; Adam trains this small
        net on small batches without tuning.
      seed: ``jax.random.key(seed)`` makes the init and run keys.
      aug: the augmentation (default ``AugmentConfig.simclr`` at the image size, scale
        (0.2, 1) as in SimCLR's CIFAR setting).
      lam: SeLa's lambda (25, SeLa ImageNet).
      label_every: SeLa: epochs between label updates (1; SeLa spreads ~80 label steps
        over 400 epochs, a rate set by the cost of ImageNet, not needed here).
      temperature: SimCLR's temperature (0.1).
      classes: (N,) int true classes, used only for the NMI / ARI metrics (optional).
      heldout: (images, labels) for the k-NN metric (optional; ``classes`` required).
      eval_every: epochs between k-NN evaluations (and at the end).
      knn_k: neighbours of the k-NN vote (20).
      feature_layer: the split point whose activations are the features ('avgpool').
      checkpoint_dir: save at the end of every epoch and resume from the latest there
        (which must come from a run with the same arguments).
      until_epoch: stop after this epoch (as if killed; a later call resumes), or None.
      progress: called with each progress line; None = silent.
      mesh: a ``'data'`` mesh; None = all devices.

    Returns:
      (state, history): the final :class:`SelfSupState` and one dict per epoch with
      ``epoch``, ``step``, ``loss``, ``seconds`` and, when computed, ``nmi``, ``ari``,
      ``knn_accuracy``.
    """
    if method not in METHODS:
        raise ValueError(f"method: expected one of {METHODS}, got {method!r}")
    if np.ndim(images) != 4 or np.shape(images)[-1] != 3:
        raise ValueError(f"images: expected shape (N, H, W, 3), got {np.shape(images)}")
    n = len(images)
    mesh = sharding.data_mesh() if mesh is None else mesh
    devices = mesh.shape[sharding.DATA]
    if not isinstance(epochs, (int, np.integer)) or epochs < 1:
        raise ValueError(f"epochs: expected an int >= 1, got {epochs!r}")
    if batch_size < 1 or batch_size % devices or batch_size > n:
        raise ValueError(f"batch_size: expected a positive multiple of the {devices} devices, "
                         f"at most N = {n}, got {batch_size}")
    if label_every < 1 or eval_every < 1:
        raise ValueError(f"label_every: expected ints >= 1 (and eval_every), got {label_every}, {eval_every}")
    if classes is not None and np.shape(classes) != (n,):
        raise ValueError(f"classes: expected shape ({n},), got {np.shape(classes)}")
    if heldout is not None and classes is None:
        raise ValueError("classes: required with heldout (the k-NN training labels)")
    if method == "sela" and net.num_classes > n:
        raise ValueError(f"net: SeLa needs K = num_classes <= N = {n}")
    aug = AugmentConfig.simclr(size=np.shape(images)[1:3], scale=(0.2, 1.0)) if aug is None else aug
    steps_per_epoch = n // batch_size
    total = epochs * steps_per_epoch
    tx = optimizer(lr, total)
    config = {"net": repr(net), "method": method, "epochs": epochs, "batch_size": batch_size, "lr": lr,
              "seed": seed, "aug": repr(aug), "lam": lam, "label_every": label_every,
              "temperature": temperature, "n": n}
    init_key, run_key = jax.random.split(jax.random.key(seed))
    params = net.init(init_key)
    state = SelfSupState(jnp.zeros((), jnp.int32), params, tx.init(params), run_key,
                         jnp.zeros((n,), jnp.int32))
    state = sharding.replicate(state, mesh)
    images = np.asarray(images, np.float32)
    ckpt = None if checkpoint_dir is None else Checkpointer(checkpoint_dir, max_to_keep=2)
    history = []
    try:
        if ckpt is not None and ckpt.latest_step() is not None:
            state = resume_from(ckpt, state, config, progress)
        start = time.perf_counter()
        host_key = jax.device_put(state.key, mesh.devices.flat[0])
        last = epochs if until_epoch is None else min(epochs, int(until_epoch))
        for epoch in range(int(state.step) // steps_per_epoch, last):
            row = {"epoch": epoch + 1}
            if method == "sela" and epoch % label_every == 0:
                result = self_labels(net, state.params, images, lam=lam, mesh=mesh)
                state = state._replace(labels=sharding.replicate(result.labels, mesh))
            if method == "sela" and classes is not None:
                y = np.asarray(state.labels)
                row.update(nmi=metrics.nmi(y, np.asarray(classes)), ari=metrics.ari(y, np.asarray(classes)))
            order = np.asarray(jax.random.permutation(
                jax.random.fold_in(jax.random.fold_in(host_key, 1), epoch), n))
            labels = np.asarray(state.labels)
            losses = []
            for b in range(steps_per_epoch):
                idx = order[b * batch_size:(b + 1) * batch_size]
                x, y = sharding.shard_batch((images[idx], labels[idx]), mesh)
                state, loss = train_step(net, tx, method, aug, temperature, state, x, y)
                losses.append(loss)
            row.update(step=int(state.step), loss=float(np.mean([float(v) for v in losses])))
            if heldout is not None and ((epoch + 1) % eval_every == 0 or epoch + 1 == epochs):
                row["knn_accuracy"] = evaluate_knn(net, state.params, (images, classes), heldout,
                                                   layer=feature_layer, k=knn_k, mesh=mesh)
            row["seconds"] = time.perf_counter() - start
            history.append(row)
            if ckpt is not None:
                ckpt.save(int(state.step), state, config, force=True)
            if progress is not None:
                progress("epoch {epoch}/{epochs}  ".format(epoch=epoch + 1, epochs=epochs)
                         + "  ".join(f"{k} {v:.4f}" for k, v in row.items()
                                     if k not in ("epoch", "step", "seconds"))
                         + f"  {row['seconds']:.1f}s")
    finally:
        if ckpt is not None:
            ckpt.close()
    return jax.device_put(state, mesh.devices.flat[0]), history
