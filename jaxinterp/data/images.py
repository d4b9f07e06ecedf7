"""The colour photographs bundled with scikit-image, as float RGB arrays.

    from jaxinterp.data import images
    images.names()                   # ('astronaut', 'chelsea', 'coffee', ...)
    x = images.load("chelsea")       # (224, 224, 3) float32 in [0, 1]
    xs = images.batch(size=224)      # (8, 224, 224, 3) float32 in [0, 1]
    images.IMAGENET_HINTS["chelsea"] # (281, 282, 285): tabby, tiger cat, Egyptian cat

Only files shipped inside the scikit-image wheel are read (nothing is
downloaded); grey-level, binary and synthetic pictures there are left out.
Credits and licences: ``third_party/skimage_images/LICENSE.txt``.
"""

from __future__ import annotations

import functools
import os

import numpy as np
import skimage
import skimage.io
import skimage.transform

__all__ = ["names", "load", "batch", "IMAGENET_HINTS"]

_DATA_DIR = os.path.join(os.path.dirname(skimage.__file__), "data")

# name -> file in skimage/data.
_FILES = {
    "astronaut": "astronaut.png",             # Eileen Collins, NASA (public domain)
    "chelsea": "chelsea.png",                 # a tabby cat (CC0, Stefan van der Walt)
    "coffee": "coffee.png",                   # espresso cup (CC0, Rachel Michetti)
    "hubble_deep_field": "hubble_deep_field.jpg",  # NASA (public domain)
    "ihc": "ihc.png",                         # immunohistochemistry microscopy
    "motorcycle": "motorcycle_left.png",      # Middlebury 2014 stereo, left view
    "retina": "retina.jpg",                   # fundus photograph (CC0, M. Haggstrom)
    "rocket": "rocket.jpg",                   # Falcon 9 launch, SpaceX (public domain)
}

# ImageNet-1k class indices (0-based, the standard synset order) that clearly
# describe a photograph; photographs without an obvious class are absent.
IMAGENET_HINTS: dict[str, tuple[int, ...]] = {
    "chelsea": (281, 282, 285),   # tabby cat, tiger cat, Egyptian cat
    "coffee": (967, 504, 968),    # espresso, coffee mug, cup
    "rocket": (657, 744),         # missile; projectile, missile
}


_NAMES = tuple(sorted(_FILES))


def names() -> tuple[str, ...]:
    """Names accepted by :func:`load`, sorted."""
    return _NAMES


@functools.lru_cache(maxsize=None)
def _read(name: str) -> np.ndarray:
    """The photograph as read from disk, (H, W, 3) uint8, read-only."""
    pixels = skimage.io.imread(os.path.join(_DATA_DIR, _FILES[name]))[..., :3]
    pixels.setflags(write=False)
    return pixels


def _check_size(size) -> None:
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
        raise ValueError(f"size must be a positive int or None, got {size!r}")


def load(name: str, size: int | None = 224) -> np.ndarray:
    """One photograph, centre-cropped to a square and resized with anti-aliasing.

    Args:
      name: one of :func:`names`.
      size: side of the square output in pixels, or None for the original picture
        (no crop, no resize).

    Returns:
      (size, size, 3) float32 RGB in [0, 1] (or (H, W, 3) for ``size=None``).

    Raises:
      ValueError: unknown ``name`` or ``size`` not a positive int or None.
    """
    if name not in _FILES:
        raise ValueError(f"name must be one of {_NAMES}, got {name!r}")
    _check_size(size)
    pixels = _read(name).astype(np.float32) / 255.0
    if size is None:
        return pixels
    h, w, _ = pixels.shape
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    square = pixels[top:top + side, left:left + side]
    resized = skimage.transform.resize(square, (size, size), order=1, anti_aliasing=True)
    return np.clip(resized, 0.0, 1.0).astype(np.float32)


def batch(names: tuple[str, ...] | list[str] | None = None, size: int = 224) -> np.ndarray:
    """Several photographs stacked, each as :func:`load` returns it.

    Args:
      names: photographs to load, in order; None for all of :func:`names`.
      size: side of the square images in pixels (a positive int).

    Returns:
      (N, size, size, 3) float32 RGB in [0, 1].

    Raises:
      ValueError: an unknown name, empty ``names``, or ``size`` not a positive int.
    """
    chosen = _NAMES if names is None else tuple(names)
    unknown = [n for n in chosen if n not in _FILES]
    if not chosen or unknown:
        raise ValueError(f"names must be a non-empty sequence of {_NAMES} or None, got {names!r}")
    if size is None:
        raise ValueError("size must be a positive int for a batch, got None")
    return np.stack([load(n, size) for n in chosen])
