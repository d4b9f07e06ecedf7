"""Guided IG, blur IG, XRAI and the segmentations: closed forms, planted truths, a NumPy greedy oracle,
completeness, jit, vmap, chunking, sharding, bad input.

PAIR ``saliency`` itself is the oracle of tests/parity/test_pair_parity.py.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage

from _small_nets import NUM_CLASSES, SIZE, small_setup
from jaxinterp.targets import Unit
from jaxinterp.attribution import integrated_gradients
from jaxinterp.attribution.pair import blur_ig, guided_ig, xrai
from jaxinterp.attribution.segments import felzenszwalb, xrai_segments
from jaxinterp.train.sharding import data_mesh, shard_batch

TARGETS = np.array([[0, 4], [2, 2], [1, 3]])
LINEAR = "features.0"   # a unit of the first convolution: its value is affine in the pixels


@pytest.fixture(scope="module")
def setup():
    return small_setup()


def _score(net, params, a, t):
    """Scores (N, T) of class targets t (N, T) for images a (N, H, W, 3)."""
    return np.take_along_axis(np.asarray(net.apply(params, a)), np.asarray(t), axis=1)


def _unit_weights(net, params, channel):
    """The constant gradient w (H, W, 3) of the affine unit Unit(LINEAR, channel)."""
    value = lambda a: jnp.mean(net.apply(params, a[None], stop=LINEAR)[0, ..., channel])
    return np.asarray(jax.grad(value)(jnp.zeros((SIZE, SIZE, 3), jnp.float64)), np.float64)


# --------------------------------------------------------------------------- segmentations


def _halves():
    """Two images (16, 16, 3): left half red, right half blue (then the reverse)."""
    x = np.zeros((2, SIZE, SIZE, 3))
    x[0, :, :8, 0] = x[0, :, 8:, 2] = 0.9
    x[1, :, :8, 2] = x[1, :, 8:, 0] = 0.9
    return x


def test_felzenszwalb_labels_and_planted_halves():
    x = _halves()
    labels = felzenszwalb(x, scale=100.0, sigma=0.5, min_size=40)
    assert labels.shape == (2, SIZE, SIZE) and labels.dtype == np.int32
    for lab in labels:
        assert set(np.unique(lab)) == {0, 1}
        assert (lab[:, :8] == lab[0, 0]).all() and (lab[:, 8:] == lab[0, -1]).all() and lab[0, 0] != lab[0, -1]
    noisy = felzenszwalb(np.random.default_rng(0).uniform(size=(1, SIZE, SIZE, 3)), min_size=5)[0]
    assert np.array_equal(np.unique(noisy), np.arange(noisy.max() + 1))  # ids 0 .. K - 1


def test_xrai_segments_planted_and_padded():
    """Without resize or dilation each scale gives the two halves; dilation grows them; padding is empty."""
    x = _halves()
    masks = xrai_segments(x, scales=(50, 100), min_size=40, size=None, dilation_radius=0)
    assert masks.shape == (2, 4, SIZE, SIZE) and masks.dtype == bool
    left = np.zeros((SIZE, SIZE), bool)
    left[:, :8] = True
    for m in masks:
        assert {m_.tobytes() for m_ in m} == {left.tobytes(), (~left).tobytes()}
    dilated = xrai_segments(x[:1], scales=(50,), min_size=40, size=None, dilation_radius=2)[0]
    assert dilated[0].sum() == SIZE * 10 and (dilated[0] >= masks[0, 0]).all()   # 2 columns more
    images = np.concatenate([x[:1], np.random.default_rng(1).uniform(size=(1, SIZE, SIZE, 3))])
    default = xrai_segments(images)                   # PAIR's 6 scales, 224 px, min size 150, dilation 5
    assert default.any(1).all()                       # the masks cover every pixel
    for n in range(2):                                # each image's masks, padded with empty ones
        alone = xrai_segments(images[n:n + 1])[0]
        np.testing.assert_array_equal(default[n, :len(alone)], alone)
        assert not default[n, len(alone):].any()


# --------------------------------------------------------------------------- guided IG

GUIDED = jax.jit(guided_ig, static_argnames=("net", "steps", "fraction", "reduce"))
BLUR = jax.jit(blur_ig, static_argnames=("net", "max_sigma", "steps", "grad_step", "sqrt", "reduce", "chunk_size"))


def test_guided_ig_affine_unit_is_complete_eager_and_jit(setup):
    """For an affine score every path gives (x - b) w: the path ends at x and the gradient is w.
    Eager == closed form == jit."""
    net, params, x = setup
    with jax.enable_x64(True):
        p64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params)
        x64 = jnp.asarray(x, jnp.float64)
        unit = Unit(LINEAR, jnp.array([1, 3, 0]))
        maps = guided_ig(net, p64, x64, unit, baseline=0.3, steps=8, reduce=None)
        for n, c in enumerate([1, 3, 0]):
            np.testing.assert_allclose(maps[n, 0], (np.asarray(x64[n]) - 0.3) * _unit_weights(net, p64, c),
                                       rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(GUIDED(net, p64, x64, unit, baseline=0.3, steps=8, reduce=None), maps,
                                   rtol=1e-12, atol=1e-15)


def test_guided_ig_straight_path_is_left_riemann_ig(setup):
    """max_dist=0 is integrated gradients with the left Riemann rule (the gradient at the start of
    each step), one (image, target) at a time (the batched calls are in the sharding test)."""
    net, params, x = setup
    left = jax.jit(integrated_gradients, static_argnames=("net", "steps", "method"))(
        net, params, x, TARGETS, steps=16, method="riemann_left")
    for n in range(3):
        for k in range(2):
            straight = GUIDED(net, params, x[n:n + 1], TARGETS[n:n + 1, k], steps=16, max_dist=0.0)
            np.testing.assert_allclose(straight[0, 0], left[n, k], rtol=1e-4, atol=1e-6)


# --------------------------------------------------------------------------- blur IG


def _blur_ig_oracle(x, w, max_sigma, steps, grad_step, sqrt):
    """Float64 blur IG of an affine score with gradient w, blurring with scipy (PAIR's filter)."""
    sigmas = np.arange(steps + 1) * max_sigma / steps
    sigmas = np.sqrt(sigmas) if sqrt else sigmas

    def blur(s):
        return x if s == 0 else ndimage.gaussian_filter(x, sigma=[s, s, 0], mode="constant")

    return -sum((sigmas[i + 1] - sigmas[i]) * (blur(sigmas[i] + grad_step) - blur(sigmas[i])) / grad_step * w
                for i in range(steps))


def test_blur_ig_affine_unit_matches_scipy_blur_path(setup):
    """Affine score: the constant gradient times scipy's blur path (sqrt spacing, sigma up to 20 px
    on 16 px images: kernels wider than the image); chunks of 4 steps."""
    net, params, x = setup
    channels = [1, 3, 0]
    with jax.enable_x64(True):
        p64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params)
        maps = BLUR(net, p64, jnp.asarray(x, jnp.float64), Unit(LINEAR, jnp.array(channels)),
                    max_sigma=20.0, steps=10, sqrt=True, reduce=None, chunk_size=4)
        for n, c in enumerate(channels):
            ref = _blur_ig_oracle(np.asarray(x[n], np.float64), _unit_weights(net, p64, c), 20.0, 10, 0.01, True)
            np.testing.assert_allclose(maps[n, 0], ref, rtol=1e-9, atol=1e-12)


BLUR_KW = dict(max_sigma=8.0, steps=48)


def test_blur_ig_completeness(setup):
    """sum map ~ s(x) - s(blurred x), one (image, target) at a time in chunks of 10 steps."""
    net, params, x = setup
    blurred = np.stack([ndimage.gaussian_filter(np.asarray(im, np.float64), [8.0, 8.0, 0], mode="constant")
                        for im in x])
    change = _score(net, params, x, TARGETS) - _score(net, params, jnp.asarray(blurred, jnp.float32), TARGETS)
    for n in range(3):
        for k in range(2):
            maps = BLUR(net, params, x[n:n + 1], TARGETS[n:n + 1, k], chunk_size=10, **BLUR_KW)
            assert maps.shape == (1, 1, SIZE, SIZE)
            np.testing.assert_allclose(maps.sum(), change[n, k], rtol=0.1, atol=0.02)


# --------------------------------------------------------------------------- XRAI


def _xrai_oracle(segments, attr, area_threshold, min_pixel_diff):
    """Float64 NumPy greedy XRAI: add the mask of largest mean attribution over its new pixels."""
    out = np.full(attr.shape, -np.inf)
    covered = np.zeros(attr.shape, bool)
    left = list(range(len(segments)))
    while covered.mean() <= area_threshold:
        left = [i for i in left if (segments[i] & ~covered).sum() >= min_pixel_diff]
        if not left:
            break
        gains = [attr[segments[i] & ~covered].mean() for i in left]
        best = left[int(np.argmax(gains))]
        out[segments[best] & ~covered] = max(gains)
        covered |= segments[best]
        left.remove(best)
    rest = out == -np.inf
    out[rest] = attr[rest].mean() if rest.any() else 0.0
    return out


def test_xrai_planted_blocks_recovers_the_attribution():
    """Disjoint blocks with a constant attribution each: the XRAI map is that attribution."""
    blocks = np.zeros((1, 4, SIZE, SIZE), bool)
    for k, (i, j) in enumerate([(0, 0), (0, 8), (8, 0), (8, 8)]):
        blocks[0, k, i:i + 8, j:j + 8] = True
    attr = np.einsum("nkhw,k->nhw", blocks, np.array([0.5, 2.0, -1.0, 1.5]))[:, None]
    maps = xrai(None, None, jnp.zeros((1, SIZE, SIZE, 3)), None, segments=blocks,
                attributions=jnp.asarray(attr, jnp.float32))
    np.testing.assert_allclose(maps, attr, rtol=1e-6)


def test_xrai_matches_numpy_greedy_oracle_jit_and_sharded(setup):
    """Random overlapping masks, per-channel attributions maxed: == the NumPy greedy loop for every
    (image, target), full and truncated growth; jit == eager; 8 devices == one."""
    rng = np.random.default_rng(3)
    n, t, s = 8, 2, 12
    segments = np.zeros((n, s, SIZE, SIZE), bool)
    for i in range(n):
        for k in range(s - 1):                                     # the last mask is padding (empty)
            y, x0, hh, ww = rng.integers(0, 12), rng.integers(0, 12), rng.integers(3, 9), rng.integers(3, 9)
            segments[i, k, y:y + hh, x0:x0 + ww] = True
    attributions = rng.normal(size=(n, t, SIZE, SIZE, 3)).astype(np.float32)
    images = jnp.zeros((n, SIZE, SIZE, 3))
    fn = jax.jit(xrai, static_argnames=("net", "min_pixel_diff", "ig_steps", "chunk_size"))
    for area in (1.0, 0.4):
        maps = fn(None, None, images, None, segments=segments, attributions=attributions, area_threshold=area,
                  min_pixel_diff=5)
        assert maps.shape == (n, t, SIZE, SIZE)
        for i in range(n):
            for j in range(t):
                ref = _xrai_oracle(segments[i], attributions[i, j].max(-1).astype(np.float64), area, 5)
                np.testing.assert_allclose(maps[i, j], ref, rtol=1e-5, atol=1e-6)
    eager = xrai(None, None, images, None, segments=segments, attributions=attributions, area_threshold=0.4,
                 min_pixel_diff=5)
    np.testing.assert_allclose(eager, maps, rtol=1e-6)
    xs, ss, aa = shard_batch((images, jnp.asarray(segments), jnp.asarray(attributions)), data_mesh())
    sharded = fn(None, None, xs, None, segments=ss, attributions=aa, area_threshold=0.4, min_pixel_diff=5)
    assert len(sharded.sharding.device_set) == 8
    np.testing.assert_allclose(sharded, maps, rtol=1e-6)


def test_xrai_default_attribution_is_black_white_ig(setup):
    """attributions=None: IG (trapezoid) from black and from white, averaged, maxed over channels."""
    net, params, x = setup
    segments = xrai_segments(x, scales=(50, 200), min_size=10, size=None, dilation_radius=1)

    @jax.jit
    def both(x, segments):
        ig = sum(integrated_gradients(net, params, x, TARGETS, steps=2, method="riemann_trapezoid",
                                      baseline=b, reduce=None) for b in (0.0, 1.0)) / 2
        return (xrai(net, params, x, TARGETS, segments=segments, attributions=ig, min_pixel_diff=4),
                xrai(net, params, x, TARGETS, segments=segments, ig_steps=2, min_pixel_diff=4, chunk_size=3))

    given, default = both(x, segments)
    np.testing.assert_allclose(default, given, rtol=1e-4, atol=1e-6)


# --------------------------------------------------------------------------- sharding, bad input


def test_guided_and_blur_ig_batched_and_sharded_equal_one_pair_at_a_time(setup):
    """(N=8, T=2) in one call on 8 devices == each (image, target) alone on one device: the vmaps over
    images and targets and the sharding change nothing; blur IG in one chunk == in chunks of 10 steps."""
    net, params, _ = setup
    x = jax.random.uniform(jax.random.key(2), (8, SIZE, SIZE, 3))
    targets = np.asarray(jax.random.randint(jax.random.key(3), (8, 2), 0, NUM_CLASSES))
    xs, ts = shard_batch((x, jnp.asarray(targets)), data_mesh())
    guided = GUIDED(net, params, xs, ts, steps=16)
    blur = BLUR(net, params, xs, ts, **BLUR_KW)
    for maps in (guided, blur):
        assert maps.shape == (8, 2, SIZE, SIZE) and len(maps.sharding.device_set) == 8
    for n in range(8):
        for k in range(2):
            one = x[n:n + 1], targets[n:n + 1, k]
            np.testing.assert_allclose(guided[n, k], GUIDED(net, params, *one, steps=16)[0, 0], rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(blur[n, k], BLUR(net, params, *one, chunk_size=10, **BLUR_KW)[0, 0],
                                       rtol=1e-4, atol=1e-5)


SEGMENTS = np.ones((3, 2, SIZE, SIZE), bool)


@pytest.mark.parametrize("call, match", [
    (lambda n, p, x: guided_ig(n, p, x[..., :2], TARGETS), r"^x: expected images of rank 4"),
    (lambda n, p, x: guided_ig(n, p, x, TARGETS + 5), r"^target: expected indices in \[0, 5\)"),
    (lambda n, p, x: guided_ig(n, p, x, TARGETS, steps=0), r"^steps: expected a positive integer"),
    (lambda n, p, x: guided_ig(n, p, x, TARGETS, fraction=1.5), r"^fraction: expected a number in \[0, 1\]"),
    (lambda n, p, x: guided_ig(n, p, x, TARGETS, max_dist=-0.1), r"^max_dist: expected a number in \[0, 1\]"),
    (lambda n, p, x: guided_ig(n, p, x, TARGETS, baseline=2.0), r"^baseline: expected pixel values in \[0, 1\]"),
    (lambda n, p, x: guided_ig(n, p, x, TARGETS, reduce="mean"), r"^reduce: expected one of"),
    (lambda n, p, x: blur_ig(n, p, x, TARGETS, max_sigma=0.0), r"^max_sigma: expected a finite number > 0"),
    (lambda n, p, x: blur_ig(n, p, x, TARGETS, steps=-1), r"^steps: expected a positive integer"),
    (lambda n, p, x: blur_ig(n, p, x, TARGETS, grad_step=0), r"^grad_step: expected a finite number > 0"),
    (lambda n, p, x: blur_ig(n, p, x, TARGETS, chunk_size=0), r"^chunk_size: expected a positive integer"),
    (lambda n, p, x: xrai(n, p, x, TARGETS, segments=SEGMENTS[:, :, :8]), r"^segments: expected boolean masks"),
    (lambda n, p, x: xrai(n, p, x, TARGETS, segments=SEGMENTS.astype(np.float32)),
     r"^segments: expected a boolean dtype"),
    (lambda n, p, x: xrai(n, p, x, TARGETS, segments=SEGMENTS, attributions=jnp.ones((3, 1, 8, 8))),
     r"^attributions: expected \(3, T, 16, 16\)"),
    (lambda n, p, x: xrai(n, p, x, TARGETS, segments=SEGMENTS, attributions=jnp.full((3, 1, 16, 16), jnp.nan)),
     r"^attributions: contains NaN"),
    (lambda n, p, x: xrai(n, p, x, TARGETS, segments=SEGMENTS, area_threshold=2.0), r"^area_threshold: expected"),
    (lambda n, p, x: xrai(n, p, x, TARGETS, segments=SEGMENTS, min_pixel_diff=0), r"^min_pixel_diff: expected"),
    (lambda n, p, x: xrai(n, p, x, TARGETS, segments=SEGMENTS, ig_steps=0), r"^ig_steps: expected"),
    (lambda n, p, x: felzenszwalb(x[0]), r"^images: expected images of rank 4"),
    (lambda n, p, x: felzenszwalb(x, scale=0), r"^scale: expected a finite number > 0"),
    (lambda n, p, x: felzenszwalb(x, min_size=0), r"^min_size: expected a positive integer"),
    (lambda n, p, x: xrai_segments(x, scales=()), r"^scales: expected at least one"),
    (lambda n, p, x: xrai_segments(x, dilation_radius=-1), r"^dilation_radius: expected an integer >= 0"),
    (lambda n, p, x: xrai_segments(x, size=(224,)), r"^size: expected \(h, w\) or None"),
])
def test_bad_input_raises(setup, call, match):
    net, params, x = setup
    with pytest.raises(ValueError, match=match):
        call(net, params, x)
