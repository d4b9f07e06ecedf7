"""Tests of jaxinterp.data.synthetic against NumPy / SciPy references."""

import jax
import numpy as np
import pytest
import scipy.ndimage
import scipy.stats

from jaxinterp.data import synthetic

KEY = jax.random.key(42)
N = 1600
PROBE_N = 1200      # probe: fit on 800, test on 400
SIZE = 64


def _numpy(tree):
    return jax.tree.map(np.asarray, tree)


@pytest.fixture(scope="module")
def easy():
    return _numpy(synthetic.generate(KEY, N))


@pytest.fixture(scope="module")
def difficult():
    return _numpy(synthetic.generate(KEY, 256, variant="difficult"))


@pytest.fixture(scope="module")
def clutter_only():
    """The first PROBE_N easy images without their objects, (PROBE_N, SIZE, SIZE, 3)."""
    return np.stack([np.asarray(synthetic.clutter(jax.random.fold_in(KEY, i))) for i in range(PROBE_N)])


def _tight_boxes(masks):
    """(N, 4) (y0, x0, y1, x1) half-open tight boxes of (N, H, W) masks, by np.nonzero."""
    boxes = []
    for m in masks:
        ys, xs = np.nonzero(m)
        boxes.append([ys.min(), xs.min(), ys.max() + 1, xs.max() + 1])
    return np.array(boxes, np.float32)


@pytest.mark.parametrize("name", ["easy", "difficult"])
def test_shapes_dtypes_ranges(name, request):
    ex = request.getfixturevalue(name)
    n = len(ex["label"])
    assert ex["image"].shape == (n, SIZE, SIZE, 3) and ex["image"].dtype == np.float32
    assert ex["label"].shape == (n,) and ex["label"].dtype == np.int32
    assert ex["box"].shape == (n, 4) and ex["box"].dtype == np.float32
    assert ex["mask"].shape == (n, SIZE, SIZE) and ex["mask"].dtype == np.bool_
    assert ex["image"].min() >= 0.0 and ex["image"].max() <= 1.0
    assert ex["label"].min() >= 0 and ex["label"].max() < synthetic.NUM_CLASSES
    assert synthetic.NUM_CLASSES == len(synthetic.CLASSES) == 8


@pytest.mark.parametrize("name", ["easy", "difficult"])
def test_box_is_tight_box_of_nonempty_mask_inside_image(name, request):
    ex = request.getfixturevalue(name)
    masks = ex["mask"]
    assert masks.any(axis=(1, 2)).all()
    border = masks[:, 0].any(1) | masks[:, -1].any(1) | masks[:, :, 0].any(1) | masks[:, :, -1].any(1)
    assert not border.any()                      # the whole object is in the image
    np.testing.assert_array_equal(ex["box"], _tight_boxes(masks))


def test_object_pixels_have_the_object_colour(easy):
    """Inside the mask, two pixels from its edge, a shape's pixels share one colour."""
    shapes = np.flatnonzero(easy["label"] < 6)[:50]
    for i in shapes:
        inner = scipy.ndimage.binary_erosion(easy["mask"][i], iterations=2)
        pixels = easy["image"][i][inner]
        assert np.ptp(pixels, axis=0).max() < 1e-5


def test_class_balance(easy):
    counts = np.bincount(easy["label"], minlength=synthetic.NUM_CLASSES)
    assert scipy.stats.chisquare(counts).pvalue > 1e-3
    assert counts.min() > 0.6 * N / synthetic.NUM_CLASSES


def test_deterministic():
    a, b = _numpy(synthetic.sample(KEY)), _numpy(synthetic.sample(KEY))
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    c = _numpy(synthetic.sample(jax.random.key(43)))
    assert not np.array_equal(a["image"], c["image"])


def test_example_i_does_not_depend_on_n(easy):
    for n in (5, 130):                           # one chunk, two chunks
        ex = _numpy(synthetic.generate(KEY, n))
        for k in ex:
            np.testing.assert_array_equal(ex[k], easy[k][:n])


@pytest.mark.parametrize("variant", ["easy", "difficult"])
def test_generate_equals_loop_of_sample(variant, easy, difficult):
    batch = {"easy": easy, "difficult": difficult}[variant]
    for i in (0, 1, 200):
        ex = _numpy(synthetic.sample(jax.random.fold_in(KEY, i), variant=variant))
        np.testing.assert_allclose(ex["image"], batch["image"][i], atol=1e-5)
        for k in ("label", "box", "mask"):
            np.testing.assert_array_equal(ex[k], batch[k][i])


def test_jit_equals_eager():
    key = jax.random.key(7)
    jitted = _numpy(synthetic.sample(key))          # sample is jitted
    with jax.disable_jit():
        eager = _numpy(synthetic.sample(key))
    np.testing.assert_allclose(jitted["image"], eager["image"], atol=1e-5)
    for k in ("label", "box", "mask"):
        np.testing.assert_array_equal(jitted[k], eager[k])


def test_difficult_objects_are_smaller(easy, difficult):
    easy_area = easy["mask"].sum(axis=(1, 2)).mean()
    difficult_area = difficult["mask"].sum(axis=(1, 2)).mean()
    assert difficult_area < 0.4 * easy_area
    for ex, (lo, hi) in ((easy, (0.25, 0.6)), (difficult, (0.08, 0.3))):
        side = np.maximum(ex["box"][:, 2] - ex["box"][:, 0], ex["box"][:, 3] - ex["box"][:, 1]) / SIZE
        assert lo < side.mean() < hi


@pytest.mark.parametrize("variant", ["easy", "difficult"])
def test_clutter_is_the_image_without_the_object(variant, easy, difficult):
    batch = {"easy": easy, "difficult": difficult}[variant]
    for i in range(4):
        key = jax.random.fold_in(KEY, i)
        background = np.asarray(synthetic.clutter(key, variant=variant))
        away = ~scipy.ndimage.binary_dilation(batch["mask"][i], iterations=2)
        np.testing.assert_allclose(batch["image"][i][away], background[away], atol=1e-6)
        assert not np.allclose(batch["image"][i], background)


def _features(x):
    """Per-channel 8-bin colour histograms and 4 x 4 average-pooled pixels, (N, 72)."""
    n = len(x)
    hist = np.stack([np.apply_along_axis(lambda v: np.histogram(v, 8, (0, 1))[0], 1,
                                         x[..., c].reshape(n, -1)) for c in range(3)], 1)
    pooled = x.reshape(n, 4, SIZE // 4, 4, SIZE // 4, 3).mean(axis=(2, 4))
    return np.concatenate([hist.reshape(n, -1) / x[0, ..., 0].size, pooled.reshape(n, -1)], 1)


def _probe_accuracy(features, labels, train=800, steps=300, lr=0.5, l2=1e-3):
    """Test accuracy of softmax regression fitted by gradient descent in NumPy."""
    mean, std = features[:train].mean(0), features[:train].std(0) + 1e-6
    f = np.concatenate([(features - mean) / std, np.ones((len(features), 1))], 1)
    onehot = np.eye(synthetic.NUM_CLASSES)[labels[:train]]
    w = np.zeros((f.shape[1], synthetic.NUM_CLASSES))
    for _ in range(steps):
        logits = f[:train] @ w
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        w -= lr * (f[:train].T @ (p - onehot) / train + l2 * w)
    return np.mean(np.argmax(f[train:] @ w, 1) == labels[train:])


def test_clutter_carries_no_label_information(easy, clutter_only):
    labels = easy["label"][:PROBE_N]
    chance = 1.0 / synthetic.NUM_CLASSES
    n_test = PROBE_N - 800
    tolerance = 4.5 * np.sqrt(chance * (1 - chance) / n_test)
    assert abs(_probe_accuracy(_features(clutter_only), labels) - chance) < tolerance
    # The same probe finds a planted cue: the 16 x 16 block number `label` brightened by 0.2.
    blocks = np.arange(16).reshape(4, 1, 4, 1) == labels[:, None, None, None, None]
    bright = np.broadcast_to(blocks, (PROBE_N, 4, 16, 4, 16)).reshape(PROBE_N, SIZE, SIZE, 1)
    planted = np.clip(clutter_only + 0.2 * bright, 0.0, 1.0)
    assert _probe_accuracy(_features(planted), labels) > 0.5


@pytest.mark.parametrize("call, arg", [
    (lambda: synthetic.sample(KEY, variant="hard"), "variant"),
    (lambda: synthetic.sample(KEY, size=16), "size"),
    (lambda: synthetic.sample(KEY, size=64.0), "size"),
    (lambda: synthetic.generate(KEY, 0), "n"),
    (lambda: synthetic.generate(KEY, 4, variant="medium"), "variant"),
    (lambda: synthetic.generate(KEY, 4, size=31), "size"),
    (lambda: synthetic.clutter(KEY, variant=None), "variant"),
    (lambda: synthetic.clutter(KEY, size=8), "size"),
])
def test_bad_arguments(call, arg):
    with pytest.raises(ValueError, match=arg):
        call()
