"""The attribution methods after the PyTorch peers, as (title, method, options) rows of the demo's tables.

Captum's DeepLIFT, the SHAP family, feature ablation and LIME; pytorch-grad-cam's
CAM family and FullGrad; PAIR's guided IG, blur IG and XRAI.  The full demo and
the evaluation experiments (pointing game, sanity checks) add them to their method
tables; the quick settings leave them out (each is one more compiled program).
Conductance and TCAV explain layers and concepts, not pixels, and have no row.
"""

from __future__ import annotations

from typing import Callable

import jax
import numpy as np

from jaxinterp import attribution

__all__ = ["peer_methods"]


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
