"""What a network encodes: top-activating patches, network dissection, spectral segmentation and attention.

* :mod:`~jaxinterp.analysis.topk`: each channel's top-k images (and positions) over a
  dataset in one streaming pass, the receptive field of a unit read off the net, the
  patches cut out, first-layer filters as images (Zeiler and Fergus 2014).
* :mod:`~jaxinterp.analysis.dissection`: per-unit activation thresholds from a
  streaming quantile, dataset-wide IoU of each unit with each concept mask, detectors
  per concept category (Bau et al. 2017); concept masks of the synthetic set.
* :mod:`~jaxinterp.analysis.spectral`: patch affinities, the Laplacian's leading
  eigenvectors on device, Fiedler segments and boxes, CorLoc (Melas-Kyriazi et al.
  2022); ViT attention maps of the CLS token per head (Caron et al. 2021).

Every streaming pass runs one jitted update per batch, with the batch sharded over
devices when a sharding is given; every function is pure and composes with ``jit``
and ``vmap``.
"""

from jaxinterp.analysis.topk import (SUPPORT, ReceptiveField, TopActivations, crop_patches, empty_top_activations,
                                     filters_as_images, receptive_field, top_activations, top_activations_update)
from jaxinterp.analysis.dissection import (COLOURS, IOU_THRESHOLD, SYNTHETIC_CATEGORIES, SYNTHETIC_CONCEPTS,
                                           TOP_QUANTILE, Dissection, DissectionCounts, activation_histogram_update,
                                           activation_quantiles, activation_range_update, dissect,
                                           dissection_iou, dissection_summary, dissection_update,
                                           empty_dissection_counts, synthetic_concepts)
from jaxinterp.analysis.spectral import (FOREGROUND_RULES, cls_attention, corloc, feature_affinity, fiedler_segments,
                                         laplacian_eigenvectors, segment_boxes, spectral_segmentation)

__all__ = ["SUPPORT", "ReceptiveField", "TopActivations", "crop_patches", "empty_top_activations",
           "filters_as_images", "receptive_field", "top_activations", "top_activations_update",
           "COLOURS", "IOU_THRESHOLD", "SYNTHETIC_CATEGORIES", "SYNTHETIC_CONCEPTS", "TOP_QUANTILE", "Dissection",
           "DissectionCounts", "activation_histogram_update", "activation_quantiles", "activation_range_update",
           "dissect", "dissection_iou", "dissection_summary", "dissection_update", "empty_dissection_counts",
           "synthetic_concepts",
           "FOREGROUND_RULES", "cls_attention", "corloc", "feature_affinity", "fiedler_segments",
           "laplacian_eigenvectors", "segment_boxes", "spectral_segmentation"]
