"""TCAV (Kim et al. 2018): testing a class's sensitivity to a concept with concept activation vectors.

A concept is a set of images (striped textures, say).  At a split point ``layer``:

1. a concept activation vector (CAV) is the normal of a linear classifier that
   separates the activations of the concept's images from those of random
   (counterexample) images, pointing towards the concept
   (:func:`concept_activation_vectors`; the classifier is the project's linear
   probe, :func:`jaxinterp.train.metrics.fit_linear_probe`);
2. the conceptual sensitivity of an input to the CAV v is the directional
   derivative ``S = grad_a s_t(a) . v`` of the class score at the input's
   activation a (:func:`directional_derivatives`);
3. the TCAV score of a class is the fraction of its inputs with S > 0
   (:func:`tcav`);
4. a concept is significant when the TCAV scores of several CAVs (one per random
   set) differ from those of random-vs-random CAVs by a two-sided t-test
   (:func:`t_test`).

Everything is pure JAX: the CAVs of R experiments are fitted under one ``vmap``
and the derivatives of N inputs x T targets along R CAVs come from one compiled call::

    cavs = concept_activation_vectors(net, params, stripes, randoms[:R], layer="features.29")
    null = concept_activation_vectors(net, params, randoms[R:2 * R], randoms[:R], layer="features.29")
    scores = tcav(net, params, zebras, jnp.full(len(zebras), ZEBRA), jnp.concatenate([cavs.vector, null.vector]),
                  layer="features.29")                              # sign_count (1, 2R)
    t, p = t_test(scores.sign_count[0, :R], scores.sign_count[0, R:])   # significant if p < 0.05
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxinterp.checks import check_images, check_layer
from jaxinterp.nets import Net
from jaxinterp.targets import check_targets, input_gradient, lift
from jaxinterp.train.metrics import fit_linear_probe

__all__ = ["CAV", "TCAVScores", "fit_cav", "concept_activation_vectors", "cav_accuracy",
           "directional_derivatives", "tcav", "t_test"]


class CAV(NamedTuple):
    """Concept activation vectors: the unit normals of linear concept classifiers.

    The classifier says "concept" where ``sum(a * vector) + offset > 0`` for an
    activation a.  With R experiments the fields have a leading (R,) axis.

    Attributes:
      vector: (R, *activation shape) unit vectors, pointing towards the concept.
      offset: (R,) the classifiers' offsets (in units of the normal's length).
    """

    vector: jax.Array
    offset: jax.Array


class TCAVScores(NamedTuple):
    """TCAV scores of T targets (classes) for R CAVs.

    Attributes:
      sign_count: (T, R) fraction of the N inputs whose directional derivative is > 0
        (the TCAV score of Kim et al.; Captum's ``sign_count``).
      magnitude: (T, R) mean directional derivative over the N inputs (Captum 0.9's
        ``magnitude``, computed as ``torch.mean`` of the derivatives).
      derivatives: (N, T, R) the directional derivatives S.
    """

    sign_count: jax.Array
    magnitude: jax.Array
    derivatives: jax.Array


def fit_cav(concept: jax.Array, counterexamples: jax.Array, *, l2: float = 1e-4,
            max_iters: int = 1000) -> CAV:
    """One CAV from the activations of concept and counterexample (random) images.

    A logistic regression (:func:`jaxinterp.train.metrics.fit_linear_probe`, two
    classes, on features standardised by their mean and std, L2 weight ``l2``) is
    trained to tell the concept's activations (label 1) from the others (label 0).
    Its decision function in activation space is ``w . a + c`` with
    ``w = (W_1 - W_0) / std``; the CAV is ``w / |w|``.  The probe fits in float32.

    Pure and jittable (``max_iters`` static); vmap it over experiments.

    Args:
      concept: (M, ...) activations of the concept's images (any trailing shape).
      counterexamples: (M', ...) activations of random images, same trailing shape.
      l2, max_iters: as :func:`~jaxinterp.train.metrics.fit_linear_probe`.

    Returns:
      :class:`CAV` with vector (...) and offset ().
    """
    shape = concept.shape[1:]
    features = jnp.concatenate([concept.reshape(concept.shape[0], -1),
                                counterexamples.reshape(counterexamples.shape[0], -1)])
    labels = jnp.concatenate([jnp.ones(concept.shape[0], jnp.int32),
                              jnp.zeros(counterexamples.shape[0], jnp.int32)])
    probe = fit_linear_probe(features, labels, 2, l2=l2, max_iters=max_iters)
    w = (probe.kernel[:, 1] - probe.kernel[:, 0]) / probe.std
    c = probe.bias[1] - probe.bias[0] - jnp.dot(w, probe.mean)
    norm = jnp.linalg.norm(w)
    return CAV((w / norm).reshape(shape), c / norm)


def _check_sets(images, arg: str, n_experiments: int | None = None) -> jax.Array:
    """Images (M, H, W, 3) or (R, M, H, W, 3) as (R or 1, M, H, W, 3)."""
    if not hasattr(images, "ndim") or images.ndim not in (4, 5):
        raise ValueError(f"{arg}: expected images (M, H, W, 3) or (R, M, H, W, 3), got "
                         f"{getattr(images, 'shape', type(images).__name__)}")
    sets = images if images.ndim == 5 else images[None]
    check_images(sets[0], arg)
    if sets.shape[1] < 1:
        raise ValueError(f"{arg}: expected at least one image per set, got shape {tuple(images.shape)}")
    if n_experiments is not None and sets.shape[0] not in (1, n_experiments):
        raise ValueError(f"{arg}: expected 1 or {n_experiments} sets (as the other argument), "
                         f"got {sets.shape[0]}")
    return sets


def concept_activation_vectors(net: Net, params, concept: jax.Array, counterexamples: jax.Array, *,
                               layer: str, l2: float = 1e-4, max_iters: int = 1000) -> CAV:
    """CAVs at ``layer`` for R experiments: concept images against random images.

    Each experiment r fits :func:`fit_cav` to the activations at ``layer`` of
    ``concept[r]`` against those of ``counterexamples[r]``; a set given without
    the leading R axis is shared by all experiments.  The paper's experiments
    are one concept set against R random sets (for the t-test, random set i
    against random set j too); several random splits of a concept set are R
    concept sets.  Random-vs-random CAVs are this function with random sets in
    both arguments.  All experiments are fitted under one ``vmap``.

    Pure and jit-compatible with ``net``, ``layer`` and ``max_iters`` static.

    Args:
      net, params: the net.
      concept: images (M, H, W, 3) or (R, M, H, W, 3) in [0, 1].
      counterexamples: images (M', H, W, 3) or (R, M', H, W, 3) in [0, 1].
      layer: split point whose activations the classifier separates.
      l2, max_iters: as :func:`fit_cav`.

    Returns:
      :class:`CAV` with vector (R, *activation shape) and offset (R,).

    Raises:
      ValueError naming the argument: image sets not (M, H, W, 3) / (R, M, H, W,
      3) floating, or with different R (other than 1); unknown ``layer``.
    """
    check_layer(net, layer)
    counter = _check_sets(counterexamples, "counterexamples")
    concept = _check_sets(concept, "concept", counter.shape[0])
    r = max(concept.shape[0], counter.shape[0])

    def activations(sets):
        a = net.apply(params, sets.reshape(-1, *sets.shape[2:]), stop=layer)
        return jnp.broadcast_to(a.reshape(*sets.shape[:2], *a.shape[1:]), (r, sets.shape[1], *a.shape[1:]))

    fit = jax.vmap(lambda c, n: fit_cav(c, n, l2=l2, max_iters=max_iters))
    return fit(activations(concept), activations(counter))


def cav_accuracy(cav: CAV, concept: jax.Array, counterexamples: jax.Array) -> jax.Array:
    """Accuracy of the CAVs' classifiers on held-out activations (the paper keeps CAVs above chance).

    Args:
      cav: :class:`CAV` with vector (R, ...) and offset (R,).
      concept: (M, ...) or (R, M, ...) activations of concept images.
      counterexamples: (M', ...) or (R, M', ...) activations of random images.

    Returns:
      (R,) the fraction of the M + M' activations classified correctly.
    """
    v = cav.vector.reshape(cav.vector.shape[0], -1)

    def decision(a):                      # (M, ...) or (R, M, ...) -> (R, M)
        a = a if a.ndim == cav.vector.ndim + 1 else a[None]
        flat = jnp.broadcast_to(a.reshape(a.shape[0], a.shape[1], -1), (v.shape[0], a.shape[1], v.shape[1]))
        return jnp.einsum("rmd,rd->rm", flat, v.astype(flat.dtype)) + cav.offset[:, None]

    hits = jnp.concatenate([decision(concept) > 0, decision(counterexamples) <= 0], axis=1)
    return jnp.mean(hits, axis=1)


def directional_derivatives(net: Net, params, x: jax.Array, target, cavs: jax.Array, *,
                            layer: str) -> jax.Array:
    """Conceptual sensitivities: the derivative of each target's score along each CAV at ``layer``.

    ``S[n, t, r] = sum(grad_a s_t(a_n) * cavs[r])`` with a_n the activation of
    image n at ``layer``: one backward pass per image and target, dotted with all
    R CAVs.  Captum's TCAV computes the same product of its ``LayerGradientXActivation``
    gradients (``multiply_by_inputs=False``) with the CAVs.

    Pure and jit-compatible with ``net`` and ``layer`` static.

    Args:
      net, params, x: the net and images (N, H, W, 3) in [0, 1].
      target: class indices (N,) or (N, T), or a :class:`~jaxinterp.targets.Unit` after ``layer``.
      cavs: (R, *activation shape) directions at ``layer`` (``CAV.vector``).
      layer: split point of the CAVs.

    Returns:
      (N, T, R) directional derivatives.

    Raises:
      ValueError naming the argument: ``x``; ``target``; unknown ``layer``;
      ``cavs`` not (R, *activation shape).
    """
    x = check_images(x)
    check_layer(net, layer)
    targets = check_targets(target, net, x.shape[0], x.shape[1:3], after=layer)
    shape = tuple(net.activation_shape(layer, x.shape[1:3]))
    if not hasattr(cavs, "shape") or cavs.ndim < 1 or tuple(cavs.shape[1:]) != shape or not cavs.shape[0]:
        raise ValueError(f"cavs: expected (R, {', '.join(map(str, shape))}) directions at {layer!r}, "
                         f"got {getattr(cavs, 'shape', type(cavs).__name__)}")
    flat = cavs.reshape(cavs.shape[0], -1)

    def one(a1, t):
        g = input_gradient(net, params, a1, t, start=layer)
        return jnp.dot(flat.astype(g.dtype), g.reshape(-1), precision=jax.lax.Precision.HIGHEST)

    return lift(one)(net.apply(params, x, stop=layer), targets)


def tcav(net: Net, params, x: jax.Array, target, cavs: jax.Array, *, layer: str) -> TCAVScores:
    """TCAV scores: for each target, the fraction of the inputs whose score grows along each CAV.

    ``sign_count[t, r] = mean_n 1[S[n, t, r] > 0]`` and ``magnitude[t, r] =
    mean_n S[n, t, r]`` with S the :func:`directional_derivatives`.  The inputs
    x should be images of the class explained (the paper's TCAV_{Q, C, k, l}
    takes the inputs of class k); a target column is one class for all N
    inputs, as Captum's ``TCAV.interpret(inputs, experimental_sets, target)``.

    Captum 0.9 documents its ``magnitude`` as sum(S+)/sum(|S|) but computes
    the mean of S; here it is the mean, as Captum's code (sum(S+)/sum(|S|)
    follows from ``derivatives``).

    Pure and jit-compatible with ``net`` and ``layer`` static.  Options, shapes
    and errors as :func:`directional_derivatives`.

    Returns:
      :class:`TCAVScores`: sign_count (T, R), magnitude (T, R), derivatives (N, T, R).

    References:
      Kim, Wattenberg, Gilmer, Cai, Wexler, Viegas and Sayres, "Interpretability
      beyond feature attribution: quantitative testing with concept activation
      vectors (TCAV)", ICML 2018.
    """
    s = directional_derivatives(net, params, x, target, cavs, layer=layer)
    return TCAVScores(jnp.mean((s > 0).astype(s.dtype), axis=0), jnp.mean(s, axis=0), s)


def t_test(a: jax.Array, b: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Two-sided Student t-test of equal means of two samples (pooled variance), as ``scipy.stats.ttest_ind``.

    TCAV's significance test: ``a`` the TCAV scores of a concept's CAVs (one per
    random set), ``b`` those of random-vs-random CAVs; the concept is
    significant when p is small (Kim et al. use p < 0.05, with Bonferroni
    correction over concepts).  ``t = (mean a - mean b) / (s sqrt(1/n_a + 1/n_b))``
    with s^2 the pooled unbiased variance, df = n_a + n_b - 2, and
    ``p = I_{df / (df + t^2)}(df / 2, 1 / 2)`` (the regularised incomplete beta
    function).  Identical samples of zero variance give t = nan, as scipy.

    Args:
      a: (n_a,) scores; b: (n_b,) scores; n_a + n_b > 2.

    Returns:
      (t, p), scalars.

    Raises:
      ValueError naming the argument: not 1-D, or fewer than 3 scores together.
    """
    for arg, v in (("a", a), ("b", b)):
        if not hasattr(v, "ndim") or v.ndim != 1 or v.shape[0] < 1:
            raise ValueError(f"{arg}: expected a non-empty 1-D array of scores, got "
                             f"{getattr(v, 'shape', type(v).__name__)}")
    na, nb = a.shape[0], b.shape[0]
    if na + nb < 3:
        raise ValueError(f"b: expected at least 3 scores in a and b together, got {na} + {nb}")
    a = jnp.asarray(a, jnp.result_type(float))
    b = jnp.asarray(b, a.dtype)
    df = na + nb - 2
    pooled = (jnp.sum((a - a.mean()) ** 2) + jnp.sum((b - b.mean()) ** 2)) / df
    t = (a.mean() - b.mean()) / jnp.sqrt(pooled * (1.0 / na + 1.0 / nb))
    p = jax.scipy.special.betainc(df / 2.0, 0.5, df / (df + t * t))
    return t, p
