"""A small resumable trainer for self-supervised objectives: SeLa, SimCLR, DINO and GDT.

    net = nets.get("smallcnn", num_classes=32)            # logits = cluster scores (SeLa)
    state, history = fit(net, images, epochs=20, batch_size=128, method="sela",
                         classes=labels, heldout=(test_images, test_labels),
                         checkpoint_dir="runs/sela/ckpt")

Methods (``method``):

* ``'sela'`` (Asano, Rupprecht and Vedaldi, ICLR 2020): the net's logits are the
  scores of K clusters.  Every ``label_every`` epochs (from epoch 0) the labels of
  the whole data set are re-estimated by :func:`jaxinterp.objectives.sinkhorn_labels`
  (equipartitioned, lambda ``lam``; sharded over the devices, :func:`self_labels`)
  on the log-probabilities of augmented views,
  averaged over ``label_views`` views of each image (:func:`label_scores`:
  SeLa clusters p(c | t(x)), "transformation-invariant clustering", and its
  code labels the training transform, one view); in between, the net is
  trained by cross-entropy on one augmented view of each image against its
  current label.  The default augmentation is SeLa's
  (:meth:`AugmentConfig.sela <jaxinterp.train.augment.AugmentConfig.sela>`:
  hue jitter 0.4 on every view).  One head (SeLa uses 10 on ImageNet).
* ``'simclr'`` (Chen et al. 2020): two augmented views per image, the net's output
  (``num_classes`` = embedding dimension; the linear ``classifier`` of the
  smallcnn plays SimCLR's projection head) under
  :func:`jaxinterp.objectives.nt_xent` with ``temperature`` (0.1).
* ``'dino'`` (Caron et al. ICCV 2021): self-distillation.  The student is the net
  being trained, the teacher an EMA of its params
  (:func:`~jaxinterp.objectives.ema_update` after every update, momentum
  :func:`~jaxinterp.objectives.cosine_schedule` from ``momentum_teacher`` = 0.996
  to 1 over the run); no gradient reaches the teacher.  Each image gives 2 global
  and ``n_local`` local crops (:func:`jaxinterp.train.augment.multicrop`); the
  teacher sees the globals only, and :func:`~jaxinterp.objectives.dino_loss`
  averages the cross-entropy over every (teacher view i, student view j != i)
  pair, the teacher centred by ``centre`` and sharpened by its temperature
  (:func:`~jaxinterp.objectives.teacher_temperature`: 0.04 warmed up linearly to
  0.07 over ``warmup_teacher_epochs``, by default 30 % of the run as DINO's 30
  of 100 epochs), the student at 0.1.  After each update the centre becomes
  ``0.9 centre + 0.1 mean(teacher outputs of the batch)``
  (:func:`~jaxinterp.objectives.update_centre`); the step is one jitted program
  on the whole (sharded) batch, so the mean is over all devices, as DINO's
  all-reduce.  The net's output (``num_classes``) is the head's output dimension
  K.  With ``head=(hidden, bottleneck)`` the params are :class:`DinoParams`: the
  net and DINO's projection head for convnets (:func:`dino_mlp`: 3 linear layers,
  batch norm and GELU after the first two, an L2-normalised bottleneck, a
  weight-normalised last layer of norm 1 to K outputs; DINO's ResNet-50 uses
  2048 -> 2048 -> 256 -> 65536) on the features before the net's last layer,
  which goes unused; the student's head runs once on the features of all crops,
  so its batch norm sees all of them, as DINO's multi-crop wrapper; the teacher's
  on its 2 global crops.  With ``head=None`` (the default) the net's own last
  linear layer is DINO's last layer (:func:`dino_head`: the cosines of the
  L2-normalised features before it with its L2-normalised weight columns).
  With ``batch_statistics=True`` a backbone with batch norms (``nets.get('smallcnn',
  batch_norm=True)``, as DINO's ResNet-50) trains them on batch statistics
  (:data:`jaxinterp.nets.rules.BATCH_STATISTICS`), synchronised over devices as
  DINO's SyncBatchNorm, and the evaluations first recompute their stored
  statistics from the training images (precise BN, :func:`jaxinterp.nets.recompute_batch_norm`).
  DINO freezes the last layer in the first epoch
  (``freeze_last_layer``, 1).  The optimiser is Adam or LARS (``optimiser_name``;
  DINO: AdamW for ViTs, SGD or LARS for ResNets), the schedule a 5 % warm-up then
  a cosine, without DINO's weight-decay schedule or gradient clipping.  The
  collapse monitors of :func:`train_step` (below) show whether the targets go
  uniform or one-dimensional.
* ``'gdt'`` (Patrick et al. ICCV 2021): a Generalised Data Transformation
  contrast over compositions of transformations.  Per image, views =
  {2 random augmentations} x {rotation by 0 or 90 degrees} (``jnp.rot90`` of the
  augmented view): 4 views, whose embeddings enter
  :func:`~jaxinterp.objectives.gdt_loss` (``temperature`` 0.07, GDT) with the
  contrast matrix :func:`gdt_contrast` built by
  :func:`~jaxinterp.objectives.contrast_from_factors` from the factors (sample:
  distinctive, augmentation draw: invariant, rotation: ``rotation`` =
  ``'distinctive'`` (default, as GDT's "distinctive to time reversal": a rotated
  view is a negative of its upright one) or ``'invariant'``).  ``rotation=None``
  drops the rotation factor: 2 views, exactly SimCLR's NT-Xent.

Every update is one jitted call (augmentation included, on device, one key per
step: ``fold_in(fold_in(state.key, 0), step)``); epoch e visits the images in the
order ``permutation(fold_in(fold_in(state.key, 1), e))`` and drops the last
partial batch; SeLa's label step of epoch e draws its views from
``fold_in(fold_in(state.key, 2), e)``.  So a run is a pure function of its
arguments: a run killed and restarted with the same arguments resumes from its
last checkpoint (written at the end of each epoch, with the self-labels, the
teacher and the centre) and ends with the same params.  With several devices the batch is split over the
``'data'`` mesh axis and the state replicated, as in
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

Metrics per epoch (the ``history`` list and the progress lines): mean training
loss; for DINO the collapse monitors of its Sec. 5.3 (Fig. 7), the mean entropy
of the teacher's targets, the entropy of their batch mean and the KL divergence
from target to student (loss minus target entropy: both entropies at ln K is
the uniform collapse, both at 0 the one-dimensional one); for SeLa the NMI and
ARI of the self-labels against ``classes`` (which are used for nothing else);
every ``eval_every`` epochs and at the end, the k-NN and linear-probe
accuracies (:func:`evaluate`) of the features at split point ``feature_layer``
(default ``'avgpool'``) of the ``heldout`` images against the training images,
for DINO of its teacher and of the student (:func:`evaluate_state`).
Experiments: ``experiments/sela.py``, ``simclr.py``, ``dino.py``, ``gdt.py``; their
runs on the synthetic set, and the DINO variants tried there, are in
docs/results/selfsup_synthetic.md.

References:
  Asano, Rupprecht and Vedaldi, "Self-labelling via simultaneous clustering and
  representation learning", ICLR 2020.  Chen et al., "A simple framework for
  contrastive learning of visual representations", ICML 2020.  Caron et al.,
  "Emerging properties in self-supervised vision transformers", ICCV 2021.
  Patrick et al., "On compositions of transformations in contrastive
  self-supervised learning", ICCV 2021.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxinterp import objectives
from jaxinterp.checks import check_int
from jaxinterp.nets import batch_norm_layers, recompute_batch_norm
from jaxinterp.nets.layers import batch_norm_train, dense
from jaxinterp.nets.rules import BATCH_STATISTICS
from jaxinterp.train import loop, metrics, sharding
from jaxinterp.train.augment import AugmentConfig, augment, augment_one, multicrop, sample_params
from jaxinterp.train.classifier import lars_optimiser, optimiser

__all__ = ["dino_head", "DinoParams", "backbone_params", "dino_mlp_init", "dino_mlp", "METHODS", "OPTIMISERS",
           "ROTATIONS", "Options", "SelfSupState", "init_state", "gdt_contrast",
           "batch_loss", "train_step", "features", "label_scores", "label_log_probs", "sharded_sinkhorn_labels",
           "self_labels", "evaluate",
           "evaluate_state", "fit"]

METHODS = ("sela", "simclr", "dino", "gdt")
OPTIMISERS = ("adam", "lars")
ROTATIONS = ("distinctive", "invariant", None)
"""GDT's rotation factor: distinctive, invariant, or absent (2 views, no rotation)."""


class Options(NamedTuple):
    """Static hyper-parameters of one update (hashable: :func:`train_step` compiles once per value).

    Attributes:
      temperature: SimCLR / GDT contrast temperature.
      rotation: GDT's rotation factor, one of :data:`ROTATIONS`.
      n_local: DINO's local crops per image.
      student_temp: DINO's student temperature (0.1).
      teacher_temp: DINO's teacher temperature after warm-up (0.07).
      warmup_teacher_temp: DINO's teacher temperature at epoch 0 (0.04).
      warmup_teacher_epochs: epochs of the linear teacher-temperature warm-up.
      momentum_teacher: DINO's teacher EMA momentum at step 0 (0.996; 1 at the end).
      centre_momentum: DINO's centre EMA momentum (0.9).
      steps_per_epoch: updates per epoch (the teacher temperature changes per epoch).
      total_steps: updates of the whole run (the momentum's cosine reaches 1 there).
      freeze_last_layer_steps: DINO: updates during which the last layer (the prototypes)
        gets a zero gradient (DINO freezes it for its first epoch).
      batch_statistics: DINO: the backbone's batch norms normalise by the batch's
        statistics (:data:`jaxinterp.nets.rules.BATCH_STATISTICS`, PyTorch's training mode).
    """

    temperature: float = 0.1
    rotation: str | None = "distinctive"
    n_local: int = 8
    student_temp: float = 0.1
    teacher_temp: float = 0.07
    warmup_teacher_temp: float = 0.04
    warmup_teacher_epochs: int = 30
    momentum_teacher: float = 0.996
    centre_momentum: float = 0.9
    steps_per_epoch: int = 1
    total_steps: int = 1
    freeze_last_layer_steps: int = 0
    batch_statistics: bool = False


class SelfSupState(NamedTuple):
    """Everything a run needs to continue.

    Attributes:
      step: () int32 updates applied so far.
      params: the net's params (DINO's student; a :class:`DinoParams` with a projection head).
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


def init_state(net, tx: optax.GradientTransformation, key: jax.Array, n: int,
               method: str = "sela", head: tuple[int, int] | None = None) -> SelfSupState:
    """A fresh :class:`SelfSupState` of a run on ``n`` images.

    ``init_key, run_key = split(key)``; params = ``net.init(init_key)`` (for DINO
    with ``head``, :class:`DinoParams` of those and
    ``dino_mlp_init(fold_in(init_key, 1), D, *head, K)``, D the input width of the
    net's last linear layer); DINO's teacher starts equal to the student (DINO);
    the centre at zero.

    Args:
      net: a :class:`jaxinterp.nets.Net` (``num_classes`` = K).
      tx: the optax optimiser.
      key: a PRNG key (``fit`` uses ``jax.random.key(seed)``).
      n: number of training images (the length of ``labels``).
      method: one of :data:`METHODS`.
      head: DINO's projection head (hidden, bottleneck) widths, or None (no MLP, :func:`dino_head`).
    """
    if method not in METHODS:
        raise ValueError(f"method: expected one of {METHODS}, got {method!r}")
    init_key, run_key = jax.random.split(key)
    params = net.init(init_key)
    if head is not None:
        if method != "dino":
            raise ValueError(f"head: a projection head is DINO's; got method {method!r}")
        if not (isinstance(head, tuple) and len(head) == 2):
            raise ValueError(f"head: expected None or (hidden, bottleneck), got {head!r}")
        in_dim = params[net.layers[-1]]["kernel"].shape[0]
        params = DinoParams(params, dino_mlp_init(jax.random.fold_in(init_key, 1), in_dim, *head, net.num_classes))
    teacher = params if method == "dino" else jnp.zeros((), jnp.float32)
    return SelfSupState(jnp.zeros((), jnp.int32), params, tx.init(params), run_key,
                        jnp.zeros((n,), jnp.int32), teacher, jnp.zeros((net.num_classes,), jnp.float32))


def gdt_contrast(batch: int, rotation: str | None = "distinctive") -> np.ndarray:
    """GDT's contrast matrix over the views of a batch, as :func:`fit` orders them.

    Embedding m = v B + n is view v of sample n; the views are v = 2 d + r for
    augmentation draw d in {0, 1} and rotation r in {0 (upright), 1 (90 degrees)}
    (or v = d without rotation).  Factors (sample n: distinctive, draw d:
    invariant, rotation r: ``rotation``) give, by
    :func:`jaxinterp.objectives.contrast_from_factors`, C_ij = 0 if i = j, +1 if
    i and j show the same sample (and, for a distinctive rotation, the same
    rotation), else -1.

    Args:
      batch: B >= 1 samples.
      rotation: ``'distinctive'``, ``'invariant'`` or None (no rotation factor: 2 views).

    Returns:
      int32 (V B, V B) NumPy matrix, V = 4 (2 without rotation).

    References:
      Patrick et al., "On compositions of transformations in contrastive
      self-supervised learning", ICCV 2021.
    """
    batch = check_int(batch, "batch")
    if rotation not in ROTATIONS:
        raise ValueError(f"rotation: expected one of {ROTATIONS}, got {rotation!r}")
    views = 2 if rotation is None else 4
    v = np.repeat(np.arange(views), batch)
    n = np.tile(np.arange(batch), views)
    if rotation is None:
        return objectives.contrast_from_factors(np.stack([n, v], 1), ("distinctive", "invariant"))
    return objectives.contrast_from_factors(np.stack([n, v // 2, v % 2], 1),
                                            ("distinctive", "invariant", rotation))


class DinoParams(NamedTuple):
    """DINO's params with a projection head: the backbone net's params and :func:`dino_mlp_init`'s head."""

    net: Any
    head: Any


def dino_mlp_init(key: jax.Array, in_dim: int, hidden: int, bottleneck: int, k: int) -> dict:
    """Params of DINO's projection head (Caron et al. 2021, Sec. 3.1) for a convnet.

    Three linear layers in_dim -> hidden -> hidden -> bottleneck, the first two
    followed by batch norm and GELU (DINO uses BN in the head of convnets, none
    for ViTs), then a weight-normalised linear layer to K outputs whose norm is
    fixed to 1 (DINO's ``norm_last_layer``).  Linear kernels ~ N(0, 0.02^2)
    (DINO's truncated normal), biases 0; BN scale 1, bias 0; prototypes ~ N(0, 1)
    (only their direction matters).

    Returns:
      {'dense1': {'kernel' (in_dim, hidden), 'bias'}, 'norm1': {'scale', 'bias'},
      'dense2', 'norm2', 'dense3': {'kernel' (hidden, bottleneck), 'bias'},
      'prototypes': (K, bottleneck)}.
    """
    for name, v in (("in_dim", in_dim), ("hidden", hidden), ("bottleneck", bottleneck), ("k", k)):
        v = check_int(v, name)
    keys = jax.random.split(key, 4)
    dims = (in_dim, hidden, hidden, bottleneck)
    head = {}
    for i in range(3):
        head[f"dense{i + 1}"] = {"kernel": 0.02 * jax.random.truncated_normal(keys[i], -2.0, 2.0, dims[i:i + 2]),
                                 "bias": jnp.zeros((dims[i + 1],), jnp.float32)}
        if i < 2:
            head[f"norm{i + 1}"] = {"scale": jnp.ones((hidden,), jnp.float32),
                                    "bias": jnp.zeros((hidden,), jnp.float32)}
    head["prototypes"] = jax.random.normal(keys[3], (k, bottleneck), jnp.float32)
    return head


def dino_mlp(head: dict, feats: jax.Array) -> jax.Array:
    """DINO's projection head on features (B, D) -> (B, K) cosines with the prototypes.

    Batch norm uses the statistics of ``feats`` (training mode, as DINO's student
    and teacher): DINO applies the head once to the features of all crops of a
    batch, so its statistics are over every crop (:func:`dino_head`).  GELU is the
    exact one (PyTorch's ``nn.GELU``).

    Args:
      head: :func:`dino_mlp_init`'s params (in_dim D).
      feats: (B, D) float features, B >= 2 (batch norm needs a batch).

    References:
      Caron et al., "Emerging Properties in Self-Supervised Vision Transformers", ICCV 2021.
    """
    in_dim = head["dense1"]["kernel"].shape[0]
    if feats.ndim != 2 or feats.shape[1] != in_dim or feats.shape[0] < 2:
        raise ValueError(f"feats: expected (B >= 2, {in_dim}) features, got shape {feats.shape}")
    x = feats
    for i in (1, 2):
        x = dense(x, head[f"dense{i}"]["kernel"], head[f"dense{i}"]["bias"])
        x = jax.nn.gelu(batch_norm_train(x, head[f"norm{i}"]["scale"], head[f"norm{i}"]["bias"]), approximate=False)
    x = dense(x, head["dense3"]["kernel"], head["dense3"]["bias"])
    return objectives.prototype_scores(x, head["prototypes"])


def dino_head(net, params, x, rules=None) -> jax.Array:
    """DINO's normalised output: cosines of the (projected) features with the prototypes.

    DINO (Caron et al. 2021, Sec. 3.1 and its code) ends its projection head with
    an L2-normalised bottleneck and a weight-normalised linear layer whose norm is
    fixed to 1, so its K outputs are cosines in [-1, 1] that the temperatures
    (student 0.1, teacher 0.04 - 0.07) turn into peaked distributions.  The
    features are the net's at the split point before its last layer (the
    smallcnn's 128-d ``avgpool``).

    * ``params`` a :class:`DinoParams`: DINO's projection head :func:`dino_mlp`
      on those features (the net's last layer unused).
    * ``params`` the net's params: no MLP; the bottleneck is the features
      themselves and the prototypes the columns of the net's last linear layer's
      kernel (its bias unused): out_k = <z / ||z||, w_k / ||w_k||>.

    Args:
      net: a net whose last split point is a linear layer with params
        ``params[net.layers[-1]]['kernel']`` (D, K) (for :class:`DinoParams`: any net
        whose second-last split point gives the head's ``in_dim`` features).
      params: the net's params or a :class:`DinoParams`.
      x: images (B, H, W, 3) in [0, 1], or a list of such groups of crops (one size
        per group, as DINO's multi-crop wrapper: the backbone runs once per group and
        the head once on all their features, so its batch norm sees every crop).
      rules: the backbone's rules (None: standard; ``BATCH_STATISTICS`` for a backbone
        with batch norms in training mode, each group of crops normalised by its own
        statistics, as DINO's backbone runs once per crop size).

    Returns:
      (sum of the groups' B, K) cosines, the groups in order.
    """
    groups = list(x) if isinstance(x, (list, tuple)) else [x]
    backbone = params.net if isinstance(params, DinoParams) else params
    if not isinstance(params, DinoParams):
        head = backbone.get(net.layers[-1]) if isinstance(backbone, dict) else None
        if not isinstance(head, dict) or "kernel" not in head:
            raise ValueError(f"net: DINO needs a last linear layer with a 'kernel'; {net.name}'s last split point "
                             f"{net.layers[-1]!r} has none")
    feats = jnp.concatenate([net.apply(backbone, g, stop=net.layers[-2], rules=rules).reshape(g.shape[0], -1)
                             for g in groups])
    if isinstance(params, DinoParams):
        return dino_mlp(params.head, feats)
    return objectives.prototype_scores(feats, head["kernel"].T)


def _freeze_last_layer(net, grads, frozen: jax.Array):
    """``grads`` with the prototypes' gradient zeroed where ``frozen`` (DINO's first epoch)."""
    keep = jnp.where(frozen, 0.0, 1.0)
    if isinstance(grads, DinoParams):
        return grads._replace(head={**grads.head, "prototypes": grads.head["prototypes"] * keep})
    last = net.layers[-1]
    return {**grads, last: {**grads[last], "kernel": grads[last]["kernel"] * keep}}


def backbone_params(params):
    """The net's params of a state's params: ``params.net`` of a :class:`DinoParams`, else ``params``."""
    return params.net if isinstance(params, DinoParams) else params


def _teacher_views(net, teacher, globals_, rules):
    b = globals_[0].shape[0]
    t = dino_head(net, teacher, [jnp.concatenate(globals_)], rules)
    return jax.lax.stop_gradient(t.reshape(2, b, -1).transpose(1, 0, 2))   # (B, 2, K)


def _objective(net, method: str, aug, opts: Options, params, state: SelfSupState, key, images, labels):
    """(loss, (teacher outputs (B, 2, K) for DINO else None, :func:`train_step`'s extra statistics))
    of ``params`` on one batch."""
    b = images.shape[0]
    if method == "sela":
        views = augment(key, images, aug)
        return objectives.cross_entropy(net.apply(params, views), labels), (None, {})
    if method == "simclr":
        a = augment(jax.random.fold_in(key, 0), images, aug)
        v = augment(jax.random.fold_in(key, 1), images, aug)
        z = net.apply(params, jnp.concatenate([a, v]))
        return objectives.nt_xent(z[:b], z[b:], temperature=opts.temperature), (None, {})
    if method == "gdt":
        views = [augment(jax.random.fold_in(key, d), images, aug) for d in range(2)]
        if opts.rotation is not None:
            views = [w for x in views for w in (x, jnp.rot90(x, 1, axes=(1, 2)))]
        z = net.apply(params, jnp.concatenate(views))
        return objectives.gdt_loss(z, gdt_contrast(b, opts.rotation), temperature=opts.temperature), (None, {})
    g, loc = multicrop(key, images, opts.n_local, global_configs=aug[:2], local_config=aug[2])
    rules = BATCH_STATISTICS if opts.batch_statistics else None
    t = _teacher_views(net, state.teacher, g, rules)
    s = dino_head(net, params, [jnp.concatenate(g)] + ([jnp.concatenate(loc)] if loc else []), rules)
    s = s.reshape(2 + len(loc), b, -1)
    temp = objectives.teacher_temperature(
        state.step // opts.steps_per_epoch, warmup_temp=opts.warmup_teacher_temp,
        temp=opts.teacher_temp, warmup_epochs=opts.warmup_teacher_epochs)
    loss = objectives.dino_loss(s.transpose(1, 0, 2), t, state.centre, student_temp=opts.student_temp,
                                teacher_temp=temp)
    return loss, (t, _teacher_entropies((t - state.centre) / temp))


def _teacher_entropies(target_logits: jax.Array) -> dict[str, jax.Array]:
    """DINO's collapse monitors (Caron et al. 2021, Sec. 5.3 and Fig. 7) of the teacher's targets.

    ``target_logits``: (B, Vt, K) centred teacher outputs over the teacher temperature.
    ``teacher_entropy``: the mean entropy of one target, h(P_t); ``teacher_marginal_entropy``:
    the entropy of the batch's mean target.  Both near ln K: collapse to the uniform
    distribution; both near 0: collapse to one dimension; h(P_t) low and the marginal
    high: peaked targets spread over the K outputs.
    """
    flat = target_logits.reshape(-1, target_logits.shape[-1])
    return {"teacher_entropy": objectives.conditional_entropy(flat),
            "teacher_marginal_entropy": objectives.marginal_entropy(flat)}


def _step_key(state: SelfSupState) -> jax.Array:
    return jax.random.fold_in(jax.random.fold_in(state.key, 0), state.step)


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3))
def batch_loss(net, method: str, aug, options: Options, state: SelfSupState, images: jax.Array,
               labels: jax.Array, key: jax.Array | None = None) -> jax.Array:
    """The objective :func:`train_step` minimises, at ``state`` on one batch, without an update.

    Args:
      net, method, aug, options: as :func:`train_step` (static).
      state: a :class:`SelfSupState` (its step sets DINO's teacher temperature).
      images: (B, H, W, 3) float32 in [0, 1].
      labels: (B,) int32 self-labels (SeLa; ignored otherwise).
      key: the augmentation key; None = the key of ``state.step``'s update.

    Returns:
      float32 scalar.
    """
    key = _step_key(state) if key is None else key
    return _objective(net, method, aug, options, state.params, state, key, images, labels)[0]


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3, 4))
def train_step(net, tx: optax.GradientTransformation, method: str, aug, options: Options,
               state: SelfSupState, images: jax.Array,
               labels: jax.Array) -> tuple[SelfSupState, dict[str, jax.Array]]:
    """One update on a batch (jitted; ``net``, ``tx``, ``method``, ``aug``, ``options`` static).

    DINO: after the optax update of the student, ``teacher <- m teacher + (1 - m) student``
    with ``m = cosine_schedule(step, total_steps, momentum_teacher, 1)`` and
    ``centre <- c centre + (1 - c) mean(teacher outputs)`` (the outputs of the
    teacher before its update, on this batch's global crops).

    Args:
      method: one of :data:`METHODS`.
      aug: an :class:`AugmentConfig`; for DINO a tuple (global view 1, global view 2, local).
      options: the :class:`Options`.
      state: the current :class:`SelfSupState`.
      images: (B, H, W, 3) float32 in [0, 1] (possibly sharded over ``'data'``).
      labels: (B,) int32 self-labels of these images (ignored by all but SeLa).

    Returns:
      (state, stats): the updated state and float32 scalars of the batch before the
      update: ``'loss'``; for DINO also ``'teacher_entropy'`` (the mean entropy of the
      teacher's centred, sharpened targets) and ``'teacher_marginal_entropy'`` (the
      entropy of their batch mean), DINO's collapse monitors; the loss minus the
      first is DINO's other monitor, the mean KL divergence from target to student.
    """
    key = _step_key(state)
    (loss, (t, stats)), grads = jax.value_and_grad(
        lambda p: _objective(net, method, aug, options, p, state, key, images, labels),
        has_aux=True)(state.params)
    if method == "dino" and options.freeze_last_layer_steps:
        grads = _freeze_last_layer(net, grads, state.step < options.freeze_last_layer_steps)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    teacher, centre = state.teacher, state.centre
    if method == "dino":
        m = objectives.cosine_schedule(state.step, options.total_steps, options.momentum_teacher, 1.0)
        teacher = objectives.ema_update(state.teacher, params, m)
        centre = objectives.update_centre(state.centre, t, momentum=options.centre_momentum)
    return (SelfSupState(state.step + 1, params, opt_state, state.key, state.labels, teacher, centre),
            {"loss": loss, **stats})


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
    result = sharded_sinkhorn_labels(scores, n=len(images), lam=_positive(lam, "lam"), mesh=mesh)
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
        batch statistics (``fit(batch_statistics=True)``).

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


def evaluate_state(net, state: SelfSupState, method: str, train, heldout, *, layer: str = "avgpool", k: int = 20,
                   mesh=None, precise_bn: bool = False) -> dict[str, float]:
    """:func:`evaluate` of the net a method delivers: DINO's teacher, else the trained params.

    DINO evaluates its teacher (Caron et al. 2021, Sec. 5.2: the teacher
    outperforms the student throughout training; its k-NN and linear evaluations
    load the teacher's weights), so for ``method='dino'`` ``knn_accuracy`` and
    ``linear_probe`` are the teacher's and ``student_knn_accuracy`` /
    ``student_linear_probe`` the student's.

    Args:
      state: a :class:`SelfSupState` of ``method``.
      train, heldout, layer, k, mesh, precise_bn: as :func:`evaluate`.
    """
    if method not in METHODS:
        raise ValueError(f"method: expected one of {METHODS}, got {method!r}")
    score = functools.partial(evaluate, net, train=train, heldout=heldout, layer=layer, k=k, mesh=mesh,
                              precise_bn=precise_bn)
    if method != "dino":
        return score(state.params)
    return {**score(backbone_params(state.teacher)),
            **{f"student_{name}": v for name, v in score(backbone_params(state.params)).items()}}


def _positive(v, name: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or not v > 0:
        raise ValueError(f"{name}: expected a positive number, got {v!r}")
    return float(v)


def _default_aug(method: str, hw: tuple[int, int]):
    if method == "dino":
        local = (max(1, round(hw[0] * 7 / 16)), max(1, round(hw[1] * 7 / 16)))
        return (AugmentConfig.dino_global(1, size=hw), AugmentConfig.dino_global(2, size=hw),
                AugmentConfig.dino_local(size=local))
    if method == "sela":
        return AugmentConfig.sela(size=hw)
    return AugmentConfig.simclr(size=hw, scale=(0.2, 1.0))


def _check_aug(method: str, aug, rotation) -> None:
    if method == "dino":
        if not (isinstance(aug, tuple) and len(aug) == 3 and all(isinstance(a, AugmentConfig) for a in aug)):
            raise ValueError(f"aug: DINO expects None or a tuple of 3 AugmentConfigs (global view 1, "
                             f"global view 2, local), got {aug!r}")
        if aug[0].size != aug[1].size:
            raise ValueError(f"aug: DINO's two global views need one size, got {aug[0].size} and {aug[1].size}")
        return
    if not isinstance(aug, AugmentConfig):
        raise ValueError(f"aug: expected an AugmentConfig, got {type(aug).__name__}")
    if method == "gdt" and rotation is not None and aug.size[0] != aug.size[1]:
        raise ValueError(f"aug: GDT rotates views by 90 degrees; expected a square size, got {aug.size}")


def fit(net, images, *, epochs: int, batch_size: int, method: str = "sela", lr: float = 1e-3,
        seed: int = 0, aug=None, lam: float = 25.0, label_every: int = 1, label_views: int = 1,
        temperature: float | None = None, rotation: str | None = "distinctive", n_local: int = 8,
        student_temp: float = 0.1, teacher_temp: float = 0.07, warmup_teacher_temp: float = 0.04,
        warmup_teacher_epochs: int | None = None, momentum_teacher: float = 0.996,
        centre_momentum: float = 0.9, head: tuple[int, int] | None = None, freeze_last_layer: int = 1,
        optimiser_name: str = "adam", weight_decay: float = 1e-6, batch_statistics: bool = False,
        classes=None, heldout=None,
        eval_every: int = 5, knn_k: int = 20,
        feature_layer: str = "avgpool", checkpoint_dir: str | None = None,
        until_epoch: int | None = None, progress: Callable[[str], Any] | None = print,
        mesh: jax.sharding.Mesh | None = None) -> tuple[SelfSupState, list[dict]]:
    """Train ``net`` without labels on ``images`` (module docstring).

    Args:
      net: a :class:`jaxinterp.nets.Net`; for SeLa ``num_classes`` = number of clusters K
        (K <= N), for SimCLR / GDT the embedding dimension, for DINO the head's output
        dimension K.
      images: (N, H, W, 3) float in [0, 1] or uint8 in [0, 255]: a numpy array or an
        ``np.memmap`` (host memory or disk; read one batch at a time).
      epochs: passes over the data (a resumed run counts the restored ones), >= 1.
      batch_size: images per update, a multiple of the devices of ``mesh``, <= N.
      method: one of :data:`METHODS`.
      lr: peak learning rate (warm-up over 5 % of the run, then cosine to 0).
      seed: ``jax.random.key(seed)`` makes the init and run keys (:func:`init_state`).
      aug: the augmentation.  SeLa / SimCLR / GDT: an :class:`AugmentConfig` (default
        SeLa: ``AugmentConfig.sela`` at the image size, SeLa's transform; SimCLR / GDT:
        ``AugmentConfig.simclr``, scale (0.2, 1) as in SimCLR's CIFAR setting; square
        for GDT's rotations).  DINO: a tuple (global view 1, global
        view 2, local) (default ``AugmentConfig.dino_global(1|2)`` at the image size and
        ``dino_local`` at 7/16 of it, DINO's 96 / 224).
      lam: SeLa's lambda (25, SeLa ImageNet).
      label_every: SeLa: epochs between label updates (1; SeLa spreads ~80 label steps
        over 400 epochs, a rate set by the cost of ImageNet, not needed here).
      label_views: SeLa: augmented views (``aug``) per image whose mean log-probabilities
        the label step equipartitions (:func:`label_log_probs`); 1 = SeLa's released
        code (the training transform), 0 = the un-augmented images.
      temperature: SimCLR / GDT temperature; None = 0.1 for SimCLR, 0.07 for GDT.
      rotation: GDT's rotation factor: ``'distinctive'`` (default), ``'invariant'``, or
        None (no rotation: 2 views, SimCLR's contrast).
      n_local: DINO's local crops per image, >= 0 (8, DINO).
      student_temp: DINO's student temperature (0.1).
      teacher_temp: DINO's teacher temperature after the warm-up (0.07).
      warmup_teacher_temp: DINO's teacher temperature at the start (0.04).
      warmup_teacher_epochs: epochs of the linear warm-up; None = round(0.3 epochs)
        (DINO: 30 of 100).
      momentum_teacher: DINO's teacher EMA momentum at step 0 in [0, 1] (0.996), cosine to 1.
      centre_momentum: DINO's centre EMA momentum in [0, 1] (0.9).
      head: DINO's projection head (hidden, bottleneck), e.g. (512, 128) (DINO's
        ResNet-50: (2048, 256)): :func:`dino_mlp` with batch norm, the net's last
        layer unused; None = no MLP, the net's last layer as DINO's last layer
        (:func:`dino_head`).
      freeze_last_layer: DINO: epochs, from the start, during which the last layer
        (the prototypes) gets a zero gradient (1, DINO).  Optax still applies the
        weight decay to it (PyTorch skips a parameter without a gradient); the
        prototypes enter only through their direction, which decay leaves unchanged.
      optimiser_name: ``'adam'`` (``classifier.optimiser``) or ``'lars'``
        (``classifier.lars_optimiser``, SimCLR's LARS; DINO offers it too).  SeLa,
        SimCLR, DINO use SGD / LARS / AdamW at larger batch sizes; Adam trains this
        small net on small batches without tuning.
      weight_decay: LARS's weight decay (1e-6, SimCLR); unused by Adam.
      batch_statistics: DINO with a backbone that has batch norms (``nets.get('smallcnn',
        batch_norm=True)``): train them on batch statistics
        (:data:`jaxinterp.nets.rules.BATCH_STATISTICS`; the student's and the teacher's
        global crops, and the student's local crops, each one batch, as DINO's backbone,
        synchronised over devices as DINO's SyncBatchNorm); the evaluations first set the
        stored statistics from the training images (:func:`evaluate`'s ``precise_bn``).
        Their running averages are not kept during training.
      classes: (N,) int true classes, used only for the NMI / ARI / k-NN metrics (optional).
      heldout: (images, labels) for the k-NN and linear-probe metrics (optional; ``classes`` required).
      eval_every: epochs between these evaluations (and at the end).
      knn_k: neighbours of the k-NN vote (20).
      feature_layer: the split point whose activations are the features ('avgpool').
      checkpoint_dir: save at the end of every epoch and resume from the latest there
        (which must come from a run with the same arguments).
      until_epoch: stop after this epoch (as if killed; a later call resumes), or None.
      progress: called with each progress line; None = silent.
      mesh: a ``'data'`` mesh; None = all devices.

    Returns:
      (state, history): the final :class:`SelfSupState` and one dict per epoch with
      ``epoch``, ``step``, ``loss``, ``seconds``; for DINO ``teacher_entropy``,
      ``teacher_marginal_entropy`` and ``kl`` (:func:`train_step`, the epoch's means);
      and, when computed, ``nmi``, ``ari``, ``knn_accuracy``, ``linear_probe``
      (:func:`evaluate_state`: for DINO the teacher's, and ``student_knn_accuracy``,
      ``student_linear_probe``).

    Raises:
      ValueError: a bad argument (named first in the message).
      FloatingPointError: the training loss became NaN or infinite (nothing is saved).
    """
    if method not in METHODS:
        raise ValueError(f"method: expected one of {METHODS}, got {method!r}")
    _check_images(images)
    n = len(images)
    mesh = sharding.data_mesh() if mesh is None else mesh
    devices = mesh.shape[sharding.DATA]
    epochs = check_int(epochs, "epochs")
    if batch_size < 1 or batch_size % devices or batch_size > n:
        raise ValueError(f"batch_size: expected a positive multiple of the {devices} devices, "
                         f"at most N = {n}, got {batch_size}")
    label_views = check_int(label_views, "label_views", minimum=0)
    if label_every < 1 or eval_every < 1:
        raise ValueError(f"label_every: expected ints >= 1 (and eval_every), got {label_every}, {eval_every}")
    if classes is not None and np.shape(classes) != (n,):
        raise ValueError(f"classes: expected shape ({n},), got {np.shape(classes)}")
    if heldout is not None and classes is None:
        raise ValueError("classes: required with heldout (the k-NN training labels)")
    if heldout is not None:
        _check_images(heldout[0], "heldout")
    if method == "sela" and net.num_classes > n:
        raise ValueError(f"net: SeLa needs K = num_classes <= N = {n}")
    if temperature is None:
        temperature = 0.07 if method == "gdt" else 0.1
    temperature = _positive(temperature, "temperature")
    if rotation not in ROTATIONS:
        raise ValueError(f"rotation: expected one of {ROTATIONS}, got {rotation!r}")
    n_local = check_int(n_local, "n_local", minimum=0)
    student_temp = _positive(student_temp, "student_temp")
    teacher_temp = _positive(teacher_temp, "teacher_temp")
    warmup_teacher_temp = _positive(warmup_teacher_temp, "warmup_teacher_temp")
    if warmup_teacher_epochs is None:
        warmup_teacher_epochs = round(0.3 * epochs)
    if (isinstance(warmup_teacher_epochs, bool) or not isinstance(warmup_teacher_epochs, (int, np.integer))
            or warmup_teacher_epochs < 0):
        raise ValueError(f"warmup_teacher_epochs: expected None or an int >= 0, got {warmup_teacher_epochs!r}")
    if head is not None and (method != "dino" or not (isinstance(head, tuple) and len(head) == 2)):
        raise ValueError(f"head: expected None or, for DINO, (hidden, bottleneck); got {head!r} for {method!r}")
    if isinstance(freeze_last_layer, bool) or not isinstance(freeze_last_layer, (int, np.integer)) \
            or freeze_last_layer < 0:
        raise ValueError(f"freeze_last_layer: expected an int >= 0, got {freeze_last_layer!r}")
    if batch_statistics and (method != "dino" or not batch_norm_layers(net)):
        raise ValueError(f"batch_statistics: for DINO with a net whose batch norms are split points; got "
                         f"{method!r} with {net!r}")
    if optimiser_name not in OPTIMISERS:
        raise ValueError(f"optimiser_name: expected one of {OPTIMISERS}, got {optimiser_name!r}")
    for name, v in (("momentum_teacher", momentum_teacher), ("centre_momentum", centre_momentum)):
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or not 0 <= v <= 1:
            raise ValueError(f"{name}: expected a number in [0, 1], got {v!r}")
    hw = tuple(int(s) for s in images.shape[1:3])
    aug = _default_aug(method, hw) if aug is None else aug
    _check_aug(method, aug, rotation)
    steps_per_epoch = n // batch_size
    total = epochs * steps_per_epoch
    opts = Options(temperature=temperature, rotation=rotation, n_local=int(n_local),
                   student_temp=student_temp, teacher_temp=teacher_temp,
                   warmup_teacher_temp=warmup_teacher_temp, warmup_teacher_epochs=int(warmup_teacher_epochs),
                   momentum_teacher=float(momentum_teacher), centre_momentum=float(centre_momentum),
                   steps_per_epoch=steps_per_epoch, total_steps=total,
                   freeze_last_layer_steps=int(freeze_last_layer) * steps_per_epoch if method == "dino" else 0,
                   batch_statistics=bool(batch_statistics))
    tx = optimiser(lr, total) if optimiser_name == "adam" else lars_optimiser(lr, total, float(weight_decay))
    config = {"net": repr(net), "method": method, "epochs": epochs, "batch_size": batch_size, "lr": lr,
              "seed": seed, "aug": repr(aug), "lam": lam, "label_every": label_every,
              "label_views": int(label_views),
              "temperature": temperature, "n": n, "options": opts._asdict(),
              "head": None if head is None else list(head),
              "optimiser": optimiser_name, "weight_decay": weight_decay}
    state = init_state(net, tx, jax.random.key(seed), n, method, head)
    host_key = state.key
    rows = sharding.process_rows(batch_size, mesh)          # this process's rows of each batch

    def advance(state, epoch, _):
        """SeLa's label step if due, then one pass over the images in the epoch's order."""
        if method == "sela" and epoch % label_every == 0:
            result = self_labels(net, state.params, images, lam=lam, aug=aug, views=int(label_views),
                                 key=jax.random.fold_in(jax.random.fold_in(host_key, 2), epoch), mesh=mesh)
            state = state._replace(labels=sharding.replicate(result.labels, mesh))
        order = np.asarray(jax.random.permutation(jax.random.fold_in(jax.random.fold_in(host_key, 1), epoch), n))
        labels = sharding.local_value(state.labels)
        total = None
        for b in range(steps_per_epoch):
            idx = order[b * batch_size:(b + 1) * batch_size][rows]
            x, y = sharding.from_process_rows((_host_float(images[idx]), labels[idx]), mesh, batch_size)
            state, stats = train_step(net, tx, method, aug, opts, state, x, y)
            total = stats if total is None else jax.tree.map(jnp.add, total, stats)
        return state, {k: v / steps_per_epoch for k, v in total.items()}

    def row(state, epoch, means):
        out = {"epoch": epoch}
        if method == "sela" and classes is not None:
            y = sharding.local_value(state.labels)
            out.update(nmi=metrics.nmi(y, np.asarray(classes)), ari=metrics.ari(y, np.asarray(classes)))
        out.update(step=epoch * steps_per_epoch, **means)
        if method == "dino":
            out["kl"] = out["loss"] - out["teacher_entropy"]
        if heldout is not None and (epoch % eval_every == 0 or epoch == epochs):
            out.update(evaluate_state(net, state, method, (images, classes), heldout,
                                      layer=feature_layer, k=knn_k, mesh=mesh, precise_bn=batch_statistics))
        return out

    settings = loop.Loop(units=epochs, unit="epoch", steps_per_unit=steps_per_epoch, checkpoint_dir=checkpoint_dir,
                         until=until_epoch)
    state, history = loop.run(state, advance, settings, config=config, row=row, progress=progress, mesh=mesh)
    # This process's copy of the replicated state, on its first device.
    return jax.tree.map(lambda a: a if isinstance(a, jax.Array) else jnp.asarray(a),
                        sharding.local_value(state)), history
