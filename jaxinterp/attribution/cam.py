"""The CAM family: class activation maps at a convolutional layer.

All three methods look at the activation A (h, w, C) of one split point
``layer`` (usually the last convolutional block) and at the gradient
G = d score / d A of the target's score with respect to it:

* :func:`cam` (Zhou et al. 2016): sum_k w_{t,k} A_k, the classifier weights of a
  global-average-pool + linear head applied at every position;
* :func:`grad_cam` (Selvaraju et al. 2017): ReLU(sum_k alpha_k A_k) with
  alpha_k the spatial mean of G_k;
* :func:`linear_approx` (TorchRay's "linear approximation"): sum_k A_k G_k, the
  first-order Taylor term of the score at every position.

Each is written for one image and one target and lifted with
:func:`jaxinterp.targets.lift`: the forward pass up to ``layer`` runs
once per image, and T targets of an image cost one compiled call.

The rest of the family (Grad-CAM++, XGrad-CAM, HiResCAM, Layer-CAM, Eigen-CAM,
Score-CAM, Ablation-CAM, ...) is in :mod:`jaxinterp.attribution.cam_family`; it
shares the plumbing here (:func:`_layer_method`, :func:`_image_method`).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from jaxinterp.checks import check_images, check_layer
from jaxinterp.targets import check_targets, input_gradient, lift, lift_images
from jaxinterp.attribution._lift import check_spatial_layer, resize_maps
from jaxinterp.nets import Net

__all__ = ["cam", "grad_cam", "linear_approx"]

_HIGHEST = jax.lax.Precision.HIGHEST


def _check_spatial_layer(net: Net, layer, image_size: tuple[int, int]) -> tuple[int, ...]:
    """The (h, w, C) activation shape of ``layer``; ValueError naming ``layer`` otherwise."""
    if layer is None or not isinstance(layer, str):
        raise ValueError(f"layer: expected the name of a split point of {net.name}, got {layer!r}; "
                         f"expected one of {list(net.layers)}")
    check_layer(net, layer)
    check_spatial_layer(net, layer, True, image_size)
    return net.activation_shape(layer, image_size)


def _prepare(net: Net, x, target, layer, after: bool = True):
    """The checks of every CAM method: (images, (H, W), targets as (N, T) pytrees).

    A :class:`Unit` target must come after ``layer`` when ``after`` (the methods
    that run the net from ``layer`` onwards).
    """
    x = check_images(x)
    image_size = tuple(x.shape[1:3])
    _check_spatial_layer(net, layer, image_size)
    targets = check_targets(target, net, x.shape[0], image_size, after=layer if after else None)
    return x, image_size, targets


def _layer_method(combine: Callable[[jax.Array, jax.Array | None], jax.Array], net: Net, params,
                  x, target, layer, resize: bool, grads: bool = True) -> jax.Array:
    """Maps (N, T, h|H, w|W) of ``combine(A, G)`` for one image's activation A and gradient G.

    A and G are (h, w, C), from one forward pass to ``layer`` per image and the
    gradient of each target's score through the rest of the net; with ``grads``
    False G is None and no gradient is computed.
    """
    x, image_size, targets = _prepare(net, x, target, layer)

    def one(x1, t):
        a = net.apply(params, x1[None], stop=layer)[0]
        g = input_gradient(net, params, a, t, start=layer) if grads else None
        return combine(a, g)

    maps = lift(one)(x, targets)
    return resize_maps(maps, image_size) if resize else maps


def _image_method(per_image: Callable, net: Net, params, x, target, layer, resize: bool,
                  after: bool) -> jax.Array:
    """Maps (N, T, h|H, w|W) of ``per_image(x1, ts, image_size) -> (T, h, w)``, one image and all its targets.

    For the perturbation members of the family (Score-CAM, Ablation-CAM), whose
    cost is forward passes shared by the targets of an image.
    """
    x, image_size, targets = _prepare(net, x, target, layer, after)
    maps = lift_images(lambda x1, ts: per_image(x1, ts, image_size))(x, targets)
    return resize_maps(maps, image_size) if resize else maps


def _first_component(m: jax.Array) -> jax.Array:
    """The (h, w) projection of m (h, w, C) on the first principal component of its positions.

    The h w positions are the samples and the C channels the features; they are
    centred over positions, and the projection is on the first right singular
    vector v.  Its sign is fixed so that sum_k v_k >= 0: since v is an
    eigenvector of the covariance S, that is the sign under which the map
    correlates positively with the channel sum sum_k m_k (their covariance is
    sigma_1^2 sum_k v_k).
    """
    h, w, c = m.shape
    mat = m.reshape(h * w, c)
    mat = mat - jnp.mean(mat, axis=0)
    v = jnp.linalg.svd(mat, full_matrices=False)[2][0]
    v = jnp.where(jnp.sum(v) < 0, -v, v)
    return jnp.dot(mat, v, precision=_HIGHEST).reshape(h, w)


def _channel_sum(m: jax.Array, eigen_smooth: bool = False) -> jax.Array:
    """sum_k m_k of per-channel maps m (h, w, C) -> (h, w), or with ``eigen_smooth`` their
    projection on the first principal component (:func:`_first_component`)."""
    return _first_component(m) if eigen_smooth else jnp.sum(m, axis=-1)


def _weighted_sum(a: jax.Array, w: jax.Array, eigen_smooth: bool = False) -> jax.Array:
    """sum_k w_k A_k: activations (h, w, C) weighted by channel weights (C,) -> (h, w); with
    ``eigen_smooth`` the first principal component projection of the w_k A_k instead of their sum."""
    if eigen_smooth:
        return _first_component(a * w)
    return jnp.einsum("hwc,c->hw", a, w, precision=_HIGHEST)


def _grad_x_act(a: jax.Array, g: jax.Array) -> jax.Array:
    """sum_k G_k A_k at every position: the linear approximation map (h, w) (HiResCAM before its ReLU)."""
    return jnp.sum(a * g, axis=-1)


def _cam(a, g):
    return _weighted_sum(a, jnp.sum(g, axis=(0, 1)))


def cam(net: Net, params, x: jax.Array, target, *, layer: str, resize: bool = True) -> jax.Array:
    """Class activation maps (CAM): the linear head's class weights applied at every position.

    For a net whose head is global average pooling followed by a linear layer,
    score_t = sum_k w_{t,k} mean_{ij} A_k(i, j) + b_t with A (h, w, C) the
    activation at ``layer``, and Zhou et al. define::

        CAM_t(i, j) = sum_k w_{t,k} A_k(i, j)

    (so that mean_{ij} CAM_t + b_t = score_t).  It is computed without reading
    the head's weights, from the gradient G = d score_t / d A::

        CAM_t(i, j) = sum_k (sum_{i'j'} G_k(i', j')) A_k(i, j)
                    = (h w) * sum_k alpha_k A_k(i, j),   alpha_k = mean_{ij} G_k

    which equals the definition exactly for a GAP + linear head (there
    G_k(i, j) = w_{t,k} / (h w)): smallcnn at ``'features.10'``, resnet50 at
    ``'layer4'``.  For any other head it is the derivative of the score along
    a spatially uniform shift of each channel, i.e. (h w) times Grad-CAM
    without the ReLU.  No ReLU is applied (the paper's maps are signed and
    only rescaled for display).

    Pure and jit-compatible with ``net``, ``layer`` and ``resize`` static::

        jax.jit(cam, static_argnames=("net", "layer", "resize"))

    Args:
      net: the net (static).
      params: its params.
      x: images (N, H, W, 3), float RGB in [0, 1].
      target: int class indices (N,) or (N, T), or a :class:`Unit` (N,) / (N, T)
        at or after ``layer``.
      layer: split point with a spatial activation (h, w, C), usually the last
        convolutional one.
      resize: bilinearly resize the maps to (H, W) (torch ``interpolate``,
        ``align_corners=False``); False keeps the layer's (h, w).

    Returns:
      maps: (N, T, H, W), or (N, T, h, w) with ``resize=False``, in the dtype of x.

    Raises:
      ValueError: bad ``x`` or ``target``; ``layer`` unknown or not spatial; a
        Unit target before ``layer``.

    References:
      Zhou, Khosla, Lapedriza, Oliva and Torralba, "Learning deep features for
      discriminative localization", CVPR 2016.
    """
    return _layer_method(_cam, net, params, x, target, layer, resize)


def grad_cam(net: Net, params, x: jax.Array, target, *, layer: str, relu: bool = True,
             resize: bool = True, eigen_smooth: bool = False) -> jax.Array:
    """Grad-CAM: activations at a layer weighted by their spatially averaged gradient.

    With A (h, w, C) the activation at ``layer`` and G = d score_t / d A (the
    class logit, or the unit's value)::

        alpha_k = mean_{ij} G_k(i, j)
        map_t(i, j) = ReLU(sum_k alpha_k A_k(i, j))     (relu=True, the paper, TorchRay)
        map_t(i, j) = sum_k alpha_k A_k(i, j)           (relu=False, Captum's LayerGradCam default)

    Peers return the map at the layer's resolution (TorchRay ``grad_cam``,
    Captum ``LayerGradCam``); here it is bilinearly upsampled to the image by
    default (torch ``interpolate(mode='bilinear', align_corners=False)``, as
    Captum's ``LayerAttribution.interpolate``); ``resize=False`` gives the
    peers' (h, w) map.

    ``eigen_smooth=True`` (pytorch-grad-cam's option) replaces the channel sum
    by the projection of the weighted activations alpha_k A_k (h w positions,
    C features, centred over positions) on their first principal component,
    as :func:`~jaxinterp.attribution.eigen_cam` does for A; its sign, LAPACK's
    arbitrary choice in pytorch-grad-cam, is fixed here so that the map
    correlates positively with the Grad-CAM map before its ReLU.

    Pure and jit-compatible with ``net``, ``layer``, ``relu``, ``resize`` and
    ``eigen_smooth`` static::

        jax.jit(grad_cam, static_argnames=("net", "layer", "relu", "resize", "eigen_smooth"))

    Args:
      net: the net (static).
      params: its params.
      x: images (N, H, W, 3), float RGB in [0, 1].
      target: int class indices (N,) or (N, T), or a :class:`Unit` (N,) / (N, T)
        at or after ``layer``.
      layer: split point with a spatial activation (h, w, C).
      relu: clamp the map at zero (default True, as in the paper).
      resize: resize the maps to (H, W); False keeps (h, w).
      eigen_smooth: the first principal component projection of the weighted
        activations instead of their channel sum (default False).

    Returns:
      maps: (N, T, H, W), or (N, T, h, w) with ``resize=False``, in the dtype of x.

    Raises:
      ValueError: bad ``x`` or ``target``; ``layer`` unknown or not spatial; a
        Unit target before ``layer``.

    References:
      Selvaraju, Cogswell, Das, Vedantam, Parikh and Batra, "Grad-CAM: visual
      explanations from deep networks via gradient-based localization", ICCV 2017.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from jaxinterp import attribution, nets
      >>> net = nets.get("smallcnn"); params = net.init(jax.random.key(0))
      >>> x = jax.random.uniform(jax.random.key(1), (2, 64, 64, 3))
      >>> maps = attribution.grad_cam(net, params, x, jnp.array([[3, 7], [1, 2]]), layer="features.10")
      >>> maps.shape, bool((maps >= 0).all())         # (N, T, H, W), after the ReLU
      ((2, 2, 64, 64), True)
    """
    def combine(a, g):
        m = _weighted_sum(a, jnp.mean(g, axis=(0, 1)), eigen_smooth)
        return jax.nn.relu(m) if relu else m

    return _layer_method(combine, net, params, x, target, layer, resize)


def linear_approx(net: Net, params, x: jax.Array, target, *, layer: str,
                  resize: bool = True) -> jax.Array:
    """Linear approximation: gradient times activation at a layer, summed over channels.

    With A (h, w, C) the activation at ``layer`` and G = d score_t / d A::

        map_t(i, j) = sum_k A_k(i, j) G_k(i, j)

    the first-order Taylor estimate of how much the features at position
    (i, j) contribute to the score (signed, no ReLU).  This is TorchRay's
    ``linear_approx`` (Fong and Vedaldi), which returns the (h, w) map; here it
    is resized to the image by default (``resize=False`` gives (h, w)).  It is also
    HiResCAM without its ReLU (``cam_family.hires_cam(relu=False)``).

    Pure and jit-compatible with ``net``, ``layer`` and ``resize`` static::

        jax.jit(linear_approx, static_argnames=("net", "layer", "resize"))

    Args:
      net: the net (static).
      params: its params.
      x: images (N, H, W, 3), float RGB in [0, 1].
      target: int class indices (N,) or (N, T), or a :class:`Unit` (N,) / (N, T)
        at or after ``layer``.
      layer: split point with a spatial activation (h, w, C).
      resize: resize the maps to (H, W); False keeps (h, w).

    Returns:
      maps: (N, T, H, W), or (N, T, h, w) with ``resize=False``, in the dtype of x.

    Raises:
      ValueError: bad ``x`` or ``target``; ``layer`` unknown or not spatial; a
        Unit target before ``layer``.

    References:
      TorchRay's ``linear_approx``, the baseline of Fong, Patrick and Vedaldi,
      "Understanding deep networks via extremal perturbations and smooth
      masks", ICCV 2019.
    """
    return _layer_method(_grad_x_act, net, params, x, target, layer, resize)
