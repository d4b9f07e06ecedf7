"""TFDS / grain input pipelines, tested on mocked data (nothing is downloaded).

References are independent of the code under test: boxes and multi-hot labels
recomputed with NumPy from the raw mocked examples, torchvision's crop offsets
with Python's ``round``, its resize with PIL, TorchRay's ``voc_as_mask`` and a
brute-force loop for the box masks.
"""

import json
import os
import sys
import types

import jax
import numpy as np
import PIL.Image
import pytest
import tensorflow_datasets as tfds

from jaxinterp.data import tfds as jtfds
from tfds_mock import FLAG, indexed_mock

DATA_DIR = "/nonexistent/tfds"  # mock_data never reads it
DETECTION = ("voc/2007", "coco/2014")


def _raw(name, num_examples):
    """The raw examples ``tfds.load`` yields under the same default mock."""
    ds = tfds.load(name, split="validation", data_dir=DATA_DIR, download=False)
    return list(tfds.as_numpy(ds.take(num_examples)))


def _reference_boxes(raw, size, max_objects, one_based):
    """NumPy oracle: TFDS boxes -> pixel-edge boxes of the S x S image."""
    h, w = raw["image"].shape[:2]
    scale = np.array([h, w, h, w], np.float64)
    pixels = raw["objects"]["bbox"].astype(np.float64) * scale
    if one_based:
        pixels[:, :2] -= 1.0
    boxes = np.clip(pixels * size / scale, 0, size)[:max_objects]
    return np.pad(boxes, ((0, max_objects - len(boxes)), (0, 0)))


def _pad(x, length, value):
    x = np.asarray(x)[:length]
    return np.concatenate([x, np.full(length - len(x), value, x.dtype)])


def _ids(batches, name):
    key = "label" if name == "imagenet2012" else "box_labels"
    return [int(i) for b in batches for i in np.asarray(b[key]).reshape(len(b[key]), -1)[:, 0]]


# ---------------------------------------------------------------------------
# Per-example functions.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("h, w", [(256, 301), (256, 303), (303, 256), (256, 256)])
def test_classification_crop_offsets_follow_torchvision(h, w):
    # Shorter side already 256: the resize is the identity, the crop offsets are
    # torchvision's int(round((h' - 224) / 2.0)) (round half to even).
    image = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    top, left = int(round((h - 224) / 2.0)), int(round((w - 224) / 2.0))
    out = jtfds.classification_crop(image, 224).numpy()
    np.testing.assert_allclose(out, image[top : top + 224, left : left + 224] / 255.0, atol=1e-6)


@pytest.mark.parametrize("h, w", [(300, 400), (90, 120), (513, 257)])
def test_classification_crop_matches_pil_resize(h, w):
    pil = PIL.Image
    image = np.random.default_rng(1).integers(0, 256, (h, w, 3), dtype=np.uint8)
    new_h, new_w = (256, int(256 * w / h)) if h <= w else (int(256 * h / w), 256)
    resized = np.asarray(pil.fromarray(image).resize((new_w, new_h), pil.BILINEAR))
    top, left = int(round((new_h - 224) / 2.0)), int(round((new_w - 224) / 2.0))
    expected = resized[top : top + 224, left : left + 224] / 255.0
    out = jtfds.classification_crop(image, 224).numpy()
    assert out.shape == (224, 224, 3) and out.dtype == np.float32
    diff = np.abs(out - expected)
    assert diff.max() <= 1.01 / 255  # PIL rounds to uint8
    assert diff.mean() <= 0.5 / 255


def test_box_masks_match_brute_force_loop():
    rng = np.random.default_rng(0)
    b, m, c, s = 3, 5, 4, 12
    corners = rng.uniform(-2, s + 2, (b, m, 2, 2))
    boxes = np.concatenate([corners.min(2), corners.max(2)], -1).astype(np.float32)
    labels = rng.integers(-1, c, (b, m)).astype(np.int32)
    masks = jax.jit(jtfds.box_masks, static_argnums=(2, 3))(boxes, labels, c, s)
    expected = np.zeros((b, c, s, s), bool)
    for n in range(b):
        for k in range(m):
            y0, x0, y1, x1 = boxes[n, k]
            for i in range(s):
                for j in range(s):
                    if labels[n, k] >= 0 and y0 <= i + 0.5 < y1 and x0 <= j + 0.5 < x1:
                        expected[n, labels[n, k], i, j] = True
    assert masks.dtype == bool and masks.shape == (b, c, s, s)
    np.testing.assert_array_equal(np.asarray(masks), expected)


def test_box_masks_at_original_size_are_torchray_voc_masks():
    # VOC annotations: 1-based inclusive pixel indices; TFDS divides by the size.
    h = w = 40
    annotations = [
        (3, 1, 1, 10, 20),
        (14, 5, 30, 40, 38),
        (3, 22, 25, 30, 40),
    ]  # cls, x0, y0, x1, y1
    bbox = np.array(
        [[y0 / h, x0 / w, y1 / h, x1 / w] for _, x0, y0, x1, y1 in annotations], np.float32
    )
    label = np.array([a[0] for a in annotations])
    image = np.zeros((h, w, 3), np.uint8)
    out = jtfds.detection_example(
        image,
        bbox,
        label,
        np.zeros(3, bool),
        image_size=h,
        num_classes=20,
        max_objects=4,
        one_based=True,
    )
    masks = jtfds.box_masks(out["boxes"].numpy()[None], out["box_labels"].numpy()[None], 20, h)[0]
    expected = np.zeros((20, h, w), bool)
    for cls, x0, y0, x1, y1 in annotations:  # TorchRay's voc_as_mask
        expected[cls, y0 - 1 : y1, x0 - 1 : x1] = True
    np.testing.assert_array_equal(np.asarray(masks), expected)


def test_box_masks_rejects_bad_shapes():
    with pytest.raises(ValueError, match="boxes"):
        jtfds.box_masks(np.zeros((2, 3, 5)), np.zeros((2, 3), np.int32), 4, 8)
    with pytest.raises(ValueError, match="box_labels"):
        jtfds.box_masks(np.zeros((2, 3, 4)), np.zeros((2, 4), np.int32), 4, 8)


def test_class_names():
    assert len(jtfds.VOC_CLASSES) == 20 and len(jtfds.COCO_CLASSES) == 80
    assert len(set(jtfds.COCO_CLASSES)) == 80
    voc_names = tfds.builder("voc/2007", data_dir=DATA_DIR).info.features["objects"]["label"].names
    assert tuple(voc_names) == jtfds.VOC_CLASSES


# ---------------------------------------------------------------------------
# Pipelines on the default mock: shapes, dtypes, ranges, values vs raw examples.
# ---------------------------------------------------------------------------


def test_imagenet_batches_match_raw_examples():
    with tfds.testing.mock_data(num_examples=5):
        raw = _raw("imagenet2012", 5)
        batches = list(
            jtfds.imagenet2012(DATA_DIR, image_size=32, batch_size=2, num_shards=1, shard_index=0)
        )
    assert [len(b["label"]) for b in batches] == [2, 2, 1]
    images = np.concatenate([b["image"] for b in batches])
    labels = np.concatenate([b["label"] for b in batches])
    assert images.dtype == np.float32 and images.shape == (5, 32, 32, 3)
    assert labels.dtype == np.int32
    assert 0.0 <= images.min() and images.max() <= 1.0
    np.testing.assert_array_equal(labels, [r["label"] for r in raw])
    for image, r in zip(images, raw, strict=True):
        np.testing.assert_allclose(
            image, jtfds.classification_crop(r["image"], 32).numpy(), atol=1e-6
        )


@pytest.mark.parametrize("name", DETECTION)
def test_detection_batches_match_numpy_reference(name):
    s, m, c = 24, 40, len(jtfds.VOC_CLASSES if name == "voc/2007" else jtfds.COCO_CLASSES)
    flag_key, raw_flag = FLAG[name]
    with tfds.testing.mock_data(num_examples=3, num_sub_examples=4):
        raw = _raw(name, 3)
        (batch,) = jtfds.load(
            name, DATA_DIR, image_size=s, batch_size=3, max_objects=m, num_shards=1, shard_index=0
        )
    assert batch["image"].shape == (3, s, s, 3) and batch["image"].dtype == np.float32
    assert 0.0 <= batch["image"].min() and batch["image"].max() <= 1.0
    assert batch["labels"].shape == (3, c) and batch["labels"].dtype == bool
    assert batch["boxes"].shape == (3, m, 4) and batch["boxes"].dtype == np.float32
    assert batch["box_labels"].shape == (3, m) and batch["box_labels"].dtype == np.int32
    assert batch[flag_key].shape == (3, m) and batch[flag_key].dtype == bool
    for n, r in enumerate(raw):
        objects = r["objects"]
        expected_boxes = _reference_boxes(r, s, m, one_based=name == "voc/2007")
        np.testing.assert_allclose(batch["boxes"][n], expected_boxes, rtol=1e-5, atol=1e-4)
        np.testing.assert_array_equal(batch["box_labels"][n], _pad(objects["label"], m, -1))
        np.testing.assert_array_equal(batch[flag_key][n], _pad(objects[raw_flag], m, False))
        multi_hot = [cls in set(objects["label"].tolist()) for cls in range(c)]
        np.testing.assert_array_equal(batch["labels"][n], multi_hot)


def test_detection_image_is_whole_image_resized_with_pil():
    pil = PIL.Image
    image = np.random.default_rng(2).integers(0, 256, (90, 50, 3), dtype=np.uint8)
    out = jtfds.detection_example(
        image,
        np.zeros((0, 4), np.float32),
        np.zeros(0, np.int64),
        np.zeros(0, bool),
        image_size=32,
        num_classes=20,
        max_objects=3,
        one_based=True,
    )
    expected = np.asarray(pil.fromarray(image).resize((32, 32), pil.BILINEAR)) / 255.0
    assert np.abs(out["image"].numpy() - expected).max() <= 1.01 / 255
    assert not out["labels"].numpy().any()
    np.testing.assert_array_equal(out["box_labels"].numpy(), [-1, -1, -1])
    np.testing.assert_array_equal(out["boxes"].numpy(), np.zeros((3, 4)))


# ---------------------------------------------------------------------------
# Order, shuffling, sharding, batching (tf.data and grain).
# ---------------------------------------------------------------------------

READERS = {"tf.data": jtfds.load, "grain": jtfds.load_grain}


@pytest.mark.parametrize("reader", sorted(READERS))
@pytest.mark.parametrize("name", ["imagenet2012", "voc/2007"])
def test_shuffle_is_deterministic_given_seed(reader, name):
    load = READERS[reader]
    kwargs = dict(image_size=16, batch_size=4, num_shards=1, shard_index=0)
    with indexed_mock(name, 12):
        plain = _ids(load(name, DATA_DIR, **kwargs), name)
        first = list(load(name, DATA_DIR, shuffle_seed=3, **kwargs))
        again = list(load(name, DATA_DIR, shuffle_seed=3, **kwargs))
        other = _ids(load(name, DATA_DIR, shuffle_seed=4, **kwargs), name)
    assert plain == list(range(12))
    assert _ids(first, name) == _ids(again, name)
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a["image"], b["image"])
    assert sorted(_ids(first, name)) == plain and _ids(first, name) != plain
    assert other != _ids(first, name)


@pytest.mark.parametrize("reader", sorted(READERS))
def test_shards_are_disjoint_and_cover_the_split(reader):
    load = READERS[reader]
    with indexed_mock("imagenet2012", 11):
        shards = [
            _ids(
                load(
                    "imagenet2012",
                    DATA_DIR,
                    image_size=16,
                    batch_size=2,
                    shard_index=i,
                    num_shards=3,
                ),
                "imagenet2012",
            )
            for i in range(3)
        ]
    assert [len(s) for s in shards] == [4, 4, 3]
    assert sorted(sum(shards, [])) == list(range(11))


@pytest.mark.parametrize("reader", sorted(READERS))
def test_drop_remainder_and_epochs(reader):
    load = READERS[reader]
    kwargs = dict(image_size=16, batch_size=4, num_shards=1, shard_index=0)
    with indexed_mock("imagenet2012", 10):
        kept = [len(b["label"]) for b in load("imagenet2012", DATA_DIR, **kwargs)]
        dropped = [
            len(b["label"]) for b in load("imagenet2012", DATA_DIR, drop_remainder=True, **kwargs)
        ]
        two = _ids(load("imagenet2012", DATA_DIR, num_epochs=2, **kwargs), "imagenet2012")
    assert kept == [4, 4, 2] and dropped == [4, 4]
    assert two == list(range(10)) * 2


@pytest.mark.parametrize("name", DETECTION)
def test_grain_and_tf_data_give_the_same_batches(name):
    kwargs = dict(image_size=20, batch_size=3, num_shards=1, shard_index=0)
    with indexed_mock(name, 5):
        via_tf = list(jtfds.load(name, DATA_DIR, **kwargs))
        via_grain = list(jtfds.load_grain(name, DATA_DIR, **kwargs))
    assert len(via_tf) == len(via_grain) == 2
    for a, b in zip(via_tf, via_grain, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            assert a[key].dtype == b[key].dtype
            np.testing.assert_allclose(a[key], b[key], atol=1e-6)


# ---------------------------------------------------------------------------
# Argument checks and the optional dependency.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("reader", sorted(READERS))
@pytest.mark.parametrize(
    "name, kwargs, argument",
    [
        ("mnist", {}, "name"),
        ("cifar10", {"split": "validation"}, "split"),
        ("cifar10", {"split": "test", "max_objects": 5}, "max_objects"),
        ("voc/2012", {}, "name"),
        ("imagenet2012", {"split": "test"}, "split"),
        ("coco/2014", {"split": "validation[:10]+test"}, "split"),
        ("voc/2007", {"split": "val"}, "split"),
        ("imagenet2012", {"image_size": 15}, "image_size"),
        ("voc/2007", {"batch_size": 0}, "batch_size"),
        ("coco/2014", {"num_shards": 0}, "num_shards"),
        ("coco/2014", {"shard_index": 2, "num_shards": 2}, "shard_index"),
        ("voc/2007", {"max_objects": 0}, "max_objects"),
        ("imagenet2012", {"max_objects": 5}, "max_objects"),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(reader, name, kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        READERS[reader](name, DATA_DIR, **kwargs)


def test_missing_tfds_asks_for_the_data_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)
    with pytest.raises(ImportError, match=r"jaxinterp\[data\]"):
        jtfds.load("imagenet2012", DATA_DIR, num_shards=1, shard_index=0)


# ---------------------------------------------------------------------------
# CIFAR-10 and the resumable uint8 cache.
# ---------------------------------------------------------------------------


def test_cifar10_batches_are_the_whole_image_resized():
    pil = PIL.Image
    kwargs = dict(batch_size=3, num_shards=1, shard_index=0)
    with indexed_mock("cifar10", {"train": 4, "test": 3}) as examples:
        (same,) = jtfds.cifar10(DATA_DIR, split="test", image_size=32, **kwargs)
        small = np.concatenate([b["image"] for b in jtfds.load("cifar10", DATA_DIR, split="train",
                                                               image_size=20, **kwargs)])
    raw_test = np.stack([e["image"] for e in examples["test"]])
    np.testing.assert_array_equal(same["label"], [0, 1, 2])
    np.testing.assert_array_equal(np.round(same["image"] * 255), raw_test)  # the identity at 32
    for image, e in zip(small, examples["train"], strict=True):
        expected = np.asarray(pil.fromarray(e["image"]).resize((20, 20), pil.BILINEAR)) / 255.0
        assert np.abs(image - expected).max() <= 1.01 / 255


def _cache(cache_dir, **kwargs):
    args = dict(split="train", image_size=16, num_examples=10, batch_size=2, commit_every=4,
                progress=None)
    return jtfds.cache_split("cifar10", DATA_DIR, str(cache_dir), **{**args, **kwargs})


class _Killed(Exception):
    pass


def test_cache_split_resumes_after_a_kill_without_rereading(tmp_path):
    requested, lines = [], []

    def kill_at_row_4(line):
        lines.append(line)
        if "4/10 rows" in line:
            raise _Killed

    with indexed_mock("cifar10", {"train": 12}, requested) as examples:
        whole, whole_labels = _cache(tmp_path / "whole")
        with pytest.raises(_Killed):
            _cache(tmp_path / "killed", progress=kill_at_row_4)
        stem = tmp_path / "killed" / "cifar10-train-10-16px"
        assert not os.path.exists(f"{stem}.images.npy")
        assert json.loads(open(f"{stem}.progress.json").read())["rows"] == 4
        del requested[:]
        images, labels = _cache(tmp_path / "killed", progress=lines.append)
        assert requested == [[("train", 4, 10)]]  # the finished rows are not read again
        again, _ = _cache(tmp_path / "killed")
        assert requested == [[("train", 4, 10)]]  # a finished cache is only opened
    assert "resuming at row 4/10" in lines[-3] and "8/10 rows" in lines[-2] and "10/10 rows" in lines[-1]
    assert sorted(os.listdir(tmp_path / "killed")) == [
        "cifar10-train-10-16px.images.npy", "cifar10-train-10-16px.labels.npy"]
    assert isinstance(images, np.memmap) and images.dtype == np.uint8
    assert images.shape == (10, 16, 16, 3) and labels.dtype == np.int32
    np.testing.assert_array_equal(images, whole)
    np.testing.assert_array_equal(again, whole)
    np.testing.assert_array_equal(labels, np.arange(10))
    np.testing.assert_array_equal(whole_labels, np.arange(10))
    # Content: the rounded tf resize, within one grey level of PIL's.
    reference = np.stack([np.asarray(PIL.Image.fromarray(e["image"]).resize((16, 16), PIL.Image.BILINEAR))
                          for e in examples["train"][:10]])
    assert np.abs(whole.astype(int) - reference).max() <= 1


@pytest.mark.parametrize(
    "name, kwargs, argument",
    [
        ("voc/2007", {}, "name"),
        ("cifar10", {"split": "validation"}, "split"),
        ("cifar10", {"split": "train[:5]"}, "split"),
        ("cifar10", {"image_size": 15}, "image_size"),
        ("cifar10", {"num_examples": 0}, "num_examples"),
        ("cifar10", {"batch_size": 0}, "batch_size"),
        ("cifar10", {"commit_every": 0}, "commit_every"),
        ("cifar10", {"data_dir": ""}, "data_dir"),
        ("cifar10", {"cache_dir": ""}, "cache_dir"),
    ],
)
def test_cache_split_bad_arguments_raise_value_error_naming_them(tmp_path, name, kwargs, argument):
    args = dict(split="train", image_size=16, num_examples=4, data_dir=DATA_DIR,
                cache_dir=str(tmp_path))
    args.update(kwargs)
    with pytest.raises(ValueError, match=f"^{argument}"):
        jtfds.cache_split(name, args.pop("data_dir"), args.pop("cache_dir"), **args)


def test_cache_split_takes_the_recorded_split_size(tmp_path, monkeypatch):
    # The mock records no split sizes; a prepared data_dir does (builder.info.splits).
    recorded = {"train": types.SimpleNamespace(num_examples=3)}
    fake = types.SimpleNamespace(info=types.SimpleNamespace(splits=recorded))
    monkeypatch.setattr(tfds, "builder", lambda name, data_dir: fake)
    with indexed_mock("cifar10", {"train": 3}):
        images, labels = _cache(tmp_path, num_examples=None)
        with pytest.raises(ValueError, match=r"^num_examples must be <= 3"):
            _cache(tmp_path, num_examples=5)
    assert images.shape == (3, 16, 16, 3)
    np.testing.assert_array_equal(labels, [0, 1, 2])


def test_cache_split_refuses_a_split_that_ends_early(tmp_path, monkeypatch):
    load = jtfds.load
    monkeypatch.setattr(jtfds, "load", lambda *args, **kwargs: list(load(*args, **kwargs))[:2])
    with indexed_mock("cifar10", {"train": 10}), pytest.raises(ValueError, match="^num_examples"):
        _cache(tmp_path, num_examples=10)
    assert not any(f.endswith(".images.npy") for f in os.listdir(tmp_path))
