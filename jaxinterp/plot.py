"""Figures: saliency colour maps, overlays, boxes and image grids (NumPy in, uint8 / PNG out).

Everything here works on host arrays and never touches pyplot's global state:
figures are :class:`matplotlib.figure.Figure` objects drawn with the Agg
canvas, so plotting is safe in scripts, tests and threads without a display.
"""

from __future__ import annotations

import os
from typing import Sequence

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ["to_uint8", "normalise", "heatmap", "overlay", "draw_box", "grid"]


def to_uint8(image) -> np.ndarray:
    """An RGB image as uint8.

    Args:
      image: (H, W, 3) uint8, or float in [0, 1] (clipped).

    Returns:
      (H, W, 3) uint8.
    """
    image = np.asarray(image)
    if image.dtype == np.uint8:
        return image
    return np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)


def normalise(saliency, *, signed: bool = False, percentile: float = 99.5) -> np.ndarray:
    """Scale a saliency map for display: by a high percentile of its magnitude, then clip.

    Args:
      saliency: (H, W) float.
      signed: map to [-1, 1] keeping signs (for signed gradients) instead of
        [0, 1] (negative values are clipped to 0).
      percentile: the percentile of |saliency| mapped to 1 (robust to a few
        very large values).

    Returns:
      (H, W) float32 in [0, 1], or [-1, 1] if ``signed``; zeros for an all-zero map.
    """
    s = np.asarray(saliency, np.float32)
    if s.ndim != 2:
        raise ValueError(f"saliency: expected a map of rank 2 (H, W), got shape {s.shape}")
    scale = np.percentile(np.abs(s), percentile)
    if not np.isfinite(scale):
        raise ValueError("saliency: contains NaN or Inf")
    s = s / scale if scale > 0 else np.zeros_like(s)
    return np.clip(s, -1.0 if signed else 0.0, 1.0)


def heatmap(saliency, *, signed: bool = False, cmap: str | None = None,
            percentile: float = 99.5) -> np.ndarray:
    """Colour a saliency map.

    Args:
      saliency: (H, W) float.
      signed: diverging colours (negative blue, zero white, positive red) instead
        of a sequential map of the magnitude.
      cmap: a matplotlib colour map name; default ``'bwr'`` if signed else ``'inferno'``.
      percentile: see :func:`normalise`.

    Returns:
      (H, W, 3) uint8.
    """
    s = normalise(saliency, signed=signed, percentile=percentile)
    colours = matplotlib.colormaps[cmap or ("bwr" if signed else "inferno")]
    return to_uint8(colours((s + 1.0) / 2.0 if signed else s)[..., :3])


def _resize_nearest(a: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a (h, w, ...) array to (H, W, ...) (blocky, honest pixels)."""
    rows = (np.arange(hw[0]) * a.shape[0]) // hw[0]
    cols = (np.arange(hw[1]) * a.shape[1]) // hw[1]
    return a[rows][:, cols]


def overlay(image, saliency, *, alpha: float = 0.6, signed: bool = False,
            cmap: str | None = None) -> np.ndarray:
    """Blend a saliency heat map over an image.

    ``out = (1 - a) * image + a * heatmap(saliency)`` with a = alpha * (normalised
    magnitude), so pixels of low saliency show the image.  A map of a different
    size than the image (e.g. computed at the net's input size) is resized with
    nearest neighbours.

    Args:
      image: (H, W, 3) uint8 or float in [0, 1].
      saliency: (h, w) float.
      alpha: opacity of the heat map where saliency is largest, in [0, 1].
      signed: see :func:`heatmap`.
      cmap: see :func:`heatmap`.

    Returns:
      (H, W, 3) uint8.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha: expected a value in [0, 1], got {alpha}")
    image = to_uint8(image).astype(np.float32)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"image: expected (H, W, 3), got shape {image.shape}")
    hw = image.shape[:2]
    heat = _resize_nearest(heatmap(saliency, signed=signed, cmap=cmap), hw).astype(np.float32)
    weight = alpha * _resize_nearest(np.abs(normalise(saliency, signed=signed)), hw)[..., None]
    return np.round((1.0 - weight) * image + weight * heat).astype(np.uint8)


def draw_box(image, box, *, colour=(0, 255, 0), width: int = 1) -> np.ndarray:
    """Draw the outline of a box on a copy of an image.

    Args:
      image: (H, W, 3) uint8 or float in [0, 1].
      box: (y0, x0, y1, x1), half-open pixel coordinates (floats are rounded).
      colour: RGB uint8 triple.
      width: line width in pixels, drawn inside the box.

    Returns:
      (H, W, 3) uint8.
    """
    out = to_uint8(image).copy()
    h, w = out.shape[:2]
    y0, x0, y1, x1 = (int(round(float(v))) for v in box)
    y0, x0, y1, x1 = max(y0, 0), max(x0, 0), min(y1, h), min(x1, w)
    if y1 <= y0 or x1 <= x0:
        return out
    for k in range(width):
        out[min(y0 + k, y1 - 1), x0:x1] = colour
        out[max(y1 - 1 - k, y0), x0:x1] = colour
        out[y0:y1, min(x0 + k, x1 - 1)] = colour
        out[y0:y1, max(x1 - 1 - k, x0)] = colour
    return out


def grid(images: Sequence, titles: Sequence[str] | None, path: str | os.PathLike, *,
         ncols: int | None = None, cell: float = 1.8, dpi: int = 100) -> str:
    """Save images as a grid PNG with a title above each.

    Args:
      images: K images, each (H, W, 3) uint8 / float in [0, 1], or (H, W) float
        (shown with the 'inferno' colour map).
      titles: K strings, or None.
      path: where to write the PNG (its directory must exist).
      ncols: columns (default min(K, 6)).
      cell: size of one cell in inches.
      dpi: resolution.

    Returns:
      ``path`` as a string.
    """
    if not len(images):
        raise ValueError("images: expected at least one image")
    if titles is not None and len(titles) != len(images):
        raise ValueError(f"titles: expected {len(images)} titles, got {len(titles)}")
    ncols = ncols or min(len(images), 6)
    nrows = -(-len(images) // ncols)
    fig = Figure(figsize=(cell * ncols, (cell + 0.3) * nrows), dpi=dpi)
    FigureCanvasAgg(fig)
    for k, image in enumerate(images):
        ax = fig.add_subplot(nrows, ncols, k + 1)
        image = np.asarray(image)
        if image.ndim == 2:
            ax.imshow(image, cmap="inferno", interpolation="nearest")
        else:
            ax.imshow(to_uint8(image), interpolation="nearest")
        ax.set_axis_off()
        if titles is not None:
            ax.set_title(titles[k], fontsize=8)
    fig.tight_layout(pad=0.3)
    fig.savefig(os.fspath(path), format="png")
    return os.fspath(path)
