"""Entropy objectives of clustering heads: cross-entropy, H(c|x), H(c), InfoMax, SeLa's constrained form.

All take logits (N, K) of N images over K clusters / classes, average over the
whole batch, and accept ``axis_name`` to run inside ``jax.shard_map`` with the
batch split over that mesh axis (sums then ``psum``; results equal one device
on the full batch).  Natural logarithms (nats).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp.checks import check_float_array, is_concrete
from jaxinterp.objectives._common import global_count, psum
from jaxinterp.objectives.sinkhorn import SinkhornResult, sinkhorn_labels

__all__ = ["cross_entropy", "entropy", "conditional_entropy", "marginal_entropy", "infomax",
           "self_labelling_loss"]


def _batch_mean(per_example: jax.Array, axis_name) -> jax.Array:
    return psum(jnp.sum(per_example), axis_name) / global_count(per_example.shape[0], axis_name)


def cross_entropy(logits: jax.Array, labels: jax.Array, *, axis_name: str | None = None) -> jax.Array:
    """Mean cross-entropy ``-1/N sum_n sum_k y_nk log softmax(logits_n)_k``.

    Args:
      logits: float (N, K).
      labels: int (N,) class indices in [0, K), or float (N, K) target distributions.
      axis_name: mesh axis of the batch under ``shard_map``, or None.

    Returns:
      float32 scalar (nats).
    """
    logits = check_float_array(logits, "logits", (2,))
    n, k = logits.shape
    if not hasattr(labels, "shape"):
        raise ValueError(f"labels: expected an array, got {type(labels).__name__}")
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    if jnp.issubdtype(labels.dtype, jnp.integer):
        if labels.shape != (n,):
            raise ValueError(f"labels: expected int shape ({n},), got {tuple(labels.shape)}")
        if is_concrete(labels):
            a = np.asarray(labels)
            if a.min() < 0 or a.max() >= k:
                raise ValueError(f"labels: expected indices in [0, {k}), got [{a.min()}, {a.max()}]")
        per = -jnp.take_along_axis(logp, labels[:, None].astype(jnp.int32), axis=1)[:, 0]
    else:
        labels = check_float_array(labels, "labels", (2,))
        if labels.shape != (n, k):
            raise ValueError(f"labels: expected distributions of shape ({n}, {k}), "
                             f"got {tuple(labels.shape)}")
        per = -jnp.sum(labels.astype(jnp.float32) * logp, axis=-1)
    return _batch_mean(per, axis_name)


def entropy(logits: jax.Array) -> jax.Array:
    """Per-example entropy ``H(p_n) = -sum_k p_nk log p_nk`` of p = softmax(logits) (..., K) -> (...)."""
    logits = check_float_array(logits, "logits", tuple(range(1, 8)))
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return -jnp.sum(jnp.exp(logp) * logp, axis=-1)


def conditional_entropy(logits: jax.Array, *, axis_name: str | None = None) -> jax.Array:
    """H(c|x) = 1/N sum_n H(p(c|x_n)) with p(c|x_n) = softmax(logits_n): float32 scalar (nats).

    Minimising it alone makes confident predictions and collapses to one cluster
    (see :func:`infomax`).  logits: float (N, K); axis_name as in :func:`cross_entropy`.
    """
    logits = check_float_array(logits, "logits", (2,))
    return _batch_mean(entropy(logits), axis_name)


def marginal_entropy(logits: jax.Array, *, axis_name: str | None = None) -> jax.Array:
    """H(c) of the marginal p(c) = 1/N sum_n p(c|x_n): float32 scalar in [0, log K] (nats).

    Under ``shard_map`` one ``psum`` of a K-vector gives the global marginal.
    """
    logits = check_float_array(logits, "logits", (2,))
    p = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
    pc = psum(jnp.sum(p, axis=0), axis_name) / global_count(p.shape[0], axis_name)
    return -jnp.sum(jnp.where(pc > 0, pc * jnp.log(jnp.where(pc > 0, pc, 1.0)), 0.0))


def infomax(logits: jax.Array, *, axis_name: str | None = None) -> jax.Array:
    """InfoMax objective I(x, c) = H(c) - H(c|x) (to maximise; the loss is its negative).

    Maximising the information between images and cluster labels asks for
    confident predictions (low H(c|x)) that use all clusters equally (high
    H(c), at most log K): this fixes the collapse of conditional-entropy
    minimisation (Linsker 1988; docs/references.md, InfoMax).  Estimated
    on the batch: H(c) of the batch marginal (:func:`marginal_entropy`).

    Args:
      logits: float (N, K).
      axis_name: mesh axis of the batch under ``shard_map``, or None.

    Returns:
      float32 scalar in [0, log K].
    """
    return (marginal_entropy(logits, axis_name=axis_name)
            - conditional_entropy(logits, axis_name=axis_name))


def self_labelling_loss(logits: jax.Array, *, lam: float = 25.0, tol: float = 1e-3,
                        max_iters: int = 1000, axis_name: str | None = None
                        ) -> tuple[jax.Array, SinkhornResult]:
    """The constrained form: min H(c|x) subject to H(c) = log K, as SeLa solves it.

    SeLa relaxes ``min_{q,p} H(q, p) s.t. E[q(c|x)] = 1/K`` by alternating:
    labels q from :func:`~jaxinterp.objectives.sinkhorn_labels` (equipartitioned,
    hard, gradient stopped), then the cross-entropy of the logits against them.
    This computes both steps on one batch; for ImageNet SeLa recomputes the
    labels over the whole dataset 100 times in 400 epochs (done by the trainer,
    which then calls :func:`cross_entropy`).

    Args:
      logits: float (N, K); lam, tol, max_iters: as in ``sinkhorn_labels`` (lambda 25).
      axis_name: mesh axis of the batch under ``shard_map``, or None.

    Returns:
      (loss float32 scalar, the :class:`SinkhornResult` of the labels).
    """
    result = sinkhorn_labels(logits, lam=lam, tol=tol, max_iters=max_iters, axis_name=axis_name)
    return cross_entropy(logits, result.labels, axis_name=axis_name), result


