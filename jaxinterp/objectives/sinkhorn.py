"""Sinkhorn-Knopp self-labelling (SeLa) and SwAV's online assignment, in the log domain.

SeLa (Asano, Rupprecht and Vedaldi, ICLR 2020) labels N images with K
clusters by solving the constrained problem ``min_q H(q, p) s.t. E[q(c|x)] =
1/K`` approximately: the transport plan

    Q = diag(c) P^lambda diag(r),      Q 1 = 1/N,   Q^T 1 = 1/K,

with P (N, K) the net's softmax, found by alternately rescaling rows (c) and
columns (r) (Sinkhorn-Knopp), and labels y_n = argmax_k Q_nk.  In float32,
P^25 underflows for K = 3000 (p ~ 1/3000 gives 1e-87), so everything here
works with logarithms: with u = log r and x_nk = lambda * logit_nk,

    row step    log Q_nk = x_nk + u_k - logsumexp_k'(x_nk' + u_k') - log N   (rows exact)
    column step u_k <- u_k - log(K * sum_n Q_nk)                            (columns exact)

The row step is a softmax of a row (no communication); the column step needs
the K column sums over all images: under ``shard_map`` over the batch this is
one ``psum`` of a (K + 1)-vector per iteration (the extra entry carries SeLa's
criterion).  Every value exponentiated is <= 0 after the row softmax, so the
iteration cannot overflow; column masses that underflow to 0 are clamped
(the next step then raises that cluster's scaling by a bounded amount).
Since softmax(lambda log_softmax(l)) = softmax(lambda l) row by row, logits
and log-probabilities give the same answer.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from jaxinterp.objectives._common import (check_float_array, check_positive_float,
                                          check_positive_int, global_count, psum)

__all__ = ["SinkhornResult", "sinkhorn_labels", "soft_assignments", "swav_codes"]

_TINY = float(jnp.finfo(jnp.float32).tiny)


class SinkhornResult(NamedTuple):
    """Output of :func:`sinkhorn_labels` (a leading heads axis when the logits had one).

    Attributes:
      labels: int32 (N,): hard labels argmax_k Q_nk (the local rows under ``shard_map``).
      log_r: float32 (K,): the cluster log-scalings u; the soft assignment of image n is
        ``softmax_k(lambda * logits_nk + u_k)`` (:func:`soft_assignments`), i.e. N Q.
      iterations: int32 (): column steps done.
      error: float32 (): max_k |K sum_n Q_nk - 1| of the returned Q (rows exact): the
        per-element stopping criterion, the largest relative error of a cluster marginal.
      sela_error: float32 (): SeLa's criterion sum_n |c_n / c_new_n - 1| over all N images
        of the last iteration (inf if no iteration ran).  Reported, not used to stop: in
        float32 its rounding floor grows with N (about 5 at N = 1.28M).
    """
    labels: jax.Array
    log_r: jax.Array
    iterations: jax.Array
    error: jax.Array
    sela_error: jax.Array


def _column_pass(x, u, lse_prev, n: int, axis_name):
    """Row softmax of x + u, then the global column sums: one psum of a (K + 1)-vector.

    Returns (ratio (K,) = K * column mass of the row-normalised Q, lse (N,), sela error).
    """
    k = x.shape[1]
    y = x + u
    lse = jax.nn.logsumexp(y, axis=1)
    mass = jnp.sum(jnp.exp(y - lse[:, None]), axis=0)                   # (K,) sum_n N Q_nk
    sela = jnp.sum(jnp.abs(jnp.expm1(lse - lse_prev)))                  # c_prev / c_new - 1
    total = psum(jnp.concatenate([mass, sela[None]]), axis_name)
    return total[:k] * (k / n), lse, total[k]


def _sinkhorn_one(logits, lam: float, tol: float, max_iters: int, axis_name) -> SinkhornResult:
    """Single head: logits (N_local, K)."""
    x = lam * lax.stop_gradient(logits).astype(jnp.float32)
    n = global_count(x.shape[0], axis_name)
    u0 = jnp.zeros((x.shape[1],), jnp.float32)
    ratio, lse, _ = _column_pass(x, u0, jnp.zeros(x.shape[:1], jnp.float32), n, axis_name)
    err0 = jnp.max(jnp.abs(ratio - 1.0))

    def cond(state):
        _, _, _, it, err, _ = state
        return (err > tol) & (it < max_iters)

    def body(state):
        u, ratio, lse, it, _, _ = state
        u = u - jnp.log(jnp.maximum(ratio, _TINY))
        ratio, lse_new, sela = _column_pass(x, u, lse, n, axis_name)
        return u, ratio, lse_new, it + 1, jnp.max(jnp.abs(ratio - 1.0)), sela

    state = (u0, ratio, lse, jnp.int32(0), err0, jnp.float32(jnp.inf))
    u, _, _, it, err, sela = lax.while_loop(cond, body, state)
    labels = jnp.argmax(x + u, axis=1).astype(jnp.int32)
    return SinkhornResult(labels, u, it, err, sela)


@functools.partial(jax.jit, static_argnames=("lam", "tol", "max_iters", "axis_name"))
def _sinkhorn(logits, lam, tol, max_iters, axis_name):
    one = functools.partial(_sinkhorn_one, lam=lam, tol=tol, max_iters=max_iters,
                            axis_name=axis_name)
    return one(logits) if logits.ndim == 2 else jax.vmap(one)(logits)


def sinkhorn_labels(logits: jax.Array, *, lam: float = 25.0, tol: float = 1e-3,
                    max_iters: int = 1000, axis_name: str | None = None) -> SinkhornResult:
    """SeLa's self-labels: equipartitioned hard labels by log-domain Sinkhorn-Knopp.

    Solves ``Q = diag(c) P^lambda diag(r)`` with uniform marginals (rows 1/N,
    clusters 1/K) as in SeLa, written in the log domain (module docstring), and
    returns y_n = argmax_k Q_nk = argmax_k (lambda logit_nk + log r_k).  Starts
    from r = 1 and iterates inside one ``lax.while_loop`` until

        error = max_k |K sum_n Q_nk - 1| <= tol    (rows of Q exact)

    or ``max_iters`` column steps.  SeLa instead stops when the summed
    criterion sum_n |c_n / c_new_n - 1| < 0.1 (ImageNet) / 0.01 (CIFAR); that
    sum is reported as ``sela_error`` but not used: in float32 its rounding floor
    grows with N (REFERENCES.md: about 5 at N = 1.28M), while the per-element
    marginal error does not.  Gradients are stopped: the labels are targets.

    Multiple heads (SeLa uses 10): logits (H, N, K) run the heads under
    ``jax.vmap`` (each head stops on its own criterion; results equal a loop).

    Sharded: inside ``jax.shard_map`` with the batch split over ``axis_name``,
    pass logits of the local rows; each iteration does one ``lax.psum`` of a
    (K + 1)-vector and every device gets the same ``log_r``, iterations and
    errors as one device on the whole batch, and the labels of its own rows.

    Pure, jit-compatible (``lam``, ``tol``, ``max_iters``, ``axis_name`` static).

    Args:
      logits: float (N, K) or (H, N, K): cluster logits (or log-probabilities) of N
        images, K <= N (global N under sharding).  Computed in float32.
      lam: the exponent lambda > 0 (default 25, SeLa on ImageNet; CIFAR used 10).
      tol: tolerance > 0 on the per-element marginal error (default 1e-3, our choice:
        every cluster within 0.1% of N/K images; SeLa's criterion is a sum over N, see above).
      max_iters: most column steps (default 1000; SeLa needs ~300 at N = 1.28M).
      axis_name: mesh axis of the batch under ``shard_map``, or None.

    Returns:
      :class:`SinkhornResult` (labels (…, N) int32, log_r (…, K), iterations, error,
      sela_error; a leading H axis for (H, N, K) logits).

    Raises:
      ValueError: logits not (N, K) / (H, N, K) floating, non-finite, or K > N; lam or
        tol not > 0; max_iters < 1.

    References:
      Asano, Rupprecht and Vedaldi, "Self-labelling via simultaneous clustering and
      representation learning", ICLR 2020.  Cuturi, "Sinkhorn distances", NeurIPS 2013.
    """
    logits = check_float_array(logits, "logits", (2, 3))
    lam = check_positive_float(lam, "lam")
    tol = check_positive_float(tol, "tol")
    max_iters = check_positive_int(max_iters, "max_iters")
    n, k = logits.shape[-2:]
    if k > global_count(n, axis_name):
        raise ValueError(f"logits: K = {k} clusters is more than the N = "
                         f"{global_count(n, axis_name)} images; equipartition needs K <= N")
    return _sinkhorn(logits, lam, tol, max_iters, axis_name)


def soft_assignments(logits: jax.Array, log_r: jax.Array, *, lam: float = 25.0) -> jax.Array:
    """Soft self-labels N Q: ``softmax_k(lambda * logits_nk + log_r_k)``, rows summing to 1.

    Args:
      logits: float (N, K) as given to :func:`sinkhorn_labels`; log_r: (K,) its result.
      lam: the same lambda.

    Returns:
      float32 (N, K), gradients stopped.
    """
    logits = check_float_array(logits, "logits", (2,))
    lam = check_positive_float(lam, "lam")
    x = lam * lax.stop_gradient(logits).astype(jnp.float32) + lax.stop_gradient(log_r)
    return jax.nn.softmax(x, axis=-1)


# --- SwAV --------------------------------------------------------------------------------


def _swav_codes(scores, epsilon: float, iterations: int, axis_name):
    x = lax.stop_gradient(scores).astype(jnp.float32) / epsilon
    # First prototype (column) step from uniform sample weights: u_k = -logsumexp_n x_nk,
    # stabilised by the global column maximum (pmax of a K-vector, once).
    m = jnp.max(x, axis=0)
    if axis_name is not None:
        m = lax.pmax(m, axis_name)
    m = lax.stop_gradient(m)
    u = -(m + jnp.log(psum(jnp.sum(jnp.exp(x - m), axis=0), axis_name)))

    def step(_, u):  # sample (row) step, then prototype (column) step: one psum of (K,)
        q = jax.nn.softmax(x + u, axis=1)
        return u - jnp.log(jnp.maximum(psum(jnp.sum(q, axis=0), axis_name), _TINY))

    u = lax.fori_loop(0, iterations - 1, step, u)
    return jax.nn.softmax(x + u, axis=1)  # last sample step: each row is a distribution


def swav_codes(scores: jax.Array, *, epsilon: float = 0.05, iterations: int = 3,
               axis_name: str | None = None) -> jax.Array:
    """SwAV's online codes: ``iterations`` Sinkhorn-Knopp steps on exp(scores / epsilon).

    SwAV (Algorithm 1 of the paper) takes Q = exp(scores^T / epsilon) (K, B),
    divides by its sum, then ``iterations`` times rescales every prototype row
    to sum 1/K and every sample column to sum 1/B, and returns the columns
    normalised to 1.  Here the same steps run in the log domain (stable for any
    scale of scores, where SwAV's exp overflows unless features and prototypes
    are L2-normalised).  Under ``shard_map`` the prototype sums are all-reduced:
    one ``psum`` of a K-vector per iteration (plus one ``pmax`` of a K-vector
    before the first), as SwAV's ``all_reduce``; the sample steps are local.

    Args:
      scores: float (B, K): prototype scores of B samples (SwAV: cosine similarities of
        L2-normalised features and prototypes).
      epsilon: entropy regularisation > 0 (default 0.05, SwAV).
      iterations: Sinkhorn iterations >= 1 (default 3, SwAV).
      axis_name: mesh axis of the batch under ``shard_map``, or None.

    Returns:
      float32 (B, K) codes, each row a distribution, gradients stopped.

    References:
      Caron et al., "Unsupervised learning of visual features by contrasting cluster
      assignments", NeurIPS 2020.
    """
    scores = check_float_array(scores, "scores", (2,))
    epsilon = check_positive_float(epsilon, "epsilon")
    iterations = check_positive_int(iterations, "iterations")
    return _swav_codes_jit(scores, epsilon, iterations, axis_name)


_swav_codes_jit = jax.jit(_swav_codes, static_argnums=(1, 2, 3))
