"""extremal(): the first step against its definition, vmap == loop, per-image areas, jit, sharding,
bad input, and the planted ground truth of the synthetic set with the trained smallcnn.

(Tracking TorchRay's optimisation step by step: tests/parity/test_extremal_parity.py.)
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinterp.targets import Unit
from jaxinterp.perturbation import (apply_pyramid, area_reference, blur_pyramid, extremal, mask_geometry,
                                    smooth_mask, vecsort_penalty)
from jaxinterp.train.sharding import data_mesh, shard_batch
from tests.attribution._small_nets import NUM_CLASSES, SIZE, small_setup

SMALL = dict(step=4, sigma=6.0, steps=6)      # a mask geometry for 16 px images, few steps
STATIC = ("net", "variant", "perturbation", "reward", "reward_layer", "steps", "step", "sigma", "jitter")
EXTREMAL = jax.jit(extremal, static_argnames=STATIC)   # one compilation per shape and static options


@pytest.fixture(scope="module")
def setup():
    return small_setup()


def run(net, params, x, t, areas=(0.2,), **kw):
    """extremal() under jit with the areas traced: (N, A) float32."""
    areas = jnp.broadcast_to(jnp.asarray(areas, jnp.float32).reshape(-1, np.shape(areas)[-1]),
                             (x.shape[0], np.shape(areas)[-1]))
    return EXTREMAL(net, params, x, t, areas=areas, **{**SMALL, **kw})


def test_first_step_is_the_definition(setup):
    """History step 0: the reward of the flipped, blurred-where-masked image, and lambda_0 R_a."""
    net, params, x = setup
    _, history = run(net, params, x[:1], jnp.array([2]), areas=(0.3,), steps=1)
    geo = mask_geometry((SIZE, SIZE), 4, 6.0)
    mask, full = smooth_mask(jnp.ones(geo.grid_shape), geo)
    pyramid = blur_pyramid(x[0], fill=net.mean)
    image = jnp.flip(apply_pyramid(pyramid, mask), axis=1)               # jitter flips on even steps
    want_reward = net.apply(params, image[None])[0, 2]
    want_area = 300.0 * vecsort_penalty(full, area_reference(full.size, 0.3))
    np.testing.assert_allclose(history[0, 0, 0, 0], [want_reward, want_area], rtol=1e-5)


def test_vmap_over_images_targets_and_areas_equals_a_loop(setup):
    net, params, x = setup
    targets = jnp.array([[1, 4], [0, 2], [3, 3]])
    masks, history = run(net, params, x, targets, areas=(0.1, 0.4))
    assert masks.shape == (3, 2, 2, SIZE, SIZE) and history.shape == (3, 2, 2, SMALL["steps"], 2)
    for n in range(3):
        for j in range(2):
            for a, area in enumerate((0.1, 0.4)):
                m1, h1 = run(net, params, x[n:n + 1], targets[n:n + 1, j], areas=(area,))
                np.testing.assert_allclose(masks[n, j, a], m1[0, 0, 0], atol=2e-5)
                np.testing.assert_allclose(history[n, j, a], h1[0, 0, 0], rtol=2e-4, atol=1e-5)


def test_per_image_areas_equal_separate_calls(setup):
    net, params, x = setup
    areas = np.array([[0.1], [0.3], [0.5]], np.float32)
    masks, _ = run(net, params, x, jnp.array([0, 1, 2]), areas=areas)
    for n in range(3):
        m1, _ = run(net, params, x[n:n + 1], jnp.array([n]), areas=(float(areas[n, 0]),))
        np.testing.assert_allclose(masks[n], m1[0], atol=2e-5)


@pytest.mark.parametrize("variant", ["delete", "dual"])
def test_delete_and_dual_rewards(setup, variant):
    """delete: -score of the image perturbed by 1 - m; dual: preserve - delete (step 0, no jitter)."""
    net, params, x = setup
    _, history = run(net, params, x[:1], jnp.array([1]), variant=variant, steps=1, jitter=False,
                     perturbation="fade")
    geo = mask_geometry((SIZE, SIZE), 4, 6.0)
    mask, _ = smooth_mask(jnp.ones(geo.grid_shape), geo)
    fill = jnp.asarray(net.mean)
    score = lambda m: net.apply(params, (fill + m[..., None] * (x[0] - fill))[None])[0, 1]  # noqa: E731
    want = -score(1 - mask) if variant == "delete" else score(mask) - score(1 - mask)
    np.testing.assert_allclose(history[0, 0, 0, 0, 0], want, rtol=1e-5)


def test_unit_targets_and_a_custom_reward(setup):
    """A channel unit's reward is its spatial mean; a callable reward on any split point gets the same."""
    net, params, x = setup
    layer = net.layers[2]
    unit = Unit(layer, jnp.array([[1], [0], [2]]))
    by_unit, h_unit = run(net, params, x, unit)
    custom = lambda act1, t: jnp.mean(act1[..., t])  # noqa: E731
    by_fn, h_fn = run(net, params, x, jnp.array([[1], [0], [2]]), reward=custom, reward_layer=layer)
    np.testing.assert_allclose(by_unit, by_fn, atol=1e-6)
    np.testing.assert_allclose(h_unit, h_fn, rtol=1e-5, atol=1e-6)


def test_optimisation_raises_the_reward_and_meets_the_area(setup):
    net, params, x = setup
    masks, history = run(net, params, x[:2], jnp.array([1, 3]), areas=(0.3,), steps=150)
    area_term = np.asarray(history[..., 1])
    assert np.all(area_term[..., -1] < 0.2 * area_term[..., 0])
    assert np.all((np.asarray(masks) >= 0) & (np.asarray(masks) <= 1))
    start, _ = run(net, params, x[:2], jnp.array([1, 3]), areas=(0.3,), steps=1)
    assert np.all(np.asarray(masks).mean(axis=(-1, -2)) < np.asarray(start).mean(axis=(-1, -2)) - 0.1)


def test_sharded_equals_single_device(setup):
    net, params, _ = setup
    x = jax.random.uniform(jax.random.key(2), (8, SIZE, SIZE, 3))
    targets = jax.random.randint(jax.random.key(3), (8, 2), 0, NUM_CLASSES)
    single = run(net, params, x, targets, areas=(0.2, 0.5))
    xs, ts = shard_batch((x, targets), data_mesh())
    sharded = run(net, params, xs, ts, areas=(0.2, 0.5))
    assert len(sharded[0].sharding.device_set) == 8
    for a, b in zip(sharded, single):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kwargs, match", [
    ({"areas": (0.0,)}, r"^areas: expected fractions in \(0, 1\)"),
    ({"areas": (1.2,)}, r"^areas: expected fractions in \(0, 1\)"),
    ({"areas": np.full((2, 1), 0.1)}, r"^areas: expected a number"),
    ({"steps": 0}, r"^steps: expected a positive integer"),
    ({"variant": "keep"}, r"^variant: expected one of"),
    ({"perturbation": "noise"}, r"^perturbation: expected one of"),
    ({"reward": "best"}, r"^reward: expected one of"),
    ({"reward": lambda a, t: a[t], "reward_layer": "nope"}, r"^reward_layer: unknown split point"),
    ({"reward_layer": "features.0"}, r"^reward_layer: only a callable reward"),
    ({"lr": -1.0}, r"^lr: expected a finite number > 0"),
    ({"step": 0}, r"^step: expected a positive integer"),
])
def test_bad_input_raises(setup, kwargs, match):
    net, params, x = setup
    with pytest.raises(ValueError, match=match):
        extremal(net, params, x, jnp.array([0, 1, 2]), **{**SMALL, **kwargs})


def test_bad_images_and_targets_raise(setup):
    net, params, x = setup
    with pytest.raises(ValueError, match=r"^x: expected images of rank 4"):
        extremal(net, params, x[0], jnp.array([0]))
    with pytest.raises(ValueError, match=r"^target: expected indices in \[0, 5\)"):
        extremal(net, params, x, jnp.array([0, 1, 9]))
    with pytest.raises(ValueError, match=r"^reward: 'contrastive' needs class targets"):
        extremal(net, params, x, Unit(net.layers[1], jnp.array([0, 1, 2])), reward="contrastive")


@pytest.mark.slow
def test_preserve_mask_finds_the_object_of_the_synthetic_set(trained_smallcnn):
    """Planted ground truth: at the object's own area, the preserve mask overlaps the object.

    10 held-out easy images of the synthetic set with the trained smallcnn; the
    paper's mask geometry scaled to 64 px (step 2, sigma 6), 200 steps; the area
    is the object's, measured in the margin-padded mask's domain (R_a constrains
    the full mask, 75 x 75 px here).  The masks must overlap their own object far
    more than the objects of the other images (the control: the same masks
    against the image before's object), and overlap it well on a part of the
    images.  Measured: mean IoU 0.45 (own) against 0.21 (control, objects are
    near the centre); IoU >= 0.5 on 3 of 10 images (with 16 images and 300
    steps: 0.42 against 0.23, 6 of 16).  The issue's target (IoU >=
    0.5 on 80%) is not met by this net, and the masks say why: they sit on the
    corners of squares and triangles and the arms of crosses and stars, the
    parts the net's logit depends on, not on the whole object.  A smooth mask
    of the object's own shape reaches IoU > 0.8 on every image (the object
    blurred with sigma 3 and thresholded to its area), so the limit is where
    the net's evidence lies, not the mask family.
    """
    from jaxinterp.data import synthetic
    from jaxinterp.train import zoo

    net, params, _ = trained_smallcnn
    ex = synthetic.generate(jax.random.key(zoo.TEST_SEED), 10, variant="easy", size=64)
    gt = np.asarray(ex["mask"]) > 0.5
    full = mask_geometry((64, 64), 2, 6.0).full_shape
    areas = gt.mean(axis=(1, 2))[:, None] * 64 * 64 / (full[0] * full[1])
    fn = jax.jit(lambda p, x, t, a: extremal(net, p, x, t, areas=a, steps=200, step=2, sigma=6.0))
    masks = np.asarray(fn(params, ex["image"], ex["label"], areas)[0])[:, 0, 0] > 0.5

    def iou(m, g):
        return (m & g).sum((1, 2)) / np.maximum((m | g).sum((1, 2)), 1)

    own, control = iou(masks, gt), iou(masks, np.roll(gt, 1, axis=0))
    assert own.mean() >= 0.35 and own.mean() >= control.mean() + 0.1, (own, control)
    assert np.mean(own >= 0.5) >= 0.2, np.round(own, 2)


def test_extremal_saliency_is_the_smoothed_sum_over_areas(setup):
    """TorchRay's pointing-game map: sum over areas, Gaussian of 0.09 x side, zero padding (scipy)."""
    from scipy import ndimage

    from jaxinterp.perturbation import extremal_saliency

    net, params, x = setup
    masks, _ = run(net, params, x[:2], jnp.array([1, 2]), areas=(0.1, 0.3))
    maps = extremal_saliency(net, params, x[:2], jnp.array([1, 2]), areas=jnp.full((2, 2), jnp.array([0.1, 0.3])),
                             **SMALL)
    sigma = 0.09 * SIZE
    want = np.stack([ndimage.gaussian_filter(np.asarray(masks[i, 0]).sum(0).astype(np.float64), sigma,
                                             mode="constant", truncate=4.0) for i in range(2)])
    np.testing.assert_allclose(maps[:, 0], want, atol=1e-4)
    with pytest.raises(ValueError, match=r"^smooth"):
        extremal_saliency(net, params, x, jnp.array([0, 1, 2]), smooth=-1.0)
