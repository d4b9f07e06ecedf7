"""SeLa (Asano, Rupprecht and Vedaldi, ICLR 2020): self-labelling by optimal transport (a ``selfsup.Method``).

    net = nets.get("smallcnn", num_classes=32)            # logits = cluster scores
    state, history = selfsup.fit(net, images, SeLa(lam=10.0, label_views=4),
                                 selfsup.Settings(epochs=20, batch_size=128), classes=labels)

The net's logits are the scores of K clusters.  Every ``label_every`` epochs (from
epoch 0) the labels of the whole data set are re-estimated by
:func:`jaxinterp.objectives.sinkhorn_labels` (equipartitioned, lambda ``lam``;
sharded over the devices, :func:`~jaxinterp.train.selfsup.self_labels`) on the
log-probabilities of augmented views, averaged over ``label_views`` views of each
image (:func:`~jaxinterp.train.selfsup.label_scores`: SeLa clusters p(c | t(x)),
"transformation-invariant clustering", and its code labels the training
transform, one view); in between, the net is trained by cross-entropy on one
augmented view of each image against its current label.  The default
augmentation is SeLa's (:meth:`AugmentConfig.sela
<jaxinterp.train.augment.AugmentConfig.sela>`: hue jitter 0.4 on every view).
One head (SeLa uses 10 on ImageNet).  The history rows hold the NMI and ARI of
the self-labels against ``fit``'s ``classes`` (used for nothing else).

References:
  Asano, Rupprecht and Vedaldi, "Self-labelling via simultaneous clustering and
  representation learning", ICLR 2020.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np

from jaxinterp import objectives
from jaxinterp.checks import check_int, check_positive_float
from jaxinterp.train import metrics, sharding
from jaxinterp.train.augment import AugmentConfig, augment
from jaxinterp.train.selfsup import Method, self_labels

__all__ = ["SeLa"]


@dataclasses.dataclass(frozen=True)
class SeLa(Method):
    """SeLa's hyper-parameters (module docstring); a static, hashable argument of the jitted update.

    Attributes:
      aug: the :class:`AugmentConfig` of the training views and the label step's views;
        None = ``AugmentConfig.sela`` at the image size (SeLa's transform).
      lam: SeLa's lambda, > 0 (25, SeLa ImageNet).
      label_every: epochs between label updates, >= 1 (1; SeLa spreads ~80 label steps
        over 400 epochs, a rate set by the cost of ImageNet, not needed here).
      label_views: augmented views per image whose mean log-probabilities the label step
        equipartitions (:func:`~jaxinterp.train.selfsup.label_log_probs`), >= 0; 1 = SeLa's
        released code (the training transform), 0 = the un-augmented images.
    """

    name: ClassVar[str] = "sela"
    aug: AugmentConfig | None = None
    lam: float = 25.0
    label_every: int = 1
    label_views: int = 1

    def __post_init__(self):
        if self.aug is not None and not isinstance(self.aug, AugmentConfig):
            raise ValueError(f"aug: expected an AugmentConfig, got {type(self.aug).__name__}")
        check_positive_float(self.lam, "lam")
        check_int(self.label_every, "label_every")
        check_int(self.label_views, "label_views", minimum=0)

    def prepare(self, net, image_size, n, epochs, steps_per_epoch):
        if net.num_classes > n:
            raise ValueError(f"net: SeLa needs K = num_classes <= N = {n}")
        return self if self.aug is not None else dataclasses.replace(self, aug=AugmentConfig.sela(size=image_size))

    def loss(self, net, params, state, key, images, labels):
        """Cross-entropy of one augmented view of each image against its self-label."""
        return objectives.cross_entropy(net.apply(params, augment(key, images, self.aug)), labels), (None, {})

    def start_epoch(self, net, state, images, epoch, key, mesh):
        """The label step, every ``label_every`` epochs from epoch 0: new self-labels of all images."""
        if epoch % self.label_every:
            return state
        result = self_labels(net, state.params, images, lam=self.lam, aug=self.aug, views=self.label_views,
                             key=key, mesh=mesh)
        return state._replace(labels=sharding.replicate(result.labels, mesh))

    def row(self, state, classes):
        """NMI and ARI of the self-labels against the true ``classes`` (none without them)."""
        if classes is None:
            return {}
        y, c = sharding.local_value(state.labels), np.asarray(classes)
        return {"nmi": metrics.nmi(y, c), "ari": metrics.ari(y, c)}
