"""The demo's method tables: (title, method, options) rows for the small CNN, and the methods after the peers.

:func:`smallcnn_methods` and :func:`smallcnn_extremal_method` are the small CNN's table,
shared by the demo and the evaluation experiments.  :func:`peer_methods` are the
methods after the PyTorch peers: Captum's DeepLIFT, the SHAP family, feature ablation and LIME; pytorch-grad-cam's
CAM family and FullGrad; PAIR's guided IG, blur IG and XRAI.  The full demo and
the evaluation experiments (pointing game, sanity checks) add them to their method
tables; the quick settings leave them out (each is one more compiled program).
Conductance and TCAV explain layers and concepts, not pixels, and have no row.
"""

from __future__ import annotations

from typing import Callable

import jax
import numpy as np

from jaxinterp import attribution, perturbation

__all__ = ["peer_methods", "smallcnn_methods", "smallcnn_extremal_method", "SMALLCNN_LAST_CONV",
           "SMALLCNN_EXTREMAL_GEOMETRY"]

# The small CNN at 64 px: its last convolutional activation is 'features.10' (8 x 8 x 128, then GAP
# + linear); extremal perturbations use the paper's mask geometry (step 7, sigma 21 px at 224 px)
# scaled by 64 / 224.
SMALLCNN_LAST_CONV = "features.10"
SMALLCNN_EXTREMAL_GEOMETRY = {"step": 2, "sigma": 6.0}


def smallcnn_methods(quick: bool) -> list[tuple[str, Callable, dict]]:
    """Every attribution method as (title, function, options) for the 64 px smallcnn.

    Used by the demo grid and by experiments/pointing_game.py and sanity.py; ``quick``
    uses fewer IG steps, SmoothGrad samples and RISE masks, and leaves out the
    methods after the peers (:func:`peer_methods`).
    """
    n = 8 if quick else 50
    first = [
        ("gradient", attribution.gradient, {}),
        ("input x gradient", attribution.input_x_gradient, {}),
        (f"IG ({n})", attribution.integrated_gradients, {"steps": n}),
        (f"IG blur ({n})", attribution.integrated_gradients, {"steps": n, "baseline": "blur"}),
        (f"SmoothGrad ({n})", attribution.smoothgrad, {"key": jax.random.key(0), "samples": n}),
        (f"VarGrad ({n})", attribution.smoothgrad, {"key": jax.random.key(0), "samples": n,
                                                     "variant": "vargrad"}),
        ("deconvnet", attribution.deconvnet, {}),
        ("guided backprop", attribution.guided_backprop, {}),
        ("CAM", attribution.cam, {"layer": SMALLCNN_LAST_CONV}),
        ("Grad-CAM", attribution.grad_cam, {"layer": SMALLCNN_LAST_CONV}),
        ("linear approx", attribution.linear_approx, {"layer": "features.7"}),
        ("excitation BP", attribution.excitation_backprop, {}),
        ("contrastive EBP", attribution.contrastive_excitation_backprop, {"contrast_layer": "features.7"}),
        ("LRP epsilon", attribution.lrp, {"rule": "epsilon", "eps": 1e-6}),
        ("LRP composite", attribution.lrp, {"rule": attribution.EPSILON_GAMMA_BOX}),
        ("occlusion", attribution.occlusion, {"window": 8, "stride": 4}),
        (f"RISE ({250 if quick else 4000})", attribution.rise,
         {"key": jax.random.key(0), "num_masks": 250 if quick else 4000, "grid": 7}),
    ]
    return first if quick else first + peer_methods(64, SMALLCNN_LAST_CONV, samples=n)


def smallcnn_extremal_method(quick: bool) -> tuple[str, Callable, dict]:
    """Extremal perturbations as a saliency method (TorchRay's pointing-game protocol) for the 64 px smallcnn.

    The masks of VOC's areas (0.025, 0.05, 0.1, 0.2), summed and smoothed
    (:func:`jaxinterp.perturbation.extremal_saliency`); the paper's mask geometry
    (step 7, sigma 21 at 224 px) scaled to 64 px; 800 steps (100 with ``quick``).
    Not part of :func:`smallcnn_methods` (it costs steps x areas passes per map):
    the experiments add it to their method table.
    """
    steps = 100 if quick else 800
    return (f"extremal ({steps})", perturbation.extremal_saliency,
            {"areas": (0.025, 0.05, 0.1, 0.2), "steps": steps, **SMALLCNN_EXTREMAL_GEOMETRY})


def peer_methods(image_size: int, cam_layer: str, *, samples: int, max_segments: int = 64,
                 min_size: int = 50) -> list[tuple[str, Callable, dict]]:
    """(title, method, options) of every method of the peers not in the demo's first table.

    Args:
      image_size: side of the images (the SHAP baselines are images of that size).
      cam_layer: the split point of the CAM family (the last convolutional activation).
      samples: steps / samples of the path and sampling methods.
      max_segments: the static number of Felzenszwalb segments of the region methods
        (:class:`~jaxinterp.attribution.Segmented`; finer images are segmented more coarsely).
      min_size: Felzenszwalb's minimum segment size in pixels.

    The SHAP methods' references are a black, a grey and a white image.
    """
    greys = np.broadcast_to(np.array([0.0, 0.5, 1.0], np.float32)[:, None, None, None],
                            (3, image_size, image_size, 3))
    key = jax.random.key(0)

    def regions(method):
        return attribution.Segmented(method, max_segments=max_segments, min_size=min_size)

    cam = {"layer": cam_layer}
    return [
        ("DeepLIFT", attribution.deeplift, {}),
        ("DeepLIFT-SHAP", attribution.deeplift_shap, {"baselines": greys}),
        (f"gradient SHAP ({samples})", attribution.gradient_shap,
         {"baselines": greys, "key": key, "n_samples": samples}),
        ("Grad-CAM++", attribution.grad_cam_plus_plus, cam),
        ("XGrad-CAM", attribution.xgrad_cam, cam),
        ("HiResCAM", attribution.hires_cam, cam),
        ("Grad-CAM element-wise", attribution.grad_cam_elementwise, cam),
        ("Layer-CAM", attribution.layer_cam, cam),
        ("Eigen-CAM", attribution.eigen_cam, cam),
        ("Eigen-Grad-CAM", attribution.eigen_grad_cam, cam),
        ("Score-CAM", attribution.score_cam, {**cam, "chunk_size": 32}),
        ("Ablation-CAM", attribution.ablation_cam, {**cam, "chunk_size": 32}),
        ("FullGrad", attribution.fullgrad, {}),
        (f"guided IG ({samples})", attribution.guided_ig, {"steps": samples}),
        (f"blur IG ({samples})", attribution.blur_ig, {"steps": samples}),
        ("XRAI", attribution.Segmented(attribution.xrai, segmenter="xrai", max_segments=4 * max_segments),
         {"ig_steps": samples}),
        ("feature ablation", regions(attribution.feature_ablation), {}),
        (f"Shapley sampling ({samples})", regions(attribution.shapley_sampling), {"key": key, "n_samples": samples}),
        (f"Kernel SHAP ({4 * samples})", regions(attribution.kernel_shap), {"key": key, "n_samples": 4 * samples}),
        (f"LIME ({4 * samples})", regions(attribution.lime), {"key": key, "n_samples": 4 * samples}),
    ]
