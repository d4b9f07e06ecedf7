"""Image segmentations for region-based attribution: Felzenszwalb's graph segmentation and XRAI's segment masks.

Segmentation is a data-dependent, sequential graph algorithm (a union-find
over sorted edges): it runs on the host with scikit-image, once per image,
and is not jit-compatible.  Its output - int labels or boolean masks of a
static shape - is what the on-device methods (:func:`jaxinterp.attribution.xrai`
and the methods that ablate segments) consume.
"""

from __future__ import annotations

import numpy as np
from skimage import morphology, segmentation, transform

from jaxinterp.checks import check_images, check_int, check_positive_float

__all__ = ["felzenszwalb", "xrai_segments", "XRAI_SCALES"]

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
