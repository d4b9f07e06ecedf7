"""Feature ablation and Shapley value sampling over feature masks (superpixels).

Both score coalitions of an image's features (:mod:`jaxinterp.attribution._coalitions`):
the image with some segments kept and the others replaced by a baseline.  The
linear surrogates (Kernel SHAP, LIME) are in :mod:`jaxinterp.attribution.surrogates`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp.checks import as_array, check_int, is_concrete
from jaxinterp.nets import Net
from jaxinterp.targets import lift_images
from jaxinterp.attribution._coalitions import coalition_scores, paint, prepare

__all__ = ["feature_ablation", "shapley_sampling"]


def feature_ablation(net: Net, params, x: jax.Array, target, *, segments, num_features: int | None = None,
                     baseline=0.0, chunk_size: int | None = 256) -> jax.Array:
    """Feature ablation: the score drop when one feature (segment) is replaced by the baseline.

    For image x with features 0..F-1 (the segments) and target t::

        phi_t(f) = s_t(x) - s_t(x with feature f set to the baseline)
        map_t(i, j) = phi_t(segment of pixel (i, j))

    with s_t the class logit (or the unit's value).  This is Captum's
    ``FeatureAblation`` with ``feature_mask`` = the segments (one mask per
    image, broadcast over the colour channels) and ``baselines`` = baseline.
    A feature id with no pixel in an image gets 0.

    The F + 1 images of each image are scored ``chunk_size`` at a time inside
    the one compiled call; the result does not depend on ``chunk_size``.

    Pure and jit-compatible with ``net``, ``num_features`` and ``chunk_size``
    static (``num_features`` must be given under jit)::

        jax.jit(feature_ablation, static_argnames=("net", "num_features", "chunk_size"))

    Args:
      net: the net (static).
      params: its params.
      x: images (N, H, W, 3), float RGB in [0, 1].
      target: int class indices (N,) or (N, T), or a :class:`Unit` (N,) / (N, T).
      segments: int feature ids (N, H, W) in [0, F), one map per image
        (superpixels, a grid, ...); images may have different numbers of features.
      num_features: F, the static number of features (the largest over the
        batch); default: max id + 1 of concrete ``segments``.
      baseline: what removed features become: a grey level (default 0.0,
        black), a colour (3,) or images (H, W, 3) / (N, H, W, 3), in [0, 1].
      chunk_size: images per forward pass (default 256; None: all at once).

    Returns:
      maps: (N, T, H, W) in the dtype of x, constant on each segment; T = 1 for (N,) targets.

    Raises:
      ValueError: bad ``x`` or ``target``; ``segments`` not int (N, H, W) or
        with negative ids; ``num_features`` < 1, smaller than an id, or missing
        under jit; bad ``baseline``; ``chunk_size`` < 1.

    References:
      Zeiler and Fergus, "Visualizing and understanding convolutional
      networks", ECCV 2014 (occlusion of image regions); Captum's
      ``FeatureAblation`` (Kokhlikyan et al., 2020).
    """
    x, targets, base, segments, num_features = prepare(net, x, target, segments, num_features,
                                                       baseline, chunk_size)
    # rows 0..F-1: all features but f; row F: the image itself
    coalitions = jnp.concatenate([1 - jnp.eye(num_features, dtype=jnp.int32),
                                  jnp.ones((1, num_features), jnp.int32)])

    def one(inputs, ts):
        x1, b1, seg1 = inputs
        scores = coalition_scores(net, params, x1, b1, seg1, ts, coalitions, chunk_size)
        return paint((scores[-1] - scores[:-1]).T, seg1)

    return lift_images(one)((x, base, segments), targets)


def _check_permutations(permutations, num_features: int) -> jax.Array:
    """Permutations (P, F) of range(F) as int32; ValueError naming ``permutations``.

    The rows are checked to be permutations when concrete.
    """
    p = as_array(permutations, "permutations")
    if p.ndim != 2 or p.shape[1] != num_features or not p.shape[0]:
        raise ValueError(f"permutations: expected (P, {num_features}) with P >= 1, "
                         f"got shape {tuple(p.shape)}")
    if not jnp.issubdtype(p.dtype, jnp.integer):
        raise ValueError(f"permutations: expected integer feature ids, got dtype {p.dtype}")
    if is_concrete(p) and not np.array_equal(np.sort(np.asarray(p), axis=1),
                                             np.broadcast_to(np.arange(num_features), p.shape)):
        raise ValueError(f"permutations: every row must be a permutation of 0..{num_features - 1}")
    return jnp.asarray(p, jnp.int32)


def shapley_sampling(net: Net, params, x: jax.Array, target, key: jax.Array | None = None, *, segments,
                     num_features: int | None = None, permutations=None, n_samples: int = 25,
                     baseline=0.0, chunk_size: int | None = 256) -> jax.Array:
    """Shapley value sampling: the mean marginal contribution of each feature over random orderings.

    For a permutation pi of the F features, start from the baseline image and
    add the features one at a time in the order of pi; feature pi[k] is
    credited with the score change it causes::

        phi_t(f) = mean over the P permutations of
                   s_t(x on {features before f in pi} + f) - s_t(x on {features before f in pi})
        map_t(i, j) = phi_t(segment of pixel (i, j))

    (x on S: the image with the features of S kept and the others at the
    baseline).  Over all F! permutations this is the Shapley value of the game
    v(S) = s_t(x on S) (Strumbelj and Kononenko); sampling P of them is their
    estimator, with P F + 1 forward passes per image.  The phi sum to
    s_t(x) - s_t(baseline) for every sample (efficiency).

    These are the conventions of Captum's ``ShapleyValueSampling`` with
    ``feature_mask`` = the segments: one set of permutations for all images
    (Captum draws ``torch.randperm(F)`` per sample; ours are drawn from
    ``key`` or passed in).  A feature id with no pixel in an image gets 0.

    Pure and jit-compatible with ``net``, ``num_features``, ``n_samples`` and
    ``chunk_size`` static::

        jax.jit(shapley_sampling, static_argnames=("net", "num_features", "n_samples", "chunk_size"))

    Args:
      net: the net (static).
      params: its params.
      x: images (N, H, W, 3), float RGB in [0, 1].
      target: int class indices (N,) or (N, T), or a :class:`Unit` (N,) / (N, T).
      key: ``jax.random.key`` drawing ``n_samples`` permutations (needed unless
        ``permutations`` is given).
      segments: int feature ids (N, H, W) in [0, F) (see :func:`feature_ablation`).
      num_features: F (static); default: max id + 1 of concrete ``segments``.
      permutations: int (P, F), each row an ordering of 0..F-1, used instead
        of drawing; all F! rows give the exact Shapley values.
      n_samples: number of permutations to draw (default 25, Captum's).
      baseline: what absent features are: a grey level (default 0.0), a colour
        (3,) or images (H, W, 3) / (N, H, W, 3), in [0, 1].
      chunk_size: images per forward pass (default 256; None: all at once).

    Returns:
      maps: (N, T, H, W) in the dtype of x, constant on each segment.

    Raises:
      ValueError: as :func:`feature_ablation`; neither ``key`` nor
        ``permutations``; ``permutations`` not (P, F) permutations;
        ``n_samples`` < 1.

    References:
      Strumbelj and Kononenko, "An efficient explanation of individual
      classifications using game theory", JMLR 2010; "Explaining prediction
      models and individual predictions with feature contributions", KAIS 2014.
    """
    x, targets, base, segments, num_features = prepare(net, x, target, segments, num_features,
                                                       baseline, chunk_size)
    if permutations is None:
        n_samples = check_int(n_samples, "n_samples")
        if key is None:
            raise ValueError("key: a jax.random.key is needed to draw the permutations "
                             "(or pass permutations=)")
        keys = jax.random.split(key, n_samples)
        permutations = jax.vmap(lambda k: jax.random.permutation(k, num_features))(keys)
    permutations = _check_permutations(permutations, num_features)
    p = permutations.shape[0]
    rank = jnp.argsort(permutations, axis=1)                                 # rank[p, f]: position of f
    steps = jnp.arange(num_features)
    grown = (rank[:, None, :] <= steps[None, :, None]).astype(jnp.int32)    # (P, F steps, F)
    coalitions = jnp.concatenate([jnp.zeros((1, num_features), jnp.int32),
                                  grown.reshape(p * num_features, num_features)])

    def one(inputs, ts):
        x1, b1, seg1 = inputs
        scores = coalition_scores(net, params, x1, b1, seg1, ts, coalitions, chunk_size)
        grown_scores = scores[1:].reshape(p, num_features, -1)             # (P, F, T)
        before = jnp.concatenate([jnp.broadcast_to(scores[0], (p, 1, scores.shape[1])),
                                  grown_scores[:, :-1]], axis=1)
        gains = grown_scores - before                                       # gain of pi[k] at step k
        phi = jnp.take_along_axis(gains, rank[:, :, None], axis=1).mean(0)  # (F, T)
        return paint(phi.T, seg1)

    return lift_images(one)((x, base, segments), targets)
