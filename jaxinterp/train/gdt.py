"""GDT (Patrick et al. ICCV 2021): a contrast over compositions of transformations (a ``selfsup.Method``).

    net = nets.get("smallcnn", num_classes=64)            # the output is the embedding
    state, history = selfsup.fit(net, images, GDT(rotation="distinctive"),
                                 selfsup.Settings(epochs=20, batch_size=128))

A Generalised Data Transformation contrast over compositions of
transformations.  Per image, views = {2 random augmentations} x {rotation by 0
or 90 degrees} (``jnp.rot90`` of the augmented view): 4 views, whose embeddings
enter :func:`~jaxinterp.objectives.gdt_loss` (``temperature`` 0.07, GDT) with the
contrast matrix :func:`gdt_contrast` built by
:func:`~jaxinterp.objectives.contrast_from_factors` from the factors (sample:
distinctive, augmentation draw: invariant, rotation: ``rotation`` =
``'distinctive'`` (default, as GDT's "distinctive to time reversal": a rotated
view is a negative of its upright one) or ``'invariant'``).  ``rotation=None``
drops the rotation factor: 2 views, exactly SimCLR's NT-Xent.  The default
augmentation is ``AugmentConfig.simclr`` with scale (0.2, 1), square for the
rotations.

References:
  Patrick et al., "On compositions of transformations in contrastive
  self-supervised learning", ICCV 2021.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp import objectives
from jaxinterp.checks import check_int, check_positive_float
from jaxinterp.train.augment import AugmentConfig, augment
from jaxinterp.train.selfsup import Method

__all__ = ["ROTATIONS", "GDT", "gdt_contrast"]

ROTATIONS = ("distinctive", "invariant", None)
"""GDT's rotation factor: distinctive, invariant, or absent (2 views, no rotation)."""


def gdt_contrast(batch: int, rotation: str | None = "distinctive") -> np.ndarray:
    """GDT's contrast matrix over the views of a batch, as :meth:`GDT.loss` orders them.

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


@dataclasses.dataclass(frozen=True)
class GDT(Method):
    """GDT's hyper-parameters (module docstring); a static, hashable argument of the jitted update.

    Attributes:
      aug: the :class:`AugmentConfig` of the views (square with a rotation factor); None =
        ``AugmentConfig.simclr`` at the image size with scale (0.2, 1).
      temperature: the contrast's temperature, > 0 (0.07, GDT).
      rotation: the rotation factor, one of :data:`ROTATIONS`.
    """

    name: ClassVar[str] = "gdt"
    aug: AugmentConfig | None = None
    temperature: float = 0.07
    rotation: str | None = "distinctive"

    def __post_init__(self):
        if self.aug is not None and not isinstance(self.aug, AugmentConfig):
            raise ValueError(f"aug: expected an AugmentConfig, got {type(self.aug).__name__}")
        check_positive_float(self.temperature, "temperature")
        if self.rotation not in ROTATIONS:
            raise ValueError(f"rotation: expected one of {ROTATIONS}, got {self.rotation!r}")

    def prepare(self, net, image_size, n, epochs, steps_per_epoch):
        aug = self.aug or AugmentConfig.simclr(size=image_size, scale=(0.2, 1.0))
        if self.rotation is not None and aug.size[0] != aug.size[1]:
            raise ValueError(f"aug: GDT rotates views by 90 degrees; expected a square size, got {aug.size}")
        return dataclasses.replace(self, aug=aug)

    def loss(self, net, params, state, key, images, labels):
        """:func:`~jaxinterp.objectives.gdt_loss` of the views' embeddings, ordered as :func:`gdt_contrast`'s."""
        views = [augment(jax.random.fold_in(key, d), images, self.aug) for d in range(2)]
        if self.rotation is not None:
            views = [w for x in views for w in (x, jnp.rot90(x, 1, axes=(1, 2)))]
        z = net.apply(params, jnp.concatenate(views))
        return objectives.gdt_loss(z, gdt_contrast(images.shape[0], self.rotation),
                                   temperature=self.temperature), (None, {})
