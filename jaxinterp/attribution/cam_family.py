"""The rest of the CAM family, after pytorch-grad-cam: maps at a convolutional layer.

Every method looks at the activation A (h, w, C) of one split point ``layer``
(usually the last convolutional block) and, for the gradient methods, at the
gradient G = d score_t / d A of the target's score (the class logit, or a
:class:`~jaxinterp.targets.Unit`'s value):

* :func:`grad_cam_plus_plus`: sum_k w_k A_k, w_k = sum_ij ReLU(G_k) a_k(i, j) with
  Grad-CAM++'s closed-form pixel weights a;
* :func:`xgrad_cam`: sum_k w_k A_k, w_k = sum_ij G_k A_k / sum_ij A_k;
* :func:`hires_cam`: sum_k G_k A_k at every position (no pooling);
* :func:`grad_cam_elementwise`: sum_k ReLU(G_k A_k);
* :func:`layer_cam`: sum_k ReLU(G_k) A_k;
* :func:`eigen_cam`: A projected on its first principal component (no gradient);
* :func:`eigen_grad_cam`: G * A projected on its first principal component;
* :func:`score_cam`: sum_k softmax_k(score(x * upsampled A_k)) A_k (forward passes only);
* :func:`ablation_cam`: sum_k (y - y_k) / y A_k, y_k the score with channel k zeroed;

followed by a ReLU (``relu=True``, the default, as every pytorch-grad-cam map).
Eigen smoothing.  Every method but Eigen-CAM and Eigen-Grad-CAM takes
pytorch-grad-cam's ``eigen_smooth``: the map's per-channel terms m (h, w, C)
(w_k A_k for the channel-weight methods, G_k A_k for HiResCAM, ReLU(G_k A_k)
for element-wise Grad-CAM, ReLU(G_k) A_k for Layer-CAM), instead of being
summed over channels, are centred over the h w positions and projected on
their first principal component (pytorch-grad-cam's ``get_2d_projection``,
as :func:`eigen_cam` for A), then ReLU'd.  The sign of a singular vector is
arbitrary (LAPACK's choice in pytorch-grad-cam); here it is fixed so that the
projection correlates positively with the channel sum sum_k m_k, the map
without ``eigen_smooth`` before its ReLU.

The plumbing (checks, one forward pass per image, the gradient of each target,
lifting with ``vmap``, the resize) is that of :mod:`jaxinterp.attribution.cam`.

Scale.  pytorch-grad-cam ends every method the same way: ReLU, min-max scaling
of each map to [0, 1] and a cv2 bilinear resize to the image.  Maps here keep
their scale (as :func:`~jaxinterp.attribution.grad_cam`): with ``relu=True``
and ``resize=False`` a map is pytorch-grad-cam's ``get_cam_image`` after its
ReLU, at the layer's resolution, and min-max scaling it gives its map before the
resize.  ``resize=True`` upsamples with torch's ``interpolate(mode='bilinear',
align_corners=False)`` convention, which cv2's ``INTER_LINEAR`` shares when
upsampling.  The one exception is :func:`augmentation_smoothing`
(pytorch-grad-cam's ``aug_smooth``), which averages min-max scaled maps.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from jaxinterp import ops
from jaxinterp.checks import check_images, check_int, check_real
from jaxinterp.nets import Net
from jaxinterp.targets import chunked_map, target_scores
from jaxinterp.attribution.cam import (_channel_sum, _first_component, _image_method, _layer_method,
                                       _weighted_sum)

__all__ = ["grad_cam_plus_plus", "xgrad_cam", "hires_cam", "grad_cam_elementwise", "layer_cam",
           "eigen_cam", "eigen_grad_cam", "score_cam", "ablation_cam", "augmentation_smoothing"]

_PLUS_PLUS_EPS = 1e-6   # pytorch-grad-cam's GradCAMPlusPlus
_XGRAD_EPS = 1e-7       # pytorch-grad-cam's XGradCAM
_SCALE_EPS = 1e-7       # pytorch-grad-cam's scale_cam_image, in the min-max scaling of each map
_SCORE_EPS = 1e-8       # pytorch-grad-cam's ScoreCAM, in the min-max normalisation of each upsampled channel

_COMMON_ARGS = """
    Args:
      net: the net (static).
      params: its params.
      x: images (N, H, W, 3), float RGB in [0, 1].
      target: int class indices (N,) or (N, T), or a :class:`Unit` (N,) / (N, T){unit}.
      layer: split point with a spatial activation (h, w, C), usually the last
        convolutional one.
      relu: clamp the map at zero (default True, as pytorch-grad-cam).
      resize: bilinearly resize the maps to (H, W); False keeps the layer's (h, w).{smooth}{extra}

    Returns:
      maps: (N, T, H, W), or (N, T, h, w) with ``resize=False``, in the dtype of x.

    Raises:
      ValueError: bad ``x`` or ``target``; ``layer`` unknown or not spatial{raises}.
"""


_EIGEN_SMOOTH_ARG = """
      eigen_smooth: pytorch-grad-cam's option: the per-channel terms of the
        map (h, w, C) projected on their first principal component instead of
        summed over channels (default False; static); the sign is fixed so that
        the projection correlates positively with the channel sum (see the
        module's docstring)."""


def _doc(unit=" at or after ``layer``", extra="", raises="; a Unit target before ``layer``",
         smooth=_EIGEN_SMOOTH_ARG):
    """Append the Args / Returns / Raises sections every method of this module shares."""
    def deco(fn):
        if fn.__doc__ is None:   # python -OO
            return fn
        head, refs = fn.__doc__.rstrip().split("\n    References:")
        common = _COMMON_ARGS.format(unit=unit, extra=extra, raises=raises, smooth=smooth)
        fn.__doc__ = f"{head.rstrip()}\n{common}\n    References:{refs}\n"
        return fn
    return deco


def _relu(m: jax.Array, relu: bool) -> jax.Array:
    return jax.nn.relu(m) if relu else m


# --------------------------------------------------------------------------- gradient methods


@_doc()
def grad_cam_plus_plus(net: Net, params, x: jax.Array, target, *, layer: str, relu: bool = True,
                       resize: bool = True, eigen_smooth: bool = False) -> jax.Array:
    """Grad-CAM++: channel weights from positive gradients, weighted per position by a closed form.

    With A (h, w, C) and G = d score_t / d A, the closed form of the paper's
    pixel weights (eq. 19, with exp(score) approximated to second order, as
    pytorch-grad-cam's ``GradCAMPlusPlus``)::

        a_k(i, j) = G_k^2 / (2 G_k^2 + (sum_{i'j'} A_k(i', j')) G_k^3 + 1e-6)   (0 where G_k = 0)
        w_k = sum_ij ReLU(G_k(i, j)) a_k(i, j)
        map_t = ReLU(sum_k w_k A_k)

    Pure and jit-compatible with ``net``, ``layer``, ``relu``, ``resize`` and
    ``eigen_smooth`` static.

    References:
      Chattopadhay, Sarkar, Howlader and Balasubramanian, "Grad-CAM++: generalized
      gradient-based visual explanations for deep convolutional networks", WACV 2018.
    """
    def combine(a, g):
        g2 = g * g
        alpha = g2 / (2.0 * g2 + jnp.sum(a, axis=(0, 1)) * g2 * g + _PLUS_PLUS_EPS)
        alpha = jnp.where(g != 0, alpha, 0.0)
        return _relu(_weighted_sum(a, jnp.sum(jax.nn.relu(g) * alpha, axis=(0, 1)), eigen_smooth), relu)

    return _layer_method(combine, net, params, x, target, layer, resize)


@_doc()
def xgrad_cam(net: Net, params, x: jax.Array, target, *, layer: str, relu: bool = True,
              resize: bool = True, eigen_smooth: bool = False) -> jax.Array:
    """XGrad-CAM: channel weights are the activation-weighted mean of the gradient.

    With A (h, w, C) and G = d score_t / d A::

        w_k = sum_ij G_k(i, j) A_k(i, j) / (sum_ij A_k(i, j) + 1e-7)
        map_t = ReLU(sum_k w_k A_k)

    the weights that make the map satisfy the paper's sensitivity and
    conservation axioms for a ReLU net (pytorch-grad-cam's ``XGradCAM``).

    Pure and jit-compatible with ``net``, ``layer``, ``relu``, ``resize`` and
    ``eigen_smooth`` static.

    References:
      Fu, Hu, Dong, Guo, Gao and Li, "Axiom-based Grad-CAM: towards accurate
      visualization and explanation of CNNs", BMVC 2020.
    """
    def combine(a, g):
        w = jnp.sum(g * a, axis=(0, 1)) / (jnp.sum(a, axis=(0, 1)) + _XGRAD_EPS)
        return _relu(_weighted_sum(a, w, eigen_smooth), relu)

    return _layer_method(combine, net, params, x, target, layer, resize)


@_doc()
def hires_cam(net: Net, params, x: jax.Array, target, *, layer: str, relu: bool = True,
              resize: bool = True, eigen_smooth: bool = False) -> jax.Array:
    """HiResCAM: gradient times activation at every position, summed over channels (no pooling).

    With A (h, w, C) and G = d score_t / d A::

        map_t(i, j) = ReLU(sum_k G_k(i, j) A_k(i, j))

    For a net whose head after ``layer`` is linear (CAM's GAP + linear), the
    spatial sum of the map before the ReLU is the score less its bias.
    ``hires_cam(relu=False)`` is :func:`~jaxinterp.attribution.linear_approx`
    (TorchRay's name for the same map); pytorch-grad-cam's ``HiResCAM``.

    Pure and jit-compatible with ``net``, ``layer``, ``relu``, ``resize`` and
    ``eigen_smooth`` static.

    References:
      Draelos and Carin, "Use HiResCAM instead of Grad-CAM for faithful
      explanations of convolutional neural networks", arXiv:2011.08891, 2020.
    """
    return _layer_method(lambda a, g: _relu(_channel_sum(g * a, eigen_smooth), relu), net, params, x,
                         target, layer, resize)


@_doc()
def grad_cam_elementwise(net: Net, params, x: jax.Array, target, *, layer: str, relu: bool = True,
                         resize: bool = True, eigen_smooth: bool = False) -> jax.Array:
    """Element-wise Grad-CAM: the ReLU of gradient times activation, summed over channels.

    With A (h, w, C) and G = d score_t / d A::

        map_t(i, j) = sum_k ReLU(G_k(i, j) A_k(i, j))

    (non-negative, so ``relu`` changes nothing), pytorch-grad-cam's
    ``GradCAMElementWise``: HiResCAM with the ReLU inside the channel sum.

    Pure and jit-compatible with ``net``, ``layer``, ``relu``, ``resize`` and
    ``eigen_smooth`` static.

    References:
      pytorch-grad-cam (Gildenblat and contributors), ``GradCAMElementWise``.
    """
    return _layer_method(lambda a, g: _relu(_channel_sum(jax.nn.relu(g * a), eigen_smooth), relu), net,
                         params, x, target, layer, resize)


@_doc()
def layer_cam(net: Net, params, x: jax.Array, target, *, layer: str, relu: bool = True,
              resize: bool = True, eigen_smooth: bool = False) -> jax.Array:
    """Layer-CAM: activations weighted by their positive gradient at every position.

    With A (h, w, C) and G = d score_t / d A::

        map_t(i, j) = ReLU(sum_k ReLU(G_k(i, j)) A_k(i, j))

    The per-position weights keep the detail of shallow layers, where Grad-CAM's
    pooled weights blur it (pytorch-grad-cam's ``LayerCAM``; the paper's
    fusion of several layers' maps is left to the caller).

    Pure and jit-compatible with ``net``, ``layer``, ``relu``, ``resize`` and
    ``eigen_smooth`` static.

    References:
      Jiang, Zhang, Hou, Cheng and Wei, "LayerCAM: exploring hierarchical class
      activation maps for localization", IEEE TIP 30, 2021.
    """
    return _layer_method(lambda a, g: _relu(_channel_sum(jax.nn.relu(g) * a, eigen_smooth), relu), net,
                         params, x, target, layer, resize)


@_doc(unit=" at or after ``layer`` (it only sets T: the map does not depend on it)", smooth="")
def eigen_cam(net: Net, params, x: jax.Array, target, *, layer: str, relu: bool = True,
              resize: bool = True) -> jax.Array:
    """Eigen-CAM: the activations projected on their first principal component (class-agnostic).

    The h w positions of A (h, w, C) are samples of C features; centred over
    positions (as pytorch-grad-cam's ``get_2d_projection``) they are projected
    on the first right singular vector v::

        map(i, j) = ReLU(sum_k (A_k(i, j) - mean_{i'j'} A_k) v_k)

    No gradient is computed and the map is the same for every target (the
    target only sets T).  The sign of a singular vector is arbitrary (LAPACK's
    choice in pytorch-grad-cam); here it is fixed so that sum_k v_k >= 0, the
    sign under which the map correlates positively with the total activation
    sum_k A_k.  The paper does not centre; pytorch-grad-cam does, and so do we.

    Pure and jit-compatible with ``net``, ``layer``, ``relu`` and ``resize`` static.

    References:
      Muhammad and Yeasin, "Eigen-CAM: class activation map using principal
      components", IJCNN 2020.
    """
    return _layer_method(lambda a, g: _relu(_first_component(a), relu), net, params, x, target, layer,
                         resize, grads=False)


@_doc(smooth="")
def eigen_grad_cam(net: Net, params, x: jax.Array, target, *, layer: str, relu: bool = True,
                   resize: bool = True) -> jax.Array:
    """Eigen-Grad-CAM: gradient times activation projected on its first principal component.

    As :func:`eigen_cam` for the product G_k(i, j) A_k(i, j) instead of A
    (pytorch-grad-cam's ``EigenGradCAM``), with the same sign convention: the map
    correlates positively with sum_k G_k A_k (the :func:`hires_cam` map before its
    ReLU).

    Pure and jit-compatible with ``net``, ``layer``, ``relu`` and ``resize`` static.

    References:
      pytorch-grad-cam (Gildenblat and contributors), ``EigenGradCAM``, after
      Muhammad and Yeasin, IJCNN 2020.
    """
    return _layer_method(lambda a, g: _relu(_first_component(g * a), relu), net, params, x, target,
                         layer, resize)


# --------------------------------------------------------------------------- perturbation methods


def _weighted_maps(a: jax.Array, w: jax.Array, eigen_smooth: bool) -> jax.Array:
    """sum_k w_{k,t} A_k for each target: activations (h, w, C), weights (C, T) -> (T, h, w)
    (or, with ``eigen_smooth``, each target's first-component projection, :func:`_weighted_sum`)."""
    return jax.vmap(lambda wt: _weighted_sum(a, wt, eigen_smooth), in_axes=1)(w)


def _check_chunk(chunk_size) -> None:
    if chunk_size is not None:
        check_int(chunk_size, "chunk_size")


@_doc(unit=" anywhere in the net", raises="; ``chunk_size`` not a positive int",
      extra="""
      chunk_size: channels (forward passes) vmapped at a time, looped with
        ``lax.map`` inside the compiled call (static); None: all at once.""")
def score_cam(net: Net, params, x: jax.Array, target, *, layer: str, relu: bool = True,
              resize: bool = True, chunk_size: int | None = None, eigen_smooth: bool = False) -> jax.Array:
    """Score-CAM: each channel, upsampled and min-max scaled, masks the image; weights from the scores.

    For one image x and A (h, w, C) its activation at ``layer``, every channel
    is upsampled to the image (bilinear, ``align_corners=True``: torch's
    ``UpsamplingBilinear2d``, as pytorch-grad-cam's ``ScoreCAM``), scaled to
    [0, 1] and multiplied into the pixels::

        M_k = (U_k - min U_k) / (max U_k - min U_k + 1e-8),   U_k = upsample(A_k)
        w_k = softmax_k(score_t(x * M_k))          (softmax over the C channels)
        map_t = ReLU(sum_k w_k A_k)

    Masked pixels become black (0): the net normalises inside, as a torch model
    fed [0, 1] pixels to pytorch-grad-cam.  The paper's channel score is the
    increase of confidence score_t(x * M_k) - score_t(x_b) over a baseline
    image; the baseline term is the same for every channel and cancels in the
    softmax.  The score is the class logit (pytorch-grad-cam's
    ``ClassifierOutputTarget``) or the unit's value.

    C forward passes per image, shared by its targets, ``chunk_size`` at a time
    in one compiled call.  Pure and jit-compatible with ``net``, ``layer``,
    ``relu``, ``resize``, ``chunk_size`` and ``eigen_smooth`` static.

    References:
      Wang, Wang, Du, Yang, Zhang, Ding, Mardziel and Hu, "Score-CAM:
      score-weighted visual explanations for convolutional neural networks",
      CVPR Workshops 2020.
    """
    _check_chunk(chunk_size)

    def per_image(x1, ts, image_size):
        a = net.apply(params, x1[None], stop=layer)[0]

        def score(a_k):  # one channel (h, w) -> scores of the targets (T,)
            u = ops.resize_bilinear(a_k, image_size, align_corners=True)
            m = (u - jnp.min(u)) / (jnp.max(u) - jnp.min(u) + _SCORE_EPS)
            return target_scores(net, params, (x1 * m[..., None])[None], ts)[0]

        w = jax.nn.softmax(chunked_map(score, jnp.moveaxis(a, -1, 0), chunk_size), axis=0)  # (C, T)
        return _relu(_weighted_maps(a, w, eigen_smooth), relu)

    return _image_method(per_image, net, params, x, target, layer, resize, after=False)


@_doc(raises="; a Unit target before ``layer``; ``chunk_size`` not a positive int",
      extra="""
      chunk_size: channels (forward passes of the net after ``layer``) vmapped at
        a time, looped with ``lax.map`` inside the compiled call (static); None:
        all at once.""")
def ablation_cam(net: Net, params, x: jax.Array, target, *, layer: str, relu: bool = True,
                 resize: bool = True, chunk_size: int | None = None, eigen_smooth: bool = False) -> jax.Array:
    """Ablation-CAM: channel weights are the relative drop of the score when the channel is zeroed.

    With A (h, w, C) the activation at ``layer``, y the target's score and y_k
    the score of the net run from ``layer`` onwards on A with channel k set to
    zero (``net.apply(..., start=layer)``)::

        w_k = (y - y_k) / y
        map_t = ReLU(sum_k w_k A_k)

    (y = 0 gives infinite weights, as in the paper and pytorch-grad-cam).
    pytorch-grad-cam's ``AblationLayer`` zeroes the channel when the layer's
    smallest activation is 0 (a ReLU output, the usual case) and otherwise sets
    it to (smallest activation - 1e7); here it is always zero, as in the paper.

    C forward passes of the net's tail per image, shared by its targets,
    ``chunk_size`` at a time in one compiled call.  Pure and jit-compatible
    with ``net``, ``layer``, ``relu``, ``resize``, ``chunk_size`` and ``eigen_smooth`` static.

    References:
      Desai and Ramaswamy, "Ablation-CAM: visual explanations for deep
      convolutional network via gradient-free localization", WACV 2020.
    """
    _check_chunk(chunk_size)

    def per_image(x1, ts, image_size):
        a = net.apply(params, x1[None], stop=layer)[0]
        y = target_scores(net, params, a[None], ts, start=layer)[0]                  # (T,)
        channels = jnp.arange(a.shape[-1])

        def ablated(k):
            return target_scores(net, params, (a * (channels != k).astype(a.dtype))[None], ts,
                                 start=layer)[0]

        w = (y - chunked_map(ablated, channels, chunk_size)) / y                     # (C, T)
        return _relu(_weighted_maps(a, w, eigen_smooth), relu)

    return _image_method(per_image, net, params, x, target, layer, resize, after=True)


# --------------------------------------------------------------------------- test-time augmentation


def _min_max(maps: jax.Array) -> jax.Array:
    """Each map (..., H, W) scaled to [0, 1]: (m - min m) / (max m - min m + 1e-7), as pytorch-grad-cam."""
    m = maps - jnp.min(maps, axis=(-2, -1), keepdims=True)
    return m / (jnp.max(m, axis=(-2, -1), keepdims=True) + _SCALE_EPS)


def _check_factors(factors) -> tuple[float, ...]:
    if not isinstance(factors, (tuple, list)) or not factors:
        raise ValueError(f"factors: expected a non-empty tuple of positive numbers, got {factors!r}")
    return tuple(check_real(f, "factors", minimum=0.0, open_min=True) for f in factors)


def augmentation_smoothing(method: Callable, net: Net, params, x: jax.Array, target, *,
                           factors: tuple[float, ...] = (0.9, 1.0, 1.1), flip: bool = True,
                           **options) -> jax.Array:
    """Test-time augmentation of a map method: the mean of its de-augmented, min-max scaled maps.

    pytorch-grad-cam's ``aug_smooth=True`` (with ttach's ``HorizontalFlip`` and
    ``Multiply``), for any method of this module or
    :func:`~jaxinterp.attribution.grad_cam`.  Every augmentation a, the images
    multiplied by a factor in ``factors`` (pixels may leave [0, 1], as in
    ttach) and, with ``flip``, also mirrored left-right (2 x 3 augmentations by
    default), gives maps M_a = ``method(net, params, a(x), target, **options)``,
    which are ReLU'd, min-max scaled per map and flipped back::

        S(M) = (M - min M) / (max M - min M + 1e-7)          (per map, over (H, W))
        map = mean_a a^{-1}(S(ReLU(M_a)))

    This is the only place where our maps are min-max scaled, as pytorch-grad-cam
    scales all its maps (the methods keep their scale, see the module's
    docstring).  pytorch-grad-cam scales each map twice, before and after its
    resize to the image; bilinear resizing commutes with the affine scaling, so
    scaling once after the method's resize gives the same map up to the 1e-7.

    All augmentations run in one compiled call (``vmap`` of ``method`` over
    them).  Pure and jit-compatible with ``method``, ``net``, ``factors``,
    ``flip`` and the method's static options static.

    Args:
      method: a map method ``method(net, params, x, target, **options) -> (N, T, H, W)``
        (static).
      net: the net (static).
      params: its params.
      x: images (N, H, W, 3), float RGB in [0, 1].
      target: the method's targets: class indices (N,) or (N, T), or a :class:`Unit`.
      factors: the pixel multipliers (static; default ttach's (0.9, 1, 1.1)).
      flip: also the left-right mirror image of each (static; default True).
      **options: the method's options (``layer=...``, ``eigen_smooth=...``, ...).

    Returns:
      maps: (N, T, H, W), or the method's map shape, in [0, 1], in the dtype of x.

    Raises:
      ValueError: ``method`` not callable; ``factors`` not a non-empty tuple of
        positive numbers; bad ``x``; the method's own errors.

    References:
      pytorch-grad-cam (Gildenblat and contributors), ``BaseCAM(aug_smooth=True)``;
      ttach (Yakubovskiy), test-time augmentation for PyTorch.
    """
    if not callable(method):
        raise ValueError(f"method: expected a map method, got {method!r}")
    factors = _check_factors(factors)
    x = check_images(x)
    augmentations = [(mirror, f) for mirror in ((False, True) if flip else (False,)) for f in factors]
    xs = jnp.stack([(x[:, :, ::-1] if mirror else x) * jnp.asarray(f, x.dtype)
                    for mirror, f in augmentations])                                  # (A, N, H, W, 3)
    maps = _min_max(jax.nn.relu(jax.vmap(lambda xa: method(net, params, xa, target, **options))(xs)))
    return jnp.mean(jnp.stack([m[..., ::-1] if mirror else m for m, (mirror, _) in zip(maps, augmentations)]),
                    axis=0)
