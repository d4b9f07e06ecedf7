"""Evaluation of explanations: pointing game, weak localisation, deletion / insertion, sanity checks.

Every metric consumes maps (N, H, W) or (N, T, H, W) and knows nothing of how
they were made; each is a pure function that composes with ``jit`` (options
static), ``vmap`` and sharding over the batch axis.  The sanity checks take the
attribution method as a callable argument.
"""

from jaxinterp.evaluation.pointing import (DEFAULT_TOLERANCE, argmax_point, centre_hits, centre_maps,
                                           pointing_accuracy, pointing_game, pointing_hits)
from jaxinterp.evaluation.localisation import (COMPONENTS, EMPTY_BOX, THRESHOLD_METHODS, best_threshold, box_iou,
                                               largest_component,
                                               localisation_accuracy, localisation_hits, map_to_box,
                                               threshold_mask)
from jaxinterp.evaluation.deletion import (MODES, curve, curve_auc, deletion_curve, insertion_curve,
                                           map_order, net_score_fn, pixels_changed)
from jaxinterp.evaluation.similarity import hog_descriptor, hog_distance, rankdata, spearman, ssim
from jaxinterp.evaluation.sanity import (cascading_randomisation, class_selectivity,
                                         independent_randomisation, parameter_layers, randomise_layers,
                                         shift_invariance)
from jaxinterp.evaluation.benchmark import (SANITY_METHODS, SANITY_THRESHOLD, SIMILARITIES, compare_maps, explain_fn,
                                            method_slug, pointing_rows, pointing_table, sanitise_maps,
                                            sanity_plot, sanity_summary, sanity_table, scaled_tolerance, score_maps)

__all__ = ["DEFAULT_TOLERANCE", "argmax_point", "centre_hits", "centre_maps", "pointing_accuracy",
           "pointing_game", "pointing_hits",
           "COMPONENTS", "EMPTY_BOX", "THRESHOLD_METHODS", "largest_component", "best_threshold", "box_iou", "localisation_accuracy",
           "localisation_hits", "map_to_box", "threshold_mask",
           "MODES", "curve", "curve_auc", "deletion_curve", "insertion_curve", "map_order",
           "net_score_fn", "pixels_changed",
           "hog_descriptor", "hog_distance", "rankdata", "spearman", "ssim",
           "cascading_randomisation", "class_selectivity", "independent_randomisation",
           "parameter_layers", "randomise_layers", "shift_invariance",
           "SANITY_METHODS", "SANITY_THRESHOLD", "SIMILARITIES", "compare_maps", "explain_fn", "method_slug", "pointing_rows",
           "pointing_table", "sanitise_maps", "sanity_plot", "sanity_summary", "sanity_table", "scaled_tolerance", "score_maps"]
