"""Objectives for learning without labels: entropy / InfoMax, Sinkhorn self-labelling (SeLa),
SwAV, InfoNCE / NT-Xent and GDT, DINO self-distillation.

Every objective is a pure, jit-compatible function of a batch (batch axis
first) with an ``axis_name`` argument: None on one device, or the mesh axis
the batch is split over when called inside ``jax.shard_map`` (e.g.
``'data'``), where it gives the single-device result on the whole batch
(batch sums through ``psum``, InfoNCE negatives through ``all_gather``).
Sinkhorn targets (SeLa labels, SwAV codes, DINO's teacher) carry no gradient.
Defaults follow docs/references.md (Self-supervision).
"""

from jaxinterp.objectives.contrastive import MODES, contrast_from_factors, gdt_loss, infonce, nt_xent
from jaxinterp.objectives.dino import (cosine_schedule, dino_loss, ema_update, teacher_temperature,
                                       update_centre)
from jaxinterp.objectives.entropy import (conditional_entropy, cross_entropy, entropy, infomax,
                                          marginal_entropy, self_labelling_loss)
from jaxinterp.objectives.sinkhorn import SinkhornResult, sinkhorn_labels, soft_assignments, swav_codes
from jaxinterp.objectives.swav import prototype_scores, swav_loss

__all__ = ["cross_entropy", "entropy", "conditional_entropy", "marginal_entropy", "infomax",
           "self_labelling_loss", "SinkhornResult", "sinkhorn_labels", "soft_assignments",
           "swav_codes", "prototype_scores", "swav_loss", "infonce", "nt_xent", "gdt_loss",
           "contrast_from_factors", "MODES", "dino_loss", "update_centre", "teacher_temperature",
           "cosine_schedule", "ema_update"]
