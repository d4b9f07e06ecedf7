"""Image segmentations for region-based attribution: Felzenszwalb's graph segmentation and XRAI's segment masks.

Segmentation is a data-dependent, sequential graph algorithm (a union-find
over sorted edges): it runs on the host with scikit-image, once per image,
and is not jit-compatible.  Its output - int labels or boolean masks of a
static shape - is what the on-device methods (:func:`jaxinterp.attribution.xrai`
and the methods that ablate segments) consume.  :class:`Segmented` runs the
segmentation as a host callback inside a compiled call, for tables of methods
that are functions of (params, x, target) only.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import numpy as np
from skimage import morphology, segmentation, transform

from jaxinterp.checks import check_choice, check_images, check_int, check_positive_float

__all__ = ["felzenszwalb", "xrai_segments", "XRAI_SCALES", "Segmented", "SEGMENTERS"]

XRAI_SCALES = (50, 100, 150, 250, 500, 1200)
"""Felzenszwalb scales of XRAI's segmentation (PAIR ``saliency`` 0.2.1)."""


def _host_images(images) -> np.ndarray:
    return np.asarray(check_images(images, "images"), np.float64)


def felzenszwalb(images, *, scale: float = 100.0, sigma: float = 0.5, min_size: int = 50) -> np.ndarray:
    """Felzenszwalb-Huttenlocher graph segmentation of each image, on the host.

    ``skimage.segmentation.felzenszwalb`` on each RGB image in turn: a larger
    ``scale`` gives larger segments; the image is first smoothed by a Gaussian
    of ``sigma`` pixels, and segments smaller than ``min_size`` pixels are
    merged into a neighbour.  The defaults are scikit-image's example for
    [0, 1] images (scale 100, sigma 0.5, min size 50).

    Not jit-compatible: computed once per image with NumPy / scikit-image
    (the algorithm is a sequential union-find); pass the labels to the
    on-device methods as an array.

    Args:
      images: (N, H, W, 3) floating RGB in [0, 1] (NumPy or jax array).
      scale: free parameter of the merge criterion (> 0).
      sigma: Gaussian pre-smoothing in pixels (> 0).
      min_size: minimum segment size in pixels (>= 1).

    Returns:
      labels: (N, H, W) int32 NumPy array, segment ids 0 .. K_n - 1 per image.

    Raises:
      ValueError naming the argument: ``images`` not (N, H, W, 3) floating;
      ``scale`` or ``sigma`` not > 0; ``min_size`` not a positive int.

    References:
      Felzenszwalb and Huttenlocher, "Efficient graph-based image
      segmentation", IJCV 2004.
    """
    x = _host_images(images)
    scale = check_positive_float(scale, "scale")
    sigma = check_positive_float(sigma, "sigma")
    min_size = check_int(min_size, "min_size")
    return np.stack([segmentation.felzenszwalb(im, scale=scale, sigma=sigma, min_size=min_size, channel_axis=-1)
                     for im in x]).astype(np.int32)


def _xrai_masks_one(im: np.ndarray, scales, sigma: float, min_size: int, size,
                    dilation_radius: int) -> list[np.ndarray]:
    """XRAI's masks of one image (H, W, 3): one boolean (H, W) mask per label of each scale, dilated."""
    hw = im.shape[:2]
    lo, hi = im.min(), im.max()
    im = (im - lo) / (hi - lo if hi > lo else 1.0) * 2.0 - 1.0          # to [-1, 1], per image
    if size is not None:
        im = transform.resize(im, size, order=3, mode="constant", preserve_range=True, anti_aliasing=True)
    footprint = morphology.disk(dilation_radius) if dilation_radius else None
    masks = []
    for s in scales:
        labels = segmentation.felzenszwalb(im, scale=s, sigma=sigma, min_size=min_size, channel_axis=-1)
        if size is not None:
            labels = transform.resize(labels, hw, order=0, mode="constant", preserve_range=True,
                                      anti_aliasing=False).astype(int)
        for k in range(labels.min(), labels.max() + 1):
            mask = labels == k
            masks.append(mask if footprint is None else morphology.dilation(mask, footprint=footprint))
    return masks


def xrai_segments(images, *, scales=XRAI_SCALES, sigma: float = 0.8, min_size: int = 150,
                  size: tuple[int, int] | None = (224, 224), dilation_radius: int = 5) -> np.ndarray:
    """XRAI's overlapping multi-scale segments of each image, as boolean masks, on the host.

    As PAIR ``saliency`` 0.2.1 builds them: each image is rescaled to [-1, 1]
    by its own min and max, resized to ``size`` (bicubic, anti-aliased; None
    keeps it), segmented by :func:`felzenszwalb`'s algorithm at each of
    ``scales`` with ``sigma`` 0.8 and ``min_size`` 150, the labels resized back
    (nearest); every label of every scale gives one mask, dilated by a disk of
    ``dilation_radius`` pixels (0: none) so that segments overlap and cover
    their edges.  Images yield different numbers of masks: they are padded
    with empty masks to the largest count S, which :func:`~jaxinterp.attribution.xrai`
    never selects.

    Not jit-compatible: computed once per image with NumPy / scikit-image.

    Args:
      images: (N, H, W, 3) floating RGB (NumPy or jax array).
      scales: Felzenszwalb scales, one segmentation each.
      sigma, min_size: Felzenszwalb's pre-smoothing and minimum segment size.
      size: (h, w) the image is resized to for segmenting (PAIR: 224 x 224), or None.
      dilation_radius: radius in pixels of the disk each mask is dilated by (>= 0).

    Returns:
      masks: (N, S, H, W) bool NumPy array.

    Raises:
      ValueError naming the argument: bad ``images``, ``scales``, ``sigma``,
      ``min_size``, ``size`` or ``dilation_radius``.

    References:
      Kapishnikov, Bolukbasi, Viégas and Terry, "XRAI: better attributions
      through regions", ICCV 2019.
    """
    x = _host_images(images)
    if not len(scales):
        raise ValueError("scales: expected at least one Felzenszwalb scale")
    scales = [check_positive_float(s, "scales") for s in scales]
    sigma = check_positive_float(sigma, "sigma")
    min_size = check_int(min_size, "min_size")
    dilation_radius = check_int(dilation_radius, "dilation_radius", minimum=0)
    if size is not None:
        if len(size) != 2:
            raise ValueError(f"size: expected (h, w) or None, got {size!r}")
        size = tuple(check_int(v, "size") for v in size)
    per_image = [_xrai_masks_one(im, scales, sigma, min_size, size, dilation_radius) for im in x]
    out = np.zeros((len(x), max(map(len, per_image)), *x.shape[1:3]), bool)
    for n, masks in enumerate(per_image):
        out[n, :len(masks)] = masks
    return out


def _felzenszwalb_capped(images: np.ndarray, scale: float, sigma: float, min_size: int,
                         max_segments: int) -> np.ndarray:
    """Felzenszwalb labels of each image, coarsened until it has at most ``max_segments`` segments.

    An image with more segments is segmented again with ``min_size`` doubled
    (Felzenszwalb's own merge of small components) until it fits.  NumPy and
    scikit-image only: it runs inside a host callback, where calling JAX would deadlock.
    """
    def labels(im, size):
        return segmentation.felzenszwalb(im, scale=scale, sigma=sigma, min_size=size, channel_axis=-1)

    out = []
    for im in images:
        size = min_size
        seg = labels(im, size)
        while seg.max() + 1 > max_segments:
            size *= 2
            seg = labels(im, size)
        out.append(seg)
    return np.stack(out).astype(np.int32)


def _xrai_capped(images: np.ndarray, max_segments: int) -> np.ndarray:
    """XRAI's masks of each image (PAIR's settings, as :func:`xrai_segments`), its finest scales dropped
    until at most ``max_segments`` masks (then the masks beyond cut), padded with empty masks to
    exactly ``max_segments``.  NumPy and scikit-image only (a host callback)."""
    out = np.zeros((len(images), max_segments, *images.shape[1:3]), bool)
    for n, im in enumerate(images):
        scales = XRAI_SCALES
        masks = _xrai_masks_one(im, scales, 0.8, 150, (224, 224), 5)
        while len(masks) > max_segments and len(scales) > 1:
            scales = scales[1:]
            masks = _xrai_masks_one(im, scales, 0.8, 150, (224, 224), 5)
        masks = masks[:max_segments]
        out[n, :len(masks)] = masks
    return out


SEGMENTERS = ("felzenszwalb", "xrai")
"""Segmentations :class:`Segmented` computes: Felzenszwalb labels (N, H, W) for the
feature-mask methods, or XRAI's multi-scale masks (N, S, H, W) for :func:`~jaxinterp.attribution.xrai`."""


@dataclasses.dataclass(frozen=True)
class Segmented:
    """A region method together with the segmentation of its images: a method of (params, x, target) alone.

    ``Segmented(attribution.lime)(net, params, x, target, **options)`` is
    ``attribution.lime(net, params, x, target, segments=S, num_features=max_segments, **options)``
    with S the Felzenszwalb segments of x; with ``segmenter='xrai'`` the method
    (:func:`~jaxinterp.attribution.xrai`) gets XRAI's masks.  Tables of methods
    (the pointing game, the sanity checks, the demo) call every method the same
    way; this is how the region methods join them.

    The segmentation runs on the host (:meth:`prepare`, on concrete images), the
    method on the device (:meth:`apply`, pure and jit-compatible in everything
    but ``segments``' count).  :func:`jaxinterp.evaluation.explain_fn` compiles
    :meth:`apply` once and calls :meth:`prepare` per batch.  The count of
    segments must be static, so an image with more than ``max_segments``
    segments is segmented more coarsely (Felzenszwalb: ``min_size`` doubled until
    it fits; XRAI: its finest scales dropped, then the masks beyond
    ``max_segments`` cut), and XRAI's masks are padded with empty ones.  (A
    ``jax.pure_callback`` would run the segmentation inside the compiled call, but
    on 8 CPU devices sharing 2 cores the collective that gathers the images for
    it stalls.)

    Frozen and hashable: equal wrappers share compiled programs.

    Attributes:
      method: a feature-mask method (``feature_ablation``, ``shapley_sampling``,
        ``kernel_shap``, ``lime``) with ``segmenter='felzenszwalb'``, or
        :func:`~jaxinterp.attribution.xrai` with ``segmenter='xrai'``.
      segmenter: ``'felzenszwalb'`` or ``'xrai'``.
      max_segments: the static number of features (Felzenszwalb) or masks (XRAI).
      scale, sigma, min_size: Felzenszwalb's options (:func:`felzenszwalb`; XRAI uses PAIR's).
    """

    method: Callable
    segmenter: str = "felzenszwalb"
    max_segments: int = 64
    scale: float = 100.0
    sigma: float = 0.5
    min_size: int = 50

    def __post_init__(self):
        check_choice(self.segmenter, "segmenter", SEGMENTERS)
        check_int(self.max_segments, "max_segments")

    def prepare(self, x) -> np.ndarray:
        """The segmentation of concrete images x (N, H, W, 3), on the host: labels (N, H, W) int32
        in [0, max_segments) or masks (N, max_segments, H, W) bool."""
        images = _host_images(x)
        if self.segmenter == "xrai":
            return _xrai_capped(images, self.max_segments)
        return _felzenszwalb_capped(images, self.scale, self.sigma, self.min_size, self.max_segments)

    def apply(self, net, params, x: jax.Array, target, segments, *args, **options) -> jax.Array:
        """The method's maps (N, T, H, W) given the segmentation (pure; jit-compatible)."""
        extra = {} if self.segmenter == "xrai" else {"num_features": self.max_segments}
        return self.method(net, params, x, target, *args, segments=segments, **extra, **options)

    def __call__(self, net, params, x: jax.Array, target, *args, **options) -> jax.Array:
        return self.apply(net, params, x, target, self.prepare(x), *args, **options)
