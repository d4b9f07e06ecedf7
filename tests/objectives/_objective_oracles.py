"""Float64 NumPy oracles written from the papers' algorithms (not from any code base)."""

import numpy as np


def sela_float64(logits, lam, tol=1e-13, max_iters=20000):
    """SeLa (Asano et al. 2020, Sec. 3.1): Q = diag(c) P^lam diag(r), alternate
    r = (1/K) / (P^T c), c = (1/N) / (P r) until sum_n |c / c_new - 1| < tol.

    Returns (labels argmax_k Q_nk, Q, iterations).
    """
    x = np.asarray(logits, np.float64)
    p = np.exp(x - x.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    p = p ** lam
    n, k = p.shape
    c = np.full(n, 1.0 / n)
    for it in range(1, max_iters + 1):
        r = (1.0 / k) / (c @ p)
        c_new = (1.0 / n) / (p @ r)
        err = np.abs(c / c_new - 1.0).sum()
        c = c_new
        if err < tol:
            break
    q = c[:, None] * p * r[None, :]
    return q.argmax(1), q, it


def swav_float64(scores, epsilon=0.05, iterations=3):
    """SwAV (Caron et al. 2020, Algorithm 1): Q = exp(scores^T / eps) / sum, then
    `iterations` times rows (prototypes) to 1/K and columns (samples) to 1/B; columns to 1.
    Returns (B, K)."""
    q = np.exp(np.asarray(scores, np.float64).T / epsilon)
    q /= q.sum()
    k, b = q.shape
    for _ in range(iterations):
        q *= (1.0 / k) / q.sum(1, keepdims=True)
        q *= (1.0 / b) / q.sum(0, keepdims=True)
    return (q / q.sum(0, keepdims=True)).T


def log_softmax64(x, axis=-1):
    x = np.asarray(x, np.float64)
    m = x.max(axis, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis, keepdims=True))
