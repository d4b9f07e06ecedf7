"""Sinkhorn-Knopp self-labelling (SeLa) and SwAV's online assignment, stabilised for float32.

SeLa (Asano, Rupprecht and Vedaldi, ICLR 2020) labels N images with K
clusters by solving the constrained problem ``min_q H(q, p) s.t. E[q(c|x)] =
1/K`` approximately: the transport plan

    Q = diag(c) P^lambda diag(r),      Q 1 = 1/N,   Q^T 1 = 1/K,

with P (N, K) the net's softmax, found by alternately rescaling rows (c) and
columns (r) (Sinkhorn-Knopp), and labels y_n = argmax_k Q_nk.  In float32,
P^25 underflows for K = 3000 (p ~ 1/3000 gives 1e-87), so SeLa's scaling form
on P^lambda is unusable there.  Both solvers here work with the cluster
log-scalings u = log r and x_nk = lambda * logit_nk; one column step is

    row step    log Q_nk = x_nk + u_k - logsumexp_k'(x_nk' + u_k') - log N   (rows exact)
    column step u_k <- u_k - log(K * sum_n Q_nk)                            (columns exact)

* ``method='log'``: every step in the log domain.  Every value exponentiated
  is <= 0 after the row softmax, so nothing can overflow; but each step
  exponentiates all N K entries (5x the time of a scaling step on a CPU,
  docs/results/sinkhorn_speed.md).
* ``method='scaling'`` (default): Schmitzer's stabilised scaling iteration
  (Schmitzer 2019: scalings absorbed into log-domain potentials).  The row-normalised plan at
  potentials g, the kernel ``G_nk = exp(x_nk + g_k - f_n)`` with
  f_n = logsumexp_k(x_nk + g_k), is stored once; a step with scalings
  b = exp(u - g) is then two matrix-vector products and no exponential of
  N K entries:  s = G b  (row sums: log-normaliser f_n + log s_n), column
  masses b * (G^T (1 / s)).  When a scaling leaves [e^-20, e^20]
  (max_k |u_k - g_k| > 20) the scalings are absorbed into the potentials
  (g <- u, G recomputed in the log domain, one log-domain pass).  Each row of
  G sums to 1, so the row sums s stay in [e^-20, e^20] and never overflow or
  underflow; a kernel entry that underflows (< 1.2e-38) would weigh less than
  1.2e-38 e^40 = 3e-21 in its row of Q (rows sum to 1).  A cluster whose whole column has
  underflowed gets the log domain's clamped step (e^87), which exceeds the
  bound, so the next step absorbs: the iteration goes where the log domain
  goes.  Differences from the paper: no kernel truncation (G is dense) and
  no epsilon-scaling (lambda is fixed, as in SeLa).  The price is memory:
  G is a second (N, K) float32 array beside the logits.

Under ``shard_map`` over the batch, the row step is local and the column
step needs the K column sums over all images: one ``psum`` of a (K +
1)-vector per step (the extra entry carries SeLa's criterion); absorption is
row-local.  Column masses that underflow to 0 are clamped (the next step
then raises that cluster's scaling by a bounded amount).  Since
softmax(lambda log_softmax(l)) = softmax(lambda l) row by row, logits and
log-probabilities give the same answer.
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from jaxinterp.checks import check_float_array, check_positive_float, check_int, is_concrete
from jaxinterp.objectives._common import global_count, psum

__all__ = ["METHODS", "SinkhornResult", "sinkhorn_labels", "soft_assignments", "swav_codes"]

METHODS = ("scaling", "log")
"""Solvers of :func:`sinkhorn_labels`: stabilised scaling (default) or every step in the log domain."""

_TINY = float(jnp.finfo(jnp.float32).tiny)
_ABSORB_AT = 20.0
"""Absorb the scalings into the potentials when max_k |log b_k| exceeds this (b in [e^-20, e^20])."""
_EXACT = lax.Precision.HIGHEST        # float32 products (TPUs and GPUs would round to bf16 / tf32)


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


class _Kernel(NamedTuple):
    """The stored plan of the scaling solver, row-normalised at potentials g.

    Attributes:
      plan: float32 (N, K) G_nk = exp(x_nk + g_k - f_n), each row summing to 1.
      f: float32 (N,) row log-normalisers logsumexp_k(x_nk + g_k).
      g: float32 (K,) the cluster potentials the plan was computed at.
    """
    plan: jax.Array
    f: jax.Array
    g: jax.Array


def _row_softmax(x, u):
    """(softmax_k(x_nk + u_k) (N, K), logsumexp_k(x_nk + u_k) (N,)): Q with exact rows, in the log domain."""
    y = x + u
    lse = jax.nn.logsumexp(y, axis=1)
    return jnp.exp(y - lse[:, None]), lse


def _row_weights(valid, n_local: int, axis_name):
    """(w (N_local,) float32: 1 for a row that counts, 0 for padding; n: the global count of rows that count).

    n is a Python int without ``valid``, else a traced float32 (one psum, before the iteration).
    """
    if valid is None:
        return jnp.ones((n_local,), jnp.float32), global_count(n_local, axis_name)
    count = psum(jnp.sum(valid, dtype=jnp.int32), axis_name)
    return valid.astype(jnp.float32), count.astype(jnp.float32)


def _global_ratio(mass, lse, lse_prev, w, n, axis_name):
    """The column step's input from local sums: one psum of a (K + 1)-vector.

    Args: mass (K,) local column sums of N Q (rows exact, weighted by w); lse, lse_prev
    (N_local,) the row log-normalisers of this step and the last; w, n: :func:`_row_weights`.
    Returns (ratio (K,) = K sum_n Q_nk, SeLa's criterion sum_n |c_prev / c_new - 1| over all
    images).
    """
    k = mass.shape[0]
    sela = jnp.sum(w * jnp.abs(jnp.expm1(lse - lse_prev)))
    total = psum(jnp.concatenate([mass, sela[None]]), axis_name)
    return total[:k] * (k / n), total[k]


def _log_pass(x, u, lse_prev, w, n, axis_name):
    """One log-domain pass at u: (ratio (K,), lse (N,), SeLa's criterion)."""
    q, lse = _row_softmax(x, u)
    ratio, sela = _global_ratio(jnp.sum(w[:, None] * q, axis=0), lse, lse_prev, w, n, axis_name)
    return ratio, lse, sela


def _absorb(x, u) -> _Kernel:
    """The kernel at potentials g = u: the row-normalised plan, computed in the log domain."""
    plan, f = _row_softmax(x, u)
    return _Kernel(plan, f, u)


def _scaling_pass(kernel: _Kernel, u, lse_prev, w, n, axis_name):
    """One pass at u on the stored kernel, scalings b = exp(u - g): (ratio (K,), lse (N,), SeLa's criterion).

    Rows: s = G b, Q_nk = G_nk b_k / s_n, log-normaliser f + log s.  Columns: b * G^T (w / s).
    """
    b = jnp.exp(u - kernel.g)
    s = jnp.dot(kernel.plan, b, precision=_EXACT)
    mass = b * jnp.dot(w / s, kernel.plan, precision=_EXACT)
    lse = kernel.f + jnp.log(s)
    ratio, sela = _global_ratio(mass, lse, lse_prev, w, n, axis_name)
    return ratio, lse, sela


def _iterate(step: Callable, aux, n_local: int, k: int, tol: float, max_iters: int):
    """Column steps u <- u - log ratio from u = 0 until max_k |ratio_k - 1| <= tol or ``max_iters``.

    ``step(aux, u, lse_prev) -> (aux, ratio, lse, sela)`` is one pass at u (``aux``: the
    solver's own carried state).  Returns (u (K,), iterations, error, SeLa's criterion).
    """
    u0 = jnp.zeros((k,), jnp.float32)
    aux, ratio, lse, _ = step(aux, u0, jnp.zeros((n_local,), jnp.float32))

    def cond(state):
        _, _, _, _, it, err, _ = state
        return (err > tol) & (it < max_iters)

    def body(state):
        aux, u, ratio, lse, it, _, _ = state
        u = u - jnp.log(jnp.maximum(ratio, _TINY))
        aux, ratio, lse, sela = step(aux, u, lse)
        return aux, u, ratio, lse, it + 1, jnp.max(jnp.abs(ratio - 1.0)), sela

    state = (aux, u0, ratio, lse, jnp.int32(0), jnp.max(jnp.abs(ratio - 1.0)), jnp.float32(jnp.inf))
    _, u, _, _, it, err, sela = lax.while_loop(cond, body, state)
    return u, it, err, sela


def _solve_log(x, w, n, tol: float, max_iters: int, axis_name):
    """Log-domain Sinkhorn on x (N_local, K), rows weighted by w: (u, iterations, error, SeLa's criterion)."""
    def step(aux, u, lse_prev):
        return (aux, *_log_pass(x, u, lse_prev, w, n, axis_name))

    return _iterate(step, (), x.shape[0], x.shape[1], tol, max_iters)


def _solve_scaling(x, w, n, tol: float, max_iters: int, axis_name):
    """Stabilised scaling Sinkhorn on x (N_local, K), rows weighted by w: (u, iterations, error, SeLa's criterion)."""
    def step(kernel, u, lse_prev):
        kernel = lax.cond(jnp.max(jnp.abs(u - kernel.g)) > _ABSORB_AT,
                          lambda: _absorb(x, u), lambda: kernel)
        return (kernel, *_scaling_pass(kernel, u, lse_prev, w, n, axis_name))

    kernel = _absorb(x, jnp.zeros((x.shape[1],), jnp.float32))
    return _iterate(step, kernel, x.shape[0], x.shape[1], tol, max_iters)


_SOLVERS = {"scaling": _solve_scaling, "log": _solve_log}


def _sinkhorn_one(logits, valid, lam: float, tol: float, max_iters: int, axis_name, method: str) -> SinkhornResult:
    """Single head: logits (N_local, K), valid (N_local,) bool or None."""
    x = lam * lax.stop_gradient(logits).astype(jnp.float32)
    w, n = _row_weights(valid, x.shape[0], axis_name)
    u, it, err, sela = _SOLVERS[method](x, w, n, tol, max_iters, axis_name)
    labels = jnp.argmax(x + u, axis=1).astype(jnp.int32)
    return SinkhornResult(labels, u, it, err, sela)


@functools.partial(jax.jit, static_argnames=("lam", "tol", "max_iters", "axis_name", "method"))
def _sinkhorn(logits, valid, lam, tol, max_iters, axis_name, method):
    one = functools.partial(_sinkhorn_one, valid=valid, lam=lam, tol=tol, max_iters=max_iters,
                            axis_name=axis_name, method=method)
    return one(logits) if logits.ndim == 2 else lax.map(one, logits)


def sinkhorn_labels(logits: jax.Array, *, lam: float = 25.0, tol: float = 1e-3,
                    max_iters: int = 1000, axis_name: str | None = None,
                    method: str = "scaling", valid: jax.Array | None = None) -> SinkhornResult:
    """SeLa's self-labels: equipartitioned hard labels by Sinkhorn-Knopp, stable in float32.

    Solves ``Q = diag(c) P^lambda diag(r)`` with uniform marginals (rows 1/N,
    clusters 1/K) as in SeLa, with the cluster scalings kept as logarithms
    (module docstring), and returns y_n = argmax_k Q_nk = argmax_k (lambda
    logit_nk + log r_k).  Starts from r = 1 and iterates inside one
    ``lax.while_loop`` until

        error = max_k |K sum_n Q_nk - 1| <= tol    (rows of Q exact)

    or ``max_iters`` column steps.  SeLa instead stops when the summed
    criterion sum_n |c_n / c_new_n - 1| < 0.1 (ImageNet) / 0.01 (CIFAR); that
    sum is reported as ``sela_error`` but not used: in float32 its rounding floor
    grows with N (docs/references.md, SeLa: about 5 at N = 1.28M), while the
    per-element marginal error does not.  Gradients are stopped: the labels are targets.

    ``method='scaling'`` (default) iterates SeLa's multiplicative steps on a
    stored, row-normalised kernel and absorbs the scalings into log-domain
    potentials when they leave [e^-20, e^20] (Schmitzer 2019); ``'log'`` does
    every step in the log domain, 5x slower per step on a CPU but without the
    second (N, K) array the kernel takes.  Both follow the same iteration and
    agree to float32 rounding.

    Multiple heads (SeLa uses 10): logits (H, N, K) run the heads one after the
    other (``lax.map``; each stops on its own criterion; results equal a loop).
    Under a caller's ``jax.vmap`` the scaling solver's absorption (a
    ``lax.cond``) becomes a select that runs every step: pass the heads axis
    instead.

    Sharded: inside ``jax.shard_map`` with the batch split over ``axis_name``,
    pass logits of the local rows; each iteration does one ``lax.psum`` of a
    (K + 1)-vector and every device gets the same ``log_r``, iterations and
    errors as one device on the whole batch, and the labels of its own rows.
    ``valid`` marks the rows that count (padding, e.g. to split N rows evenly
    over the devices, does not): the marginals are those of the valid rows
    only, and the padding rows get labels from the same scalings.

    Pure, jit-compatible (all arguments but ``logits`` and ``valid`` static).

    Args:
      logits: float (N, K) or (H, N, K): cluster logits (or log-probabilities) of N
        images, K <= N (global N under sharding).  Computed in float32.
      lam: the exponent lambda > 0 (default 25, SeLa on ImageNet; CIFAR used 10).
      tol: tolerance > 0 on the per-element marginal error (default 1e-3, our choice:
        every cluster within 0.1% of N/K images; SeLa's criterion is a sum over N, see above).
      max_iters: most column steps (default 1000; SeLa needs ~300 at N = 1.28M).
      axis_name: mesh axis of the batch under ``shard_map``, or None.
      method: one of :data:`METHODS`: ``'scaling'`` (default) or ``'log'``.
      valid: bool (N,) (the local rows under sharding), or None: every row counts.  At
        least K rows must be valid (checked when ``valid`` is concrete and unsharded).

    Returns:
      :class:`SinkhornResult` (labels (…, N) int32, log_r (…, K), iterations, error,
      sela_error; a leading H axis for (H, N, K) logits).

    Raises:
      ValueError: logits not (N, K) / (H, N, K) floating, non-finite, or K > N; lam or
        tol not > 0; max_iters < 1; method not in :data:`METHODS`; valid not a bool (N,)
        array or with fewer than K true entries.

    References:
      Asano, Rupprecht and Vedaldi, "Self-labelling via simultaneous clustering and
      representation learning", ICLR 2020.  Cuturi, "Sinkhorn distances", NeurIPS 2013.
      Schmitzer, "Stabilized sparse scaling algorithms for entropy regularized transport
      problems", SIAM J. Sci. Comput. 41(3), 2019.

    Examples:
      The labels split the samples equally between the clusters:

      >>> import jax, numpy as np
      >>> from jaxinterp import objectives
      >>> result = objectives.sinkhorn_labels(jax.random.normal(jax.random.key(0), (12, 3)))
      >>> np.bincount(np.asarray(result.labels)).tolist()
      [4, 4, 4]
    """
    logits = check_float_array(logits, "logits", (2, 3))
    lam = check_positive_float(lam, "lam")
    tol = check_positive_float(tol, "tol")
    max_iters = check_int(max_iters, "max_iters")
    if method not in METHODS:
        raise ValueError(f"method: expected one of {METHODS}, got {method!r}")
    n, k = logits.shape[-2:]
    if k > global_count(n, axis_name):
        raise ValueError(f"logits: K = {k} clusters is more than the N = "
                         f"{global_count(n, axis_name)} images; equipartition needs K <= N")
    if valid is not None:
        valid = _check_valid(valid, n, k, axis_name)
    return _sinkhorn(logits, valid, lam, tol, max_iters, axis_name, method)


def _check_valid(valid, n: int, k: int, axis_name) -> jax.Array:
    """``valid`` as a bool (N,) jax array with at least K true entries (counted when concrete, unsharded)."""
    if getattr(valid, "shape", None) != (n,) or getattr(valid, "dtype", None) != jnp.bool_:
        raise ValueError(f"valid: expected a bool array of shape ({n},), got "
                         f"{getattr(valid, 'dtype', type(valid).__name__)} {getattr(valid, 'shape', '')}")
    if axis_name is None and is_concrete(valid) and int(jnp.sum(valid)) < k:
        raise ValueError(f"valid: {int(jnp.sum(valid))} valid rows is fewer than the K = {k} clusters; "
                         "equipartition needs K <= N")
    return jnp.asarray(valid)


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
    iterations = check_int(iterations, "iterations")
    return _swav_codes_jit(scores, epsilon, iterations, axis_name)


_swav_codes_jit = jax.jit(_swav_codes, static_argnums=(1, 2, 3))
