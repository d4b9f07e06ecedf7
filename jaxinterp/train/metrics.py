"""Metrics of a representation or a clustering against true labels (host-side, NumPy float64).

    nmi(cluster_labels, classes)       # normalised mutual information in [0, 1]
    ari(cluster_labels, classes)       # adjusted Rand index, 1 = same partition, ~0 = chance
    purity(cluster_labels, classes)    # share of items in their cluster's majority class
    knn_accuracy(train_features, train_labels, test_features, test_labels, k=20)
    linear_probe(train_features, train_labels, test_features, test_labels)   # logistic regression

These run on concrete arrays once per evaluation (not inside a trace), so they
are plain NumPy; NMI and ARI follow scikit-learn's definitions
(``normalized_mutual_info_score`` with the arithmetic mean, as SeLa reports;
``adjusted_rand_score``).  The linear probe is the exception: its fit
(:func:`fit_linear_probe`) is a pure, jittable JAX function, the whole L-BFGS
loop in one ``lax.while_loop``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

__all__ = ["contingency", "nmi", "ari", "purity", "knn_accuracy", "LinearProbe", "fit_linear_probe", "linear_probe"]


def _labels(a, name: str) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != 1 or a.size == 0 or not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"{name}: expected a non-empty 1-D int array, got shape {a.shape} {a.dtype}")
    return a


def contingency(a, b) -> np.ndarray:
    """Counts n_ij of items with label i in ``a`` and j in ``b`` (over the labels that occur)."""
    a, b = _labels(a, "a"), _labels(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"b: expected the shape of a {a.shape}, got {b.shape}")
    _, ia = np.unique(a, return_inverse=True)
    _, ib = np.unique(b, return_inverse=True)
    table = np.zeros((ia.max() + 1, ib.max() + 1), np.int64)
    np.add.at(table, (ia, ib), 1)
    return table


def _entropy(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def nmi(a, b) -> float:
    """Normalised mutual information ``I(a; b) / ((H(a) + H(b)) / 2)`` (nats cancel), in [0, 1].

    Args:
      a, b: (N,) int labels of two partitions of the same N items.

    Returns:
      A float; 1.0 when both partitions are a single cluster (sklearn's convention).
    """
    n = contingency(a, b).astype(np.float64)
    total = n.sum()
    ha, hb = _entropy(n.sum(1)), _entropy(n.sum(0))
    if ha == 0 and hb == 0:
        return 1.0
    pij = n / total
    outer = np.outer(n.sum(1), n.sum(0)) / total ** 2
    nz = pij > 0
    mi = float((pij[nz] * np.log(pij[nz] / outer[nz])).sum())
    return float(np.clip(mi / ((ha + hb) / 2), 0.0, 1.0))


def ari(a, b) -> float:
    """Adjusted Rand index (Hubert and Arabie 1985): (RI - E[RI]) / (max RI - E[RI]) on pair counts.

    Args:
      a, b: (N,) int labels of two partitions of the same N items.

    Returns:
      A float <= 1; 1.0 for identical partitions (also when both are trivial).
    """
    n = contingency(a, b).astype(np.float64)
    comb = lambda x: x * (x - 1) / 2  # noqa: E731
    index = comb(n).sum()
    sa, sb = comb(n.sum(1)).sum(), comb(n.sum(0)).sum()
    expected = sa * sb / comb(n.sum()) if n.sum() > 1 else 0.0
    top = (sa + sb) / 2
    if top == expected:
        return 1.0
    return float((index - expected) / (top - expected))


def purity(clusters, classes) -> float:
    """Cluster purity (Manning et al. 2008, Sec. 16.3): ``sum_k max_j n_kj / N``.

    Each cluster is credited with its most frequent class; purity is the share of
    items that fall in their cluster's majority class.  1.0 for a perfect
    clustering, but also for one cluster per item: read it with NMI / ARI and the
    number of clusters (a clustering into K equal clusters of C balanced classes
    scores about 1 / C at chance when K is small).

    Args:
      clusters: (N,) int cluster labels.
      classes: (N,) int true classes of the same items.

    Returns:
      A float in (0, 1].
    """
    n = contingency(clusters, classes)
    return float(n.max(1).sum() / n.sum())


def knn_accuracy(train_features, train_labels, test_features, test_labels, k: int = 20,
                 chunk: int = 1024) -> float:
    """Accuracy of a k-nearest-neighbour vote by cosine similarity (features L2-normalised).

    Each test item takes the most frequent label among its ``k`` most similar training
    items (ties: the label whose neighbours are more similar in sum, then the smaller
    label).  Unweighted majority vote; Wu et al. (2018) / DINO weight votes by
    exp(s / 0.07), a refinement that matters little for the comparisons made here.

    Args:
      train_features: (N, D) float; train_labels: (N,) int.
      test_features: (M, D) float; test_labels: (M,) int.
      k: neighbours, 1 <= k <= N (default 20, DINO's k-NN evaluation).
      chunk: test items per similarity block (memory).

    Returns:
      The fraction of test items whose vote is their label.
    """
    xtr = np.asarray(train_features, np.float64)
    xte = np.asarray(test_features, np.float64)
    ytr, yte = _labels(train_labels, "train_labels"), _labels(test_labels, "test_labels")
    if xtr.ndim != 2 or len(xtr) != len(ytr):
        raise ValueError(f"train_features: expected shape ({len(ytr)}, D), got {xtr.shape}")
    if xte.ndim != 2 or len(xte) != len(yte) or xte.shape[1] != xtr.shape[1]:
        raise ValueError(f"test_features: expected shape ({len(yte)}, {xtr.shape[1] if xtr.ndim == 2 else 'D'}), "
                         f"got {xte.shape}")
    if not isinstance(k, (int, np.integer)) or not 1 <= k <= len(ytr):
        raise ValueError(f"k: expected an int in [1, {len(ytr)}], got {k!r}")
    if not (np.all(np.isfinite(xtr)) and np.all(np.isfinite(xte))):
        raise ValueError("train_features: expected finite features (or test_features)")
    norm = lambda x: x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)  # noqa: E731
    xtr, xte = norm(xtr), norm(xte)
    classes = np.unique(ytr)
    correct = 0
    for i in range(0, len(xte), chunk):
        s = xte[i:i + chunk] @ xtr.T                                   # (m, N)
        nn = np.argpartition(-s, k - 1, axis=1)[:, :k]                 # (m, k)
        sims = np.take_along_axis(s, nn, 1)
        votes = (ytr[nn][..., None] == classes).astype(np.float64)     # (m, k, C)
        score = votes.sum(1) + 1e-6 * (votes * sims[..., None]).sum(1) / k
        pred = classes[np.argmax(score, 1)]
        correct += int((pred == yte[i:i + chunk]).sum())
    return correct / len(yte)


class LinearProbe(NamedTuple):
    """A fitted linear probe: logits = ((x - mean) / std) @ kernel + bias.

    Attributes:
      kernel: (D, K) weights; bias: (K,).
      mean, std: (D,) the training features' per-dimension statistics (std floored at 1e-6).
      loss: () the final regularised training objective; iterations: () int32 L-BFGS steps taken.
    """

    kernel: jax.Array
    bias: jax.Array
    mean: jax.Array
    std: jax.Array
    loss: jax.Array
    iterations: jax.Array


def probe_objective(kernel, bias, x, onehot, l2):
    """Mean softmax cross-entropy of ``x @ kernel + bias`` against ``onehot`` plus ``l2 / 2 ||kernel||^2``."""
    logits = x @ kernel + bias
    ce = -jnp.mean(jnp.sum(onehot * jax.nn.log_softmax(logits), axis=-1))
    return ce + 0.5 * l2 * jnp.sum(kernel * kernel)


def fit_linear_probe(features: jax.Array, labels: jax.Array, num_classes: int, *, l2: float = 1e-4,
                     max_iters: int = 1000, tol: float = 1e-5) -> LinearProbe:
    """Multinomial logistic regression on frozen features: the linear-probe evaluation.

    Minimises (1/N) sum_i CE(softmax(W^T z_i + b), y_i) + (l2 / 2) ||W||^2 over
    (W, b), with z_i the features standardised by their training mean and std,
    by full-batch L-BFGS (``optax.lbfgs``, zoom line search) inside one
    ``lax.while_loop``, until the gradient norm is below ``tol`` or
    ``max_iters`` steps.  The objective is strictly convex in W (l2 > 0), so the
    optimum is unique.  SeLa and DINO train their probes by SGD with
    augmentation for 100 epochs on ImageNet; a converged L2-regularised
    regression on fixed features is the deterministic variant of the same
    measurement (as in CPC / SimCLR's CIFAR probes) and costs seconds.  Pure and
    jittable (``num_classes``, ``max_iters`` static); ``jax.vmap`` over feature
    sets works, and sharded features give the single-device fit.

    Args:
      features: (N, D) float training features.
      labels: (N,) int classes in [0, num_classes).
      num_classes: K.
      l2: weight decay on W (> 0).
      max_iters: L-BFGS steps at most; tol: gradient-norm tolerance.

    Returns:
      :class:`LinearProbe`.

    References:
      Zhang, Isola and Efros, Colorful image colorization (ECCV 2016), the linear
      evaluation protocol; Nocedal and Wright, Numerical Optimization (2006), Ch. 7 (L-BFGS).
    """
    x = jnp.asarray(features, jnp.float32)
    mean = jnp.mean(x, axis=0)
    std = jnp.maximum(jnp.std(x, axis=0), 1e-6)
    z = (x - mean) / std
    onehot = jax.nn.one_hot(labels, num_classes, dtype=z.dtype)
    loss = lambda p: probe_objective(p[0], p[1], z, onehot, l2)           # noqa: E731
    opt = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(loss)
    p0 = (jnp.zeros((x.shape[1], num_classes), z.dtype), jnp.zeros((num_classes,), z.dtype))

    def step(carry):
        p, state = carry
        value, grad = value_and_grad(p, state=state)
        updates, state = opt.update(grad, state, p, value=value, grad=grad, value_fn=loss)
        return optax.apply_updates(p, updates), state

    def running(carry):
        _, state = carry
        count = optax.tree.get(state, "count")
        grad_norm = optax.tree.norm(optax.tree.get(state, "grad"))
        return (count == 0) | ((count < max_iters) & (grad_norm >= tol))

    (kernel, bias), state = jax.lax.while_loop(running, step, (p0, opt.init(p0)))
    return LinearProbe(kernel, bias, mean, std, loss((kernel, bias)), optax.tree.get(state, "count"))


def linear_probe(train_features, train_labels, test_features, test_labels, *, l2: float = 1e-4,
                 max_iters: int = 1000) -> float:
    """Held-out accuracy of :func:`fit_linear_probe` trained on the training features.

    Args:
      train_features: (N, D) float; train_labels: (N,) int.
      test_features: (M, D) float; test_labels: (M,) int.
      l2, max_iters: as :func:`fit_linear_probe`.

    Returns:
      The fraction of test items whose arg-max logit is their label.
    """
    ytr, yte = _labels(train_labels, "train_labels"), _labels(test_labels, "test_labels")
    xtr, xte = np.asarray(train_features, np.float32), np.asarray(test_features, np.float32)
    if xtr.ndim != 2 or len(xtr) != len(ytr):
        raise ValueError(f"train_features: expected shape ({len(ytr)}, D), got {xtr.shape}")
    if xte.ndim != 2 or len(xte) != len(yte) or xte.shape[1] != xtr.shape[1]:
        raise ValueError(f"test_features: expected shape ({len(yte)}, {xtr.shape[1] if xtr.ndim == 2 else 'D'}), "
                         f"got {xte.shape}")
    if not l2 > 0:
        raise ValueError(f"l2: expected > 0, got {l2}")
    if ytr.min() < 0 or yte.min() < 0:
        raise ValueError("train_labels: expected labels >= 0 (and test_labels)")
    k = int(max(ytr.max(), yte.max())) + 1
    probe = _fit_probe_jit(jnp.asarray(xtr), jnp.asarray(ytr), k, l2=float(l2), max_iters=int(max_iters))
    logits = ((jnp.asarray(xte) - probe.mean) / probe.std) @ probe.kernel + probe.bias
    return float(np.mean(np.asarray(jnp.argmax(logits, axis=-1)) == yte))


_fit_probe_jit = jax.jit(fit_linear_probe, static_argnames=("num_classes", "max_iters"))
