"""Metrics of a representation or a clustering against true labels (host-side, NumPy float64).

    nmi(cluster_labels, classes)       # normalised mutual information in [0, 1]
    ari(cluster_labels, classes)       # adjusted Rand index, 1 = same partition, ~0 = chance
    knn_accuracy(train_features, train_labels, test_features, test_labels, k=20)

These run on concrete arrays once per evaluation (not inside a trace), so they
are plain NumPy; NMI and ARI follow scikit-learn's definitions
(``normalized_mutual_info_score`` with the arithmetic mean, as SeLa reports;
``adjusted_rand_score``).
"""

from __future__ import annotations

import numpy as np

__all__ = ["contingency", "nmi", "ari", "knn_accuracy"]


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
