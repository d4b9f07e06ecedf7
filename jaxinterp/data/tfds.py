"""TFDS input pipelines for ImageNet-2012, CIFAR-10, PASCAL VOC 2007 and COCO 2014.

Batches are dicts of NumPy arrays ready for jaxinterp nets (NHWC float32
pixels in [0, 1]):

* ``imagenet2012``: ``image`` float32 (B, S, S, 3), ``label`` int32 (B,).
    Evaluation crop of torchvision's reference recipe: the shorter side is
    resized to ``round(S / 0.875)`` (256 at S = 224) with antialiased bilinear
    interpolation, then the centre S x S square is kept.
* ``cifar10``: ``image`` float32 (B, S, S, 3), ``label`` int32 (B,): the whole
    32 x 32 image resized to S x S (antialiased bilinear; the identity at
    S = 32), no crop. Splits ``train`` and ``test``.
* ``voc/2007`` and ``coco/2014``: ``image`` float32 (B, S, S, 3) (the whole
    image resized to S x S, aspect ratio not kept), ``labels`` bool
    (B, num_classes) multi-hot of the classes present (all objects, difficult
    or crowd included, as TorchRay's ``voc_as_class_ids``), ``boxes`` float32
    (B, max_objects, 4) as (y0, x0, y1, x1) pixel-edge coordinates of the
    resized image (pixel (i, j) covers [i, i + 1) x [j, j + 1)), zero padded,
    ``box_labels`` int32 (B, max_objects) padded with -1, and a bool
    (B, max_objects) flag padded with False: ``difficult`` (VOC
    ``is_difficult``) or ``crowd`` (COCO ``is_crowd``).

Per-dataset entry points are :func:`imagenet2012`, :func:`cifar10`, :func:`voc2007` and
:func:`coco2014` (tf.data, read with ``tfds.load(..., download=False)``);
:func:`load` takes the dataset name; :func:`load_grain` reads the same data
through ``tfds.data_source`` (ArrayRecord files) and grain;
:func:`cache_split` writes a classification split once, as uint8, to a
resumable ``.npy`` memmap (the input of :func:`jaxinterp.train.selfsup.fit`
on sets larger than host memory). Both readers use
the same per-example functions (:func:`classification_crop`,
:func:`detection_example`), written with TensorFlow ops: tf.data traces them
into its graph; grain calls them eagerly on NumPy inputs.

Sharding: ``shard_index`` / ``num_shards`` (default ``jax.process_index()`` /
``jax.process_count()``) select contiguous, disjoint slices that cover the
split (``tfds.even_splits`` for tf.data, ``grain.sharding.ShardOptions`` for
grain); shard sizes differ by at most one example. Shuffling is deterministic
given ``shuffle_seed``; ``shuffle_seed=None`` keeps the stored order.

TensorFlow Datasets and grain are optional; install them with
``pip install 'jaxinterp[data]'``. The data must already be prepared under
``data_dir`` (nothing is downloaded).
"""

from __future__ import annotations

import functools
import json
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp.files import write_json

__all__ = [
    "CLASSIFICATION",
    "COCO_CLASSES",
    "DATASETS",
    "VOC_CLASSES",
    "box_masks",
    "cache_split",
    "cifar10",
    "classification_crop",
    "coco2014",
    "detection_example",
    "imagenet2012",
    "load",
    "load_grain",
    "voc2007",
]

DATASETS = ("imagenet2012", "cifar10", "voc/2007", "coco/2014")
CLASSIFICATION = ("imagenet2012", "cifar10")
"""The datasets with one ``label`` per image (those :func:`cache_split` reads)."""

# fmt: off
VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
    "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep",
    "sofa", "train", "tvmonitor",
)
# fmt: on
"""The 20 PASCAL VOC class names, in TFDS ``voc`` label order."""

# fmt: off
COCO_CLASSES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck",
    "boat", "traffic light", "fire hydrant", "stop sign", "parking meter", "bench",
    "bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra",
    "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove",
    "skateboard", "surfboard", "tennis racket", "bottle", "wine glass", "cup",
    "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse",
    "remote", "keyboard", "cell phone", "microwave", "oven", "toaster", "sink",
    "refrigerator", "book", "clock", "vase", "scissors", "teddy bear", "hair drier",
    "toothbrush",
)
# fmt: on
"""The 80 COCO 2014 class names, in TFDS ``coco/2014`` label order (category
id order of the annotation files)."""

_SPLITS = {
    "imagenet2012": ("train", "validation"),
    "cifar10": ("train", "test"),
    "voc/2007": ("train", "validation", "test"),
    "coco/2014": ("train", "validation"),
}
_NUM_CLASSES = {"voc/2007": len(VOC_CLASSES), "coco/2014": len(COCO_CLASSES)}
# Enough for every image of the splits above; extra objects would be dropped.
_MAX_OBJECTS = {"voc/2007": 64, "coco/2014": 100}
_FLAG = {"voc/2007": ("difficult", "is_difficult"), "coco/2014": ("crowd", "is_crowd")}
_MIN_IMAGE_SIZE = 16
_CROP_FRACTION = 0.875  # 224 / 256


def _import_tf():
    try:
        import tensorflow as tf
    except ImportError as e:
        raise ImportError(
            "jaxinterp.data.tfds needs TensorFlow; install it with "
            "pip install 'jaxinterp[data]'"
        ) from e
    return tf


def _import_tfds():
    _import_tf()
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise ImportError(
            "jaxinterp.data.tfds needs tensorflow-datasets; install it with "
            "pip install 'jaxinterp[data]'"
        ) from e
    return tfds


def _import_grain():
    try:
        import grain
    except ImportError as e:
        raise ImportError(
            "jaxinterp.data.tfds.load_grain needs grain; install it with "
            "pip install 'jaxinterp[data]'"
        ) from e
    return grain


# ----------------------------------------------------------------------------
# Per-example preprocessing (TensorFlow ops; eager on NumPy or inside tf.data).
# ----------------------------------------------------------------------------


def classification_crop(image, image_size: int):
    """Resizes the shorter side and centre-crops, as torchvision's eval recipe.

    Equivalent to ``Resize(round(S / 0.875)) + CenterCrop(S) + ToTensor()``
    (``Resize(256) + CenterCrop(224)`` at S = 224): the shorter side becomes
    ``r = round(S / 0.875)``, the longer ``floor(r * long / short)``; the crop
    starts at ``round((h' - S) / 2)``, ``round((w' - S) / 2)`` (round half to
    even, as Python's ``round`` used by torchvision). Interpolation is
    antialiased bilinear (``tf.image.resize(antialias=True)``), PIL's filter
    without its rounding to uint8.

    Args:
        image: uint8 (H, W, 3) RGB image (tensor or array).
        image_size: S, the side of the output.

    Returns:
        float32 tf.Tensor (S, S, 3) in [0, 1].
    """
    tf = _import_tf()
    resize = round(image_size / _CROP_FRACTION)
    shape = tf.shape(image)
    h, w = shape[0], shape[1]
    short, long = tf.minimum(h, w), tf.maximum(h, w)
    new_long = (resize * long) // short
    new_h = tf.where(h <= w, resize, new_long)
    new_w = tf.where(h <= w, new_long, resize)
    resized = tf.image.resize(
        image, tf.stack([new_h, new_w]), method="bilinear", antialias=True
    )
    top = tf.cast(tf.round((new_h - image_size) / 2), tf.int32)
    left = tf.cast(tf.round((new_w - image_size) / 2), tf.int32)
    crop = resized[top : top + image_size, left : left + image_size]
    crop = tf.ensure_shape(crop, (image_size, image_size, 3))
    return tf.clip_by_value(crop / 255.0, 0.0, 1.0)


def _pad(x, length: int, value):
    """Truncates or pads the leading axis of ``x`` to ``length``."""
    tf = _import_tf()
    x = x[:length]
    paddings = [[0, length - tf.shape(x)[0]]] + [[0, 0]] * (x.shape.rank - 1)
    padded = tf.pad(x, paddings, constant_values=value)
    return tf.ensure_shape(padded, (length,) + tuple(x.shape[1:]))


def detection_example(
    image,
    bbox,
    label,
    flag,
    *,
    image_size: int,
    num_classes: int,
    max_objects: int,
    one_based: bool,
) -> dict[str, Any]:
    """Resizes a detection example to S x S and rescales its boxes.

    TFDS stores boxes as (ymin, xmin, ymax, xmax) divided by the image height
    and width. COCO boxes are pixel-edge coordinates; VOC boxes are the
    1-based inclusive pixel indices of the annotation files, so with
    ``one_based=True`` the minima are moved one pixel back, (ymin - 1, xmin - 1,
    ymax, xmax), which makes :func:`box_masks` at the original size reproduce
    TorchRay's ``voc_as_mask``. Boxes are then scaled by (S / H, S / W) and
    clipped to [0, S].

    Args:
        image: uint8 (H, W, 3) RGB image.
        bbox: float32 (K, 4) TFDS boxes (ymin, xmin, ymax, xmax) in [0, 1].
        label: integer (K,) class indices in [0, num_classes).
        flag: bool (K,) per-object flag (VOC ``is_difficult``, COCO
            ``is_crowd``).
        image_size: S, the side of the output image.
        num_classes: number of classes C.
        max_objects: M; objects after the first M are dropped (they still count
            in ``labels``).
        one_based: whether boxes are 1-based pixel indices (VOC).

    Returns:
        dict of tf.Tensors: ``image`` float32 (S, S, 3) in [0, 1], ``labels``
        bool (C,), ``boxes`` float32 (M, 4) (y0, x0, y1, x1) in pixels of the
        resized image, zero padded, ``box_labels`` int32 (M,) padded with -1,
        ``flag`` bool (M,) padded with False.
    """
    tf = _import_tf()
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    hw = tf.concat([shape, shape], axis=0)
    resized = tf.image.resize(
        image, (image_size, image_size), method="bilinear", antialias=True
    )
    pixels = tf.cast(bbox, tf.float32) * hw
    if one_based:
        pixels -= tf.constant([1.0, 1.0, 0.0, 0.0])
    boxes = tf.clip_by_value(pixels * (image_size / hw), 0.0, float(image_size))
    label = tf.cast(label, tf.int32)
    present = tf.reduce_sum(tf.one_hot(label, num_classes), axis=0) > 0
    return {
        "image": tf.clip_by_value(resized / 255.0, 0.0, 1.0),
        "labels": tf.ensure_shape(present, (num_classes,)),
        "boxes": _pad(boxes, max_objects, 0.0),
        "box_labels": _pad(label, max_objects, -1),
        "flag": _pad(tf.cast(flag, tf.bool), max_objects, False),
    }


def box_masks(
    boxes: jax.Array, box_labels: jax.Array, num_classes: int, size: int
) -> jax.Array:
    """Per-class union of boxes: the pointing-game ground truth.

    Pixel (i, j) of class c is True iff some box k with ``box_labels == c``
    contains its centre: ``y0 <= i + 0.5 < y1`` and ``x0 <= j + 0.5 < x1``.
    For VOC boxes from this module at the original image size this is
    TorchRay's ``voc_as_mask`` (``mask[ymin - 1:ymax, xmin - 1:xmax] = 1`` in
    the 1-based annotation coordinates), the ground truth of its VOC pointing
    game. TorchRay's COCO pointing game uses instance segmentation masks,
    which TFDS ``coco/2014`` does not ship; on COCO these box masks are a
    coarser stand-in.

    Args:
        boxes: float (B, M, 4) boxes (y0, x0, y1, x1) in pixels.
        box_labels: int (B, M) class of each box; negative entries are padding.
        num_classes: number of classes C.
        size: S, the side of the masks.

    Returns:
        bool (B, C, S, S) masks.

    Raises:
        ValueError: on bad shapes, ``num_classes < 1`` or ``size < 1``.
    """
    boxes = jnp.asarray(boxes)
    box_labels = jnp.asarray(box_labels)
    if boxes.ndim != 3 or boxes.shape[-1] != 4:
        raise ValueError(f"boxes must have shape (B, M, 4), got {boxes.shape}")
    if box_labels.shape != boxes.shape[:2]:
        raise ValueError(
            f"box_labels must have shape {boxes.shape[:2]}, got {box_labels.shape}"
        )
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    centres = jnp.arange(size, dtype=jnp.float32) + 0.5
    y0, x0, y1, x1 = (boxes[..., i, None].astype(jnp.float32) for i in range(4))
    in_y = (centres >= y0) & (centres < y1)  # (B, M, S)
    in_x = (centres >= x0) & (centres < x1)  # (B, M, S)
    onehot = box_labels[..., None] == jnp.arange(num_classes)  # (B, M, C)
    counts = jnp.einsum(
        "bmc,bmy,bmx->bcyx",
        onehot.astype(jnp.float32),
        in_y.astype(jnp.float32),
        in_x.astype(jnp.float32),
    )
    return counts > 0


# ----------------------------------------------------------------------------
# Validation.
# ----------------------------------------------------------------------------


def _check_split(name: str, split: str) -> None:
    """Checks every term of a TFDS split spec, e.g. ``validation[:10%]``."""
    allowed = _SPLITS[name]
    terms = re.split(r"\s*\+\s*", str(split).strip())
    for term in terms:
        base = term.split("[", 1)[0].strip()
        if base not in allowed:
            raise ValueError(
                f"split must name one of {allowed} for {name!r} (optionally "
                f"sliced, e.g. 'validation[:10%]'), got {split!r}"
            )


def _check_args(
    name: str,
    split: str,
    image_size: int,
    batch_size: int,
    shard_index: int | None,
    num_shards: int | None,
    max_objects: int | None,
) -> tuple[int, int, int]:
    """Validates arguments; returns (shard_index, num_shards, max_objects)."""
    if name not in DATASETS:
        raise ValueError(f"name must be one of {DATASETS}, got {name!r}")
    _check_split(name, split)
    if image_size < _MIN_IMAGE_SIZE:
        raise ValueError(f"image_size must be >= {_MIN_IMAGE_SIZE}, got {image_size}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    num_shards = jax.process_count() if num_shards is None else num_shards
    shard_index = jax.process_index() if shard_index is None else shard_index
    if num_shards < 1:
        raise ValueError(f"num_shards must be >= 1, got {num_shards}")
    if not 0 <= shard_index < num_shards:
        raise ValueError(f"shard_index must be in [0, {num_shards}), got {shard_index}")
    if max_objects is None:
        max_objects = _MAX_OBJECTS.get(name, 0)
    elif name in CLASSIFICATION:
        raise ValueError(f"max_objects applies to detection sets, not {name}")
    elif max_objects < 1:
        raise ValueError(f"max_objects must be >= 1, got {max_objects}")
    return shard_index, num_shards, max_objects


def _preprocess(
    name: str, example: Mapping[str, Any], *, image_size: int, max_objects: int
) -> dict[str, Any]:
    """Maps a decoded TFDS example of dataset ``name`` to a batch element."""
    tf = _import_tf()
    if name == "imagenet2012":
        return {
            "image": classification_crop(example["image"], image_size),
            "label": tf.cast(example["label"], tf.int32),
        }
    if name == "cifar10":
        resized = tf.image.resize(
            example["image"], (image_size, image_size), method="bilinear", antialias=True
        )
        return {
            "image": tf.clip_by_value(resized / 255.0, 0.0, 1.0),
            "label": tf.cast(example["label"], tf.int32),
        }
    objects = example["objects"]
    flag_key, tfds_flag = _FLAG[name]
    out = detection_example(
        example["image"],
        objects["bbox"],
        objects["label"],
        objects[tfds_flag],
        image_size=image_size,
        num_classes=_NUM_CLASSES[name],
        max_objects=max_objects,
        one_based=name.startswith("voc"),
    )
    out[flag_key] = out.pop("flag")
    return out


# ----------------------------------------------------------------------------
# tf.data reader.
# ----------------------------------------------------------------------------


def load(
    name: str,
    data_dir: str,
    *,
    split: str = "validation",
    image_size: int = 224,
    batch_size: int = 32,
    shuffle_seed: int | None = None,
    shuffle_buffer: int = 1_000,
    shard_index: int | None = None,
    num_shards: int | None = None,
    drop_remainder: bool = False,
    num_epochs: int | None = 1,
    max_objects: int | None = None,
) -> Iterable[dict[str, np.ndarray]]:
    """Batches of a prepared TFDS dataset, read with tf.data.

    With ``shuffle_seed`` the file order and a buffer of ``shuffle_buffer``
    decoded examples are shuffled (reshuffled each epoch); the order is
    deterministic given the seed. Examples are preprocessed in parallel in
    a deterministic order. The result can be iterated several times, each
    time from the start.

    Args:
        name: one of ``DATASETS``.
        data_dir: TFDS data directory holding the prepared dataset.
        split: TFDS split spec, e.g. ``'validation'`` or ``'train[:1%]'``.
        image_size: S, the side of the output images (>= 16).
        batch_size: B (>= 1).
        shuffle_seed: seed of the shuffle; None reads in stored order.
        shuffle_buffer: number of decoded examples in the shuffle buffer
            (about 0.5 MB each on ImageNet).
        shard_index: this shard, default ``jax.process_index()``.
        num_shards: number of shards, default ``jax.process_count()``.
        drop_remainder: drop the last batch when smaller than B.
        num_epochs: passes over the shard; None repeats forever.
        max_objects: M, boxes kept per image (detection sets only; default 64
            for VOC, 100 for COCO).

    Returns:
        Iterable of dicts of NumPy arrays (see the module docstring for keys,
        shapes and dtypes); the last batch may be smaller than B unless
        ``drop_remainder``.

    Raises:
        ValueError: unknown ``name`` or ``split``, ``image_size < 16``,
            ``batch_size < 1``, bad shard arguments or ``max_objects``.
        ImportError: TensorFlow Datasets is not installed.
    """
    shard_index, num_shards, max_objects = _check_args(
        name, split, image_size, batch_size, shard_index, num_shards, max_objects
    )
    tf = _import_tf()
    tfds = _import_tfds()
    shuffle = shuffle_seed is not None
    ds = tfds.load(
        name,
        split=tfds.even_splits(split, n=num_shards)[shard_index],
        data_dir=data_dir,
        download=False,
        shuffle_files=shuffle,
        read_config=tfds.ReadConfig(shuffle_seed=shuffle_seed),
    )
    if shuffle:
        ds = ds.shuffle(shuffle_buffer, seed=shuffle_seed)
    ds = ds.repeat(num_epochs)

    ds = ds.map(
        functools.partial(
            _preprocess, name, image_size=image_size, max_objects=max_objects
        ),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    return tfds.as_numpy(ds.prefetch(tf.data.AUTOTUNE))


def imagenet2012(data_dir: str, **kwargs) -> Iterable[dict[str, np.ndarray]]:
    """ImageNet-2012 batches: :func:`load` with ``name='imagenet2012'``."""
    return load("imagenet2012", data_dir, **kwargs)


def cifar10(data_dir: str, **kwargs) -> Iterable[dict[str, np.ndarray]]:
    """CIFAR-10 batches: :func:`load` with ``name='cifar10'``."""
    return load("cifar10", data_dir, **kwargs)


def voc2007(data_dir: str, **kwargs) -> Iterable[dict[str, np.ndarray]]:
    """PASCAL VOC 2007 batches: :func:`load` with ``name='voc/2007'``."""
    return load("voc/2007", data_dir, **kwargs)


def coco2014(data_dir: str, **kwargs) -> Iterable[dict[str, np.ndarray]]:
    """COCO 2014 batches: :func:`load` with ``name='coco/2014'``."""
    return load("coco/2014", data_dir, **kwargs)


# ----------------------------------------------------------------------------
# grain reader.
# ----------------------------------------------------------------------------


def _shard_bounds(
    num_records: int, shard_index: int, num_shards: int
) -> tuple[int, int]:
    """Contiguous shard [start, stop), as ``tfds.even_splits`` (no drop)."""
    per_shard, remainder = divmod(num_records, num_shards)
    start = per_shard * shard_index + min(shard_index, remainder)
    return start, start + per_shard + (shard_index < remainder)


def _grain_preprocess(
    example: Mapping[str, Any], name: str, image_size: int, max_objects: int
) -> dict[str, np.ndarray]:
    """Eager :func:`_preprocess` on a NumPy example, returning NumPy."""
    out = _preprocess(name, example, image_size=image_size, max_objects=max_objects)
    return {k: np.asarray(v) for k, v in out.items()}


def load_grain(
    name: str,
    data_dir: str,
    *,
    split: str = "validation",
    image_size: int = 224,
    batch_size: int = 32,
    shuffle_seed: int | None = None,
    shard_index: int | None = None,
    num_shards: int | None = None,
    drop_remainder: bool = False,
    num_epochs: int | None = 1,
    max_objects: int | None = None,
):
    """Batches of a prepared TFDS dataset, read with ``tfds.data_source`` + grain.

    Needs the dataset prepared in ArrayRecord format (``file_format=
    'array_record'`` at preparation). The pipeline is a random-access
    ``grain.MapDataset``: source, contiguous shard (the slices of
    ``tfds.even_splits``), global shuffle (deterministic given the seed,
    reshuffled each epoch), repeat, preprocessing with the same TensorFlow
    functions as :func:`load` run eagerly, batch. Call
    ``.to_iter_dataset(grain.ReadOptions(num_threads=...))`` on the result to
    read with several threads.

    Args:
        name: one of ``DATASETS``.
        data_dir: TFDS data directory holding the prepared dataset.
        split: TFDS split spec, e.g. ``'validation'`` or ``'train[:1%]'``.
        image_size: S, the side of the output images (>= 16).
        batch_size: B (>= 1).
        shuffle_seed: seed of the shuffle; None reads in stored order.
        shard_index: this shard, default ``jax.process_index()``.
        num_shards: number of shards, default ``jax.process_count()``.
        drop_remainder: drop the last batch when smaller than B.
        num_epochs: passes over the shard; None repeats forever.
        max_objects: M, boxes kept per image (detection sets only).

    Returns:
        A ``grain.MapDataset`` of the dicts of NumPy arrays of :func:`load`.

    Raises:
        ValueError: as :func:`load`.
        ImportError: TensorFlow Datasets or grain is not installed.
    """
    shard_index, num_shards, max_objects = _check_args(
        name, split, image_size, batch_size, shard_index, num_shards, max_objects
    )
    tfds = _import_tfds()
    grain = _import_grain()
    source = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
    start, stop = _shard_bounds(len(source), shard_index, num_shards)
    ds = grain.MapDataset.source(source)[start:stop]
    if shuffle_seed is not None:
        ds = ds.shuffle(seed=shuffle_seed)
    preprocess = functools.partial(
        _grain_preprocess, name=name, image_size=image_size, max_objects=max_objects
    )
    return (
        ds.repeat(num_epochs)
        .map(preprocess)
        .batch(batch_size, drop_remainder=drop_remainder)
    )


# ----------------------------------------------------------------------------
# Resumable uint8 cache of a classification split.
# ----------------------------------------------------------------------------


def _committed_rows(paths: Mapping[str, str], meta: Mapping[str, Any]) -> int:
    """Rows recorded as written by an interrupted :func:`cache_split`, else 0."""
    if not os.path.exists(paths["progress"]) or not os.path.exists(paths["images_partial"]):
        return 0
    with open(paths["progress"]) as f:
        done = json.load(f)
    rows = done.pop("rows", 0)
    if done != dict(meta) or not 0 <= rows <= meta["num_examples"]:
        return 0
    labels_there = os.path.exists(paths["labels_partial"]) or (
        rows == meta["num_examples"] and os.path.exists(paths["labels"])
    )
    return rows if labels_there else 0


def cache_split(
    name: str,
    data_dir: str,
    cache_dir: str,
    *,
    split: str,
    image_size: int,
    num_examples: int | None = None,
    batch_size: int = 256,
    commit_every: int = 8192,
    progress: Callable[[str], Any] | None = print,
) -> tuple[np.ndarray, np.ndarray]:
    """The first N examples of a classification split as uint8 pixels in a ``.npy`` memmap.

    Reads ``split[:N]`` in stored order with :func:`load` (tf.data, one
    process, no shuffle; preprocessing of the module docstring: ImageNet's
    resize-and-centre-crop, CIFAR-10's whole-image resize) and quantises
    each image as ``uint8(round(255 x))``. Writes, in ``cache_dir``,
    ``<name>-<split>-<N>-<S>px.images.npy`` (uint8 (N, S, S, 3)) and
    ``.labels.npy`` (int32 (N,)) through ``np.lib.format.open_memmap``; a
    later call with the same arguments only opens them.

    Resumption: rows go to ``*.npy.partial`` files; every ``commit_every``
    rows (and at the end) both are flushed and the count of complete rows is
    written to ``<...>.progress.json`` (atomic rename), then ``progress`` is
    called. A call after a kill reopens the partial files and reads
    ``split[rows:N]``, so finished rows are not decoded again (TFDS slicing
    skips the files before row ``rows`` and the raw records of its file up to
    it); at most ``commit_every`` rows are redone. When all N rows are
    written the partial files are renamed into place (labels first; the
    images file marks completion) and the progress file is removed. One
    writer at a time per ``cache_dir``.

    Args:
        name: one of ``CLASSIFICATION`` (``'imagenet2012'``, ``'cifar10'``).
        data_dir: TFDS data directory holding the prepared dataset.
        cache_dir: directory of the cache files (created if needed).
        split: a split name, unsliced (``'train'``, ``'validation'`` or
            ``'test'``; ``_SPLITS``).
        image_size: S, the side of the stored images (>= 16).
        num_examples: N, the leading examples to keep; None = the whole split
            (its size as recorded in ``data_dir``). N larger than a recorded
            split size is refused.
        batch_size: examples per tf.data batch (>= 1).
        commit_every: rows between flushes, progress records and
            ``progress`` calls (>= 1).
        progress: called with a line after each commit; None = silent.

    Returns:
        (images, labels): uint8 (N, S, S, 3) read-only ``np.memmap`` and int32
        (N,) array.

    Raises:
        ValueError: ``name`` not a classification set, bad ``split``,
            ``image_size < 16``, ``num_examples``, ``batch_size`` or
            ``commit_every`` < 1, empty ``data_dir`` or ``cache_dir``, N
            larger than the split, or a split that ends before N rows.
        ImportError: TensorFlow Datasets is not installed.
    """
    if name not in CLASSIFICATION:
        raise ValueError(f"name must be one of {CLASSIFICATION}, got {name!r}")
    if split not in _SPLITS[name]:
        raise ValueError(f"split must be one of {_SPLITS[name]} for {name!r}, got {split!r}")
    if not data_dir:
        raise ValueError(f"data_dir must name a TFDS data directory, got {data_dir!r}")
    if not cache_dir:
        raise ValueError(f"cache_dir must name a directory, got {cache_dir!r}")
    for arg, value in (("num_examples", num_examples), ("batch_size", batch_size),
                       ("commit_every", commit_every)):
        if value is not None and (not isinstance(value, (int, np.integer)) or value < 1):
            raise ValueError(f"{arg} must be an int >= 1, got {value!r}")
    _check_args(name, split, image_size, batch_size, 0, 1, None)
    tfds = _import_tfds()
    recorded = tfds.builder(name, data_dir=data_dir).info.splits
    available = recorded[split].num_examples if split in recorded else None
    if num_examples is None:
        if available is None:
            raise ValueError(
                f"num_examples: the size of {name} {split!r} is not recorded under "
                f"{data_dir!r}; pass it"
            )
        num_examples = available
    elif available is not None and num_examples > available:
        raise ValueError(
            f"num_examples must be <= {available} (the size of {name} {split!r}), "
            f"got {num_examples}"
        )
    n = int(num_examples)
    stem = os.path.join(cache_dir, f"{name.replace('/', '_')}-{split}-{n}-{image_size}px")
    paths = {"images": stem + ".images.npy", "labels": stem + ".labels.npy",
             "progress": stem + ".progress.json"}
    paths.update(images_partial=paths["images"] + ".partial",
                 labels_partial=paths["labels"] + ".partial")
    if not os.path.exists(paths["images"]):
        _write_split(name, data_dir, n, image_size, split, batch_size, commit_every,
                     paths, progress, cache_dir)
    return np.load(paths["images"], mmap_mode="r"), np.load(paths["labels"])


def _write_split(name, data_dir, n, image_size, split, batch_size, commit_every, paths,
                 progress, cache_dir) -> None:
    """The write loop of :func:`cache_split` (arguments already checked)."""
    os.makedirs(cache_dir, exist_ok=True)
    meta = {"name": name, "split": split, "num_examples": n, "image_size": image_size}
    rows = _committed_rows(paths, meta)
    say = progress if progress is not None else (lambda line: None)
    if rows < n:
        if rows:
            images = np.lib.format.open_memmap(paths["images_partial"], mode="r+")
            labels = np.lib.format.open_memmap(paths["labels_partial"], mode="r+")
            say(f"{name} {split}: resuming at row {rows}/{n} -> {paths['images']}")
        else:
            images = np.lib.format.open_memmap(
                paths["images_partial"], mode="w+", dtype=np.uint8,
                shape=(n, image_size, image_size, 3))
            labels = np.lib.format.open_memmap(
                paths["labels_partial"], mode="w+", dtype=np.int32, shape=(n,))
            write_json(paths["progress"], {**meta, "rows": 0})
            say(f"{name} {split}: writing {n} rows at {image_size} px -> {paths['images']}")
        start, first = time.perf_counter(), rows
        batches = load(name, data_dir, split=f"{split}[{rows}:{n}]", image_size=image_size,
                       batch_size=batch_size, shuffle_seed=None, shard_index=0, num_shards=1)
        written = rows
        for batch in batches:
            k = min(len(batch["label"]), n - written)
            images[written:written + k] = np.round(batch["image"][:k] * 255.0).astype(np.uint8)
            labels[written:written + k] = batch["label"][:k]
            written += k
            if written - rows >= commit_every or written == n:
                images.flush()
                labels.flush()
                write_json(paths["progress"], {**meta, "rows": written})
                rows = written
                rate = (rows - first) / max(time.perf_counter() - start, 1e-9)
                say(f"{name} {split}: {rows}/{n} rows ({100 * rows / n:.0f}%), "
                    f"{rate:.0f} images/s, {(n - rows) / rate:.0f} s left")
            if written == n:
                break
        del images, labels
        if rows < n:
            raise ValueError(
                f"num_examples: {name} {split!r} under {data_dir!r} ended after "
                f"{written} examples, fewer than {n}")
    if os.path.exists(paths["labels_partial"]):
        os.replace(paths["labels_partial"], paths["labels"])
    os.replace(paths["images_partial"], paths["images"])
    os.remove(paths["progress"])
