"""Synthesis: images optimised to reveal what a network encodes.

* :mod:`.params` - image parameterisations (pixel, Fourier, Laplacian pyramid; decorrelated colour);
* :mod:`.transforms` - random per-image transforms (Lucid's standard set, roll jitter);
* :mod:`.regularisers` - image priors (alpha-norm, TV^beta, L1, L2, blur) with Mahendran and Vedaldi's constants;
* :mod:`.objectives` - objectives that add and scale (neuron, channel, direction, diversity, ...);
* :mod:`.rendering` - :func:`render`, the one optimisation loop, vmapped over targets;
* :mod:`.methods` - activation maximisation, layer visualisation, pre-images, caricatures, DeepDream;
* :mod:`.dip` - the deep image prior (Ulyanov, Vedaldi and Lempitsky 2018): restoration and a parameterisation;
* :mod:`.inverter` - the learned inverter (Dosovitskiy and Brox 2016): a decoder from features to images.

The networks the last two fit or train live in :mod:`jaxinterp.nets` (:class:`~jaxinterp.nets.SkipNet`,
:class:`~jaxinterp.nets.Decoder`).
"""

from jaxinterp.synthesis import objectives
from jaxinterp.synthesis.dip import deep_image_prior, dip_parameterisation, fitting_curves
from jaxinterp.synthesis.inverter import invert, train_inverter
from jaxinterp.synthesis.methods import (LEAKY_RULES, DiffingResult, PreImageResult, activation_diffing,
                                         activation_maximisation, caricature,
                                         deepdream, feature_loss, mahendran_jitter, mahendran_optimiser,
                                         pre_image, project_pixels, visualise_layer)
from jaxinterp.synthesis.params import (Parameterisation, decorrelate_colour, fourier, laplacian_pyramid, pixel,
                                        raw_pixels)
from jaxinterp.synthesis.regularisers import B_PIXEL, V_PIXEL, alpha_norm, blur_penalty, tv_norm
from jaxinterp.synthesis.rendering import RenderResult, activations, render
from jaxinterp.synthesis.transforms import (STANDARD, affine, compose, jitter, pad, random_rotate, random_scale,
                                            resize, roll_jitter)

__all__ = ["objectives", "activation_diffing", "DiffingResult", "deep_image_prior", "dip_parameterisation", "fitting_curves",
           "invert", "train_inverter", "LEAKY_RULES", "PreImageResult", "activation_maximisation", "caricature", "deepdream",
           "feature_loss", "mahendran_jitter", "mahendran_optimiser", "pre_image", "project_pixels",
           "visualise_layer", "Parameterisation", "decorrelate_colour", "fourier", "laplacian_pyramid", "pixel",
           "raw_pixels", "B_PIXEL", "V_PIXEL", "alpha_norm", "blur_penalty", "tv_norm", "RenderResult",
           "activations", "render", "STANDARD", "affine", "compose", "jitter", "pad", "random_rotate",
           "random_scale", "resize", "roll_jitter"]
