"""Segmented: the host segmentation (capped, padded), apply == the method given the segments, and the
evaluation tables' path (explain_fn) on a batch sharded over 8 devices == one device."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from skimage import segmentation

from jaxinterp import attribution, evaluation
from jaxinterp.train.sharding import data_mesh, shard_batch

from _small_nets import NUM_CLASSES, SIZE, small_setup


@pytest.fixture(scope="module")
def setup():
    net, params, _ = small_setup()
    rng = np.random.default_rng(0)
    x = np.zeros((8, SIZE, SIZE, 3), np.float32)
    x[:, :, SIZE // 2:] = 1.0                                     # two halves, plus noise
    x = np.clip(x + rng.uniform(-0.05, 0.05, x.shape), 0, 1).astype(np.float32)
    t = jnp.asarray(rng.integers(0, NUM_CLASSES, (8, 2)))
    return net, params, jnp.asarray(x), t


def test_felzenszwalb_segments_are_skimage_labels_coarsened_to_the_cap(setup):
    _, _, x, _ = setup
    noisy = np.asarray(jax.random.uniform(jax.random.key(0), (2, SIZE, SIZE, 3)))
    seg = attribution.Segmented(attribution.lime, max_segments=3, min_size=2)
    labels = seg.prepare(noisy)
    assert labels.shape == (2, SIZE, SIZE) and labels.dtype == np.int32 and labels.max() < 3
    size = 2                                                       # the oracle: skimage, min_size doubled until it fits
    for n in range(2):
        size = 2
        ref = segmentation.felzenszwalb(noisy[n].astype(np.float64), scale=100, sigma=0.5, min_size=size, channel_axis=-1)
        while ref.max() + 1 > 3:
            size *= 2
            ref = segmentation.felzenszwalb(noisy[n].astype(np.float64), scale=100, sigma=0.5, min_size=size,
                                            channel_axis=-1)
        np.testing.assert_array_equal(labels[n], ref)
    halves = attribution.Segmented(attribution.lime, max_segments=4, min_size=4).prepare(x)
    right = np.arange(SIZE) >= SIZE // 2                            # no segment crosses the planted edge
    for h in halves:
        for k in np.unique(h):
            cols = right[np.nonzero(h == k)[1]]
            assert cols.all() or not cols.any()


def test_xrai_masks_are_padded_and_capped(setup):
    _, _, x, _ = setup
    full = attribution.xrai_segments(x[:2])
    masks = attribution.Segmented(attribution.xrai, segmenter="xrai", max_segments=full.shape[1] + 3).prepare(x[:2])
    assert masks.shape == (2, full.shape[1] + 3, SIZE, SIZE)
    np.testing.assert_array_equal(masks[:, :full.shape[1]], full)
    assert not masks[:, full.shape[1]:].any()
    assert attribution.Segmented(attribution.xrai, segmenter="xrai", max_segments=2).prepare(x[:2]).shape[1] == 2


def test_apply_is_the_method_given_the_segments_and_tables_shard(setup):
    net, params, x, t = setup
    seg = attribution.Segmented(attribution.feature_ablation, max_segments=4, min_size=4)
    labels = seg.prepare(x)
    direct = attribution.feature_ablation(net, params, x, t, segments=labels, num_features=4)
    np.testing.assert_allclose(seg(net, params, x, t), direct, rtol=1e-6, atol=1e-6)
    fn = evaluation.explain_fn(net, "feature ablation", seg, {})
    np.testing.assert_allclose(fn(params, x, t), direct, rtol=1e-6, atol=1e-6)
    xs, ts = shard_batch((x, t), data_mesh())
    sharded = fn(params, xs, ts)
    assert len(sharded.sharding.device_set) == 8
    np.testing.assert_allclose(sharded, direct, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kwargs, match", [({"segmenter": "slic"}, "^segmenter:"),
                                           ({"max_segments": 0}, "^max_segments:")])
def test_bad_input_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        attribution.Segmented(attribution.lime, **kwargs)
