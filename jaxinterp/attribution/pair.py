"""Path and region methods of PAIR ``saliency``: guided integrated gradients, blur IG and XRAI.

Each is written for one example and one target and lifted by ``vmap``
(:func:`jaxinterp.targets.lift`); the adaptive path of guided IG, the blur
path of blur IG and XRAI's greedy region growing all run inside the one
compiled call (``lax.scan`` / ``lax.while_loop``).  XRAI's segments come from
the host (:mod:`jaxinterp.attribution.segments`).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp.checks import (check_baseline, check_float_array, check_fraction, check_images, check_int,
                              check_positive_float)
from jaxinterp.targets import chunked_sum, input_gradient, lift
from jaxinterp.attribution._lift import check_backprop_args, reduce_channels
from jaxinterp.attribution.gradient import integrated_gradients
from jaxinterp.nets import Net

__all__ = ["guided_ig", "blur_ig", "xrai"]

_CLOSE = 1e-9   # PAIR's tolerance (relative and absolute) on the L1 distance reached by a guided IG step


def _isclose(a, b):
    """``math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)`` on arrays."""
    return jnp.abs(a - b) <= jnp.maximum(_CLOSE * jnp.maximum(jnp.abs(a), jnp.abs(b)), _CLOSE)


def _guided_ig_step(x, attr, g, xi, xb, q_index, alpha_min, alpha_max, l1_target):
    """One guided IG step: move the features of smallest |gradient| until the L1 distance to the input is l1_target.

    All arrays are flat (D,).  Features that fell behind ``alpha_min`` of the
    straight line jump to it; then, repeatedly, the features whose |g| is at
    most the ``q_index``-th smallest (the ``fraction`` quantile; features at
    ``alpha_max`` excluded) move towards ``alpha_max``, all the way
    (gamma > 1) or by the share gamma that lands exactly on the target
    distance.  ``attr`` gains (x_new - x_old) * g.  The loop also stops when
    no feature can move (PAIR would loop forever there).
    """
    diff = xi - xb
    moving = diff != 0
    x_min, x_max = xb + diff * alpha_min, xb + diff * alpha_max
    inf = jnp.asarray(jnp.inf, x.dtype)

    def body(state):
        x, attr, grad, _ = state
        x_old = x
        x_alpha = jnp.where(moving, (x - xb) / jnp.where(moving, diff, 1), alpha_max)
        x = jnp.where(x_alpha < alpha_min, x_min, x)
        l1_current = jnp.sum(jnp.abs(x - xi))
        close = _isclose(l1_target, l1_current)
        grad = jnp.where(x == x_max, inf, grad)
        threshold = jnp.sort(jnp.abs(grad))[q_index]
        selected = (jnp.abs(grad) <= threshold) & (grad != inf)
        l1_s = jnp.sum(jnp.abs(x - x_max) * selected)
        gamma = jnp.where(l1_s > 0, (l1_current - l1_target) / jnp.where(l1_s > 0, l1_s, 1), inf)
        moved = jnp.where(gamma > 1, x_max, x + (x_max - x) * gamma)
        x = jnp.where(close | ~selected, x, moved)
        attr = attr + (x - x_old) * g
        return x, attr, grad, ~close & (gamma > 1) & (l1_s > 0)

    state = (x, attr, g, jnp.asarray(True))
    x, attr, *_ = jax.lax.while_loop(lambda s: s[-1], body, state)
    return x, attr


def guided_ig(net: Net, params, x: jax.Array, target, *, baseline=0.0, steps: int = 200,
              fraction: float = 0.25, max_dist: float = 0.02, reduce: str | None = "sum") -> jax.Array:
    """Guided integrated gradients: IG along an adaptive path that first moves the features of small gradient.

    The path starts at the baseline and reaches the image in ``steps`` steps;
    after step k its L1 distance to the image is (1 - k / steps) of the
    baseline's.  At each step the gradient g of the target score is taken at
    the current point x, and the ``fraction`` of features with the smallest
    |g| move toward the image (repeatedly, until the step's L1 budget is
    spent), every feature staying within ``max_dist`` (in units of the
    straight path's alpha) of the straight line: ``max_dist=0`` is integrated
    gradients (left Riemann sum), 1 the unbounded guided path.  The map sums
    (x_new - x_old) * g over the path: completeness, sum map = s_t(x) -
    s_t(baseline), holds exactly for an affine score and in the limit of a
    continuous path; on a ReLU net the discrete path moves single features
    by large amounts where their gradient was small, and the gap closes
    slowly with ``steps`` (20-40% on a random smallcnn at 64 to 1024 steps,
    the same in PAIR, whose maps ours match to 1e-15).  Follows PAIR
    ``saliency`` 0.2.1's ``GuidedIG`` step for step (its quantile of |g| with
    ``interpolation='lower'``, the 1e-9 tolerance on the reached distance),
    computed in the dtype of x (PAIR: float64).

    The path is sequential: a ``lax.scan`` over the steps, each an inner
    ``lax.while_loop``, inside one compiled call; one gradient per step.
    Pure and jit-compatible with ``net``, ``steps``, ``fraction`` and
    ``reduce`` static.

    Args:
      net, params, x, target: as :func:`~jaxinterp.attribution.gradient`.
      baseline: pixel values in [0, 1]: a scalar grey level (0: black, PAIR's
        default), a colour (3,), an image (H, W, 3) or images (N, H, W, 3).
      steps: number of path steps (> 0; PAIR's default 200).
      fraction: share of the features selected per move, in [0, 1].
      max_dist: largest deviation from the straight path, in [0, 1].
      reduce: channel reduction (``'sum'``: completeness) or None for (N, T, H, W, 3).

    Returns:
      maps: (N, T, H, W).

    Raises:
      ValueError naming the argument: bad ``x``, ``target``, ``baseline``,
      ``steps``, ``fraction``, ``max_dist`` or ``reduce``.

    References:
      Kapishnikov, Venugopalan, Avci, Wedin, Terry and Bolukbasi, "Guided
      integrated gradients: an adaptive path method for removing noise",
      CVPR 2021.
    """
    x, targets = check_backprop_args(net, x, target, None, True, reduce)
    b = check_baseline(baseline, x)
    steps = check_int(steps, "steps")
    check_fraction(fraction, "fraction")
    check_fraction(max_dist, "max_dist")
    q_index = int(np.floor(float(fraction) * (math.prod(x.shape[1:]) - 1)))   # numpy's 'lower' quantile
    k = jnp.asarray(np.arange(1, steps + 1) / steps, x.dtype)
    schedule = (jnp.maximum(k - max_dist, 0), jnp.minimum(k + max_dist, 1), 1 - k)

    def one(pair, t):
        x1, b1 = pair
        xi, xb = x1.ravel(), b1.ravel()
        l1_total = jnp.sum(jnp.abs(xi - xb))

        def step(carry, node):
            xs, attr = carry
            alpha_min, alpha_max, remaining = node
            g = input_gradient(net, params, xs.reshape(x1.shape), t).ravel()
            return _guided_ig_step(xs, attr, g, xi, xb, q_index, alpha_min, alpha_max,
                                   l1_total * remaining), None

        (_, attr), _ = jax.lax.scan(step, (xb, jnp.zeros_like(xi)), schedule)
        return attr.reshape(x1.shape)

    return reduce_channels(lift(one)((x, b), targets), reduce)


def _blur_matrix(n: int, sigma, radius, max_radius: int) -> jax.Array:
    """(n, n) matrix of scipy's 1-D Gaussian filter with zero padding (``mode='constant'``), sigma traced.

    scipy.ndimage's kernel: taps t in [-r, r], r = int(4 sigma + 0.5) (given as
    ``radius``), weights exp(-t^2 / (2 sigma^2)) normalised over all 2r + 1
    taps (taps past the border read zeros); sigma 0 is the identity.
    ``max_radius`` bounds r statically.
    """
    sigma2 = jnp.where(sigma > 0, sigma * sigma, 1)

    def taps(d):
        return jnp.where(jnp.abs(d) <= radius, jnp.exp(-0.5 / sigma2 * d * d), 0)

    total = jnp.sum(taps(jnp.arange(-max_radius, max_radius + 1, dtype=sigma.dtype)))
    d = jnp.arange(n, dtype=sigma.dtype)
    return taps(d[None, :] - d[:, None]) / total


def _blur(x1: jax.Array, sigma, radius, max_radius: int) -> jax.Array:
    """One image (H, W, C) blurred as PAIR does (scipy ``gaussian_filter``, sigma (s, s, 0), zero padding)."""
    h, w = x1.shape[:2]
    highest = jax.lax.Precision.HIGHEST
    y = jnp.einsum("ih,hwc->iwc", _blur_matrix(h, sigma, radius, max_radius), x1, precision=highest)
    return jnp.einsum("jw,iwc->ijc", _blur_matrix(w, sigma, radius, max_radius), y, precision=highest)


def _scipy_radius(sigma: np.ndarray) -> np.ndarray:
    return (4.0 * sigma + 0.5).astype(int)


def blur_ig(net: Net, params, x: jax.Array, target, *, max_sigma: float = 50.0, steps: int = 100,
            grad_step: float = 0.01, sqrt: bool = False, reduce: str | None = "sum",
            chunk_size: int | None = None) -> jax.Array:
    """Blur integrated gradients: integrate the gradient along a path of ever stronger Gaussian blurs.

    With b(s) the image blurred by a Gaussian of s pixels and the path from
    b(max_sigma) (the baseline) to the image b(0)::

        map = - sum_i (s_{i+1} - s_i) * (b(s_i + h) - b(s_i)) / h * grad s_t(b(s_i)),   i < steps

    with s_i = i max_sigma / steps (``sqrt``: sqrt(i max_sigma / steps)) and
    the derivative of the blur along the path a forward difference of step
    h = ``grad_step``.  Completeness holds up to these discretisations:
    sum map ~ s_t(x) - s_t(b(max_sigma)).

    The blur is PAIR's: ``scipy.ndimage.gaussian_filter`` with sigma
    (s, s, 0), zero padding (``mode='constant'``: the image darkens at its
    borders) and scipy's kernel radius int(4 s + 0.5).  It differs from
    :func:`jaxinterp.ops.gaussian_blur` (radius ceil(4 s), edge replication),
    so it is written here as banded matrices built from each step's traced
    sigma.  As PAIR ``saliency`` 0.2.1's ``BlurIG`` (defaults max_sigma 50,
    100 steps, h 0.01) with ``batch_size=1`` (PAIR scales a whole batch by
    the last step's sigma spacing, which matters for ``sqrt=True``).

    The steps run inside one compiled call, ``chunk_size`` of them vmapped at
    a time; the result does not depend on it.  Pure and jit-compatible with
    ``net``, ``max_sigma``, ``steps``, ``grad_step``, ``sqrt``, ``reduce`` and
    ``chunk_size`` static.

    Args:
      net, params, x, target: as :func:`~jaxinterp.attribution.gradient`.
      max_sigma: blur of the path's start, in pixels (> 0).
      steps: number of path steps (> 0).
      grad_step: finite-difference step in sigma (> 0).
      sqrt: space the sigmas as sqrt(i max_sigma / steps) instead of linearly.
      reduce: channel reduction (``'sum'``: completeness) or None for (N, T, H, W, 3).
      chunk_size: steps per vmapped chunk (None: all at once).

    Returns:
      maps: (N, T, H, W).

    Raises:
      ValueError naming the argument: bad ``x``, ``target``, ``max_sigma``,
      ``steps``, ``grad_step``, ``reduce`` or ``chunk_size``.

    References:
      Xu, Venugopalan, Sundararajan, "Attribution in scale and space", CVPR 2020.
    """
    x, targets = check_backprop_args(net, x, target, None, True, reduce)
    max_sigma = check_positive_float(max_sigma, "max_sigma")
    steps = check_int(steps, "steps")
    grad_step = check_positive_float(grad_step, "grad_step")
    sigmas = np.arange(steps + 1) * max_sigma / steps
    if sqrt:
        sigmas = np.sqrt(sigmas)
    lo, hi = sigmas[:-1], sigmas[:-1] + grad_step
    nodes = (jnp.asarray(lo, x.dtype), jnp.asarray(_scipy_radius(lo)), jnp.asarray(hi, x.dtype),
             jnp.asarray(_scipy_radius(hi)), jnp.asarray(np.diff(sigmas), x.dtype))
    max_radius = int(_scipy_radius(hi).max())

    def one(x1, t):
        def term(node):
            s, r, s_h, r_h, ds = node
            xs = _blur(x1, s, r, max_radius)
            path_derivative = (_blur(x1, s_h, r_h, max_radius) - xs) / grad_step
            return ds * path_derivative * input_gradient(net, params, xs, t)

        return -chunked_sum(term, nodes, chunk_size)

    return reduce_channels(lift(one)(x, targets), reduce)


def _xrai_one(segments: jax.Array, attr: jax.Array, area_threshold, min_pixel_diff: int) -> jax.Array:
    """XRAI's greedy region growing for one image and one attribution map.

    Args:
      segments: (S, H, W) bool candidate masks.
      attr: (H, W) the pixel attribution.

    Returns:
      (H, W): each pixel gets the gain (mean attribution over its newly added
      pixels) of the region that first covered it; pixels no region covered
      get the mean attribution over them.
    """
    masks = segments.reshape(segments.shape[0], -1)
    a = attr.ravel()
    neg_inf = jnp.asarray(-jnp.inf, a.dtype)

    def body(state):
        covered, left, out, _ = state
        new = masks & ~covered
        counts = jnp.sum(new, axis=1)
        left = left & (counts >= min_pixel_diff)
        gains = jnp.where(left, jnp.sum(jnp.where(new, a, 0), axis=1) / jnp.maximum(counts, 1), neg_inf)
        best = jnp.argmax(gains)
        add = jnp.any(left)
        out = jnp.where(add & new[best], gains[best], out)
        covered = covered | (add & masks[best])
        left = left & (jnp.arange(left.size) != best)
        return covered, left, out, add & (jnp.mean(covered) <= area_threshold)

    state = (jnp.zeros_like(a, bool), jnp.ones(masks.shape[0], bool), jnp.full_like(a, neg_inf),
             jnp.asarray(True))
    _, _, out, _ = jax.lax.while_loop(lambda s: s[-1], body, state)
    rest = out == neg_inf
    fill = jnp.sum(jnp.where(rest, a, 0)) / jnp.maximum(jnp.sum(rest), 1)
    return jnp.where(rest, fill, out).reshape(attr.shape)


def xrai(net: Net, params, x: jax.Array, target, *, segments, attributions=None,
         area_threshold: float = 1.0, min_pixel_diff: int = 50, ig_steps: int = 100,
         chunk_size: int | None = None) -> jax.Array:
    """XRAI: regions ranked by the density of a pixel attribution, grown greedily from overlapping segments.

    Starting from an empty region, XRAI repeatedly adds the candidate segment
    whose not-yet-covered pixels have the highest mean attribution (the gain);
    those pixels get that gain.  Candidates adding fewer than
    ``min_pixel_diff`` new pixels are dropped; growth stops when no candidate
    is left or the covered share of the image exceeds ``area_threshold``.
    Pixels never covered get their mean attribution, so the map's sum equals
    the attribution's where every pixel is covered.  PAIR ``saliency``
    0.2.1's ``XRAI`` with ``algorithm='full'``: ties go to the first
    candidate, as in PAIR.

    The greedy loop is a ``lax.while_loop`` over at most S iterations (each
    removes a candidate) inside the compiled call, vmapped over images and
    targets.  The segmentation is host-side: build ``segments`` with
    :func:`~jaxinterp.attribution.xrai_segments` (PAIR's Felzenszwalb masks)
    before the call.

    The pixel attribution is ``attributions`` if given (maxed over channels
    when it has them, as PAIR), else integrated gradients with ``ig_steps``
    steps averaged over a black and a white baseline (the paper's) and maxed
    over channels.  PAIR's default baselines are the image's min and max
    (black and white for an image spanning [0, 1]) and its IG sums
    ``linspace(0, 1, steps)`` nodes with weights 1 / steps (both ends
    weigh as much as the inner nodes); ours uses the trapezoid rule on the
    same nodes.

    Pure and jit-compatible with ``net``, ``min_pixel_diff``, ``ig_steps``
    and ``chunk_size`` static.

    Args:
      net, params, x, target: as :func:`~jaxinterp.attribution.gradient`; the
        net, its params and the target serve only the default attribution
        (with ``attributions`` given they are not used and may be None).
      segments: (N, S, H, W) bool candidate masks per image.
      attributions: (N, T, H, W) or (N, T, H, W, C) pixel attributions, or None (IG).
      area_threshold: covered share of the image at which growth stops, in [0, 1].
      min_pixel_diff: fewest new pixels a candidate must add (>= 1).
      ig_steps: IG steps per baseline when ``attributions`` is None.
      chunk_size: IG steps per vmapped chunk.

    Returns:
      maps: (N, T, H, W).

    Raises:
      ValueError naming the argument: bad ``x``, ``target``, ``segments``,
      ``attributions``, ``area_threshold``, ``min_pixel_diff``, ``ig_steps``
      or ``chunk_size``.

    References:
      Kapishnikov, Bolukbasi, Viégas and Terry, "XRAI: better attributions
      through regions", ICCV 2019.
    """
    x = check_images(x)
    n, h, w = x.shape[:3]
    if not hasattr(segments, "shape") or segments.ndim != 4 or segments.shape[0] != n \
            or tuple(segments.shape[2:]) != (h, w) or segments.shape[1] < 1:
        raise ValueError(f"segments: expected boolean masks ({n}, S, {h}, {w}), "
                         f"got {getattr(segments, 'shape', type(segments).__name__)}")
    if segments.dtype != bool:
        raise ValueError(f"segments: expected a boolean dtype, got {segments.dtype}")
    check_fraction(area_threshold, "area_threshold")
    min_pixel_diff = check_int(min_pixel_diff, "min_pixel_diff")
    if attributions is None:
        ig_steps = check_int(ig_steps, "ig_steps")
        ig = [integrated_gradients(net, params, x, target, steps=ig_steps, method="riemann_trapezoid",
                                   baseline=value, reduce=None, chunk_size=chunk_size) for value in (0.0, 1.0)]
        attributions = jnp.max((ig[0] + ig[1]) / 2, axis=-1)
    else:
        attributions = check_float_array(attributions, "attributions", (4, 5))
        if attributions.shape[0] != n or tuple(attributions.shape[2:4]) != (h, w):
            raise ValueError(f"attributions: expected ({n}, T, {h}, {w}) or ({n}, T, {h}, {w}, C), "
                             f"got {tuple(attributions.shape)}")
        if attributions.ndim == 5:
            attributions = jnp.max(attributions, axis=-1)
    return lift(lambda s, a: _xrai_one(s, a, area_threshold, min_pixel_diff))(jnp.asarray(segments),
                                                                               attributions)
