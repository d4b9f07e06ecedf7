"""DINO (Caron et al. ICCV 2021): self-distillation with an EMA teacher (a ``selfsup.Method``).

    method = DINO(n_local=2, head=(512, 128))
    state, history = selfsup.fit(net, images, method, selfsup.Settings(epochs=100, batch_size=128))

The student is the net being trained, the teacher an EMA of its params
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
net and DINO's projection head for convnets (:class:`jaxinterp.nets.DinoHead`
as :func:`~jaxinterp.nets.dino_mlp`: 3 linear layers, batch norm and GELU after
the first two, an L2-normalised bottleneck, a weight-normalised last layer of
norm 1 to K outputs; DINO's ResNet-50 uses
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
DINO freezes the last layer in the first epoch (``freeze_last_layer``, 1).  The
optimiser is Adam or LARS (:class:`~jaxinterp.train.selfsup.Settings`; DINO:
AdamW for ViTs, SGD or LARS for ResNets), the schedule a 5 % warm-up then a
cosine, without DINO's weight-decay schedule or gradient clipping.

Metrics per epoch: the collapse monitors of DINO's Sec. 5.3 (Fig. 7), the mean
entropy of the teacher's targets (``teacher_entropy``), the entropy of their
batch mean (``teacher_marginal_entropy``) and the KL divergence from target to
student (``kl``, the loss minus the target entropy): both entropies at ln K is
the uniform collapse, both at 0 the one-dimensional one.  The evaluations are
the teacher's (DINO's Sec. 5.2) and, as ``student_*``, the student's.

References:
  Caron et al., "Emerging properties in self-supervised vision transformers", ICCV 2021.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp

from jaxinterp import objectives
from jaxinterp.checks import check_fraction, check_int, check_positive_float
from jaxinterp.nets import batch_norm_layers
from jaxinterp.nets.dino_head import dino_mlp, dino_mlp_init
from jaxinterp.nets.rules import BATCH_STATISTICS
from jaxinterp.train.augment import AugmentConfig, multicrop
from jaxinterp.train.selfsup import Method

__all__ = ["DINO", "DinoParams", "dino_head", "backbone_params"]


class DinoParams(NamedTuple):
    """DINO's params with a projection head: the backbone net's params and
    :func:`jaxinterp.nets.dino_mlp_init`'s head."""

    net: Any
    head: Any


def dino_head(net, params, x, rules=None) -> jax.Array:
    """DINO's normalised output: cosines of the (projected) features with the prototypes.

    DINO (Caron et al. 2021, Sec. 3.1 and its code) ends its projection head with
    an L2-normalised bottleneck and a weight-normalised linear layer whose norm is
    fixed to 1, so its K outputs are cosines in [-1, 1] that the temperatures
    (student 0.1, teacher 0.04 - 0.07) turn into peaked distributions.  The
    features are the net's at the split point before its last layer (the
    smallcnn's 128-d ``avgpool``).

    * ``params`` a :class:`DinoParams`: DINO's projection head
      :func:`~jaxinterp.nets.dino_mlp` on those features (the net's last layer unused).
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


@dataclasses.dataclass(frozen=True)
class DINO(Method):
    """DINO's hyper-parameters (module docstring); a static, hashable argument of the jitted update.

    Attributes:
      aug: (global view 1, global view 2, local) :class:`AugmentConfig` s; None = at
        :meth:`prepare`, ``AugmentConfig.dino_global(1|2)`` at the image size and
        ``dino_local`` at 7/16 of it (DINO's 96 / 224).
      n_local: local crops per image, >= 0 (8, DINO).
      student_temp: the student's temperature (0.1).
      teacher_temp: the teacher's temperature after the warm-up (0.07).
      warmup_teacher_temp: the teacher's temperature at epoch 0 (0.04).
      warmup_teacher_epochs: epochs of the linear warm-up; None = round(0.3 epochs) at
        :meth:`prepare` (DINO: 30 of 100).
      momentum_teacher: the teacher's EMA momentum at step 0, in [0, 1] (0.996), cosine to 1.
      centre_momentum: the centre's EMA momentum, in [0, 1] (0.9).
      head: the projection head (hidden, bottleneck), e.g. (512, 128) (DINO's ResNet-50:
        (2048, 256)): :func:`~jaxinterp.nets.dino_mlp` with batch norm, the net's last layer unused;
        None = no MLP, the net's last layer as DINO's last layer (:func:`dino_head`).
      freeze_last_layer: epochs, from the start, during which the last layer (the
        prototypes) gets a zero gradient (1, DINO).  Optax still applies the weight
        decay to it (PyTorch skips a parameter without a gradient); the prototypes
        enter only through their direction, which decay leaves unchanged.
      batch_statistics: the backbone's batch norms normalise by the batch's statistics
        (:data:`jaxinterp.nets.rules.BATCH_STATISTICS`, PyTorch's training mode; the
        student's and the teacher's global crops, and the student's local crops, each one
        batch, as DINO's backbone, synchronised over devices as DINO's SyncBatchNorm); the
        evaluations first set the stored statistics from the training images.  Their
        running averages are not kept during training.
      steps_per_epoch: updates per epoch (the teacher temperature changes per epoch; set by
        :meth:`prepare`).
      total_steps: updates of the whole run (the momentum's cosine reaches 1 there; set by
        :meth:`prepare`).
    """

    name: ClassVar[str] = "dino"
    aug: tuple[AugmentConfig, AugmentConfig, AugmentConfig] | None = None
    n_local: int = 8
    student_temp: float = 0.1
    teacher_temp: float = 0.07
    warmup_teacher_temp: float = 0.04
    warmup_teacher_epochs: int | None = None
    momentum_teacher: float = 0.996
    centre_momentum: float = 0.9
    head: tuple[int, int] | None = None
    freeze_last_layer: int = 1
    batch_statistics: bool = False
    steps_per_epoch: int = 1
    total_steps: int = 1

    def __post_init__(self):
        check_int(self.n_local, "n_local", minimum=0)
        for name in ("student_temp", "teacher_temp", "warmup_teacher_temp"):
            check_positive_float(getattr(self, name), name)
        if self.warmup_teacher_epochs is not None:
            check_int(self.warmup_teacher_epochs, "warmup_teacher_epochs", minimum=0)
        for name in ("momentum_teacher", "centre_momentum"):
            check_fraction(getattr(self, name), name)
        if self.head is not None and not (isinstance(self.head, tuple) and len(self.head) == 2):
            raise ValueError(f"head: expected None or (hidden, bottleneck), got {self.head!r}")
        check_int(self.freeze_last_layer, "freeze_last_layer", minimum=0)
        check_int(self.steps_per_epoch, "steps_per_epoch")
        check_int(self.total_steps, "total_steps")
        if self.aug is not None:
            if not (isinstance(self.aug, tuple) and len(self.aug) == 3
                    and all(isinstance(a, AugmentConfig) for a in self.aug)):
                raise ValueError(f"aug: DINO expects None or a tuple of 3 AugmentConfigs (global view 1, "
                                 f"global view 2, local), got {self.aug!r}")
            if self.aug[0].size != self.aug[1].size:
                raise ValueError(f"aug: DINO's two global views need one size, got {self.aug[0].size} and "
                                 f"{self.aug[1].size}")

    @property
    def rules(self):
        """The backbone's rules: :data:`BATCH_STATISTICS` with ``batch_statistics``, else None (standard)."""
        return BATCH_STATISTICS if self.batch_statistics else None

    def prepare(self, net, image_size, n, epochs, steps_per_epoch):
        if self.batch_statistics and not batch_norm_layers(net):
            raise ValueError(f"batch_statistics: for a net whose batch norms are split points; got {net!r}")
        hw = tuple(image_size)
        local = (max(1, round(hw[0] * 7 / 16)), max(1, round(hw[1] * 7 / 16)))
        aug = self.aug or (AugmentConfig.dino_global(1, size=hw), AugmentConfig.dino_global(2, size=hw),
                           AugmentConfig.dino_local(size=local))
        warmup = round(0.3 * epochs) if self.warmup_teacher_epochs is None else self.warmup_teacher_epochs
        return dataclasses.replace(self, aug=aug, warmup_teacher_epochs=warmup, steps_per_epoch=steps_per_epoch,
                                   total_steps=epochs * steps_per_epoch)

    def init_params(self, net, key):
        params = net.init(key)
        if self.head is None:
            return params
        in_dim = params[net.layers[-1]]["kernel"].shape[0]
        return DinoParams(params, dino_mlp_init(jax.random.fold_in(key, 1), in_dim, *self.head, net.num_classes))

    def init_teacher(self, params):
        return params                                     # the teacher starts equal to the student (DINO)

    def loss(self, net, params, state, key, images, labels):
        b = images.shape[0]
        g, loc = multicrop(key, images, self.n_local, global_configs=self.aug[:2], local_config=self.aug[2])
        t = _teacher_views(net, state.teacher, g, self.rules)
        s = dino_head(net, params, [jnp.concatenate(g)] + ([jnp.concatenate(loc)] if loc else []), self.rules)
        s = s.reshape(2 + len(loc), b, -1)
        temp = objectives.teacher_temperature(
            state.step // self.steps_per_epoch, warmup_temp=self.warmup_teacher_temp,
            temp=self.teacher_temp, warmup_epochs=self.warmup_teacher_epochs)
        loss = objectives.dino_loss(s.transpose(1, 0, 2), t, state.centre, student_temp=self.student_temp,
                                    teacher_temp=temp)
        return loss, (t, _teacher_entropies((t - state.centre) / temp))

    def grads(self, net, grads, state):
        """The prototypes' gradient zeroed in the first ``freeze_last_layer`` epochs."""
        steps = self.freeze_last_layer * self.steps_per_epoch
        return _freeze_last_layer(net, grads, state.step < steps) if steps else grads

    def post_update(self, state, teacher_outputs):
        """``teacher <- m teacher + (1 - m) student`` (m = ``cosine_schedule(step, total_steps,
        momentum_teacher, 1)``) and ``centre <- c centre + (1 - c) mean(teacher outputs)`` (the
        outputs of the teacher before its update, on this batch's global crops)."""
        m = objectives.cosine_schedule(state.step, self.total_steps, self.momentum_teacher, 1.0)
        return state._replace(teacher=objectives.ema_update(state.teacher, state.params, m),
                              centre=objectives.update_centre(state.centre, teacher_outputs,
                                                              momentum=self.centre_momentum))

    def summary(self, means):
        return {"kl": means["loss"] - means["teacher_entropy"]}

    def evaluated(self, state):
        """The teacher (DINO evaluates it, Sec. 5.2), and the student as ``student_*``."""
        return {"": backbone_params(state.teacher), "student_": backbone_params(state.params)}
