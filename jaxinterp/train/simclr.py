"""SimCLR (Chen et al. 2020): NT-Xent between two augmented views (a ``selfsup.Method``).

    net = nets.get("smallcnn", num_classes=64)            # the output is the embedding
    state, history = selfsup.fit(net, images, SimCLR(temperature=0.1),
                                 selfsup.Settings(epochs=20, batch_size=128))

Two augmented views per image, the net's output (``num_classes`` = embedding
dimension; the linear ``classifier`` of the smallcnn plays SimCLR's projection
head) under :func:`jaxinterp.objectives.nt_xent` with ``temperature`` (0.1).
The default augmentation is ``AugmentConfig.simclr`` with scale (0.2, 1), as in
SimCLR's CIFAR setting.

References:
  Chen et al., "A simple framework for contrastive learning of visual
  representations", ICML 2020.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp

from jaxinterp import objectives
from jaxinterp.checks import check_positive_float
from jaxinterp.train.augment import AugmentConfig, augment
from jaxinterp.train.selfsup import Method

__all__ = ["SimCLR"]


@dataclasses.dataclass(frozen=True)
class SimCLR(Method):
    """SimCLR's hyper-parameters; a static, hashable argument of the jitted update.

    Attributes:
      aug: the :class:`AugmentConfig` of the views; None = ``AugmentConfig.simclr`` at the
        image size with scale (0.2, 1).
      temperature: NT-Xent's temperature, > 0 (0.1).
    """

    name: ClassVar[str] = "simclr"
    aug: AugmentConfig | None = None
    temperature: float = 0.1

    def __post_init__(self):
        if self.aug is not None and not isinstance(self.aug, AugmentConfig):
            raise ValueError(f"aug: expected an AugmentConfig, got {type(self.aug).__name__}")
        check_positive_float(self.temperature, "temperature")

    def prepare(self, net, image_size, n, epochs, steps_per_epoch):
        if self.aug is not None:
            return self
        return dataclasses.replace(self, aug=AugmentConfig.simclr(size=image_size, scale=(0.2, 1.0)))

    def loss(self, net, params, state, key, images, labels):
        """NT-Xent between the embeddings of views ``augment(fold_in(key, 0))`` and ``(fold_in(key, 1))``."""
        b = images.shape[0]
        a = augment(jax.random.fold_in(key, 0), images, self.aug)
        v = augment(jax.random.fold_in(key, 1), images, self.aug)
        z = net.apply(params, jnp.concatenate([a, v]))
        return objectives.nt_xent(z[:b], z[b:], temperature=self.temperature), (None, {})
