"""The rows of the methods after the peers (jaxinterp.demo.methods): slugs, and every row through the
evaluation tables' path (explain_fn) on a tiny net: (N, T, H, W), finite, one compiled program each."""

import jax.numpy as jnp
import numpy as np
import pytest

from jaxinterp import evaluation
from jaxinterp.demo import methods, photos

from tests.attribution._small_nets import NUM_CLASSES, SIZE, small_setup


def test_full_tables_add_every_peer_method_with_its_own_slug():
    first = [evaluation.method_slug(t) for t, _, _ in methods.smallcnn_methods(True)]
    peers = [evaluation.method_slug(t) for t, _, _ in methods.peer_methods(64, "features.10", samples=8)]
    assert len(set(peers)) == len(peers) == 20 and not set(peers) & set(first)
    assert {"grad_cam_plus_plus", "deeplift", "xrai", "lime", "fullgrad"} <= set(peers)
    assert [evaluation.method_slug(t) for t, _, _ in methods.smallcnn_methods(False)] == first + peers
    full, quick = ([t for t, _, _ in photos.attribution_methods(q)] for q in (False, True))
    left_out = set(photos.QUICK_LEFT_OUT)
    assert left_out <= set(full[:-20]) and not left_out & set(quick) and len(quick) == len(full) - 20 - len(left_out)


@pytest.mark.slow
def test_every_row_runs_through_explain_fn():
    net, params, x = small_setup()
    x, t = x[:2], jnp.asarray([[1], [3]]) % NUM_CLASSES
    for title, method, options in methods.peer_methods(SIZE, "features.10", samples=2, max_segments=4,
                                                       min_size=4):
        maps = np.asarray(evaluation.explain_fn(net, title, method, options)(params, x, t))
        assert maps.shape == (2, 1, SIZE, SIZE), title
        assert np.isfinite(maps).all() and np.abs(maps).max() > 0, title
