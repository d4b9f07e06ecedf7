"""Deep spectral methods: patch affinities, Laplacian eigenvectors, Fiedler segments, boxes; ViT CLS attention.

Deep spectral methods (Melas-Kyriazi et al. 2022) read the dense features of a
network, build a graph over the image patches whose edge weights are the
features' semantic affinities, and decompose the image with the eigenvectors of
that graph's Laplacian:

* :func:`feature_affinity`: ``W = F F^T`` with the patch features F (P, C)
  L2-normalised, so ``W_pq`` is the cosine of patches p and q, and entries not
  above ``threshold`` set to 0 (the paper's ``W_feat = F F^T * (F F^T > 0)``:
  ``threshold=0``).  The paper also adds a colour (image matting) affinity for
  sharper edges; that term is not implemented here.
* :func:`laplacian_eigenvectors`: the k smallest eigenpairs of the Laplacian
  ``L = D - W`` (``D = diag(W 1)``) or of the symmetric normalised Laplacian
  ``L_sym = D^-1/2 (D - W) D^-1/2`` (Shi & Malik's normalised cut), by a dense
  ``jnp.linalg.eigh`` on the device.  Eigenvectors have unit norm and a fixed
  sign: the entry of largest magnitude is positive (the first such entry, in
  patch order, where magnitudes tie exactly).  The eigenvectors of ``L_sym`` are
  ``D^1/2`` times those of the generalised problem ``(D - W) y = lambda D y``,
  so their signs (and the segments below) agree.
* :func:`fiedler_segments`: the bipartition of the patches by the sign of the
  Fiedler vector (the eigenvector of the second smallest eigenvalue): one side is
  the patches where it is > 0, the other those where it is <= 0.  The
  foreground side is chosen by a rule (``foreground``):

  - ``'smaller'`` (default): the side with fewer patches, then (on a tie) the
    side with fewer patches on the border of the patch grid;
  - ``'border'``: the side with fewer patches on the border, then the smaller side;

  and, if both tie, the side holding the Fiedler vector's entry of largest
  magnitude (the positive side).  The paper observes that this eigenvector
  "generally corresponds to the most prominent object", which covers less than
  half the image and touches less of its border than the background does.
  Masks are brought to image resolution by resizing the 0 / 1 patch mask with
  :func:`jaxinterp.ops.resize_bilinear` and keeping the pixels above 1/2 (with an
  integer scale factor the straight edges of a segment stay on the patch boundaries,
  and its corners are rounded off).
* :func:`segment_boxes`: the box of the largest 8-connected component of each
  mask, and :func:`corloc`: the fraction of images whose box has IoU >= 0.5 with
  some ground-truth box (correct localisation, CorLoc).  Both use
  :mod:`jaxinterp.evaluation.localisation` (inclusive (y0, x0, y1, x1) boxes,
  ``(0, 0, -1, -1)`` for an empty mask).
* :func:`spectral_segmentation`: the pipeline on a net of the zoo: the features at
  a split point or tap (for ViT-S/16 the keys of the last block, the tap
  ``"blocks.11.keys"``, as the paper uses DINO's), their affinity, the
  eigenvectors, the Fiedler mask at image resolution and its box.
* :func:`cls_attention`: the attention of the CLS token to every patch, per head,
  in a block of a ViT (Caron et al. 2021's self-attention maps).

Token activations (N, tokens, D) are laid out on the patch grid: the number of
patch tokens is that of the net's ``patch_embed`` split point, and the leading
tokens beyond it (the CLS token) are dropped; the grid has the image's aspect
ratio.

Every function takes a batch and is pure: it composes with ``jax.jit`` (the net,
layer names, ``k``, ``grid``, sizes and the string options static), ``jax.vmap``
and sharding of the batch axis.

References:
  Melas-Kyriazi, Rupprecht, Laina, Vedaldi.  Deep Spectral Methods: A Surprisingly
  Strong Baseline for Unsupervised Semantic Segmentation and Localization.  CVPR 2022.
  Caron, Touvron, Misra, Jegou, Mairal, Bojanowski, Joulin.  Emerging Properties in
  Self-Supervised Vision Transformers.  ICCV 2021.
  Shi, Malik.  Normalized Cuts and Image Segmentation.  IEEE TPAMI 2000.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp import ops
from jaxinterp.checks import (check_choice, check_float_array, check_images, check_int, check_scalar, check_size,
                              is_concrete)
from jaxinterp.evaluation.localisation import box_iou, map_to_box
from jaxinterp.nets import Net

__all__ = ["FOREGROUND_RULES", "feature_affinity", "laplacian_eigenvectors", "fiedler_segments",
           "segment_boxes", "corloc", "spectral_segmentation", "cls_attention"]

FOREGROUND_RULES = ("smaller", "border")
_HIGHEST = jax.lax.Precision.HIGHEST


# -- affinities and Laplacians ------------------------------------------------------------------------------------


def feature_affinity(features: jax.Array, *, threshold=0.0) -> jax.Array:
    """The clipped cosine affinity of the patches of each image.

    ``W_pq = c_pq if c_pq > threshold else 0`` with ``c_pq = <f_p, f_q> / (|f_p| |f_q|)``
    (a zero feature vector has cosine 0 with everything); ``W`` is symmetrised,
    ``(W + W^T) / 2``, so that it is exactly symmetric in floating point.

    Args:
      features: float (N, h, w, C) feature maps or (N, P, C) tokens.
      threshold: in [0, 1); the paper's 0 removes the negative cosines (may be traced).

    Returns:
      float (N, P, P), P = h w (row-major) or the number of tokens; entries in [0, 1],
      the diagonal 1 for non-zero features.
    """
    features = check_float_array(features, "features", (3, 4))
    check_scalar(threshold, "threshold", minimum=0.0, maximum=1.0, open_max=True)
    f = ops.l2_normalise(features.reshape(features.shape[0], -1, features.shape[-1]))
    c = jnp.einsum("npc,nqc->npq", f, f, precision=_HIGHEST)
    c = 0.5 * (c + jnp.swapaxes(c, -1, -2))
    return jnp.where(c > jnp.asarray(threshold, c.dtype), c, jnp.zeros((), c.dtype))


@jax.jit
def _affinity_ok(a):
    return jnp.all(a >= 0), jnp.max(jnp.abs(a - jnp.swapaxes(a, -1, -2))), jnp.max(jnp.abs(a))


def _check_affinity(affinity) -> jax.Array:
    """``affinity`` as a float (N, P, P) array; concrete values non-negative and symmetric."""
    affinity = check_float_array(affinity, "affinity", (3,))
    if affinity.shape[-1] != affinity.shape[-2]:
        raise ValueError(f"affinity: expected square matrices (N, P, P), got shape {tuple(affinity.shape)}")
    if is_concrete(affinity):
        nonneg, asym, scale = (float(v) for v in _affinity_ok(affinity))
        if not nonneg:
            raise ValueError("affinity: expected non-negative weights, got negative entries")
        if asym > 1e-5 * max(scale, 1e-30):
            raise ValueError(f"affinity: expected symmetric matrices, got max |W - W^T| = {asym:.3g}")
    return affinity


def _laplacian(w, normalised):
    """L = D - W, or D^-1/2 (D - W) D^-1/2 with the rows and columns of degree-0 patches 0: (..., P, P)."""
    d = jnp.sum(w, axis=-1)
    lap = d[..., :, None] * jnp.eye(w.shape[-1], dtype=w.dtype) - w
    if not normalised:
        return lap
    s = jnp.where(d > 0, jax.lax.rsqrt(jnp.where(d > 0, d, 1.0)), 0.0)
    return s[..., :, None] * lap * s[..., None, :]


def _fix_signs(v):
    """Eigenvectors (..., P, k) with the first entry of largest magnitude of each column positive."""
    i = jnp.argmax(jnp.abs(v), axis=-2)
    top = jnp.take_along_axis(v, i[..., None, :], axis=-2)
    return v * jnp.where(top < 0, -1.0, 1.0).astype(v.dtype)


def laplacian_eigenvectors(affinity: jax.Array, k: int, *, normalised: bool = True) -> tuple[jax.Array, jax.Array]:
    """The k smallest eigenvalues of the (normalised) Laplacian of each affinity, and their eigenvectors.

    A dense symmetric eigendecomposition (``jnp.linalg.eigh``) of ``L`` or ``L_sym`` (module docstring).
    Unit eigenvectors; the sign of each makes its entry of largest magnitude positive.
    Within a repeated eigenvalue the eigenvectors are an orthonormal basis of its
    eigenspace (any basis; compare projectors).

    Args:
      affinity: float (N, P, P), symmetric, non-negative (checked when concrete).
      k: number of eigenpairs, 1 <= k <= P (static).
      normalised: use ``L_sym = D^-1/2 (D - W) D^-1/2`` rather than ``D - W`` (static).

    Returns:
      ``(eigenvalues, eigenvectors)``: float (N, k) ascending, and float (N, P, k)
      with ``eigenvectors[n, :, j]`` the eigenvector of ``eigenvalues[n, j]``.
    """
    affinity = _check_affinity(affinity)
    p = affinity.shape[-1]
    k = check_int(k, "k")
    if k > p:
        raise ValueError(f"k: expected an integer in [1, {p}] (the number of patches), got {k}")
    return _eigenpairs(affinity, k, bool(normalised))


def _eigenpairs(affinity, k, normalised):
    vals, vecs = jnp.linalg.eigh(_laplacian(affinity, normalised))
    return vals[..., :k], _fix_signs(vecs[..., :k])


# -- segments and boxes ---------------------------------------------------------------------------------------------


def _border(h: int, w: int) -> np.ndarray:
    b = np.zeros((h, w), bool)
    b[0, :] = b[-1, :] = b[:, 0] = b[:, -1] = True
    return b.reshape(-1)


def _foreground_from_fiedler(fiedler, grid, rule):
    """bool (N, h, w): the foreground side of the sign bipartition of the Fiedler vectors (N, P)."""
    h, w = grid
    pos = fiedler > 0
    border = _border(h, w)
    n_pos = jnp.sum(pos, axis=-1)
    b_pos = jnp.sum(pos & jnp.asarray(border), axis=-1)
    size_key = jnp.sign(h * w - 2 * n_pos)                      # +1: the positive side is the smaller one
    border_key = jnp.sign(int(border.sum()) - 2 * b_pos)        # +1: it has fewer border patches
    first, second = (size_key, border_key) if rule == "smaller" else (border_key, size_key)
    take_pos = jnp.where(first != 0, first > 0, second >= 0)
    return jnp.where(take_pos[..., None], pos, ~pos).reshape(*fiedler.shape[:-1], h, w)


def _to_image(masks, image_size):
    """bool (N, h, w) patch masks -> bool (N, H, W): bilinear resize of the 0 / 1 mask, kept above 1/2."""
    if image_size is None or tuple(image_size) == tuple(masks.shape[-2:]):
        return masks
    return ops.resize_bilinear(masks.astype(jnp.float32), image_size) > 0.5


def fiedler_segments(affinity: jax.Array, grid, *, normalised: bool = True, foreground: str = "smaller",
                     image_size=None) -> jax.Array:
    """The foreground of the Fiedler bipartition of each affinity, on the patch grid or at image size.

    The Fiedler vector is the eigenvector of the second smallest eigenvalue of the
    (normalised) Laplacian (:func:`laplacian_eigenvectors`); the patches split into
    those where it is > 0 and those where it is <= 0, and ``foreground`` picks a side
    (module docstring).

    Args:
      affinity: float (N, P, P), symmetric, non-negative, P >= 2.
      grid: (h, w) patch grid with h w = P (patches in row-major order) (static).
      normalised: Laplacian as in :func:`laplacian_eigenvectors` (static).
      foreground: ``'smaller'`` or ``'border'`` (static).
      image_size: None (the patch grid) or the (H, W) to resize the masks to (static).

    Returns:
      bool (N, h, w), or (N, H, W) with ``image_size``.
    """
    check_choice(foreground, "foreground", FOREGROUND_RULES)
    affinity = _check_affinity(affinity)
    grid = check_size(grid, "grid")
    if grid[0] * grid[1] != affinity.shape[-1]:
        raise ValueError(f"grid: expected (h, w) with h w = {affinity.shape[-1]} patches, got {grid}")
    if affinity.shape[-1] < 2:
        raise ValueError(f"affinity: expected at least 2 patches, got shape {tuple(affinity.shape)}")
    size = None if image_size is None else check_size(image_size, "image_size")
    _, vecs = _eigenpairs(affinity, 2, bool(normalised))
    return _to_image(_foreground_from_fiedler(vecs[..., 1], grid, foreground), size)


def segment_boxes(masks: jax.Array) -> jax.Array:
    """The box of the largest 8-connected component of each mask.

    Uses :func:`jaxinterp.evaluation.localisation.map_to_box` with
    ``component='largest'`` (ties between equally large components: the one whose
    first pixel comes first in row-major order).

    Args:
      masks: bool (..., H, W) (other dtypes: ``masks != 0``).

    Returns:
      int32 (..., 4) inclusive boxes (y0, x0, y1, x1); (0, 0, -1, -1) for an empty mask.
    """
    if not hasattr(masks, "shape") or not hasattr(masks, "dtype"):
        masks = np.asarray(masks)
    if masks.ndim < 2 or 0 in masks.shape[-2:]:
        raise ValueError(f"masks: expected (..., H, W) with H, W >= 1, got shape {tuple(masks.shape)}")
    # +-1/2 maps: 'value' thresholding at alpha = 1/2 keeps exactly the mask, and nothing of an empty one
    m = jnp.where(jnp.asarray(masks) != 0, 0.5, -0.5).astype(jnp.float32)
    return map_to_box(m, 0.5, method="value", component="largest")


def corloc(pred_boxes: jax.Array, gt_boxes: jax.Array, *, iou_threshold=0.5,
           gt_valid: jax.Array | None = None) -> jax.Array:
    """Correct localisation: the fraction of images whose box has IoU >= ``iou_threshold`` with a ground-truth box.

    IoU of inclusive pixel boxes, :func:`jaxinterp.evaluation.localisation.box_iou`.

    Args:
      pred_boxes: int or float (N, 4) boxes (y0, x0, y1, x1), inclusive.
      gt_boxes: (N, 4) or (N, K, 4) ground-truth boxes (K per image, padded).
      iou_threshold: in [0, 1], 0.5 by default (may be traced).
      gt_valid: optional bool (N, K): which of the K boxes exist (default all).

    Returns:
      float32 (): CorLoc in [0, 1].
    """
    pred = jnp.asarray(pred_boxes) if hasattr(pred_boxes, "shape") else jnp.asarray(np.asarray(pred_boxes))
    if pred.ndim != 2 or pred.shape[-1] != 4 or pred.shape[0] < 1:
        raise ValueError(f"pred_boxes: expected boxes (N, 4) with N >= 1, got shape {tuple(pred.shape)}")
    gt = jnp.asarray(gt_boxes) if hasattr(gt_boxes, "shape") else jnp.asarray(np.asarray(gt_boxes))
    if gt.ndim == 2:
        gt = gt[:, None, :]
    if gt.ndim != 3 or gt.shape[0] != pred.shape[0] or gt.shape[-1] != 4 or gt.shape[1] < 1:
        raise ValueError(f"gt_boxes: expected ({pred.shape[0]}, 4) or ({pred.shape[0]}, K, 4) with K >= 1, "
                         f"got shape {tuple(np.shape(gt_boxes))}")
    check_scalar(iou_threshold, "iou_threshold", minimum=0.0, maximum=1.0)
    if gt_valid is None:
        valid = jnp.ones(gt.shape[:2], bool)
    elif tuple(np.shape(gt_valid)) != tuple(gt.shape[:2]):
        raise ValueError(f"gt_valid: expected shape {tuple(gt.shape[:2])}, got {tuple(np.shape(gt_valid))}")
    else:
        valid = jnp.asarray(gt_valid).astype(bool)
    iou = box_iou(pred[:, None, :], gt)
    hits = jnp.any(valid & (iou >= iou_threshold), axis=-1)
    return jnp.mean(hits.astype(jnp.float32))


# -- on a net of the zoo ----------------------------------------------------------------------------------------------


def _patch_layout(net: Net, image_size: tuple[int, int], tokens: int, arg: str) -> tuple[int, int, int]:
    """(prefix tokens, gh, gw) of a token activation with ``tokens`` tokens for images of ``image_size``."""
    patches = net.activation_shape("patch_embed", image_size)[0] if "patch_embed" in net.layers else tokens
    prefix = tokens - patches
    hh, ww = image_size
    stride = math.sqrt(hh * ww / patches)
    gh, gw = max(1, round(hh / stride)), max(1, round(ww / stride))
    if prefix < 0 or gh * gw != patches:
        raise ValueError(f"{arg}: cannot lay {tokens} tokens of {net.name} out on the patch grid of "
                         f"{hh} x {ww} images ({patches} patches)")
    return prefix, gh, gw


def _check_feature_layer(net: Net, layer) -> str:
    if not isinstance(layer, str) or (layer not in net.layers and layer not in net.taps):
        raise ValueError(f"layer: unknown split point or tap {layer!r} of {net.name}; "
                         f"expected one of {list(net.layers) + list(net.taps)}")
    return layer


def _patch_features(net: Net, params, x, layer: str) -> jax.Array:
    """The features (N, h, w, C) of ``layer`` on its spatial or patch grid."""
    a = net.apply(params, x, stop=layer)
    if a.ndim == 4 and layer not in net.taps:
        return a
    if a.ndim == 3:
        prefix, gh, gw = _patch_layout(net, tuple(x.shape[1:3]), a.shape[1], "layer")
        return a[:, prefix:].reshape(a.shape[0], gh, gw, a.shape[-1])
    raise ValueError(f"layer: expected features (N, h, w, C) or tokens (N, T, D) at {layer!r} of {net.name}, "
                     f"got shape {tuple(a.shape)}")


def spectral_segmentation(net: Net, params, x: jax.Array, layer: str, *, k: int = 4, threshold=0.0,
                          normalised: bool = True, foreground: str = "smaller",
                          image_size=None) -> dict[str, jax.Array]:
    """Deep spectral object segmentation and localisation of images with the features of ``net`` at ``layer``.

    features at ``layer`` -> :func:`feature_affinity` -> :func:`laplacian_eigenvectors`
    -> sign of the Fiedler vector, foreground by ``foreground`` -> mask at image size
    -> :func:`segment_boxes`.

    Args:
      net: a :class:`~jaxinterp.nets.Net` (static).
      params: its params.
      x: images (N, H, W, 3), float RGB in [0, 1].
      layer: a split point with NHWC features (``'features.7'``) or tokens
        (``'blocks.11'``), or a token tap (``'blocks.11.keys'``, the paper's choice for
        a ViT); a CLS token is dropped (static).
      k: eigenpairs returned, 2 <= k <= h w (static).
      threshold: affinity threshold, as :func:`feature_affinity`.
      normalised: Laplacian, as :func:`laplacian_eigenvectors` (static).
      foreground: ``'smaller'`` or ``'border'`` (static; module docstring).
      image_size: (H', W') of the masks and boxes; None: the images' (H, W) (static).

    Returns:
      dict with ``eigenvalues`` float (N, k) ascending, ``eigenvectors`` float (N, h, w, k)
      on the patch grid, ``patch_masks`` bool (N, h, w), ``masks`` bool (N, H', W'), and
      ``boxes`` int32 (N, 4) (y0, x0, y1, x1) inclusive at (H', W').
    """
    check_choice(foreground, "foreground", FOREGROUND_RULES)
    x = check_images(x)
    _check_feature_layer(net, layer)
    k = check_int(k, "k", minimum=2)
    size = tuple(x.shape[1:3]) if image_size is None else check_size(image_size, "image_size")
    feats = _patch_features(net, params, x, layer)
    n, h, w, _ = feats.shape
    if k > h * w:
        raise ValueError(f"k: expected an integer in [2, {h * w}] (the patches of {layer!r}), got {k}")
    vals, vecs = _eigenpairs(feature_affinity(feats, threshold=threshold), k, bool(normalised))
    patch_masks = _foreground_from_fiedler(vecs[..., 1], (h, w), foreground)
    masks = _to_image(patch_masks, size)
    return {"eigenvalues": vals, "eigenvectors": vecs.reshape(n, h, w, k), "patch_masks": patch_masks,
            "masks": masks, "boxes": segment_boxes(masks)}


def cls_attention(net: Net, params, x: jax.Array, block: int = -1) -> jax.Array:
    """The attention of the CLS token to each patch, per head, in one block of a ViT.

    ``A[n, h, i, j] = softmax_t(q_0 . k_t / sqrt(d))`` at the patch token of grid cell
    (i, j), read from the tap ``'blocks.<block>.attn'``; the maps of a head sum, with
    the CLS token's attention to itself, to 1 (DINO's self-attention maps).

    Args:
      net: a ViT of the zoo (a net with taps ``'blocks.<i>.attn'``) (static).
      params: its params.
      x: images (N, H, W, 3), float RGB in [0, 1].
      block: the block index, negative from the end (-1: the last block) (static).

    Returns:
      float (N, heads, h, w) on the patch grid.
    """
    depth = sum(1 for t in net.taps if t.startswith("blocks.") and t.endswith(".attn"))
    if depth == 0:
        raise ValueError(f"net: expected a vision transformer with attention taps 'blocks.<i>.attn', "
                         f"got {net.name}")
    if isinstance(block, bool) or not isinstance(block, (int, np.integer)) or not -depth <= block < depth:
        raise ValueError(f"block: expected an integer in [{-depth}, {depth}), got {block!r}")
    x = check_images(x)
    attn = net.apply(params, x, stop=f"blocks.{int(block) % depth}.attn")
    prefix, gh, gw = _patch_layout(net, tuple(x.shape[1:3]), attn.shape[-1], "x")
    return attn[:, :, 0, prefix:].reshape(*attn.shape[:2], gh, gw)
