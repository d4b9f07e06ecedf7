"""A small supervised training loop for image classifiers (cross-entropy, optax).

    net = nets.get("smallcnn", num_classes=8)
    data_fn = lambda key, n: synthetic.generate(key, n)   # {'image', 'label'}
    state, history = fit(net, data_fn, steps=600, batch_size=64, lr=2e-3, seed=0,
                         checkpoint_dir="runs/smallcnn/ckpt")
    acc = evaluate(net, state.params, images, labels)

The batch of step s is ``data_fn(fold_in(state.key, s), batch_size)``, so a run is
a pure function of (net, data_fn, steps, batch_size, lr, seed): a run killed
and restarted with the same arguments resumes from its last checkpoint and ends
with the same params as an uninterrupted run.  With several devices the batch
is split over the ``'data'`` mesh axis and the state replicated (data
parallelism by ``jax.jit``'s sharding propagation); on one device the same code
runs on a mesh of size 1.  Stepping, checkpoints, resume, NaN checks and progress
are :func:`jaxinterp.train.loop.run`'s.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxinterp.checks import check_int
from jaxinterp.train import loop, sharding

__all__ = ["TrainState", "optimiser", "lars_optimiser", "init_state", "loss_fn", "train_step", "evaluate", "fit"]

DataFn = Callable[[jax.Array, int], dict]


class TrainState(NamedTuple):
    """Everything a run needs to continue.

    Attributes:
      step: () int32, the number of updates applied so far.
      params: the net's params pytree.
      opt_state: the optax state of :func:`optimiser`.
      key: the data key; the batch of step s is drawn with ``fold_in(key, s)``.
    """

    step: jax.Array
    params: Any
    opt_state: Any
    key: jax.Array


@functools.lru_cache(maxsize=None)
def optimiser(lr: float, steps: int) -> optax.GradientTransformation:
    """Adam with a linear warm-up over the first 5% of steps, then cosine decay to 0.

    Built once per (lr, steps), so that ``train_step``'s compiled code (keyed on the
    optimiser object) is reused by later runs with the same hyper-parameters.

    Args:
      lr: peak learning rate, > 0.
      steps: total number of updates, >= 1.
    """
    return optax.adam(_warmup_cosine(lr, steps))


def _warmup_cosine(lr: float, steps: int) -> optax.Schedule:
    """Linear warm-up from 0 to ``lr`` over the first 5 % of ``steps``, then cosine decay to 0."""
    if not lr > 0:
        raise ValueError(f"lr: expected a positive learning rate, got {lr}")
    if steps < 1:
        raise ValueError(f"steps: expected an int >= 1, got {steps}")
    warmup = max(1, steps // 20)
    return optax.warmup_cosine_decay_schedule(0.0, lr, warmup_steps=warmup, decay_steps=max(steps, warmup + 1))


def _is_matrix(params):
    return jax.tree.map(lambda p: p.ndim > 1, params)


@functools.lru_cache(maxsize=None)
def lars_optimiser(lr: float, steps: int, weight_decay: float = 1e-6) -> optax.GradientTransformation:
    """LARS (You et al. 2017; momentum 0.9, trust coefficient 0.001) with the schedule of :func:`optimiser`.

    As in SimCLR, BYOL and DINO's LARS, biases and normalisation parameters (the
    params with ndim <= 1) get neither weight decay nor the layer-wise trust ratio.
    SimCLR's recipe: ``lr`` = 0.3 x batch / 256, ``weight_decay`` = 1e-6.

    Args:
      lr: peak learning rate, > 0.
      steps: total number of updates, >= 1.
      weight_decay: >= 0, applied to the matrices and kernels only.
    """
    if not weight_decay >= 0:
        raise ValueError(f"weight_decay: expected a number >= 0, got {weight_decay}")
    return optax.lars(_warmup_cosine(lr, steps), weight_decay=weight_decay, weight_decay_mask=_is_matrix,
                      trust_ratio_mask=_is_matrix, momentum=0.9)


def init_state(net, tx: optax.GradientTransformation, key: jax.Array) -> TrainState:
    """A fresh :class:`TrainState`: step 0, ``net.init`` params, ``tx`` state.

    Args:
      net: a :class:`jaxinterp.nets.Net`.
      tx: the optax optimiser.
      key: a ``jax.random.key``; split into the init key and the data key.
    """
    init_key, data_key = jax.random.split(key)
    params = net.init(init_key)
    return TrainState(jnp.zeros((), jnp.int32), params, tx.init(params), data_key)


def loss_fn(net, params, images: jax.Array, labels: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Mean softmax cross-entropy of ``net`` on a batch.

    ``loss = mean_i [logsumexp(z_i) - z_i[y_i]]`` with logits ``z = net.apply(params, images)``.

    Args:
      net: any hashable object with ``apply(params, images) -> logits (N, K)``.
      params: the net's params.
      images: (N, H, W, 3) float32 in [0, 1].
      labels: (N,) int, in [0, K).

    Returns:
      (loss, logits): () float32 and (N, K) float32.
    """
    logits = net.apply(params, images)
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), logits


@functools.partial(jax.jit, static_argnums=(0, 1))
def train_step(net, tx: optax.GradientTransformation, state: TrainState,
               batch: dict) -> tuple[TrainState, dict]:
    """One optimiser update on one batch (pure; jitted with ``net`` and ``tx`` static).

    Args:
      net: any hashable object with ``apply(params, images) -> logits (N, K)``.
      tx: the optax optimiser that made ``state.opt_state``.
      state: the current :class:`TrainState`.
      batch: ``{'image': (N, H, W, 3) float32, 'label': (N,) int}``, possibly sharded
        over the ``'data'`` axis (the gradient is then all-reduced by XLA).

    Returns:
      (state, metrics): the state after the update, and ``{'loss': (), 'accuracy': ()}``
      float32 on this batch before the update.
    """
    grad_fn = jax.value_and_grad(loss_fn, argnums=1, has_aux=True)
    (loss, logits), grads = grad_fn(net, state.params, batch["image"], batch["label"])
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    accuracy = jnp.mean(jnp.argmax(logits, -1) == batch["label"])
    new_state = TrainState(state.step + 1, params, opt_state, state.key)
    return new_state, {"loss": loss, "accuracy": accuracy}


@functools.partial(jax.jit, static_argnums=0)
def _count_correct(net, params, images, labels) -> jax.Array:
    return jnp.sum(jnp.argmax(net.apply(params, images), -1) == labels)


def evaluate(net, params, images, labels, batch_size: int = 256,
             mesh: jax.sharding.Mesh | None = None) -> float:
    """Top-1 accuracy of ``net`` on a labelled set, in batches, data-parallel over ``mesh``.

    Args:
      net: a :class:`jaxinterp.nets.Net` (or any hashable object with ``apply``).
      params: the net's params (any placement; replicated over ``mesh`` here).
      images: (N, H, W, 3) float32 in [0, 1], numpy or jax.
      labels: (N,) int.
      batch_size: images per forward pass (rounded up to a multiple of the device count).
      mesh: a ``'data'`` mesh; None = :func:`sharding.data_mesh` over all devices.

    Returns:
      The fraction of images whose arg-max logit is the label, a Python float.
    """
    if np.ndim(images) != 4 or np.shape(images)[-1] != 3:
        raise ValueError(f"images: expected shape (N, H, W, 3), got {np.shape(images)}")
    if np.shape(labels) != np.shape(images)[:1]:
        raise ValueError(f"labels: expected shape ({np.shape(images)[0]},), got {np.shape(labels)}")
    if batch_size < 1:
        raise ValueError(f"batch_size: expected an int >= 1, got {batch_size}")
    n = np.shape(images)[0]
    if n == 0:
        raise ValueError("images: expected at least one image, got N = 0")
    mesh = sharding.data_mesh() if mesh is None else mesh
    devices = mesh.shape[sharding.DATA]
    batch_size = min(math.ceil(batch_size / devices), math.ceil(n / devices)) * devices
    params = sharding.replicate(params, mesh)
    correct = 0
    for i in range(0, n, batch_size):
        x, y = np.asarray(images[i:i + batch_size]), np.asarray(labels[i:i + batch_size])
        pad = batch_size - len(x)  # padded rows get label -1: never counted as correct
        x = np.pad(x, ((0, pad), (0, 0), (0, 0), (0, 0)))
        y = np.pad(y.astype(np.int32), (0, pad), constant_values=-1)
        correct += int(_count_correct(net, params, *sharding.shard_batch((x, y), mesh)))
    return correct / n


def fit(net, data_fn: DataFn, *, steps: int, batch_size: int, lr: float = 1e-3, seed: int = 0,
        checkpoint_dir: str | None = None, checkpoint_every: int = 100, log_every: int = 50,
        progress: Callable[[str], Any] | None = print,
        mesh: jax.sharding.Mesh | None = None) -> tuple[TrainState, list[dict]]:
    """Train ``net`` for ``steps`` updates of Adam on fresh batches from ``data_fn``.

    Args:
      net: a :class:`jaxinterp.nets.Net`.
      data_fn: ``data_fn(key, n) -> {'image': (n, H, W, 3) float32 in [0, 1],
        'label': (n,) int}``; a pure function of its key.
      steps: total number of updates (a resumed run counts the restored ones).
      batch_size: examples per update, divisible by the number of devices of ``mesh``.
      lr: peak learning rate of :func:`optimiser`.
      seed: makes the init key and the data key (``jax.random.key(seed)``).
      checkpoint_dir: if given, save every ``checkpoint_every`` steps and at the end,
        and resume from the latest checkpoint found there (which must come from a
        run with the same net, steps, batch_size, lr and seed).
      checkpoint_every: steps between checkpoints.
      log_every: steps between progress lines (mean loss / accuracy since the last).
      progress: called with each progress line; None = silent.
      mesh: a ``'data'`` mesh; None = :func:`sharding.data_mesh` over all devices.

    Returns:
      (state, history): the final :class:`TrainState` on the first device of ``mesh``,
      and one dict ``{'step', 'loss', 'accuracy', 'seconds'}`` per progress line
      (``seconds``: training time of this call so far, compilation included).

    Raises:
      ValueError: a bad argument (named first in the message); ``checkpoint_dir`` holding
        another run.
      FloatingPointError: the training loss became NaN or infinite.
    """
    steps = check_int(steps, "steps")
    settings = loop.Loop(units=steps, checkpoint_dir=checkpoint_dir, checkpoint_every=checkpoint_every,
                         log_every=log_every)
    mesh = sharding.data_mesh() if mesh is None else mesh
    devices = mesh.shape[sharding.DATA]
    if batch_size < 1 or batch_size % devices:
        raise ValueError(f"batch_size: expected a positive multiple of the {devices} devices "
                         f"of the 'data' axis, got {batch_size}")
    tx = optimiser(lr, steps)
    config = {"net": repr(net), "steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed}
    state = init_state(net, tx, jax.random.key(seed))
    data_key = jax.device_put(state.key, mesh.devices.flat[0])

    def advance(state, step, _):
        batch = _check_batch(data_fn(jax.random.fold_in(data_key, step), batch_size), batch_size)
        return train_step(net, tx, state, sharding.shard_batch(batch, mesh))

    state, history = loop.run(state, advance, settings, config=config, progress=progress, mesh=mesh)
    return jax.device_put(state, mesh.devices.flat[0]), history


def _check_batch(batch, batch_size: int) -> dict:
    if not isinstance(batch, dict) or not {"image", "label"} <= set(batch):
        raise ValueError(f"data_fn: expected a dict with 'image' and 'label', got {type(batch).__name__}"
                         f"{' with keys ' + str(sorted(batch)) if isinstance(batch, dict) else ''}")
    image, label = batch["image"], batch["label"]
    if np.ndim(image) != 4 or np.shape(image)[0] != batch_size or np.shape(image)[-1] != 3:
        raise ValueError(f"data_fn: expected 'image' of shape ({batch_size}, H, W, 3), "
                         f"got {np.shape(image)}")
    if np.shape(label) != (batch_size,) or not jnp.issubdtype(label.dtype, jnp.integer):
        raise ValueError(f"data_fn: expected 'label' of shape ({batch_size},) and an int dtype, "
                         f"got {np.shape(label)} {label.dtype}")
    return {"image": image, "label": label}
