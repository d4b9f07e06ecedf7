"""Meaningful perturbations (Fong and Vedaldi, ICCV 2017): the deletion game, v1 and v2.

A mask m in [0, 1] blends an image x with a perturbed version p of it (a blur,
a constant colour, noise)::

    Phi(x, m) = m * x + (1 - m) * p          (m = 1 keeps the pixel, 0 deletes it)

and the *deletion game* looks for the smallest deletion that makes the net
lose the target::

    v1:  argmin_m  l1 ||1 - m||_1 + f_t(Phi(x, m))
    v2:  argmin_m  l1 ||1 - m||_1 + tv sum_u ||grad m(u)||_beta^beta
                   + E_tau[ f_t(Phi(x(. - tau), up(m))) ]

with f_t the target's softmax probability (or a unit's value) and, in v2, m a
low-resolution mask upsampled bilinearly (``up``) and tau a random translation
(jitter).  The saliency of a pixel is 1 - m: how much of it had to go.

Public functions: :func:`meaningful_perturbation` (the method, batched over
images and targets), :func:`blend` (the perturbation operator),
:func:`total_variation` and :func:`l1_deletion` (the regularisers), and
:func:`perturbed_reference` (the perturbed image p).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxinterp import ops
from jaxinterp.checks import check_images, check_int, check_scalar
from jaxinterp.targets import Unit, check_targets, lift, target_score
from jaxinterp.nets import Net

__all__ = ["meaningful_perturbation", "blend", "total_variation", "l1_deletion", "perturbed_reference",
           "VERSIONS", "PERTURBATIONS", "HISTORY"]

VERSIONS = ("v1", "v2")
PERTURBATIONS = ("blur", "constant", "noise")
HISTORY = ("score", "l1", "tv", "total")
"""Columns of the history returned by :func:`meaningful_perturbation`: the target's
score f_t, the weighted area term l1 ||1 - m||_1, the weighted smoothness term
tv TV_beta(m), and their sum (the objective)."""

# Version presets: (mask_size, tv, jitter); None in mask_size = the image's resolution.
_PRESETS = {"v1": (None, 0.0, 0), "v2": (28, 1e-2, 4)}


def blend(x: jax.Array, m: jax.Array, p: jax.Array) -> jax.Array:
    """The perturbation operator Phi(x, m) = m x + (1 - m) p.

    Args:
      x: image(s) (..., H, W, C).
      m: mask(s) (..., H, W) in [0, 1]; 1 keeps the pixel of x, 0 replaces it by p.
      p: the perturbed image(s), broadcastable to x (a blurred x, a colour, noise).

    Returns:
      The blended image(s), shape of x.
    """
    m = m[..., None]
    return m * x + (1 - m) * p


def total_variation(m: jax.Array, beta=3.0) -> jax.Array:
    """TV_beta(m) = sum_u ||grad m(u)||_beta^beta with forward differences (the paper's TV term).

    Sums |m[i+1, j] - m[i, j]|^beta over vertical and |m[i, j+1] - m[i, j]|^beta
    over horizontal neighbour pairs inside the mask (no boundary terms).

    Args:
      m: mask(s) (..., h, w).
      beta: the exponent (default 3, the paper's and the authors' code's).

    Returns:
      (...) the total variation.
    """
    return ops.total_variation(m, beta, isotropic=False, channels=False)


def l1_deletion(m: jax.Array) -> jax.Array:
    """||1 - m||_1 summed over the mask's cells (..., h, w) -> (...): how much is deleted."""
    return jnp.sum(jnp.abs(1 - m), axis=(-2, -1))


def perturbed_reference(x1: jax.Array, perturbation: str, *, blur_sigma: float = 10.0,
                        noise_std: float = 0.2, key: jax.Array | None = None) -> jax.Array:
    """The perturbed image p that masked-out pixels of one image x1 (H, W, 3) become.

    * ``'blur'``: x1 blurred by a Gaussian of std ``blur_sigma`` pixels (edge
      replicate padding, radius 4 sigma; :func:`jaxinterp.ops.gaussian_blur`);
    * ``'constant'``: the image's mean colour mu_0 everywhere;
    * ``'noise'``: mu_0 plus i.i.d. Gaussian noise of std ``noise_std`` per pixel
      and channel, drawn from ``key``.

    Returns:
      p (H, W, 3), dtype of x1.
    """
    if perturbation == "blur":
        return ops.gaussian_blur(x1, blur_sigma)
    mean = jnp.mean(x1, axis=(0, 1))
    if perturbation == "constant":
        return jnp.broadcast_to(mean, x1.shape)
    return mean + noise_std * jax.random.normal(key, x1.shape, x1.dtype)


def _check_version(version):
    if version not in VERSIONS:
        raise ValueError(f"version: expected one of {list(VERSIONS)}, got {version!r}")


def _check_perturbation(perturbation):
    if perturbation not in PERTURBATIONS:
        raise ValueError(f"perturbation: expected one of {list(PERTURBATIONS)}, got {perturbation!r}")


def _check_mask_size(mask_size, hw) -> tuple[int, int]:
    if isinstance(mask_size, (tuple, list)):
        if len(mask_size) != 2:
            raise ValueError(f"mask_size: expected an int or (h, w), got {mask_size!r}")
        size = (check_int(mask_size[0], "mask_size"), check_int(mask_size[1], "mask_size"))
    else:
        size = (check_int(mask_size, "mask_size"),) * 2
    if size[0] > hw[0] or size[1] > hw[1]:
        raise ValueError(f"mask_size: {size} is larger than the image {tuple(hw)}; the mask is "
                         f"upsampled to the image")
    return size


def meaningful_perturbation(net: Net, params, x: jax.Array, target, key: jax.Array | None = None, *,
                            version: str = "v2", steps: int = 500, lr=0.1, l1=1e-4, tv=None,
                            tv_beta=3.0, mask_size=None, perturbation: str = "blur",
                            blur_sigma: float = 10.0, noise_std=0.2, jitter: int | None = None,
                            init=0.5, score: str = "softmax") -> tuple[jax.Array, jax.Array]:
    """Meaningful-perturbation masks (the deletion game of Fong and Vedaldi 2017).

    For each image x and target t, optimises a mask m (h, w) in [0, 1] (m = 1
    keeps a pixel, m = 0 replaces it by the perturbation; **the saliency map is
    1 - m**) to minimise::

        L(m) = l1 ||1 - m||_1 + tv TV_beta(m) + f_t(blend(x_tau, up(m), p_tau))

    where ``up`` resizes m bilinearly to (H, W) (:func:`jaxinterp.ops.resize_bilinear`,
    half-pixel centres), :func:`blend` is m x + (1 - m) p, p the perturbed image
    (:func:`perturbed_reference`), x_tau / p_tau both translated by a random
    jitter tau (one sample per step: a stochastic estimate of E_tau), ||.||_1 and
    TV_beta are :func:`l1_deletion` and :func:`total_variation` on the
    low-resolution mask, and f_t the target's softmax probability (``score``)
    or, for a :class:`~jaxinterp.attribution._lift.Unit`, the unit's value.
    Adam (optax defaults b1 0.9, b2 0.999, eps 1e-8, those of the authors'
    code) runs ``steps`` steps from m = ``init``, and m is clipped to [0, 1]
    after each step (the authors' code).  All steps run in one ``lax.scan``,
    written for one image and one target and vmapped over images and targets.

    ``version`` picks the defaults of the arguments left as None:

    ========  =======================  =======  ========
    version   mask_size                tv       jitter
    ========  =======================  =======  ========
    ``v1``    the image's (H, W)       0        0
    ``v2``    28 x 28 (at most H, W)   1e-2     4
    ========  =======================  =======  ========

    v1 is the paper's first formulation (area term only, mask at image
    resolution); v2 its full one (smoothness term, jitter, upsampled mask).  Arguments given explicitly override
    the preset (e.g. ``version='v1', mask_size=8`` learns an upsampled v1 mask).

    Defaults and their sources:

    * l1 = 1e-4, tv = 1e-2, tv_beta = 3, lr = 0.1 (Adam), mask 28 x 28 for a
      224 x 224 image (upsampling x 8), blur sigma 10: the paper's
      implementation details, and the defaults of the authors' code
      (``ruthcfong/perturb_explanations``, ``optimize_mask``: l1_lambda 1e-4,
      tv_lambda 1e-2, tv_beta 3, lr 1e-1, mask_scale 8, blur radius 10).
      For other image sizes keep the x 8 upsampling: ``mask_size = H // 8``.
    * steps = 500: the iteration count of the paper's description; the
      authors' released code defaults to 300.
    * jitter = 4: the authors' code (a random integer shift in [0, 4) per axis
      per step).  They rescale the image to (H + 4, W + 4) and crop at the
      offset; here the image (and p) are edge-padded by jitter - 1 pixels
      at the bottom/right and cropped, so the image is not resampled.
    * init = 0.5: the authors' PyTorch re-implementation
      (``ruthcfong/pytorch-explain-black-box``); their Caffe code starts from a
      blurred circle found by a search (or uniform noise), which is not
      reproduced here.

    Other deliberate differences from the paper / authors' code:

    * The paper's blur perturbation is a spatially varying blur of std
      sigma_0 (1 - m(u)); like the authors' code (and every re-implementation),
      this blends x with one image blurred at sigma_0 instead.
    * TV is the paper's anisotropic sum_u |d_y m|^beta + |d_x m|^beta; the
      authors' code uses the isotropic (d_y^2 + d_x^2)^(beta/2) (smooth at 0
      only for beta >= 2).  Both penalise the same edges up to a constant.
    * The authors' code upsamples by nearest neighbour then blurs the mask
      (radius 5); here the mask is upsampled bilinearly (the authors' PyTorch
      code and the brief).
    * The L1 and TV terms are sums over the mask's cells, so their weight
      grows with ``mask_size``: with v1's image-resolution mask the same l1
      penalises 64x more cells than a 28 x 28 mask of a 224 px image.
    * Randomness (jitter, noise) is drawn from ``fold_in(key, step)`` and is
      the same for every image and target of the batch, so an image's masks
      do not depend on the rest of its batch, on sharding or on vmap vs loop.
    * ``'constant'`` uses the image's mean colour mu_0, ``'noise'`` mu_0 plus
      N(0, noise_std^2) noise redrawn every step (the paper states neither
      value in pixel units).

    Pure and jit-compatible with ``net``, ``version``, ``steps``,
    ``mask_size``, ``perturbation``, ``blur_sigma``, ``jitter`` and ``score``
    static; ``lr``, ``l1``, ``tv``, ``tv_beta``, ``noise_std`` and ``init``
    may be traced (their checks are then skipped)::

        jax.jit(meaningful_perturbation, static_argnames=("net", "version", "steps",
                "mask_size", "perturbation", "blur_sigma", "jitter", "score"))

    Args:
      net: the net (static).
      params: its params.
      x: images (N, H, W, 3), float RGB in [0, 1].
      target: int class indices (N,) or (N, T), or a Unit with (N,) / (N, T) fields.
      key: ``jax.random.key`` for the jitter and the noise; needed when
        jitter > 1 or ``perturbation='noise'``.
      version: ``'v1'`` or ``'v2'`` (default), the preset above.
      steps: Adam steps (default 500).
      lr: Adam learning rate (default 0.1).
      l1: weight of ||1 - m||_1 (default 1e-4), >= 0.
      tv: weight of TV_beta(m) (default by version), >= 0.
      tv_beta: the TV exponent (default 3), >= 1.
      mask_size: the mask's resolution, an int or (h, w) at most (H, W)
        (default by version).
      perturbation: ``'blur'`` (default), ``'constant'`` or ``'noise'``.
      blur_sigma: std of the blur in pixels (default 10), > 0.
      noise_std: std of the ``'noise'`` perturbation (default 0.2), >= 0.
      jitter: maximum shift + 1 in pixels (default by version); 0 or 1: none.
      init: initial mask value in [0, 1] (default 0.5).
      score: ``'softmax'`` (default, the paper) or ``'logit'``; class targets only.

    Returns:
      (masks, history):

      * masks (N, T, H, W) in [0, 1], the final masks upsampled to the image
        (1 = kept, 0 = deleted; the saliency map is ``1 - masks``); T = 1 for
        (N,) targets;
      * history (N, T, steps, 4): per step, the terms of the objective at the
        mask before that step's update (columns :data:`HISTORY`: score,
        weighted l1 term, weighted tv term, total).

    Raises:
      ValueError: bad ``x`` or ``target``; unknown ``version``,
        ``perturbation`` or ``score``; ``steps`` < 1; negative ``lr``, ``l1``,
        ``tv`` or ``noise_std``; ``tv_beta`` < 1; ``blur_sigma`` <= 0; bad
        ``mask_size``, ``jitter`` or ``init``; no ``key`` when one is needed.

    References:
      Fong and Vedaldi, "Interpretable explanations of black boxes by
      meaningful perturbation", ICCV 2017 (arXiv:1704.03296).
    """
    x = check_images(x)
    if not isinstance(x, jax.core.Tracer) and x.size:
        lo, hi = float(np.min(np.asarray(x))), float(np.max(np.asarray(x)))
        if not (lo >= 0.0 and hi <= 1.0):
            raise ValueError(f"x: expected pixel values in [0, 1], got range [{lo:.4g}, {hi:.4g}]")
    n, h, w = x.shape[:3]
    _check_version(version)
    _check_perturbation(perturbation)
    if score not in ("softmax", "logit"):
        raise ValueError(f"score: expected 'softmax' or 'logit', got {score!r}")
    steps = check_int(steps, "steps")
    preset_size, preset_tv, preset_jitter = _PRESETS[version]
    if mask_size is None:  # the preset: the image's resolution (v1), 28 x 28 at most (v2)
        mask_size = (h, w) if preset_size is None else (min(preset_size, h), min(preset_size, w))
    mask_size = _check_mask_size(mask_size, (h, w))
    tv = preset_tv if tv is None else tv
    jitter = preset_jitter if jitter is None else jitter
    jitter = check_int(jitter, "jitter", minimum=0)
    if jitter >= min(h, w):
        raise ValueError(f"jitter: {jitter} pixels is not smaller than the image {(h, w)}")
    finite = {"maximum": np.inf, "open_max": True}
    check_scalar(lr, "lr", minimum=0, open_min=True, **finite)
    check_scalar(l1, "l1", minimum=0, **finite)
    check_scalar(tv, "tv", minimum=0, **finite)
    check_scalar(tv_beta, "tv_beta", minimum=1, **finite)
    check_scalar(blur_sigma, "blur_sigma", minimum=0, open_min=True, **finite)
    check_scalar(noise_std, "noise_std", minimum=0, **finite)
    check_scalar(init, "init", minimum=0, maximum=1)
    if key is None and (jitter > 1 or perturbation == "noise"):
        raise ValueError("key: a jax.random.key is needed for the jitter / noise "
                         "(or pass jitter=0 with a 'blur' or 'constant' perturbation)")
    targets = check_targets(target, net, n, (h, w))
    if key is None:
        key = jax.random.key(0)  # unused: no randomness in this configuration

    pad = max(jitter - 1, 0)
    optimiser = optax.adam(lr)

    def objective(m, x1, p1, t):
        """(total, terms (4,)) of mask m (h, w) on one (already shifted) image and perturbation."""
        up = ops.resize_bilinear(m, (h, w))
        xm = blend(x1, up, p1)
        if isinstance(t, Unit):
            s = target_score(net, params, xm, t)
        else:
            logits = net.apply(params, xm[None])[0]
            s = (jax.nn.softmax(logits) if score == "softmax" else logits)[t]
        a = l1 * l1_deletion(m)
        b = tv * total_variation(m, tv_beta)
        total = s + a + b
        return total, jnp.stack([s, a, b, total])

    grad_fn = jax.value_and_grad(objective, has_aux=True)

    def one(x1, t):
        xp = jnp.pad(x1, ((0, pad), (0, pad), (0, 0)), mode="edge")
        mean = jnp.mean(x1, axis=(0, 1))
        if perturbation == "blur":  # blur the padded image once; every shift crops from it
            base = ops.gaussian_blur(xp, blur_sigma)
        else:
            base = jnp.broadcast_to(mean, xp.shape)
        m0 = jnp.full(mask_size, init, x1.dtype)

        def step(carry, i):
            m, state = carry
            k = jax.random.fold_in(key, i)
            k_shift, k_noise = jax.random.split(k)
            if pad:
                dy, dx = jax.random.randint(k_shift, (2,), 0, pad + 1)
                xs = jax.lax.dynamic_slice(xp, (dy, dx, 0), (h, w, 3))
            else:
                dy = dx = 0
                xs = x1
            if perturbation == "noise":
                ps = mean + noise_std * jax.random.normal(k_noise, (h, w, 3), x1.dtype)
            elif pad:
                ps = jax.lax.dynamic_slice(base, (dy, dx, 0), (h, w, 3))
            else:
                ps = base
            (_, terms), g = grad_fn(m, xs, ps, t)
            updates, state = optimiser.update(g, state, m)
            m = jnp.clip(optax.apply_updates(m, updates), 0.0, 1.0)
            return (m, state), terms

        (m, _), history = jax.lax.scan(step, (m0, optimiser.init(m0)), jnp.arange(steps))
        return ops.resize_bilinear(m, (h, w)), history

    return lift(one)(x, targets)
