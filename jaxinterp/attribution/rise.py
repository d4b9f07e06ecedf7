"""RISE (Petsiuk, Das and Saenko 2018): saliency as the score-weighted average of random masks."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp import ops
from jaxinterp.checks import check_baseline, check_images, check_int, check_real
from jaxinterp.targets import Unit, check_targets, chunked_sum, lift_images, target_scores
from jaxinterp.nets import Net

__all__ = ["rise", "rise_masks", "SCORES"]

SCORES = {
    "softmax": jax.nn.softmax,
    "sigmoid": jax.nn.sigmoid,
    "logit": lambda y: y,
}
"""How class targets are scored on a masked image: ``softmax`` probabilities
(the paper and its code), ``sigmoid`` of each logit (TorchRay's ``rise``), or
the raw ``logit``."""


def _check_grid(grid, image_size: tuple[int, int]) -> int:
    grid = check_int(grid, "grid")
    if grid > min(image_size):
        raise ValueError(f"grid: {grid} cells is more than the image size {tuple(image_size)} pixels; "
                         f"the masks are upsampled from the grid")
    return grid


def _one_mask(key: jax.Array, image_size: tuple[int, int], grid: int, p: float) -> jax.Array:
    """One RISE mask (H, W) float32 from ``key``."""
    h, w = image_size
    ch, cw = math.ceil(h / grid), math.ceil(w / grid)
    k_cells, k_shift = jax.random.split(key)
    cells = jax.random.bernoulli(k_cells, p, (grid, grid)).astype(jnp.float32)
    up = ops.resize_bilinear(cells, ((grid + 1) * ch, (grid + 1) * cw))
    dy, dx = jax.random.randint(k_shift, (2,), 0, jnp.array([ch, cw]))
    return jax.lax.dynamic_slice(up, (dy, dx), (h, w))


def rise_masks(key: jax.Array, num_masks: int, image_size: tuple[int, int], *, grid: int = 7,
               p: float = 0.5) -> jax.Array:
    """The random smooth masks of RISE.

    Following the paper, for each mask i (drawn from ``fold_in(key, i)``):

    1. a binary grid (grid, grid) with every cell 1 with probability p, else 0;
    2. cell size C = (ceil(H / grid), ceil(W / grid)); the grid is upsampled
       bilinearly to ((grid + 1) C_h, (grid + 1) C_w) (half-pixel centres,
       border clamped: torch ``interpolate(mode='bilinear', align_corners=False)``);
    3. an (H, W) crop at a uniformly random offset in [0, C_h) x [0, C_w).

    Each value is a convex combination of Bernoulli(p) cells, so masks lie in
    [0, 1] with mean p.  The paper's code (skimage ``resize(mode='reflect')``)
    and TorchRay reflect the grid at its border where this clamps it, which
    changes only the outermost half cell; TorchRay also upsamples with cell
    size ceil((H + C_h) / grid) rather than (grid + 1) C_h / grid.  Mask i
    depends only on (key, i), so any chunk of masks can be drawn on its own.

    Pure and jit-compatible with ``num_masks``, ``image_size``, ``grid`` static.

    Args:
      key: a ``jax.random.key``.
      num_masks: number of masks M >= 1.
      image_size: (H, W).
      grid: cells per side of the low-resolution grid (default 7, as in the
        paper, TorchRay and Captum's tutorials), at most min(H, W).
      p: probability that a cell is kept (default 0.5).

    Returns:
      masks: (M, H, W) float32 in [0, 1].

    Raises:
      ValueError: ``num_masks`` < 1, bad ``image_size``, ``grid`` < 1 or larger
        than the image, ``p`` outside (0, 1].

    References:
      Petsiuk, Das and Saenko, "RISE: randomized input sampling for
      explanation of black-box models", BMVC 2018.
    """
    num_masks = check_int(num_masks, "num_masks")
    if not isinstance(image_size, (tuple, list)) or len(image_size) != 2:
        raise ValueError(f"image_size: expected (H, W), got {image_size!r}")
    image_size = (check_int(image_size[0], "image_size"), check_int(image_size[1], "image_size"))
    grid, p = _check_grid(grid, image_size), check_real(p, "p", minimum=0, maximum=1, open_min=True)
    return _draw_masks(key, num_masks, image_size, grid, p)


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4))
def _draw_masks(key, num_masks, image_size, grid, p):
    return jax.vmap(lambda i: _one_mask(jax.random.fold_in(key, i), image_size, grid, p))(
        jnp.arange(num_masks))


def rise(net: Net, params, x: jax.Array, target, key: jax.Array | None = None, *,
         masks: jax.Array | None = None, num_masks: int = 8000, grid: int = 7, p: float = 0.5,
         baseline=0.0, score: str = "softmax", chunk_size: int | None = 256) -> jax.Array:
    """RISE saliency: random masks averaged with the target's score on the masked image as weight.

    With masks M_1..M_M (:func:`rise_masks`, the same for every image) and the
    masked images x_i = b + M_i (x - b) (b the baseline; b = 0, black, by
    default: x_i = x * M_i in pixel space)::

        map_t(u) = 1 / (M p) * sum_i s_t(x_i) M_i(u)

    where s_t is the softmax probability of class t (``score``), or the
    unit's raw value for a :class:`Unit` target (``score`` is then ignored),
    and 1 / (M p) the paper's normaliser 1 / (M E[M(u)]).

    Masks are drawn and scored ``chunk_size`` at a time: a chunk of masked
    images goes through the net in one forward pass that scores all T targets,
    and generated masks are never all held in memory.  The result does not
    depend on ``chunk_size`` (beyond float rounding of the sum).

    TorchRay (``torchray.attribution.rise``, 1.0.0.2) differs in three
    conventions: it scores with the sigmoid of each logit, divides by M only
    (not M p), and multiplies the masks into the *normalised* input, so its
    masked-out pixels are the normalisation mean colour.  With the same masks,
    TorchRay's map for a model that takes ImageNet-normalised input equals::

        p * rise(net, params, x, t, masks=masks, p=p, score="sigmoid",
                 baseline=jnp.array(IMAGENET_MEAN))

    (or pass ``p=1.0`` instead of multiplying).  Its masks also differ
    slightly (see :func:`rise_masks`), and it returns maps for all classes.

    Pure and jit-compatible with ``net``, ``num_masks``, ``grid``, ``p``,
    ``score`` and ``chunk_size`` static::

        jax.jit(rise, static_argnames=("net", "num_masks", "grid", "p", "score", "chunk_size"))

    Args:
      net: the net (static).
      params: its params.
      x: images (N, H, W, 3), float RGB in [0, 1].
      target: int class indices (N,) or (N, T), or a :class:`Unit` (N,) / (N, T).
      key: ``jax.random.key`` drawing the masks (needed unless ``masks`` is given).
      masks: precomputed masks (M, H, W) in [0, 1], used instead of drawing
        ``num_masks`` from ``key``.
      num_masks: number of masks to draw (default 8000, the paper's and
        TorchRay's).
      grid: cells per side of the masks' grid (default 7).
      p: probability of keeping a cell (default 0.5), and the normaliser.
      baseline: what masked-out pixels become: a grey level (default 0.0,
        black), a colour (3,) or images (H, W, 3) / (N, H, W, 3), in [0, 1].
      score: ``'softmax'`` (default, the paper), ``'sigmoid'`` (TorchRay) or
        ``'logit'``; class targets only.
      chunk_size: masks per forward pass (default 256, memory of 256 images
        per image explained; None: all masks at once).

    Returns:
      maps: (N, T, H, W) in the dtype of x; T = 1 for (N,) targets.

    Raises:
      ValueError: bad ``x`` or ``target``; neither ``key`` nor ``masks``;
        ``masks`` not (M, H, W); ``num_masks``, ``grid`` or ``chunk_size`` < 1;
        ``p`` outside (0, 1]; bad ``baseline`` or ``score``.

    References:
      Petsiuk, Das and Saenko, "RISE: randomized input sampling for
      explanation of black-box models", BMVC 2018.
    """
    x = check_images(x)
    n, h, w = x.shape[:3]
    p = check_real(p, "p", minimum=0, maximum=1, open_min=True)
    if score not in SCORES:
        raise ValueError(f"score: expected one of {sorted(SCORES)}, got {score!r}")
    if chunk_size is not None:
        check_int(chunk_size, "chunk_size")
    if masks is None:
        num_masks = check_int(num_masks, "num_masks")
        grid = _check_grid(grid, (h, w))
        if key is None:
            raise ValueError("key: a jax.random.key is needed to draw the masks (or pass masks=)")
        items = jnp.arange(num_masks)

        def mask_of(i):
            return _one_mask(jax.random.fold_in(key, i), (h, w), grid, p).astype(x.dtype)
    else:
        if not hasattr(masks, "shape") or not hasattr(masks, "dtype") or masks.ndim != 3 \
                or tuple(masks.shape[1:]) != (h, w) or not masks.shape[0]:
            raise ValueError(f"masks: expected an array (M, {h}, {w}) with M >= 1, got "
                             f"{getattr(masks, 'shape', type(masks).__name__)}")
        if not jnp.issubdtype(masks.dtype, jnp.floating):
            raise ValueError(f"masks: expected a floating dtype, got {masks.dtype}")
        if not isinstance(masks, jax.core.Tracer):
            lo, hi = float(np.min(np.asarray(masks))), float(np.max(np.asarray(masks)))
            if not (lo >= 0.0 and hi <= 1.0):
                raise ValueError(f"masks: expected values in [0, 1], got range [{lo:.4g}, {hi:.4g}]")
        num_masks, items = masks.shape[0], jnp.asarray(masks, x.dtype)

        def mask_of(m):
            return m
    targets = check_targets(target, net, n, (h, w))
    base = check_baseline(baseline, x)
    transform = SCORES[score]

    def scores_of(images, ts):
        if isinstance(ts, Unit):
            return target_scores(net, params, images, ts)
        return jnp.take(transform(net.apply(params, images)), ts, axis=-1)

    def one(xb, ts):
        x1, b1 = xb

        def weighted_mask(item):
            m = mask_of(item)
            s = scores_of((b1 + m[:, :, None] * (x1 - b1))[None], ts)[0]
            return s[:, None, None] * m[None]

        return chunked_sum(weighted_mask, items, chunk_size) / (num_masks * p)

    return lift_images(one)((x, base), targets)
