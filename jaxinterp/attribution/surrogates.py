"""Linear surrogates over feature masks: Kernel SHAP and LIME.

Both score S coalitions of an image's features (:mod:`jaxinterp.attribution._coalitions`)
and fit a weighted linear model of the scores on the 0/1 coalition vectors;
its coefficients are the features' attributions.  The fit is a weighted
least-squares problem solved on the device (``jnp.linalg.lstsq``), in float64
when jax's x64 mode is on.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.scipy.special import gammaln

from jaxinterp.checks import check_choice, check_int, check_positive_float, check_real
from jaxinterp.nets import Net
from jaxinterp.targets import lift_images, target_scores
from jaxinterp.attribution._coalitions import (check_binary, coalition_map, paint, prepare, present_features,
                                               wide_dtype)

__all__ = ["kernel_shap", "lime", "WEIGHTINGS", "END_WEIGHT"]

WEIGHTINGS = ("sampled", "kernel")
"""Sample weights of :func:`kernel_shap`: ``sampled`` (coalitions drawn from the
Shapley kernel, weight 1 each: Captum's) or ``kernel`` (each coalition weighted
by the Shapley kernel: for an enumeration of all coalitions)."""

END_WEIGHT = 1e6
"""Weight of the empty and the full coalition in :func:`kernel_shap` (Captum's
``inf_weight``): it pins the fit to s(baseline) and s(x)."""


def weighted_linear_fit(z: jax.Array, y: jax.Array, w: jax.Array, alpha: float = 0.0) -> jax.Array:
    """Coefficients (F, T) of the weighted (ridge) regression of y on z with an unpenalised intercept.

    Minimises sum_s w_s |y_s - c - z_s b|^2 + alpha |b|^2 over b (F, T) and c (T,),
    as scikit-learn's ``LinearRegression`` (alpha = 0) and ``Ridge`` do with
    ``sample_weight``: z and y are centred at their w-weighted means, the rows
    scaled by sqrt(w), and the (ridge-augmented) system solved by
    ``jnp.linalg.lstsq``: the minimum-norm solution, so an all-zero column
    gets coefficient 0.

    Args:
      z: (S, F) regressors; y: (S, T) targets; w: (S,) weights > 0; alpha >= 0.

    Returns:
      b: (F, T).
    """
    wn = w / jnp.sum(w)
    root = jnp.sqrt(w)[:, None]
    a = root * (z - wn @ z)
    rhs = root * (y - wn @ y)
    if alpha:
        f = z.shape[1]
        a = jnp.concatenate([a, jnp.sqrt(jnp.asarray(alpha, a.dtype)) * jnp.eye(f, dtype=a.dtype)])
        rhs = jnp.concatenate([rhs, jnp.zeros((f, rhs.shape[1]), rhs.dtype)])
    return jnp.linalg.lstsq(a, rhs)[0]


def kernel_shap_samples(key: jax.Array, n_samples: int, num_features: int) -> jax.Array:
    """Captum's Kernel SHAP coalitions (S, F) int32: the full one, the empty one, then S - 2 draws.

    Each draw picks a size k in 1..F-1 with probability proportional to
    (F - 1) / (k (F - k)), then k features uniformly (the k largest of F normal
    draws).  Each coalition z is thus drawn with probability proportional to
    the Shapley kernel (F - 1) / (C(F, k) k (F - k)).  The draws are float32,
    so the coalitions of a key do not depend on jax's x64 mode.
    """
    k = jnp.arange(1, num_features)
    logits = jnp.log((num_features - 1) / (k * (num_features - k))).astype(jnp.float32)

    def draw(key):
        k_size, k_pick = jax.random.split(key)
        size = 1 + jax.random.categorical(k_size, logits)
        r = jax.random.normal(k_pick, (num_features,), jnp.float32)
        return (r > jnp.sort(r)[num_features - size - 1]).astype(jnp.int32)

    ends = jnp.stack([jnp.ones(num_features, jnp.int32), jnp.zeros(num_features, jnp.int32)])
    return jnp.concatenate([ends, jax.vmap(draw)(jax.random.split(key, n_samples - 2))])


def shapley_kernel_weights(z: jax.Array, present: jax.Array, weighting: str, dtype) -> jax.Array:
    """Sample weights (S,) in ``dtype`` of coalitions z (S, F) over the M present features (F,) bool.

    ``END_WEIGHT`` for coalitions holding none or all of them; otherwise 1
    (``sampled``) or the Shapley kernel (M - 1) / (C(M, k) k (M - k)) with k
    the coalition's number of present features (``kernel``).
    """
    m = jnp.sum(present).astype(dtype)
    k = jnp.sum(z * present, axis=1).astype(m.dtype)
    end = (k == 0) | (k == m)
    if weighting == "sampled":
        inner = jnp.ones_like(k)
    else:
        log_binom = gammaln(m + 1) - gammaln(k + 1) - gammaln(m - k + 1)
        inner = (m - 1) / (jnp.exp(log_binom) * jnp.where(end, 1, k * (m - k)))
    return jnp.where(end, END_WEIGHT, inner)


def _draw_or_check(samples, key, n_samples: int, num_features: int, draw) -> jax.Array:
    if samples is None:
        n_samples = check_int(n_samples, "n_samples")
        if key is None:
            raise ValueError("key: a jax.random.key is needed to draw the samples (or pass samples=)")
        samples = draw(key, n_samples, num_features)
    return check_binary(samples, "samples", num_features)


def kernel_shap(net: Net, params, x: jax.Array, target, key: jax.Array | None = None, *, segments,
                num_features: int | None = None, samples=None, n_samples: int = 25,
                weighting: str = "sampled", baseline=0.0, chunk_size: int | None = 256) -> jax.Array:
    """Kernel SHAP: Shapley values as the coefficients of a kernel-weighted linear fit of coalition scores.

    For S coalitions z_s (0/1 over the F features; x on z: the image with the
    features of z kept, the others at the baseline) the scores y_s = s_t(x on
    z_s) are fitted by c + z_s . phi in weighted least squares; phi_t(f) is
    painted onto feature f's pixels.  With all 2^F coalitions weighted by the
    Shapley kernel (M - 1) / (C(M, |z|) |z| (M - |z|)) and the empty and full
    coalitions forced, phi are exactly the Shapley values of v(z) = s_t(x on
    z) (Lundberg and Lee 2017, Theorem 2).

    Captum's ``KernelShap`` conventions are the default: coalitions are drawn
    *from* the kernel (:func:`kernel_shap_samples`: the full and the empty one
    first) and weigh 1 each (``weighting='sampled'``), the full and empty
    ones ``END_WEIGHT`` = 1e6 (its ``inf_weight``: the constraints are soft),
    and the fit is a linear regression with an intercept (Captum's
    ``SkLearnLinearRegression``).  Pass
    ``weighting='kernel'`` with an enumeration of coalitions.  The regression
    runs on the device in float64 when x64 is on (Captum fits in float32).

    M counts the features present in the image: ids with no pixel are dropped
    from the fit (coefficient 0).  The coalitions are the same for every image
    (Captum draws them anew for each) and drawn over all F ids, so for an
    image with fewer features their sizes follow the kernel only approximately.

    Pure and jit-compatible with ``net``, ``num_features``, ``n_samples``,
    ``weighting`` and ``chunk_size`` static.

    Args:
      net, params, x, target, segments, num_features, baseline, chunk_size: as
        :func:`~jaxinterp.attribution.feature_ablation`.
      key: ``jax.random.key`` drawing ``n_samples`` coalitions (needed unless
        ``samples`` is given).
      samples: 0/1 coalitions (S, F) used instead of drawing.
      n_samples: coalitions to draw, the full and empty ones included (default 25, Captum's).
      weighting: ``'sampled'`` (default) or ``'kernel'`` (:data:`WEIGHTINGS`).

    Returns:
      maps: (N, T, H, W) in the dtype of x, constant on each segment.

    Raises:
      ValueError: as :func:`~jaxinterp.attribution.feature_ablation`; neither
        ``key`` nor ``samples``; ``samples`` not 0/1 (S, F); ``n_samples`` < 2;
        bad ``weighting``; fewer than 2 features to draw coalitions from.

    References:
      Lundberg and Lee, "A unified approach to interpreting model
      predictions", NeurIPS 2017.
    """
    x, targets, base, segments, num_features = prepare(net, x, target, segments, num_features,
                                                       baseline, chunk_size)
    check_choice(weighting, "weighting", WEIGHTINGS)
    if samples is None:
        if check_int(n_samples, "n_samples", minimum=2) > 2 and num_features < 2:
            raise ValueError("num_features: drawing Kernel SHAP coalitions needs at least 2 features")
    z = _draw_or_check(samples, key, n_samples, num_features, kernel_shap_samples)
    wide = wide_dtype(x.dtype)

    def one(inputs, ts):
        x1, b1, seg1 = inputs
        scores = coalition_map(lambda a: target_scores(net, params, a[None], ts)[0], x1, b1, seg1, z,
                               chunk_size)
        present = present_features(seg1, num_features)
        zp = (z * present).astype(wide)
        w = shapley_kernel_weights(z, present, weighting, wide)
        phi = weighted_linear_fit(zp, scores.astype(wide), w)
        return paint(phi.T.astype(x.dtype), seg1)

    return lift_images(one)((x, base, segments), targets)


def lime_samples(key: jax.Array, n_samples: int, num_features: int) -> jax.Array:
    """Captum's LIME coalitions (S, F) int32: every feature kept with probability 1/2 (float32 draws)."""
    return (jax.random.uniform(key, (n_samples, num_features), jnp.float32) < 0.5).astype(jnp.int32)


def cosine_similarity_kernel(x1: jax.Array, a: jax.Array, kernel_width: float) -> jax.Array:
    """exp(-d^2 / (2 width^2)) with d = 1 - cos(x1, a) over all pixels and channels (Captum's default)."""
    u, v = x1.ravel(), a.ravel()
    cos = jnp.dot(u, v) / jnp.maximum(jnp.linalg.norm(u) * jnp.linalg.norm(v), 1e-8)
    return jnp.exp(-((1 - cos) ** 2) / (2 * kernel_width ** 2))


def lime(net: Net, params, x: jax.Array, target, key: jax.Array | None = None, *, segments,
         num_features: int | None = None, samples=None, n_samples: int = 25, kernel_width: float = 1.0,
         alpha: float = 1.0, baseline=0.0, chunk_size: int | None = 256) -> jax.Array:
    """LIME over superpixels: a locally weighted linear model of the coalition scores.

    For S coalitions z_s (0/1 over the F features; x on z: the image with the
    features of z kept, the others at the baseline), with scores y_s = s_t(x
    on z_s) and similarities::

        w_s = exp(-d_s^2 / (2 kernel_width^2)),   d_s = 1 - cos(x, x on z_s)

    (cosine over all pixels and channels), phi_t minimises
    sum_s w_s (y_s - c - z_s . phi)^2 + alpha |phi|^2 and is painted onto
    each feature's pixels (Ribeiro et al. 2016).

    The sampling (each feature kept with probability 1/2,
    :func:`lime_samples`), the similarity and ``kernel_width`` = 1 are
    Captum's ``Lime`` defaults.  Its default interpretable model differs:
    Captum fits sklearn's ``Lasso(alpha=0.01)`` (an L1 penalty, solved
    iteratively); ours is the closed-form ridge regression, solved on the
    device (float64 when x64 is on), equal to Captum's ``Lime`` with
    ``interpretable_model=SkLearnRidge(alpha=alpha)`` (or
    ``SkLearnLinearRegression()`` for alpha = 0).  Ribeiro et al.'s reference
    code also fits a ridge with alpha = 1, the default here.  Ids with no
    pixel in an image get coefficient 0.  The coalitions are the same for
    every image (Captum draws them anew for each).

    Pure and jit-compatible with ``net``, ``num_features``, ``n_samples``,
    ``kernel_width``, ``alpha`` and ``chunk_size`` static.

    Args:
      net, params, x, target, segments, num_features, baseline, chunk_size: as
        :func:`~jaxinterp.attribution.feature_ablation`.
      key: ``jax.random.key`` drawing ``n_samples`` coalitions (needed unless
        ``samples`` is given).
      samples: 0/1 coalitions (S, F) used instead of drawing.
      n_samples: coalitions to draw (default 25, Captum's).
      kernel_width: width of the exponential kernel on the cosine distance (default 1.0).
      alpha: ridge penalty >= 0 on the coefficients (default 1.0; 0: least squares).

    Returns:
      maps: (N, T, H, W) in the dtype of x, constant on each segment.

    Raises:
      ValueError: as :func:`~jaxinterp.attribution.feature_ablation`; neither
        ``key`` nor ``samples``; ``samples`` not 0/1 (S, F); ``n_samples`` < 1;
        ``kernel_width`` not > 0; ``alpha`` negative.

    References:
      Ribeiro, Singh and Guestrin, "'Why should I trust you?': explaining the
      predictions of any classifier", KDD 2016.
    """
    x, targets, base, segments, num_features = prepare(net, x, target, segments, num_features,
                                                       baseline, chunk_size)
    kernel_width = check_positive_float(kernel_width, "kernel_width")
    alpha = check_real(alpha, "alpha", minimum=0)
    z = _draw_or_check(samples, key, n_samples, num_features, lime_samples)
    wide = wide_dtype(x.dtype)

    def one(inputs, ts):
        x1, b1, seg1 = inputs
        def score_and_similarity(a):
            return target_scores(net, params, a[None], ts)[0], cosine_similarity_kernel(x1, a, kernel_width)

        scores, sims = coalition_map(score_and_similarity, x1, b1, seg1, z, chunk_size)
        zp = (z * present_features(seg1, num_features)).astype(wide)
        phi = weighted_linear_fit(zp, scores.astype(wide), sims.astype(wide), float(alpha))
        return paint(phi.T.astype(x.dtype), seg1)

    return lift_images(one)((x, base, segments), targets)
