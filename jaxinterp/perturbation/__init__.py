"""Perturbation-based explanations and adversarial examples.

* :mod:`.masks` - the smooth mask generator (step 7, sigma 21, smooth max);
* :mod:`.operators` - blur / fade pyramids and applying a mask;
* :mod:`.area` - the vecsort area constraint;
* :mod:`.extremal` - :func:`extremal`, optimised for images x targets x areas in one compiled loop;
* :mod:`.channel` - :func:`channel_extremal`, the same over the channels of a split point;
* :mod:`.meaningful` - meaningful perturbations v1 / v2 (Fong and Vedaldi 2017);
* :mod:`.adversarial` - FGSM, PGD and the adversarial patch.
"""

from jaxinterp.perturbation.adversarial import (LOSSES, NORMS, PatchTransform, adversarial_patch, apply_patch, fgsm,
                                                pgd, random_patch_transforms)
from jaxinterp.perturbation.area import area_penalty, area_reference, area_zeros, vecsort_penalty
from jaxinterp.perturbation.channel import channel_extremal
from jaxinterp.perturbation.extremal import (REWARDS, VARIANTS, contrastive_reward, extremal, extremal_saliency,
                                             lambda_schedule, simple_reward)
from jaxinterp.perturbation.masks import MaskGeometry, mask_geometry, smooth_mask, smooth_max
from jaxinterp.perturbation.meaningful import (blend, l1_deletion, meaningful_perturbation, perturbed_reference,
                                               total_variation)
from jaxinterp.perturbation.operators import (PERTURBATIONS, apply_pyramid, blur_pyramid, fade_pyramid,
                                              perturbation_pyramid)

__all__ = ["LOSSES", "NORMS", "PatchTransform", "adversarial_patch", "apply_patch", "fgsm", "pgd",
           "random_patch_transforms", "area_reference", "area_zeros", "vecsort_penalty", "area_penalty",
           "channel_extremal", "REWARDS", "VARIANTS", "contrastive_reward", "extremal", "extremal_saliency",
           "lambda_schedule", "simple_reward", "MaskGeometry", "mask_geometry", "smooth_mask", "smooth_max",
           "blend", "l1_deletion", "meaningful_perturbation", "perturbed_reference",
           "total_variation", "PERTURBATIONS", "apply_pyramid", "blur_pyramid", "fade_pyramid",
           "perturbation_pyramid"]
