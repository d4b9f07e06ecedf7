"""Sample photographs shipped with scikit-image and matplotlib, as float RGB arrays.

    from jaxinterp.data import images
    images.names()                   # ('astronaut', 'chelsea', 'coffee', ...): the 8 colour photographs
    images.all_names()               # names() plus 'camera' and 'grace_hopper'
    x = images.load("chelsea")       # (224, 224, 3) float32 in [0, 1]
    xs = images.batch(size=224)      # (8, 224, 224, 3) float32 in [0, 1]
    images.IMAGENET_HINTS["chelsea"] # (281, 282, 285): tabby, tiger cat, Egyptian cat
    x = images.load_centre_crop("grace_hopper", 224)   # timm's ImageNet eval crop (256 -> 224)
    s = images.pointing_set(224)     # hand-drawn boxes of ImageNet objects, as masks

Only files shipped inside the scikit-image and matplotlib wheels are read
(nothing is downloaded).  :func:`names` lists scikit-image's colour
photographs (grey-level, binary and synthetic pictures left out);
:func:`all_names` adds two photographs of ImageNet objects: scikit-image's
grey-level ``camera`` (replicated to RGB) and matplotlib's ``grace_hopper``.
Credits and licences: ``third_party/skimage_images/LICENSE.txt`` and
``third_party/matplotlib_images/LICENSE.txt``.
"""

from __future__ import annotations

import functools
import importlib.resources
import json
import math
import os

import numpy as np
import skimage
import skimage.io
import skimage.transform
from PIL import Image

from jaxinterp.checks import check_int, check_real

__all__ = ["names", "all_names", "load", "batch", "IMAGENET_HINTS", "load_centre_crop",
           "batch_centre_crop", "photo_objects", "pointing_set"]

_DATA_DIR = os.path.join(os.path.dirname(skimage.__file__), "data")

# name -> file in skimage/data: the colour photographs of names().
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

# name -> (package, file) of the further photographs of all_names().
_EXTRA_FILES = {
    "camera": ("skimage", "camera.png"),                # grey-level; cameraman (no copyright, MIT)
    "grace_hopper": ("matplotlib", "grace_hopper.jpg"),  # US Navy portrait (public domain)
}

# ImageNet-1k class indices (0-based, the standard synset order) that clearly
# describe a photograph; photographs without an obvious class are absent.
IMAGENET_HINTS: dict[str, tuple[int, ...]] = {
    "chelsea": (281, 282, 285),   # tabby cat, tiger cat, Egyptian cat
    "coffee": (967, 504, 968),    # espresso, coffee mug, cup
    "rocket": (657, 744),         # missile; projectile, missile
}


_NAMES = tuple(sorted(_FILES))
_ALL_NAMES = tuple(sorted({**_FILES, **_EXTRA_FILES}))


def names() -> tuple[str, ...]:
    """The scikit-image colour photographs, sorted (the default of :func:`batch`)."""
    return _NAMES


def all_names() -> tuple[str, ...]:
    """Names accepted by :func:`load` and :func:`load_centre_crop`, sorted: :func:`names`,
    'camera' and 'grace_hopper'."""
    return _ALL_NAMES


def _path(name: str) -> str:
    """Absolute path of the file of photograph ``name`` inside its installed package."""
    if name in _FILES:
        return os.path.join(_DATA_DIR, _FILES[name])
    package, file = _EXTRA_FILES[name]
    if package == "skimage":
        return os.path.join(_DATA_DIR, file)
    import matplotlib.cbook  # imported here: only the matplotlib photographs need it
    return str(matplotlib.cbook.get_sample_data(file, asfileobj=False))


@functools.lru_cache(maxsize=None)
def _read(name: str) -> np.ndarray:
    """The photograph as read from disk, (H, W, 3) uint8, read-only (grey levels replicated)."""
    pixels = skimage.io.imread(_path(name))
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[..., None], 3, axis=-1)
    pixels = np.ascontiguousarray(pixels[..., :3])
    pixels.setflags(write=False)
    return pixels


def _check_name(name, arg: str = "name") -> None:
    if not isinstance(name, str) or name not in _ALL_NAMES:
        raise ValueError(f"{arg}: expected one of {_ALL_NAMES}, got {name!r}")


def _check_size(size) -> None:
    if size is not None:
        check_int(size, "size")


def load(name: str, size: int | None = 224) -> np.ndarray:
    """One photograph, centre-cropped to a square and resized with anti-aliasing.

    Args:
      name: one of :func:`all_names`.
      size: side of the square output in pixels, or None for the original picture
        (no crop, no resize).

    Returns:
      (size, size, 3) float32 RGB in [0, 1] (or (H, W, 3) for ``size=None``).

    Raises:
      ValueError: unknown ``name`` or ``size`` not a positive int or None.
    """
    _check_name(name)
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


def _check_names(names) -> tuple[str, ...]:
    """``names`` as a tuple (None: :func:`names`); ValueError if empty or unknown."""
    chosen = _NAMES if names is None else tuple(names)
    unknown = [n for n in chosen if not isinstance(n, str) or n not in _ALL_NAMES]
    if not chosen or unknown:
        raise ValueError(f"names: expected a non-empty sequence of {_ALL_NAMES} or None, got {names!r}")
    return chosen


def batch(names: tuple[str, ...] | list[str] | None = None, size: int = 224) -> np.ndarray:
    """Several photographs stacked, each as :func:`load` returns it.

    Args:
      names: photographs to load (of :func:`all_names`), in order; None for all of :func:`names`.
      size: side of the square images in pixels (a positive int).

    Returns:
      (N, size, size, 3) float32 RGB in [0, 1].

    Raises:
      ValueError: an unknown name, empty ``names``, or ``size`` not a positive int.
    """
    chosen = _check_names(names)
    if size is None:
        raise ValueError("size: expected a positive integer for a batch, got None")
    return np.stack([load(n, size) for n in chosen])


# --- The ImageNet evaluation crop of timm and torchvision ------------------------------------

def _check_crop_args(size, crop_fraction) -> None:
    check_int(size, "size")
    check_real(crop_fraction, "crop_fraction", minimum=0, maximum=1, open_min=True)


def _crop_geometry(h: int, w: int, size: int, crop_fraction: float) -> tuple[int, int, int, int]:
    """Where the centre crop of an (h, w) picture lies.

    The shorter side is resized to ``floor(size / crop_fraction)`` and the longer one
    to ``int(that * long / short)`` (torchvision's ``Resize(int)``); the crop starts at
    ``int(round((side - size) / 2))`` (torchvision's ``CenterCrop``).

    Returns:
      (new_h, new_w, top, left) ints: the resized picture and the crop's corner in it.
    """
    scale = math.floor(size / crop_fraction)
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = scale, int(scale * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    top = int(round((new_h - size) / 2.0))
    left = int(round((new_w - size) / 2.0))
    return new_h, new_w, top, left


def load_centre_crop(name: str, size: int, crop_fraction: float = 0.875) -> np.ndarray:
    """One photograph through the ImageNet evaluation transform of timm (EfficientNet-Lite et al.).

    Resize so that the shorter side is ``floor(size / crop_fraction)`` pixels (bicubic,
    PIL ``Image.resize`` on uint8, which low-pass filters when it shrinks - the path of
    torchvision's ``Resize`` on a PIL image), then cut the central ``size`` x ``size``
    square (torchvision's ``CenterCrop`` rounding) and scale to [0, 1] (``ToTensor``).
    Equal, value for value, to torchvision's ``Resize(floor(size / crop_fraction),
    BICUBIC) + CenterCrop(size) + ToTensor()`` on the PIL image and to timm's
    ``transforms_imagenet_eval`` (crop_mode 'center', bicubic: the transform of
    timm's ``tf_efficientnet_lite0/1/2``, with crop_pct 0.875 / 0.882 / 0.89 at
    224 / 240 / 260; lite3/4 use bilinear) without its normalisation (tested in
    ``tests/parity/test_images_parity.py``).  The TF EfficientNet reference code
    (``_decode_and_center_crop``) cuts ``int(0.875 * min(h, w))`` first and resizes
    the cut with TF's bicubic, which does not low-pass filter: the same region up to
    a pixel, but not the same values (mean |difference| 0.005 - 0.015 on these
    photographs).

    Args:
      name: one of :func:`all_names`.
      size: side of the square output in pixels (a positive int).
      crop_fraction: the fraction of the resized shorter side that is kept, in (0, 1]
        (timm's ``crop_pct``; 0.875 for 224 of 256).

    Returns:
      (size, size, 3) float32 RGB in [0, 1], multiples of 1/255.

    Raises:
      ValueError: unknown ``name``; ``size`` not a positive int; ``crop_fraction``
        not in (0, 1].
    """
    _check_name(name)
    _check_crop_args(size, crop_fraction)
    pixels = _read(name)
    h, w, _ = pixels.shape
    new_h, new_w, top, left = _crop_geometry(h, w, size, crop_fraction)
    resized = np.asarray(Image.fromarray(pixels).resize((new_w, new_h), Image.BICUBIC))
    crop = resized[top:top + size, left:left + size]
    return crop.astype(np.float32) / np.float32(255.0)


def batch_centre_crop(names: tuple[str, ...] | list[str] | None, size: int,
                      crop_fraction: float = 0.875) -> np.ndarray:
    """Several photographs stacked, each as :func:`load_centre_crop` returns it.

    Args:
      names: photographs (of :func:`all_names`), in order; None for all of :func:`names`.
      size: side of the square images in pixels (a positive int).
      crop_fraction: kept fraction of the resized shorter side, in (0, 1].

    Returns:
      (N, size, size, 3) float32 RGB in [0, 1].

    Raises:
      ValueError: an unknown name or empty ``names``; bad ``size`` or ``crop_fraction``.
    """
    chosen = _check_names(names)
    _check_crop_args(size, crop_fraction)
    return np.stack([load_centre_crop(n, size, crop_fraction) for n in chosen])


# --- Hand-drawn boxes of ImageNet objects: a real pointing-game set ------------------------------

@functools.lru_cache(maxsize=1)
def _objects_text() -> str:
    return importlib.resources.files("jaxinterp.data").joinpath("photo_objects.json").read_text("utf-8")


def photo_objects() -> dict[str, list[dict]]:
    """The hand-drawn objects of ``jaxinterp/data/photo_objects.json``.

    Returns:
      {photo name: [{"classes": [int, ...], "names": [str, ...], "box": [x0, y0, x1, y1],
      "note": str}, ...]} (a fresh copy): acceptable ImageNet-1k classes of each object,
      the first the target, and its box in pixels of the original photograph, half-open
      (columns x0 <= x < x1, rows y0 <= y < y1).  Photographs without an object of an
      ImageNet class are absent.
    """
    data = json.loads(_objects_text())
    return {k: v for k, v in data.items() if not k.startswith("_")}


def _crop_box(box, h: int, w: int, size: int, crop_fraction: float) -> tuple[np.ndarray, float]:
    """An original-pixel box mapped through the resize and the centre crop.

    Args:
      box: (x0, y0, x1, y1) half-open, in pixels of the (h, w) original.

    Returns:
      ((y0, x0, y1, x1) float64 in crop pixels, clipped to [0, size]; the fraction of
      the box's area that lies inside the crop).
    """
    new_h, new_w, top, left = _crop_geometry(h, w, size, crop_fraction)
    x0, y0, x1, y1 = (float(v) for v in box)
    full = np.array([y0 * new_h / h - top, x0 * new_w / w - left,
                     y1 * new_h / h - top, x1 * new_w / w - left])
    clipped = np.clip(full, 0.0, float(size))
    area = (full[2] - full[0]) * (full[3] - full[1])
    inside = max(clipped[2] - clipped[0], 0.0) * max(clipped[3] - clipped[1], 0.0)
    return clipped, inside / area


def _box_mask(box: np.ndarray, size: int) -> np.ndarray:
    """(size, size) bool: the pixels whose centres lie in the half-open box (y0, x0, y1, x1)."""
    centres = np.arange(size) + 0.5
    rows = (centres >= box[0]) & (centres < box[2])
    cols = (centres >= box[1]) & (centres < box[3])
    return rows[:, None] & cols[None, :]


def pointing_set(size: int = 224, crop_fraction: float = 0.875) -> dict:
    """Real photographs with hand-drawn boxes of ImageNet objects, ready for the pointing game.

    Seven photographs of :func:`all_names` show objects of ImageNet-1k classes, nine
    objects in all (:func:`photo_objects`): astronaut (space shuttle model), camera
    (video camera, tripod), chelsea (cat), coffee (cup of espresso), grace_hopper
    (military uniform, tie), motorcycle, rocket.  There is one row per (photograph,
    object): the photograph as :func:`load_centre_crop` returns it and the object's
    box mapped through the same resize and centre crop, clipped to the crop.  Objects
    less than half of whose box area lies inside the crop are dropped; with the
    default 224 / 0.875 crop all nine are kept (M = 9, nine distinct targets); tight
    crops keep fewer (M may be 0).  Rows follow the photographs' names, then the
    order of the JSON file.  hubble_deep_field, ihc and retina show no ImageNet object.

    The layout plugs into :mod:`jaxinterp.evaluation.pointing` directly: maps
    (M, h, w) of the classes ``target`` go with ``mask`` (M, size, size) to
    ``pointing_hits``, and ``pointing_game(maps, s["mask"], s["target_id"],
    len(s["target_classes"]))`` scores the mean per-class accuracy (its classes
    must be dense, hence ``target_id``).

    Args:
      size: side of the square images in pixels (a positive int).
      crop_fraction: kept fraction of the resized shorter side, in (0, 1].

    Returns:
      dict with
        ``image`` (M, size, size, 3) float32 in [0, 1];
        ``target`` (M,) int32, the first acceptable ImageNet class of the object;
        ``classes`` list of M tuples of int, all acceptable classes (target first);
        ``mask`` (M, size, size) bool, the pixels whose centres lie in the box;
        ``box`` (M, 4) float32 (y0, x0, y1, x1), half-open in crop pixels (the order
          of ``jaxinterp.data.synthetic`` and ``jaxinterp.plot.draw_box``; the JSON
          file stores (x0, y0, x1, y1) in original pixels);
        ``visible`` (M,) float32, the fraction of the box's area inside the crop;
        ``photo`` (M,) str, the photograph of each row;
        ``target_id`` (M,) int32, index of ``target`` in ``target_classes``;
        ``target_classes`` (K,) int32, the distinct targets, sorted.

    Raises:
      ValueError: ``size`` not a positive int; ``crop_fraction`` not in (0, 1].
    """
    _check_crop_args(size, crop_fraction)
    rows = []
    for photo, objects in sorted(photo_objects().items()):
        h, w, _ = _read(photo).shape
        for obj in objects:
            box, visible = _crop_box(obj["box"], h, w, size, crop_fraction)
            if visible >= 0.5:
                rows.append((photo, tuple(int(c) for c in obj["classes"]), box, visible))
    crops = {p: load_centre_crop(p, size, crop_fraction) for p in sorted({r[0] for r in rows})}
    target = np.array([r[1][0] for r in rows], np.int32)
    target_classes = np.unique(target).astype(np.int32)
    return {
        "image": np.array([crops[r[0]] for r in rows], np.float32).reshape(-1, size, size, 3),
        "target": target,
        "classes": [r[1] for r in rows],
        "mask": np.array([_box_mask(r[2], size) for r in rows], bool).reshape(-1, size, size),
        "box": np.array([r[2] for r in rows], np.float32).reshape(-1, 4),
        "visible": np.array([r[3] for r in rows], np.float32),
        "photo": np.array([r[0] for r in rows]),
        "target_id": np.searchsorted(target_classes, target).astype(np.int32),
        "target_classes": target_classes,
    }
