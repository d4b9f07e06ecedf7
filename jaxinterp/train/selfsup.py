"""The self-supervised trainer and what its methods share: one ``fit`` for SeLa, SimCLR, DINO and GDT.

    from jaxinterp.train import selfsup
    from jaxinterp.train.sela import SeLa

    net = nets.get("smallcnn", num_classes=32)            # logits = cluster scores (SeLa)
    state, history = selfsup.fit(net, images, SeLa(lam=10.0),
                                 selfsup.Settings(epochs=20, batch_size=128, checkpoint_dir="runs/sela/ckpt"),
                                 classes=labels, heldout=(test_images, test_labels))

A method is a frozen dataclass deriving from :class:`Method`, in the spirit of
optax's ``(init, update)`` pairs and big_vision's ``update_fn``: its fields are its
hyper-parameters and it is a static argument of the jitted update; it gives the
loss of (params, state, key, batch) and optional hooks (a post-update, a per-epoch
step, rows of metrics, what to evaluate).  One module each:

* :mod:`jaxinterp.train.sela`: SeLa (Asano, Rupprecht and Vedaldi, ICLR 2020),
  self-labelling by Sinkhorn-Knopp (:func:`self_labels`, here) every
  ``label_every`` epochs and cross-entropy in between;
* :mod:`jaxinterp.train.simclr`: SimCLR (Chen et al. 2020), NT-Xent on two views;
* :mod:`jaxinterp.train.dino`: DINO (Caron et al. ICCV 2021), self-distillation
  from an EMA teacher with multi-crop;
* :mod:`jaxinterp.train.gdt`: GDT (Patrick et al. ICCV 2021), a contrast over
  compositions of transformations.

The run's other settings (epochs, batch size, optimiser, evaluations,
checkpoints) are one :class:`Settings`; stepping, checkpoints, resume, NaN checks
and progress are :func:`jaxinterp.train.loop.run`'s.

Every update is one jitted call (augmentation included, on device, one key per
step: ``fold_in(fold_in(state.key, 0), step)``); epoch e visits the images in the
order ``permutation(fold_in(fold_in(state.key, 1), e))`` and drops the last
partial batch; a method's per-epoch step (SeLa's labels) of epoch e draws from
``fold_in(fold_in(state.key, 2), e)``.  So a run is a pure function of its
arguments: a run killed and restarted with the same arguments resumes from its
last checkpoint (written at the end of each epoch, with the self-labels, the
teacher and the centre) and ends with the same params.  With several devices the
batch is split over the ``'data'`` mesh axis and the state replicated, as in
:mod:`jaxinterp.train.classifier`.  With several processes (call
``jax.distributed.initialize()`` first; ``mesh`` then spans every process's
devices) each process reads only its rows of every batch from ``images``
(:func:`jaxinterp.train.sharding.process_rows`; an ``np.memmap`` of a shared
file reads nothing else), the features of the evaluations are all-gathered,
every process computes the same labels and metrics, orbax writes
the checkpoints, and process 0 alone reports; the result equals one process on
the same devices (tests/train/test_multiprocess.py: 2 x 4 CPU devices against
1 x 8).  SeLa's label step is sharded too (:func:`self_labels`): the
log-probabilities stay on the devices that computed them (N K / devices
each), Sinkhorn-Knopp runs on them under ``jax.shard_map`` (one ``psum`` of
a (K + 1)-vector per step) and only the (N,) labels are gathered, so the
N = 1.28M, K = 3000 of SeLa's ImageNet setting (15 GB of float32 scores)
splits over a pod instead of filling one device.

Images may be float in [0, 1] or uint8 in [0, 255], in host memory or an
``np.memmap``: only the batches are read and converted (``x / 255`` in float32
for uint8), never the whole set.

Metrics per epoch (the ``history`` list and the progress lines): the mean
training loss and a method's own (SeLa: NMI and ARI of the self-labels against
``classes``, which are used for nothing else; DINO: its collapse monitors);
every ``eval_every`` epochs and at the end, the k-NN and linear-probe accuracies
(:func:`evaluate`) of the features at split point ``feature_layer`` (default
``'avgpool'``) of the ``heldout`` images against the training images, of the
nets the method delivers (:func:`evaluate_state`: for DINO its teacher and its
student).  Experiments: ``experiments/sela.py``, ``simclr.py``, ``dino.py``,
``gdt.py``; their runs on the synthetic set, and the DINO variants tried there,
are in docs/results/selfsup_synthetic.md.

References:
  Asano, Rupprecht and Vedaldi, "Self-labelling via simultaneous clustering and
  representation learning", ICLR 2020.  Chen et al., "A simple framework for
  contrastive learning of visual representations", ICML 2020.  Caron et al.,
  "Emerging properties in self-supervised vision transformers", ICCV 2021.
  Patrick et al., "On compositions of transformations in contrastive
  self-supervised learning", ICCV 2021.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxinterp import objectives
from jaxinterp.checks import check_choice, check_int, check_positive_float, check_real
from jaxinterp.nets import recompute_batch_norm
from jaxinterp.train import loop, metrics, sharding
from jaxinterp.train.augment import AugmentConfig, augment_one, sample_params
from jaxinterp.train.classifier import lars_optimiser, optimiser

__all__ = ["OPTIMISERS", "Settings", "Method", "SelfSupState", "init_state", "batch_loss", "train_step", "fit",
           "features", "label_scores", "label_log_probs", "sharded_sinkhorn_labels", "self_labels", "evaluate",
           "evaluate_state"]

OPTIMISERS = ("adam", "lars")


@dataclasses.dataclass(frozen=True)
class Settings:
    """The settings of a run of :func:`fit` that every method shares.

    Attributes:
      epochs: passes over the data (a resumed run counts the restored ones), >= 1.
      batch_size: images per update, a multiple of the devices of the mesh, <= N.
      lr: peak learning rate (warm-up over 5 % of the run, then cosine to 0).
      seed: ``jax.random.key(seed)`` makes the init and run keys (:func:`init_state`).
      optimiser_name: ``'adam'`` (``classifier.optimiser``) or ``'lars'``
        (``classifier.lars_optimiser``, SimCLR's LARS; DINO offers it too).  SeLa,
        SimCLR, DINO use SGD / LARS / AdamW at larger batch sizes; Adam trains this
        small net on small batches without tuning.
      weight_decay: LARS's weight decay, >= 0 (1e-6, SimCLR); unused by Adam.
      eval_every: epochs between the evaluations (and at the end), >= 1.
      knn_k: neighbours of the k-NN vote (20).
      feature_layer: the split point whose activations are the features ('avgpool').
      checkpoint_dir: save at the end of every epoch and resume from the latest there
        (which must come from a run with the same arguments); None = no checkpoints.
      until_epoch: stop after this epoch (as if killed; a later call resumes), or None.
    """

    epochs: int
    batch_size: int
    lr: float = 1e-3
    seed: int = 0
    optimiser_name: str = "adam"
    weight_decay: float = 1e-6
    eval_every: int = 5
    knn_k: int = 20
    feature_layer: str = "avgpool"
    checkpoint_dir: str | None = None
    until_epoch: int | None = None

    def __post_init__(self):
        check_int(self.epochs, "epochs")
        check_int(self.batch_size, "batch_size")
        check_positive_float(self.lr, "lr")
        check_int(self.eval_every, "eval_every")
        check_int(self.knn_k, "knn_k")
        check_choice(self.optimiser_name, "optimiser_name", OPTIMISERS)
        check_real(self.weight_decay, "weight_decay", minimum=0)
        if self.until_epoch is not None:
            check_int(self.until_epoch, "until_epoch", minimum=0)

    def optimiser(self, total_steps: int) -> optax.GradientTransformation:
        """The optax optimiser of a run of ``total_steps`` updates."""
        if self.optimiser_name == "adam":
            return optimiser(self.lr, total_steps)
        return lars_optimiser(self.lr, total_steps, float(self.weight_decay))


class SelfSupState(NamedTuple):
    """Everything a run needs to continue (one structure for every method, so checkpoints look alike).

    Attributes:
      step: () int32 updates applied so far.
      params: the net's params (DINO's student; a :class:`~jaxinterp.train.dino.DinoParams` with a
        projection head).
      opt_state: optax state.
      key: the run's key (augmentation and epoch-order streams, module docstring).
      labels: (N,) int32 SeLa self-labels of the training images (zeros for the other methods).
      teacher: DINO's teacher params (the structure of ``params``); a () float32 zero
        placeholder for the other methods (orbax stores no None leaves).
      centre: (K,) float32 DINO's centre of the teacher outputs (zeros for the others).
    """

    step: jax.Array
    params: Any
    opt_state: Any
    key: jax.Array
    labels: jax.Array
    teacher: Any
    centre: jax.Array


@dataclasses.dataclass(frozen=True)
class Method:
    """A self-supervised method: its loss and the hooks of a run (the defaults do nothing).

    Subclasses are frozen dataclasses whose fields are the method's hyper-parameters
    (hashable: the method is a static argument of :func:`train_step`).  Only
    :meth:`loss` is required.

    Attributes:
      name: the method's name in logs and metrics (a class attribute: ``'sela'``, ...).
    """

    name: ClassVar[str] = ""
    batch_statistics: ClassVar[bool] = False
    """Whether training normalises by batch statistics, so evaluations first recompute the
    stored ones (precise BN); DINO makes it a field."""

    def prepare(self, net, image_size: tuple[int, int], n: int, epochs: int, steps_per_epoch: int) -> "Method":
        """This method completed for a run (defaults that depend on the run filled in) and checked against it.

        Args:
          net: the net; image_size: (H, W) of the images; n: their number N;
          epochs, steps_per_epoch: of the run.
        """
        return self

    def init_params(self, net, key: jax.Array):
        """The params trained (default ``net.init(key)``)."""
        return net.init(key)

    def init_teacher(self, params):
        """The state's ``teacher`` field at the start (default a () placeholder)."""
        return jnp.zeros((), jnp.float32)

    def loss(self, net, params, state: SelfSupState, key: jax.Array, images: jax.Array,
             labels: jax.Array) -> tuple[jax.Array, tuple[Any, dict]]:
        """``(loss, (aux, stats))`` of ``params`` on one batch (pure; differentiated in ``params``).

        Args:
          state: the state before the update (its step, labels, teacher, centre).
          key: the update's augmentation key.
          images: (B, H, W, 3) float32 in [0, 1]; labels: (B,) int32 self-labels (SeLa).

        Returns:
          () float32 loss; ``aux`` for :meth:`post_update`; ``stats`` a dict of () float32
          statistics of the batch, averaged per epoch into the history.
        """
        raise NotImplementedError

    def grads(self, net, grads, state: SelfSupState):
        """The gradient the optimiser applies (default unchanged; DINO freezes its last layer)."""
        return grads

    def post_update(self, state: SelfSupState, aux) -> SelfSupState:
        """The state after the optax update (new params, ``step`` still this update's); default unchanged."""
        return state

    def start_epoch(self, net, state: SelfSupState, images, epoch: int, key: jax.Array,
                    mesh: jax.sharding.Mesh) -> SelfSupState:
        """The state before epoch ``epoch`` (0-based; default unchanged; SeLa's label step)."""
        return state

    def row(self, state: SelfSupState, classes) -> dict[str, float]:
        """Metrics of the epoch's history row before the losses (SeLa: NMI, ARI); default none."""
        return {}

    def summary(self, means: dict[str, float]) -> dict[str, float]:
        """Metrics derived from the epoch's means, after them (DINO: ``kl``); default none."""
        return {}

    def evaluated(self, state: SelfSupState) -> dict[str, Any]:
        """The params the evaluations score, by metric prefix (default ``{'': state.params}``)."""
        return {"": state.params}


def init_state(net, tx: optax.GradientTransformation, key: jax.Array, n: int, method: Method) -> SelfSupState:
    """A fresh :class:`SelfSupState` of a run on ``n`` images.

    ``init_key, run_key = split(key)``; params = ``method.init_params(net, init_key)``
    (``net.init(init_key)``; DINO with a head adds its MLP), the teacher
    ``method.init_teacher(params)``; the labels and the centre at zero.

    Args:
      net: a :class:`jaxinterp.nets.Net` (``num_classes`` = K).
      tx: the optax optimiser.
      key: a PRNG key (``fit`` uses ``jax.random.key(seed)``).
      n: number of training images (the length of ``labels``).
      method: a :class:`Method`.
    """
    _check_method(method)
    init_key, run_key = jax.random.split(key)
    params = method.init_params(net, init_key)
    return SelfSupState(jnp.zeros((), jnp.int32), params, tx.init(params), run_key,
                        jnp.zeros((n,), jnp.int32), method.init_teacher(params),
                        jnp.zeros((net.num_classes,), jnp.float32))


def _check_method(method) -> None:
    if not isinstance(method, Method):
        raise ValueError(f"method: expected a selfsup.Method (SeLa, SimCLR, DINO, GDT), got {method!r}")


def _step_key(state: SelfSupState) -> jax.Array:
    return jax.random.fold_in(jax.random.fold_in(state.key, 0), state.step)


@functools.partial(jax.jit, static_argnums=(0, 1))
def batch_loss(net, method: Method, state: SelfSupState, images: jax.Array, labels: jax.Array,
               key: jax.Array | None = None) -> jax.Array:
    """The objective :func:`train_step` minimises, at ``state`` on one batch, without an update.

    Args:
      net, method: as :func:`train_step` (static).
      state: a :class:`SelfSupState` (its step sets DINO's teacher temperature).
      images: (B, H, W, 3) float32 in [0, 1].
      labels: (B,) int32 self-labels (SeLa; ignored otherwise).
      key: the augmentation key; None = the key of ``state.step``'s update.

    Returns:
      float32 scalar.
    """
    key = _step_key(state) if key is None else key
    return method.loss(net, state.params, state, key, images, labels)[0]


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def train_step(net, tx: optax.GradientTransformation, method: Method, state: SelfSupState, images: jax.Array,
               labels: jax.Array) -> tuple[SelfSupState, dict[str, jax.Array]]:
    """One update on a batch (jitted; ``net``, ``tx`` and ``method`` static).

    The gradient of ``method.loss``, passed through ``method.grads``, updates the
    params by ``tx``; then ``method.post_update`` (DINO's EMA teacher and centre).

    Args:
      method: a :class:`Method` (:meth:`Method.prepare` d for the run).
      state: the current :class:`SelfSupState`.
      images: (B, H, W, 3) float32 in [0, 1] (possibly sharded over ``'data'``).
      labels: (B,) int32 self-labels of these images (ignored by all but SeLa).

    Returns:
      (state, stats): the updated state and float32 scalars of the batch before the
      update: ``'loss'`` and the method's statistics (DINO: ``'teacher_entropy'`` and
      ``'teacher_marginal_entropy'``, its collapse monitors).
    """
    key = _step_key(state)
    (loss, (aux, stats)), grads = jax.value_and_grad(
        lambda p: method.loss(net, p, state, key, images, labels), has_aux=True)(state.params)
    grads = method.grads(net, grads, state)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    new = method.post_update(state._replace(params=optax.apply_updates(state.params, updates),
                                            opt_state=opt_state), aux)
    return new._replace(step=state.step + 1), {"loss": loss, **stats}


def fit(net, images, method: Method, settings: Settings, *, classes=None, heldout=None,
        progress: Callable[[str], Any] | None = print,
        mesh: jax.sharding.Mesh | None = None) -> tuple[SelfSupState, list[dict]]:
    """Train ``net`` without labels on ``images`` by ``method`` (module docstring).

    Args:
      net: a :class:`jaxinterp.nets.Net`; for SeLa ``num_classes`` = number of clusters K
        (K <= N), for SimCLR / GDT the embedding dimension, for DINO the head's output
        dimension K.
      images: (N, H, W, 3) float in [0, 1] or uint8 in [0, 255]: a numpy array or an
        ``np.memmap`` (host memory or disk; read one batch at a time).
      method: a :class:`Method`: :class:`~jaxinterp.train.sela.SeLa`,
        :class:`~jaxinterp.train.simclr.SimCLR`, :class:`~jaxinterp.train.dino.DINO` or
        :class:`~jaxinterp.train.gdt.GDT`.
      settings: the run's :class:`Settings`.
      classes: (N,) int true classes, used only for the NMI / ARI / k-NN metrics (optional).
      heldout: (images, labels) for the k-NN and linear-probe metrics (optional; ``classes`` required).
      progress: called with each progress line; None = silent.
      mesh: a ``'data'`` mesh; None = all devices.

    Returns:
      (state, history): the final :class:`SelfSupState` and one dict per epoch with
      ``epoch``, the method's row (SeLa: ``nmi``, ``ari``), ``step``, ``loss`` and the
      method's statistics (the epoch's means; DINO: ``teacher_entropy``,
      ``teacher_marginal_entropy``, ``kl``), when computed ``knn_accuracy``,
      ``linear_probe`` (:func:`evaluate_state`: for DINO the teacher's, and
      ``student_knn_accuracy``, ``student_linear_probe``), and ``seconds``.

    Raises:
      ValueError: a bad argument (named first in the message).
      FloatingPointError: the training loss became NaN or infinite (nothing is saved).
    """
    _check_method(method)
    if not isinstance(settings, Settings):
        raise ValueError(f"settings: expected a selfsup.Settings, got {settings!r}")
    _check_images(images)
    n = len(images)
    mesh = sharding.data_mesh() if mesh is None else mesh
    devices = mesh.shape[sharding.DATA]
    batch_size, epochs = settings.batch_size, settings.epochs
    if batch_size % devices or batch_size > n:
        raise ValueError(f"batch_size: expected a positive multiple of the {devices} devices, "
                         f"at most N = {n}, got {batch_size}")
    if classes is not None and np.shape(classes) != (n,):
        raise ValueError(f"classes: expected shape ({n},), got {np.shape(classes)}")
    if heldout is not None and classes is None:
        raise ValueError("classes: required with heldout (the k-NN training labels)")
    if heldout is not None:
        _check_images(heldout[0], "heldout")
    steps_per_epoch = n // batch_size
    method = method.prepare(net, tuple(int(s) for s in images.shape[1:3]), n, epochs, steps_per_epoch)
    tx = settings.optimiser(epochs * steps_per_epoch)
    config = {"net": repr(net), "method": repr(method), "epochs": epochs, "batch_size": batch_size,
              "lr": settings.lr, "seed": settings.seed, "optimiser": settings.optimiser_name,
              "weight_decay": settings.weight_decay, "n": n}
    state = init_state(net, tx, jax.random.key(settings.seed), n, method)
    host_key = state.key
    rows = sharding.process_rows(batch_size, mesh)          # this process's rows of each batch
    precise_bn = method.batch_statistics

    def advance(state, epoch, _):
        """The method's per-epoch step, then one pass over the images in the epoch's order."""
        state = method.start_epoch(net, state, images, epoch,
                                   jax.random.fold_in(jax.random.fold_in(host_key, 2), epoch), mesh)
        order = np.asarray(jax.random.permutation(jax.random.fold_in(jax.random.fold_in(host_key, 1), epoch), n))
        labels = sharding.local_value(state.labels)
        total = None
        for b in range(steps_per_epoch):
            idx = order[b * batch_size:(b + 1) * batch_size][rows]
            x, y = sharding.from_process_rows((_host_float(images[idx]), labels[idx]), mesh, batch_size)
            state, stats = train_step(net, tx, method, state, x, y)
            total = stats if total is None else jax.tree.map(jnp.add, total, stats)
        return state, {k: v / steps_per_epoch for k, v in total.items()}

    def row(state, epoch, means):
        out = {"epoch": epoch, **method.row(state, classes), "step": epoch * steps_per_epoch, **means}
        out.update(method.summary(means))
        if heldout is not None and (epoch % settings.eval_every == 0 or epoch == epochs):
            out.update(evaluate_state(net, state, method, (images, classes), heldout, layer=settings.feature_layer,
                                      k=settings.knn_k, mesh=mesh, precise_bn=precise_bn))
        return out

    lp = loop.Loop(units=epochs, unit="epoch", steps_per_unit=steps_per_epoch,
                   checkpoint_dir=settings.checkpoint_dir, until=settings.until_epoch)
    state, history = loop.run(state, advance, lp, config=config, row=row, progress=progress, mesh=mesh)
    # This process's copy of the replicated state, on its first device.
    return jax.tree.map(lambda a: a if isinstance(a, jax.Array) else jnp.asarray(a),
                        sharding.local_value(state)), history


@functools.partial(jax.jit, static_argnums=(0, 3))
def _forward(net, params, images, stop):
    return net.apply(params, images, stop=stop)


def _check_images(images, name: str = "images") -> None:
    shape, dtype = getattr(images, "shape", None), getattr(images, "dtype", None)
    if shape is None or len(shape) != 4 or shape[-1] != 3:
        raise ValueError(f"{name}: expected an array of shape (N, H, W, 3), got {shape}")
    if not (dtype == np.uint8 or np.issubdtype(dtype, np.floating)):
        raise ValueError(f"{name}: expected float in [0, 1] or uint8 in [0, 255], got dtype {dtype}")


def _host_float(x) -> np.ndarray:
    """A batch read from the host set as float32 in [0, 1] (uint8: ``x / 255``)."""
    x = np.asarray(x)
    if x.dtype == np.uint8:
        return x.astype(np.float32) / np.float32(255)
    return x.astype(np.float32, copy=False)


def _padded_batch_size(n: int, batch_size: int, mesh: jax.sharding.Mesh) -> int:
    """The batch size of the padded passes over N images: a multiple of the devices, at most ~``batch_size``."""
    devices = mesh.shape[sharding.DATA]
    return min(math.ceil(batch_size / devices), math.ceil(n / devices)) * devices


def _device_batches(images, batch_size: int, mesh: jax.sharding.Mesh):
    """The padded batches of ``images`` on ``mesh``, in order.

    Yields ``(x, index)`` sharded over ``'data'``: x (B, H, W, 3) float32 in [0, 1], index
    (B,) int32 its rows of ``images``; rows past N - 1 repeat image N - 1 (padding).  Each
    process reads only the rows its devices hold.
    """
    n = len(images)
    rows = sharding.process_rows(batch_size, mesh)          # this process's rows of each batch
    for i in range(0, n, batch_size):
        idx = np.minimum(i + rows, n - 1)
        yield sharding.from_process_rows((_host_float(images[idx]), idx.astype(np.int32)), mesh, batch_size)


def _map_batches(apply, images, *, batch_size: int, mesh: jax.sharding.Mesh | None) -> np.ndarray:
    """``apply(x, index)`` of every image in padded batches sharded over ``mesh``, as float32 numpy.

    ``x`` is a (B, H, W, 3) float32 batch in [0, 1], ``index`` its (B,) int32 rows of
    ``images``; the last batch is padded with image N - 1 and the padding dropped.
    Returns (N, D), the outputs flattened.
    """
    _check_images(images)
    mesh = sharding.data_mesh() if mesh is None else mesh
    n = len(images)
    batch_size = _padded_batch_size(n, batch_size, mesh)
    out = []
    for i, (x, index) in enumerate(_device_batches(images, batch_size, mesh)):
        y = sharding.gather(apply(x, index))
        k = min(batch_size, n - i * batch_size)
        out.append(y[:k].reshape(k, -1))
    return np.concatenate(out)


def _batch_rows_sharding(mesh: jax.sharding.Mesh) -> jax.NamedSharding:
    """(M, B, ...) arrays of M batches, each batch's rows split over ``'data'`` as the batches were."""
    return jax.NamedSharding(mesh, jax.P(None, sharding.DATA))


@functools.partial(jax.jit, static_argnums=(0, 1))
def _zero_scores(shape: tuple[int, ...], mesh: jax.sharding.Mesh):
    """float32 zeros of ``shape`` (M, B, K), sharded as the batches' rows."""
    return jax.lax.with_sharding_constraint(jnp.zeros(shape, jnp.float32), _batch_rows_sharding(mesh))


@functools.partial(jax.jit, static_argnums=3, donate_argnums=0)
def _put_batch(scores, i, y, mesh: jax.sharding.Mesh):
    """``scores`` (M, B, K) with batch ``i`` set to y (B, K), in place (``scores`` donated), on the devices."""
    out = jax.lax.dynamic_update_index_in_dim(scores, y.astype(jnp.float32), i, 0)
    return jax.lax.with_sharding_constraint(out, _batch_rows_sharding(mesh))


def _sharded_scores(apply, images, *, batch_size: int, mesh: jax.sharding.Mesh) -> jax.Array:
    """``apply(x, index)`` (B, K) of every padded batch, kept on the devices where it was computed.

    Returns float32 (M, B, K), M = ceil(N / B) batches, sharded ``P(None, 'data')``: batch i
    at [i], its rows split over the devices as the batch was, so each device holds
    M B K / devices entries and nothing moves between devices or to the host.  Row j of
    batch i is image i B + j; rows from N on are padding (copies of image N - 1).
    """
    _check_images(images)
    n = len(images)
    batch_size = _padded_batch_size(n, batch_size, mesh)
    scores = None
    for i, (x, index) in enumerate(_device_batches(images, batch_size, mesh)):
        y = apply(x, index)
        if scores is None:
            scores = _zero_scores((math.ceil(n / batch_size), batch_size, y.shape[-1]), mesh)
        scores = _put_batch(scores, np.int32(i), y, mesh)
    return scores


def features(net, params, images, *, stop: str | None = None, batch_size: int = 256,
             mesh: jax.sharding.Mesh | None = None) -> np.ndarray:
    """``net.apply(params, images, stop=stop)`` in padded batches over ``mesh``, as a float32 numpy array.

    Args:
      images: (N, H, W, 3) float in [0, 1] or uint8 in [0, 255] (numpy or ``np.memmap``;
        read and converted batch by batch).
      stop: split point (None: the output).

    Returns:
      (N, D) float32, the activations flattened.
    """
    mesh = sharding.data_mesh() if mesh is None else mesh
    params = sharding.replicate(params, mesh)
    return _map_batches(lambda x, index: _forward(net, params, x, stop), images, batch_size=batch_size, mesh=mesh)


@functools.partial(jax.jit, static_argnums=(0, 4, 5))
def _view_log_probs(net, params, images, index, aug: AugmentConfig, views: int, key):
    """(B, K) mean over ``views`` augmented views of each image of ``log_softmax(net(view))``.

    View v of image ``index[i]`` is ``augment_one`` with the params of
    ``fold_in(fold_in(key, v), index[i])``: it depends on the image's row in the
    data set, not on the batch or the devices.
    """
    hw = images.shape[1:3]

    def one_view(x, i, v):
        return augment_one(x, sample_params(jax.random.fold_in(jax.random.fold_in(key, v), i), hw, aug), aug)

    v = jnp.arange(views)
    x = jax.vmap(lambda xi, i: jax.vmap(lambda vv: one_view(xi, i, vv))(v))(images, index)   # (B, V, h, w, 3)
    logp = jax.nn.log_softmax(net.apply(params, x.reshape(-1, *x.shape[2:])))
    return logp.reshape(images.shape[0], views, -1).mean(1)


@functools.partial(jax.jit, static_argnums=0)
def _log_probs(net, params, images):
    """(B, K) ``log_softmax(net(images))``: the scores of un-augmented images."""
    return jax.nn.log_softmax(net.apply(params, images))


def label_scores(net, params, images, *, aug: AugmentConfig | None = None, views: int = 1,
                 key: jax.Array | None = None, batch_size: int = 256,
                 mesh: jax.sharding.Mesh | None = None) -> jax.Array:
    """The scores SeLa's label step equipartitions, ``mean_v log p(c | t_v(x))``, left sharded on the devices.

    SeLa (the slides' "transformation-invariant clustering") clusters p(c | t(x))
    for random transformations t; its released code scores the label step on
    the training transform, one view per image.  Here ``views`` augmented views
    of each image (``aug``) are averaged in the log domain: a sample of
    E_t log p(c | t(x)), the score whose Sinkhorn-Knopp solution is the optimal
    q of SeLa's cross-entropy averaged over augmentations; more views give
    labels that change less with the draw.  ``views = 0`` (or ``aug`` None)
    scores the un-augmented images; Sinkhorn with lambda is unchanged by
    subtracting each row's log-sum-exp, so those are the labels of the raw logits.

    Args:
      net, params: a net whose output is K cluster scores.
      images: (N, H, W, 3) float in [0, 1] or uint8 in [0, 255].
      aug: the augmentation of the views (None: un-augmented).
      views: augmented views per image, >= 0.
      key: the views' key (required when ``views`` > 0 and ``aug`` is given); view v of
        image n depends only on (key, v, n), so the scores do not depend on
        ``batch_size`` or ``mesh``.
      batch_size, mesh: as :func:`features`.

    Returns:
      float32 (M, B, K) log-probabilities of M padded batches of B images (B a multiple of
      the devices), sharded ``P(None, 'data')``: row j of batch i is image i B + j, rows
      from N on are padding; each device holds M B K / devices of them.

    References:
      Asano, Rupprecht and Vedaldi, "Self-labelling via simultaneous clustering and
      representation learning", ICLR 2020.
    """
    views = check_int(views, "views", minimum=0)
    mesh = sharding.data_mesh() if mesh is None else mesh
    if aug is None or views == 0:
        params = sharding.replicate(params, mesh)
        return _sharded_scores(lambda x, index: _log_probs(net, params, x), images, batch_size=batch_size,
                               mesh=mesh)
    if not isinstance(aug, AugmentConfig):
        raise ValueError(f"aug: expected an AugmentConfig or None, got {type(aug).__name__}")
    if key is None:
        raise ValueError("key: required for augmented views")
    params, key = sharding.replicate((params, key), mesh)
    return _sharded_scores(lambda x, index: _view_log_probs(net, params, x, index, aug, int(views), key),
                           images, batch_size=batch_size, mesh=mesh)


def label_log_probs(net, params, images, *, aug: AugmentConfig | None = None, views: int = 1,
                    key: jax.Array | None = None, batch_size: int = 256,
                    mesh: jax.sharding.Mesh | None = None) -> np.ndarray:
    """:func:`label_scores` gathered to the host as (N, K) float32 (for inspection: the label step does not)."""
    scores = label_scores(net, params, images, aug=aug, views=views, key=key, batch_size=batch_size, mesh=mesh)
    return sharding.gather(scores).reshape(-1, scores.shape[-1])[:len(images)]


@functools.partial(jax.jit, static_argnames=("n", "lam", "mesh", "method"))
def sharded_sinkhorn_labels(scores: jax.Array, *, n: int, lam: float, mesh: jax.sharding.Mesh,
                            method: str = "scaling") -> objectives.SinkhornResult:
    """SeLa's Sinkhorn-Knopp on scores that stay where they are: each device iterates on its own rows.

    One program under ``jax.shard_map`` over ``'data'``: every device runs
    :func:`jaxinterp.objectives.sinkhorn_labels` on its (M B / devices, K) rows with
    ``axis_name='data'`` (one ``psum`` of a (K + 1)-vector per step), the padding rows
    (from N on) masked out of the marginals.  Nothing of size N K is gathered.
    Per device the program holds the scores, M B K / devices floats, and temporaries
    of 3x that with ``method='scaling'`` (the stored kernel among them), 2x with ``'log'``
    (``bench/objectives.py --labelling-memory``).

    Args:
      scores: float32 (M, B, K) sharded ``P(None, 'data')``, as :func:`label_scores`.
      n: the images N (the rows before the padding), K <= N <= M B.
      lam: SeLa's lambda.
      mesh: the mesh of ``scores``.
      method: the solver, as :func:`~jaxinterp.objectives.sinkhorn_labels`.

    Returns:
      :class:`~jaxinterp.objectives.SinkhornResult` with labels int32 (M, B) sharded like
      the rows of ``scores`` (padding included); log_r and the counts replicated.
    """
    devices = mesh.shape[sharding.DATA]

    def local(rows):                                            # (M, B / devices, K): this device's rows
        m, b_local, k = rows.shape
        image = (jnp.arange(m)[:, None] * (b_local * devices)
                 + jax.lax.axis_index(sharding.DATA) * b_local + jnp.arange(b_local))
        result = objectives.sinkhorn_labels(rows.reshape(m * b_local, k), lam=lam, axis_name=sharding.DATA,
                                            method=method, valid=(image < n).reshape(-1))
        return result._replace(labels=result.labels.reshape(m, b_local))

    replicated = jax.P()
    return jax.shard_map(local, mesh=mesh, in_specs=jax.P(None, sharding.DATA),
                         out_specs=objectives.SinkhornResult(jax.P(None, sharding.DATA), replicated, replicated,
                                                             replicated, replicated))(scores)


def self_labels(net, params, images, *, lam: float = 25.0, aug: AugmentConfig | None = None, views: int = 1,
                key: jax.Array | None = None, batch_size: int = 256, mesh=None) -> objectives.SinkhornResult:
    """SeLa's label step, sharded: :func:`sharded_sinkhorn_labels` of :func:`label_scores` of all ``images``.

    The log-probabilities stay on the devices that computed them (each holds N K /
    devices); only the (N,) labels come back.  Equal to :func:`objectives.sinkhorn_labels`
    of :func:`label_log_probs` on one device, up to float32 rounding of the sums.

    Returns:
      :class:`~jaxinterp.objectives.SinkhornResult` with labels int32 (N,) numpy.

    Raises:
      ValueError: the net's K clusters outnumber the N images (and as :func:`label_scores`).
    """
    mesh = sharding.data_mesh() if mesh is None else mesh
    scores = label_scores(net, params, images, aug=aug, views=views, key=key, batch_size=batch_size, mesh=mesh)
    if scores.shape[-1] > len(images):
        raise ValueError(f"images: {len(images)} images for K = {scores.shape[-1]} clusters; "
                         "equipartition needs K <= N")
    result = sharded_sinkhorn_labels(scores, n=len(images), lam=check_positive_float(lam, "lam"), mesh=mesh)
    return result._replace(labels=sharding.gather(result.labels).reshape(-1)[:len(images)])


def evaluate(net, params, train, heldout, *, layer: str = "avgpool", k: int = 20, mesh=None,
             precise_bn: bool = False) -> dict[str, float]:
    """k-NN and linear-probe accuracy of held-out images from the features at ``layer``.

    The features of the training images are the k-NN's memory and the linear
    probe's training set (:func:`jaxinterp.train.metrics.knn_accuracy`, k = ``k``,
    cosine; :func:`jaxinterp.train.metrics.linear_probe`, L2-regularised softmax
    regression on standardised features).

    Args:
      train, heldout: (images (N, H, W, 3) float or uint8, labels (N,)) pairs.
      precise_bn: first set the net's batch-norm statistics to those of the training
        images (:func:`jaxinterp.nets.recompute_batch_norm`), for a net trained on
        batch statistics (``DINO(batch_statistics=True)``).

    Returns:
      {'knn_accuracy': float, 'linear_probe': float}.
    """
    if precise_bn:
        params = recompute_batch_norm(net, params, train[0])
    ftr = features(net, params, train[0], stop=layer, mesh=mesh)
    fte = features(net, params, heldout[0], stop=layer, mesh=mesh)
    ytr, yte = np.asarray(train[1]), np.asarray(heldout[1])
    return {"knn_accuracy": metrics.knn_accuracy(ftr, ytr, fte, yte, k=min(k, len(ftr))),
            "linear_probe": metrics.linear_probe(ftr, ytr, fte, yte)}


def evaluate_state(net, state: SelfSupState, method: Method, train, heldout, *, layer: str = "avgpool",
                   k: int = 20, mesh=None, precise_bn: bool = False) -> dict[str, float]:
    """:func:`evaluate` of the nets a method delivers (``method.evaluated``): DINO's teacher, else the params.

    DINO evaluates its teacher (Caron et al. 2021, Sec. 5.2: the teacher
    outperforms the student throughout training; its k-NN and linear evaluations
    load the teacher's weights), so for DINO ``knn_accuracy`` and
    ``linear_probe`` are the teacher's and ``student_knn_accuracy`` /
    ``student_linear_probe`` the student's.

    Args:
      state: a :class:`SelfSupState` of ``method``.
      method: a :class:`Method`.
      train, heldout, layer, k, mesh, precise_bn: as :func:`evaluate`.
    """
    _check_method(method)
    out = {}
    for prefix, params in method.evaluated(state).items():
        scores = evaluate(net, params, train, heldout, layer=layer, k=k, mesh=mesh, precise_bn=precise_bn)
        out.update({f"{prefix}{name}": v for name, v in scores.items()})
    return out
