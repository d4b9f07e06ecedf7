"""Top activations against an exact NumPy top-k, receptive fields against the textbook recurrence, patches and filters.

Streaming in uneven batches, per image and per position, equals the NumPy top-k of all the
activations; vmap over datasets equals a loop; 8 sharded devices equal one; the driver
works under jit.  Receptive fields of smallcnn, AlexNet and ResNet-50 layers equal the
closed form of their convolution / pool stacks, written out here.
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxinterp import nets
from jaxinterp.analysis.topk import (crop_patches, empty_top_activations, filters_as_images, receptive_field,
                                     top_activations, top_activations_update)
from tests.analysis._numpy_resize import resize_bilinear

NET = nets.get("smallcnn", widths=(8, 16, 16, 16))
LAYER = "features.3"            # the second convolution, before its ReLU: continuous values, (16, 16, 16) at 32 px
N, K = 22, 5


@pytest.fixture(scope="module")
def data():
    params = NET.init(jax.random.key(0))
    images = np.random.default_rng(0).random((N, 32, 32, 3)).astype(np.float32)
    acts = np.asarray(NET.apply(params, images, stop=LAYER), np.float64)      # (N, 16, 16, 16), one forward pass
    return params, images, acts


def _np_top(acts, k, per_position):
    """Exact top-k per channel by sorting every candidate: values, image indices, (y, x) positions."""
    n, h, w, c = acts.shape
    flat = acts.reshape(n, h * w, c)
    if per_position:
        values = flat.reshape(n * h * w, c)
        image, where = np.divmod(np.arange(n * h * w), h * w)
        image, where = np.repeat(image[:, None], c, 1), np.repeat(where[:, None], c, 1)
    else:
        values, where = flat.max(1), flat.argmax(1)
        image = np.repeat(np.arange(n)[:, None], c, 1)
    order = np.argsort(-values, axis=0)
    srt = np.take_along_axis(values, order, 0)
    gaps = srt[:-1] - srt[1:]
    assert gaps[:k + 1].min() > 1e-4                  # no near-ties among the first k + 1: the order is well defined
    order = order[:k]
    pick = lambda a: np.take_along_axis(a, order, 0).T  # noqa: E731
    where = pick(where)
    return pick(values), pick(image), np.stack([where // w, where % w], -1)


def _assert_top(got, want, k):
    values, indices, positions = want
    np.testing.assert_allclose(np.asarray(got.values)[:, :k], values, rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(got.indices)[:, :k], indices)
    np.testing.assert_array_equal(np.asarray(got.positions)[:, :k], positions)


def test_streamed_top_k_equals_numpy_top_k(data):
    params, images, acts = data
    # uneven batches, per image, k larger than the dataset: 22 real candidates, then nothing
    batches = [images[:9], images[9:18], images[18:]]
    got = top_activations(NET, params, batches, LAYER, N + 3)
    _assert_top(got, _np_top(acts, N, False), N)
    assert np.all(np.isneginf(np.asarray(got.values)[:, N:]))
    assert np.all(np.asarray(got.indices)[:, N:] == -1) and np.all(np.asarray(got.positions)[:, N:] == -1)
    # one array in padded batches of 8, per (image, position)
    got = top_activations(NET, params, images, LAYER, K, batch_size=8, per_position=True)
    _assert_top(got, _np_top(acts, K, True), K)
    # uint8 images are read as x / 255
    q = (images * 255).round().astype(np.uint8)
    want = top_activations(NET, params, q / np.float32(255), LAYER, K, batch_size=8, per_position=True)
    got = top_activations(NET, params, q, LAYER, K, batch_size=8, per_position=True)
    np.testing.assert_allclose(got.values, want.values, rtol=1e-5)     # XLA may divide by 255 as a product
    np.testing.assert_array_equal(got.indices, want.indices)


def test_sharded_vmapped_and_jitted_updates(data):
    params, images, acts = data
    mesh = Mesh(np.array(jax.devices()), ("data",))
    sh = NamedSharding(mesh, P("data"))
    one = top_activations(NET, params, images, LAYER, K, batch_size=8, per_position=True)
    eight = top_activations(NET, params, images, LAYER, K, batch_size=8, per_position=True, sharding=sh)
    np.testing.assert_allclose(eight.values, one.values, rtol=1e-6)
    np.testing.assert_array_equal(eight.indices, one.indices)
    np.testing.assert_array_equal(eight.positions, one.positions)
    # vmap over two datasets of one batch each == a loop over them
    xs = np.stack([images[:8], images[8:16]])
    state = empty_top_activations(16, K)
    update = lambda s, x, o: top_activations_update(s, params, x, o, 8, net=NET, layer=LAYER,  # noqa: E731
                                                    per_position=True)
    mapped = jax.vmap(update, (None, 0, 0))(state, xs, jnp.array([0, 100]))
    for d, offset in enumerate((0, 100)):
        loop = update(state, xs[d], offset)
        np.testing.assert_allclose(mapped.values[d], loop.values, rtol=1e-6)
        np.testing.assert_array_equal(mapped.indices[d], loop.indices)
        np.testing.assert_array_equal(mapped.positions[d], loop.positions)
        assert int(loop.indices.min()) >= offset                         # the offset numbers the images
    # the driver under jit (its batch loop unrolled) == eager
    jitted = jax.jit(top_activations, static_argnames=("net", "layer", "k", "batch_size", "per_position"))
    got = jitted(NET, params, jnp.asarray(images[:16]), LAYER, K, batch_size=8, per_position=True)
    _assert_top(got, _np_top(acts[:16], K, True), K)


def _recurrence(stack, n):
    """Textbook receptive field of a chain of (kernel, stride, padding) layers on an n-pixel axis.

    r_l = r_{l-1} + (k_l - 1) j_{l-1};  j_l = j_{l-1} s_l;  a_l = a_{l-1} - p_l j_{l-1} (first input row of
    unit 0's box);  output size n_l = floor((n_{l-1} + 2 p - k) / s) + 1.  The last input row read at all:
    e_l = min(e_{l-1}, a_{l-1} + u j_{l-1} + r_{l-1} - 1) with u = min(n_{l-1} - 1, (n_l - 1) s - p + k - 1) the
    last unit of layer l-1 that layer l reads (a floor-mode pool or strided conv may skip the last ones).
    Returns (size, stride, offset, units, last row read).
    """
    r, j, a, e = 1, 1, 0, n - 1
    for k, s, p in stack:
        m = (n + 2 * p - k) // s + 1
        e = min(e, a + min(n - 1, (m - 1) * s - p + k - 1) * j + r - 1)
        r, a, j, n = r + (k - 1) * j, a - p * j, j * s, m
    return r, j, a, n, e


CONV3, POOL2 = (3, 1, 1), (2, 2, 0)
SMALLCNN = {"features.5": [CONV3, POOL2, CONV3, POOL2], "features.9": [CONV3, POOL2, CONV3, POOL2, CONV3, POOL2, CONV3]}
ALEXNET = [(11, 4, 2), (3, 2, 0), (5, 1, 2), (3, 2, 0)]       # features.0 conv, .2 pool, .3 conv, .5 pool
RESNET50 = [(7, 2, 3), (3, 2, 1)]                              # conv1, maxpool


@pytest.mark.parametrize("net,layer,size,stack", [
    (NET, "features.5", 64, SMALLCNN["features.5"]),
    (NET, "features.9", 32, SMALLCNN["features.9"]),            # box (38) larger than the image: still determined
    (nets.get("alexnet"), "features.5", 99, ALEXNET),           # the pools drop the image's last rows
    (nets.get("resnet50"), "maxpool", 45, RESNET50),            # odd size, -inf padded max-pool
])
def test_receptive_field_equals_the_recurrence(net, layer, size, stack):
    r, j, a, units, last = _recurrence(stack, size)
    rf = receptive_field(net, layer, size)
    assert (rf.size, rf.stride, rf.offset) == ((r, r), (j, j), (a, a))
    assert rf.boxes.shape == (units, units, 4)
    begin = a + j * np.arange(units)
    lo, hi = np.clip(begin, 0, last), np.clip(begin + r - 1, 0, last)
    for y, x in itertools.product(range(units), repeat=2):
        assert tuple(rf.boxes[y, x]) == (lo[y], lo[x], hi[y], hi[x]), (y, x)


def test_receptive_field_too_small_image_and_inside_jit():
    rf = receptive_field(NET, "features.9", 16)      # every box clipped at both ends: geometry unknown
    assert rf.size is rf.stride is rf.offset is None
    units = _recurrence(SMALLCNN["features.9"], 16)[3]
    assert rf.boxes.shape == (units, units, 4) and np.all(rf.boxes[:, :, :2] == 0) and np.all(rf.boxes[:, :, 2:] == 15)

    @jax.jit
    def first_box_area(x):                            # concrete numbers inside a trace
        box = receptive_field(NET, "features.5", 64).boxes[3, 3]
        return x * float((box[2] - box[0] + 1) * (box[3] - box[1] + 1))

    assert float(first_box_area(1.0)) == 100.0        # r = 10 at unit (3, 3), unclipped


def test_crop_patches_equal_resized_crops():
    rng = np.random.default_rng(1)
    images = rng.random((8, 20, 24, 3)).astype(np.float32)
    y0, x0 = rng.integers(0, 20, 8), rng.integers(0, 24, 8)
    boxes = np.stack([y0, x0, rng.integers(y0, 20), rng.integers(x0, 24)], 1)
    boxes[0] = (0, 0, 19, 23)                                   # the whole image
    boxes[1] = (5, 7, 5, 7)                                     # one pixel
    boxes[2] = (2, 3, 13, 4)                                    # thin
    crop = jax.jit(crop_patches, static_argnames="size")
    got = np.asarray(crop(images, boxes, (6, 9)))
    for n, (a, b, c, d) in enumerate(boxes):
        np.testing.assert_allclose(got[n], resize_bilinear(images[n, a:c + 1, b:d + 1].astype(np.float64), (6, 9)),
                                   atol=1e-5, err_msg=str(n))
    mapped = jax.vmap(lambda i, b: crop_patches(i, b, (6, 9)))(images.reshape(2, 4, 20, 24, 3), boxes.reshape(2, 4, 4))
    np.testing.assert_allclose(np.asarray(mapped).reshape(got.shape), got, atol=1e-6)
    sh = NamedSharding(Mesh(np.array(jax.devices()), ("data",)), P("data"))
    sharded = crop(jax.device_put(images, sh), jax.device_put(boxes, sh), (6, 9))
    np.testing.assert_allclose(np.asarray(sharded), got, atol=1e-6)


def test_filters_as_images_closed_form():
    rng = np.random.default_rng(2)
    w = rng.normal(size=(5, 5, 3, 4)).astype(np.float32)
    w[..., 3] = 0.0                                              # a dead filter is grey
    got = np.asarray(jax.jit(filters_as_images)(w))
    assert got.shape == (4, 5, 5, 3)
    for c in range(3):
        f = w[..., c].astype(np.float64)
        np.testing.assert_allclose(got[c], 0.5 + 0.5 * f / np.abs(f).max(), atol=1e-6)
        assert np.isclose(got[c].min(), 0.0) or np.isclose(got[c].max(), 1.0)
    np.testing.assert_array_equal(got[3], 0.5)


def test_bad_input_raises(data):
    params, images, _ = data
    with pytest.raises(ValueError, match="^layer"):
        top_activations(NET, params, images, "features.99", 3, batch_size=8)
    with pytest.raises(ValueError, match="^k"):
        top_activations(NET, params, images, LAYER, 0, batch_size=8)
    with pytest.raises(ValueError, match="^batch_size"):
        top_activations(NET, params, images, LAYER, 3)
    with pytest.raises(ValueError, match="^batch_size"):
        top_activations(NET, params, [images], LAYER, 3, batch_size=4)
    with pytest.raises(ValueError, match="^batches"):
        top_activations(NET, params, images[..., :2], LAYER, 3, batch_size=8)
    with pytest.raises(ValueError, match="^batches"):
        top_activations(NET, params, [images[:4], images[:4, :16]], LAYER, 3)
    with pytest.raises(ValueError, match="^batches"):
        top_activations(NET, params, [], LAYER, 3)
    with pytest.raises(ValueError, match="^per_position"):
        top_activations(NET, params, images, LAYER, 3, batch_size=8, per_position=1)
    with pytest.raises(ValueError, match="^layer"):
        receptive_field(NET, "avgpool", 32)
    with pytest.raises(ValueError, match="^image_size"):
        receptive_field(NET, LAYER, (32, 0))
    with pytest.raises(ValueError, match="^boxes"):
        crop_patches(images[:2], np.array([[0, 0, 40, 4], [0, 0, 3, 3]]), 8)
    with pytest.raises(ValueError, match="^boxes"):
        crop_patches(images[:2], np.array([[5, 0, 4, 4], [0, 0, 3, 3]]), 8)
    with pytest.raises(ValueError, match="^size"):
        crop_patches(images[:2], np.zeros((2, 4), int), 0)
    with pytest.raises(ValueError, match="^kernel"):
        filters_as_images(np.zeros((3, 3, 4, 8), np.float32))
