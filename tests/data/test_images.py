"""Tests of jaxinterp.data.images against the files read directly with NumPy / scikit-image."""

import math
import os

import numpy as np
import pytest
import skimage
import skimage.io

from jaxinterp.data import images

DATA_DIR = os.path.join(os.path.dirname(skimage.__file__), "data")


def test_names_are_the_colour_photographs():
    names = images.names()
    assert isinstance(names, tuple) and names == tuple(sorted(names))
    assert {"astronaut", "chelsea", "coffee", "rocket", "motorcycle"} <= set(names)


@pytest.mark.parametrize("name", images.all_names())
def test_load_shape_dtype_range(name):
    x = images.load(name, size=32)
    assert x.shape == (32, 32, 3) and x.dtype == np.float32
    assert 0.0 <= x.min() and x.max() <= 1.0 and x.std() > 0.02


@pytest.mark.parametrize("name, file", [("chelsea", "chelsea.png"), ("motorcycle", "motorcycle_left.png")])
def test_original_size_is_the_file(name, file):
    expected = skimage.io.imread(os.path.join(DATA_DIR, file)).astype(np.float64) / 255.0
    x = images.load(name, size=None)
    assert x.dtype == np.float32 and x.shape == expected.shape
    np.testing.assert_allclose(x, expected, atol=1e-6)


def test_resize_is_centre_crop_then_downscale():
    """chelsea is 300 x 451: crop columns 75..375, then 3 x 3 box means give 100 x 100."""
    pixels = skimage.io.imread(os.path.join(DATA_DIR, "chelsea.png")).astype(np.float64) / 255.0
    crop = pixels[:, 75:375]
    reference = crop.reshape(100, 3, 100, 3, 3).mean(axis=(1, 3))
    x = images.load("chelsea", size=100)
    assert np.abs(x - reference).mean() < 0.02
    shifted = pixels[:, 0:300].reshape(100, 3, 100, 3, 3).mean(axis=(1, 3))
    assert np.abs(x - shifted).mean() > 0.05          # the check can tell a wrong crop


def test_batch():
    xs = images.batch(["coffee", "chelsea"], size=48)
    assert xs.shape == (2, 48, 48, 3) and xs.dtype == np.float32
    np.testing.assert_array_equal(xs[1], images.load("chelsea", size=48))
    assert images.batch(size=16).shape == (len(images.names()), 16, 16, 3)


def test_imagenet_hints():
    for name, classes in images.IMAGENET_HINTS.items():
        assert name in images.names()
        assert all(isinstance(c, int) and 0 <= c < 1000 for c in classes)
    assert 281 in images.IMAGENET_HINTS["chelsea"]      # tabby cat


def test_bad_arguments():
    with pytest.raises(ValueError, match="name"):
        images.load("horse")
    with pytest.raises(ValueError, match="size"):
        images.load("chelsea", size=0)
    with pytest.raises(ValueError, match="size"):
        images.load("chelsea", size=12.5)
    with pytest.raises(ValueError, match="names"):
        images.batch(["chelsea", "lena"])
    with pytest.raises(ValueError, match="names"):
        images.batch([])
    with pytest.raises(ValueError, match="size"):
        images.batch(size=None)


# --- ImageNet class names ---------------------------------------------------------------------

from jaxinterp.data import imagenet_class_index, imagenet_classes  # noqa: E402


def test_imagenet_classes_known_indices():
    classes = imagenet_classes()
    assert isinstance(classes, tuple) and len(classes) == 1000 and len(set(classes)) == 1000
    known = {0: "tench", 281: "tabby", 282: "tiger cat", 285: "Egyptian cat", 504: "coffee mug",
             652: "military uniform", 812: "space shuttle", 872: "tripod", 967: "espresso",
             999: "toilet tissue", 134: "crane (bird)", 517: "crane (machine)",
             638: "maillot (tights)", 639: "maillot (tank suit)"}
    assert {i: classes[i] for i in known} == known
    assert all(c == c.strip() and c for c in classes)


def test_imagenet_class_index():
    classes = imagenet_classes()
    assert [imagenet_class_index(c) for c in classes] == list(range(1000))
    assert imagenet_class_index("Tiger Cat") == 282                      # case-insensitive
    assert imagenet_class_index("Cardigan") == 264 and imagenet_class_index("cardigan") == 474
    for bad in ["crane", "maillot", "CARDIGAN"]:                         # ambiguous
        with pytest.raises(ValueError, match=f"{bad!r}.*ambiguous"):
            imagenet_class_index(bad)
    with pytest.raises(ValueError, match="'unicorn'"):
        imagenet_class_index("unicorn")
    with pytest.raises(ValueError, match="name"):
        imagenet_class_index(281)


def test_data_files_are_package_data():
    import tomllib
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    with open(os.path.join(root, "pyproject.toml"), "rb") as f:
        package_data = tomllib.load(f)["tool"]["setuptools"]["package-data"]["jaxinterp"]
    assert {"data/*.txt", "data/*.json"} <= set(package_data)


# --- The further photographs and the evaluation centre crop -----------------------------------

from PIL import Image  # noqa: E402


def test_all_names_adds_camera_and_grace_hopper_only():
    assert images.names() == ("astronaut", "chelsea", "coffee", "hubble_deep_field", "ihc",
                              "motorcycle", "retina", "rocket")       # unchanged for existing callers
    assert images.all_names() == tuple(sorted(images.names() + ("camera", "grace_hopper")))
    assert images.batch(size=8).shape[0] == 8


def test_camera_is_grey_replicated_to_rgb():
    grey = skimage.io.imread(os.path.join(DATA_DIR, "camera.png"))
    assert grey.ndim == 2
    x = images.load("camera", size=None)
    assert x.shape == (*grey.shape, 3) and x.dtype == np.float32
    for c in range(3):
        np.testing.assert_array_equal(x[..., c], grey / np.float32(255.0))


def test_grace_hopper_is_matplotlib_sample():
    import matplotlib.cbook
    import matplotlib.image
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
        expected = matplotlib.image.imread(f, format="jpg")
    x = images.load("grace_hopper", size=None)
    assert expected.dtype == np.uint8 and x.shape == expected.shape == (600, 512, 3)
    np.testing.assert_array_equal(x, expected / np.float32(255.0))
    assert images.load("grace_hopper", size=32).shape == (32, 32, 3)


@pytest.mark.parametrize("name, size, crop_fraction, geometry", [
    ("chelsea", 224, 0.875, (256, 384, 16, 80)),       # 300 x 451: long side int(256 * 451 / 300) = 384
    ("camera", 224, 0.875, (256, 256, 16, 16)),
    ("grace_hopper", 224, 0.875, (300, 256, 38, 16)),  # 600 x 512: portrait
    ("motorcycle", 224, 0.875, (256, 379, 16, 78)),    # left = round(77.5) = 78 (round half to even)
    ("rocket", 100, 1.0, (100, 149, 0, 24)),           # 427 x 640: int(100 * 640 / 427) = 149, round(24.5) = 24
    ("coffee", 64, 0.9, (71, 106, 4, 21)),             # floor(64 / 0.9) = 71, int(71 * 600 / 400) = 106
])
def test_crop_geometry(name, size, crop_fraction, geometry):
    h, w, _ = images.load(name, size=None).shape
    assert images._crop_geometry(h, w, size, crop_fraction) == geometry


@pytest.mark.parametrize("name", ["chelsea", "grace_hopper", "camera"])
def test_load_centre_crop_is_pil_bicubic_then_crop(name):
    pixels = np.round(images.load(name, size=None) * 255).astype(np.uint8)
    new_h, new_w, top, left = images._crop_geometry(*pixels.shape[:2], 224, 0.875)
    resized = np.asarray(Image.fromarray(pixels).resize((new_w, new_h), Image.BICUBIC))
    x = images.load_centre_crop(name, 224)
    assert x.shape == (224, 224, 3) and x.dtype == np.float32 and 0 <= x.min() and x.max() <= 1
    np.testing.assert_array_equal(np.round(x * 255), resized[top:top + 224, left:left + 224])
    wrong = resized[top:top + 224, left + 4:left + 228].astype(np.float32) / 255
    assert np.abs(x - wrong).mean() > 0.005                     # the check can tell a shifted crop


def test_batch_centre_crop():
    xs = images.batch_centre_crop(["coffee", "camera"], 48, crop_fraction=0.9)
    assert xs.shape == (2, 48, 48, 3) and xs.dtype == np.float32
    np.testing.assert_array_equal(xs[1], images.load_centre_crop("camera", 48, 0.9))
    assert images.batch_centre_crop(None, 16).shape == (8, 16, 16, 3)


def test_centre_crop_bad_arguments():
    with pytest.raises(ValueError, match="name"):
        images.load_centre_crop("lena", 224)
    for size in [0, -3, 12.5, True, None]:
        with pytest.raises(ValueError, match="size"):
            images.load_centre_crop("chelsea", size)
    for fraction in [0, 0.0, -0.5, 1.01, True, "0.875", float("nan")]:
        with pytest.raises(ValueError, match="crop_fraction"):
            images.load_centre_crop("chelsea", 32, fraction)
    with pytest.raises(ValueError, match="names"):
        images.batch_centre_crop([], 32)
    with pytest.raises(ValueError, match="names"):
        images.batch_centre_crop(["chelsea", "lena"], 32)
    with pytest.raises(ValueError, match="size"):
        images.batch_centre_crop(["chelsea"], 0)
    with pytest.raises(ValueError, match="crop_fraction"):
        images.pointing_set(32, crop_fraction=2.0)
    with pytest.raises(ValueError, match="size"):
        images.pointing_set(0)


# --- The hand-drawn pointing-game set ---------------------------------------------------------

EXPECTED_OBJECTS = {"astronaut": [812], "camera": [759, 872], "chelsea": [281], "coffee": [967],
                    "grace_hopper": [652, 906], "motorcycle": [665], "rocket": [657]}


def test_photo_objects_boxes_inside_photos():
    objects = images.photo_objects()
    assert {p: [o["classes"][0] for o in objs] for p, objs in objects.items()} == EXPECTED_OBJECTS
    classes = imagenet_classes()
    for photo, objs in objects.items():
        h, w, _ = images.load(photo, size=None).shape
        for o in objs:
            x0, y0, x1, y1 = o["box"]
            assert all(isinstance(v, int) for v in o["box"])
            assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h, (photo, o)
            assert len(o["classes"]) == len(set(o["classes"])) >= 1
            assert o["names"] == [classes[c] for c in o["classes"]], (photo, o)


def test_photo_objects_json_says_hand_drawn():
    import importlib.resources
    import json
    raw = json.loads(importlib.resources.files("jaxinterp.data").joinpath("photo_objects.json").read_text())
    assert "by hand" in raw["_comment"] and "_comment" not in images.photo_objects()


def test_pointing_set_counts_and_layout():
    s = images.pointing_set()
    m = 9
    assert s["image"].shape == (m, 224, 224, 3) and s["image"].dtype == np.float32
    assert s["mask"].shape == (m, 224, 224) and s["mask"].dtype == bool
    assert s["target"].shape == (m,) and s["target"].dtype == np.int32
    assert s["box"].shape == (m, 4) and s["box"].dtype == np.float32
    assert len(s["classes"]) == m and len(set(s["photo"])) == 7
    assert [int(t) for t in s["target"]] == [c for p in sorted(EXPECTED_OBJECTS) for c in EXPECTED_OBJECTS[p]]
    assert all(c[0] == t for c, t in zip(s["classes"], s["target"]))
    np.testing.assert_array_equal(s["target_classes"][s["target_id"]], s["target"])
    assert np.all(s["visible"] >= 0.5) and np.all(s["mask"].sum(axis=(1, 2)) > 0)
    for i, photo in enumerate(s["photo"]):
        np.testing.assert_array_equal(s["image"][i], images.load_centre_crop(str(photo), 224))
    first = np.ceil(s["box"] - 0.5)                             # pixels whose centre i + 0.5 is in the box
    rows, cols = first[:, 2] - first[:, 0], first[:, 3] - first[:, 1]
    np.testing.assert_array_equal(s["mask"].sum(axis=(1, 2)), rows * cols)
    np.testing.assert_array_equal(s["mask"].any(axis=2).sum(axis=1), rows)


def _dilate(mask):
    """One-pixel dilation (3 x 3) of an (H, W) bool mask."""
    out = mask.copy()
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            out |= np.roll(np.roll(np.pad(mask, 1), dy, 0), dx, 1)[1:-1, 1:-1]
    return out


def _reference_masks(size, crop_fraction):
    """Each box rendered in its photograph, resized with PIL NEAREST and centre-cropped.

    Returns {(photo, first class): (crop mask, fraction of the resized box inside the crop)}.
    """
    out = {}
    for photo, objs in images.photo_objects().items():
        h, w, _ = images.load(photo, size=None).shape
        short = math.floor(size / crop_fraction)
        new_w, new_h = (short, int(short * h / w)) if w <= h else (int(short * w / h), short)
        top, left = int(round((new_h - size) / 2)), int(round((new_w - size) / 2))
        for o in objs:
            x0, y0, x1, y1 = o["box"]
            mask = np.zeros((h, w), np.uint8)
            mask[y0:y1, x0:x1] = 255
            big = np.asarray(Image.fromarray(mask).resize((new_w, new_h), Image.NEAREST)) > 0
            crop = big[top:top + size, left:left + size]
            out[photo, o["classes"][0]] = (crop, crop.sum() / big.sum())
    return out


@pytest.mark.parametrize("size, crop_fraction", [(224, 0.875), (64, 0.5), (97, 1.0)])
def test_pointing_set_masks_match_nearest_resize_of_the_box(size, crop_fraction):
    s = images.pointing_set(size, crop_fraction)
    ref = _reference_masks(size, crop_fraction)
    kept = {(str(p), int(t)) for p, t in zip(s["photo"], s["target"])}
    for key, (_, fraction) in ref.items():
        if abs(fraction - 0.5) > 0.03:                          # clear cases: kept iff half visible
            assert (key in kept) == (fraction >= 0.5), (key, fraction)
    assert 0 < len(kept) and (size != 224 or len(kept) == 9)
    for i, key in enumerate(zip(s["photo"], s["target"])):
        mine, (theirs, _) = s["mask"][i], ref[str(key[0]), int(key[1])]
        assert not np.any(mine & ~_dilate(theirs)) and not np.any(theirs & ~_dilate(mine)), key
        assert (mine != theirs).mean() < 0.05, key


def test_pointing_set_plugs_into_the_pointing_game():
    from jaxinterp.evaluation import pointing
    s = images.pointing_set(64)
    oracle = s["mask"].astype(np.float32)                       # a map that is 1 on the object
    out = pointing.pointing_game(oracle, s["mask"], s["target_id"], len(s["target_classes"]))
    assert np.asarray(out["hits"]).all() and float(out["accuracy"]) == 1.0
    assert 0.0 <= float(out["centre_accuracy"]) <= 1.0
