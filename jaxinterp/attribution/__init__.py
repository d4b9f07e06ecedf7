"""Attribution: which pixels (or which units of a layer) a net's output depends on.

Every method is a pure function ``method(net, params, x, target, **options) -> maps``
written for one example and one target and lifted with ``jax.vmap`` over images
and targets: x is (N, H, W, 3) in [0, 1], target is class indices (N,) / (N, T)
or a :class:`Unit` anywhere in the net (:mod:`jaxinterp.targets`), maps are (N, T, H, W).
"""

from jaxinterp.targets import Unit
from jaxinterp.attribution._lift import REDUCTIONS
from jaxinterp.attribution.gradient import (QUADRATURES, deconvnet, gradient, guided_backprop,
                                            input_x_gradient, integrated_gradients, quadrature,
                                            smoothgrad)
from jaxinterp.attribution.cam import cam, grad_cam, linear_approx
from jaxinterp.attribution.cam_family import (ablation_cam, eigen_cam, eigen_grad_cam, grad_cam_elementwise,
                                              grad_cam_plus_plus, hires_cam, layer_cam, score_cam, xgrad_cam)
from jaxinterp.attribution.cam_family import augmentation_smoothing
from jaxinterp.attribution.excitation import contrastive_excitation_backprop, excitation_backprop
from jaxinterp.attribution.lrp import EPSILON_GAMMA_BOX, EPSILON_PLUS, Composite, lrp
from jaxinterp.attribution.occlusion import occlusion
from jaxinterp.attribution.rise import rise, rise_masks
from jaxinterp.attribution.features import feature_ablation, shapley_sampling
from jaxinterp.attribution.surrogates import kernel_shap, lime
from jaxinterp.attribution.fullgrad import fullgrad
from jaxinterp.attribution.tcav import (CAV, TCAVScores, cav_accuracy, concept_activation_vectors,
                                       directional_derivatives, fit_cav, t_test, tcav)
from jaxinterp.attribution.deeplift import (ShapSamples, deeplift, deeplift_shap, gradient_shap,
                                            gradient_shap_samples)
from jaxinterp.attribution.conductance import internal_influence, layer_conductance, neuron_conductance
from jaxinterp.attribution.pair import blur_ig, guided_ig, xrai
from jaxinterp.attribution.segments import SEGMENTERS, Segmented, felzenszwalb, xrai_segments

__all__ = ["Unit", "REDUCTIONS", "QUADRATURES",
           "gradient", "input_x_gradient", "integrated_gradients", "quadrature", "smoothgrad",
           "deconvnet", "guided_backprop", "cam", "grad_cam", "linear_approx",
           "grad_cam_plus_plus", "xgrad_cam", "hires_cam", "grad_cam_elementwise", "layer_cam",
           "eigen_cam", "eigen_grad_cam", "score_cam", "ablation_cam", "augmentation_smoothing", "occlusion",
           "rise", "rise_masks", "lrp", "Composite", "EPSILON_GAMMA_BOX", "EPSILON_PLUS",
           "excitation_backprop", "contrastive_excitation_backprop",
           "feature_ablation", "shapley_sampling", "kernel_shap", "lime",
           "fullgrad",
           "tcav", "concept_activation_vectors", "fit_cav", "cav_accuracy", "directional_derivatives",
           "t_test", "CAV", "TCAVScores",
           "deeplift", "deeplift_shap", "gradient_shap", "gradient_shap_samples", "ShapSamples",
           "layer_conductance", "neuron_conductance", "internal_influence",
           "guided_ig", "blur_ig", "xrai", "felzenszwalb", "xrai_segments", "Segmented", "SEGMENTERS"]
