"""Top-activating images and patches of a layer's channels, their receptive fields, first-layer filters.

Zeiler and Fergus show, for each channel of a layer, the dataset images (or image
patches) that excite it most.  :func:`top_activations` finds them in one streaming
pass over a dataset: each batch goes through one jitted update
(:func:`top_activations_update`) that computes the layer's activation and merges
its candidates into a running top-k per channel, so memory does not grow with the
dataset and the batches may be sharded over devices (the merge is a ``lax.top_k``
over the batch's candidates and the k kept ones; the result equals one device's).
A candidate is one image, scored by its maximum over positions (the position of
the maximum is kept), or, with ``per_position=True``, one (image, position) pair
(an image may then appear several times).

:func:`receptive_field` gives the input box each unit of a layer sees, computed
from the net itself: the support of the backward pass of one row (or column) of
units through the rule set :data:`SUPPORT`, a backward pass that propagates
"depends on" (0 / 1) instead of derivatives, so that no ReLU, max-pool switch or
cancelling weight hides part of the box (see :data:`SUPPORT`).
:func:`crop_patches` cuts those boxes out of the images (resized to one size) and
:func:`filters_as_images` shows first-layer filters as colour images.

Putting them together (``top.indices[c]`` are the images of channel ``c``)::

    top = top_activations(net, params, images, "features.5", 9, batch_size=64)
    rf = receptive_field(net, "features.5", images.shape[1:3])
    c = 3
    boxes = rf.boxes[top.positions[c, :, 0], top.positions[c, :, 1]]       # (9, 4)
    patches = crop_patches(images[np.asarray(top.indices[c])], boxes, 32)  # (9, 32, 32, 3)

References:
  Zeiler, Fergus.  Visualizing and Understanding Convolutional Networks.  ECCV 2014
  (top-9 activations per feature map, their image patches, first-layer filters).
  Bau, Zhou, Khosla, Oliva, Torralba.  Network Dissection: Quantifying
  Interpretability of Deep Visual Representations.  CVPR 2017 (top activating
  images of a unit over a dataset).
  Araujo, Norris, Sim.  Computing Receptive Fields of Convolutional Neural Networks.
  Distill 2019 (the recurrence r_l = r_{l-1} + (k_l - 1) j_{l-1}, j_l = j_{l-1} s_l).
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxinterp.analysis.streaming import as_spatial, check_stop_layer, image_batches, is_array, place_on, valid_rows
from jaxinterp.checks import check_int, check_size, is_concrete
from jaxinterp.nets import Net
from jaxinterp.nets.rules import STANDARD, affine_parts, standard_max_pool

__all__ = ["TopActivations", "ReceptiveField", "SUPPORT", "empty_top_activations", "top_activations_update",
           "top_activations", "receptive_field", "crop_patches", "filters_as_images"]


# ----------------------------------------------------------------------------------------------------------------
# Top activations.


class TopActivations(NamedTuple):
    """The top-k candidates of each channel, in descending order of activation.

    Attributes:
      values: float32 (C, k), the activations (-inf where the dataset had fewer than k candidates).
      indices: int32 (C, k), the images' indices in the dataset (-1 for no candidate).
      positions: int32 (C, k, 2), the (y, x) position in the layer's map (the maximum's position
        per image, or the candidate's own); (t, 0) for tokens, (0, 0) for vectors, (-1, -1) for none.
    """

    values: jax.Array
    indices: jax.Array
    positions: jax.Array


def empty_top_activations(channels: int, k: int) -> TopActivations:
    """The state before any image: values -inf, indices and positions -1.

    Args:
      channels: C, the layer's channels (static).
      k: candidates kept per channel (static).

    Returns:
      :class:`TopActivations` with shapes (C, k), (C, k), (C, k, 2).
    """
    channels, k = check_int(channels, "channels"), check_int(k, "k")
    return TopActivations(jnp.full((channels, k), -jnp.inf, jnp.float32), jnp.full((channels, k), -1, jnp.int32),
                          jnp.full((channels, k, 2), -1, jnp.int32))


def _candidates(a: jax.Array, valid: jax.Array, offset, per_position: bool):
    """Candidates (C, M) of an activation a (B, h, w, C): values (-inf if invalid), image index, y, x."""
    b, h, w, c = a.shape
    flat = a.reshape(b, h * w, c).astype(jnp.float32)
    rows = jnp.arange(b, dtype=jnp.int32)
    if per_position:
        values = flat.reshape(b * h * w, c)
        image = jnp.broadcast_to(jnp.repeat(rows, h * w)[:, None], (b * h * w, c))
        where = jnp.broadcast_to(jnp.tile(jnp.arange(h * w, dtype=jnp.int32), b)[:, None], (b * h * w, c))
        valid = jnp.repeat(valid, h * w)
    else:
        where = jnp.argmax(flat, axis=1).astype(jnp.int32)                        # (B, C) first maximum
        values = jnp.take_along_axis(flat, where[:, None, :], axis=1)[:, 0]
        image = jnp.broadcast_to(rows[:, None], (b, c))
    values = jnp.where(valid[:, None], values, -jnp.inf)
    return values.T, (image + jnp.asarray(offset, jnp.int32)).T, (where // w).T, (where % w).T


@functools.partial(jax.jit, static_argnames=("net", "layer", "per_position"))
def top_activations_update(state: TopActivations, params, x: jax.Array, offset, num_valid=None, *, net: Net,
                           layer: str, per_position: bool = False) -> TopActivations:
    """Merge one batch of images into the running top-k of every channel of ``layer``.

    ``top_k`` of the k kept candidates followed by the batch's, per channel: among equal
    values the kept (earlier) candidate wins, then the earlier image and position.

    Args:
      state: :class:`TopActivations` (C, k) so far (:func:`empty_top_activations` at the start).
      params: the net's params.
      x: float32 images (B, H, W, 3) in [0, 1]; may be sharded over devices along B.
      offset: int, the dataset index of ``x[0]`` (traced: no recompilation per batch).
      num_valid: int or None: only the first ``num_valid`` rows of ``x`` are images (padding after).
      net, layer, per_position: the net, the split point, and whether a candidate is an
        (image, position) pair rather than an image scored by its maximum (static).

    Returns:
      The updated :class:`TopActivations`.
    """
    a = as_spatial(net.apply(params, x, stop=layer))
    k = state.values.shape[1]
    if state.values.shape[0] != a.shape[-1]:
        raise ValueError(f"state: expected {a.shape[-1]} channels of {layer!r}, got {state.values.shape[0]}")
    values, image, y, x_pos = _candidates(a, valid_rows(a.shape[0], num_valid), offset, per_position)
    all_values = jnp.concatenate([state.values, values], axis=1)
    top, which = lax.top_k(all_values, k)

    def pick(kept, new):
        return jnp.take_along_axis(jnp.concatenate([kept, new], axis=1), which, axis=1)

    found = top > -jnp.inf
    indices = jnp.where(found, pick(state.indices, image), -1)
    positions = jnp.stack([pick(state.positions[..., 0], y), pick(state.positions[..., 1], x_pos)], axis=-1)
    return TopActivations(top, indices, jnp.where(found[..., None], positions, -1))


def top_activations(net: Net, params, batches, layer: str, k: int, *, batch_size: int | None = None,
                    per_position: bool = False, sharding: jax.sharding.Sharding | None = None) -> TopActivations:
    """The k images (or image positions) of a dataset that activate each channel of ``layer`` most.

    One pass over the dataset; each batch is merged by :func:`top_activations_update` (one
    compiled program per batch shape: an array of images is cut into batches of ``batch_size``,
    the last one padded, so it compiles once).  With an array and no ``sharding`` it also
    works under ``jax.jit`` (the batch loop is then unrolled).

    Args:
      net: a :class:`~jaxinterp.nets.Net` (static under jit).
      params: its params.
      batches: images (N, H, W, 3) float in [0, 1] or uint8 (NumPy, a memmap or jax; read
        ``batch_size`` rows at a time), or an iterable of such batches (N_b, H, W, 3) of one (H, W).
      layer: the split point (static).
      k: candidates per channel, >= 1 (static).
      batch_size: images per update when ``batches`` is one array (static); None for an iterable.
      per_position: candidates are (image, position) pairs instead of images (static).
      sharding: optional sharding each batch is put on (e.g. ``NamedSharding(mesh, P('data'))``;
        its device count must divide the batch size).

    Returns:
      :class:`TopActivations`: values (C, k), indices (C, k) into the dataset, positions (C, k, 2).
    """
    check_stop_layer(net, layer)
    k = check_int(k, "k")
    if not isinstance(per_position, bool):
        raise ValueError(f"per_position: expected a bool, got {per_position!r}")
    state = None
    for x, valid, offset in image_batches(batches, batch_size):
        if state is None:
            state = empty_top_activations(net.activation_shape(layer, x.shape[1:3])[-1], k)
        state = top_activations_update(state, params, place_on(x, sharding), offset, valid, net=net, layer=layer,
                                       per_position=per_position)
    return state


# ----------------------------------------------------------------------------------------------------------------
# Receptive fields.


def _indicator(a: jax.Array) -> jax.Array:
    return (a != 0).astype(a.dtype)


@jax.custom_vjp
def support_relu(x: jax.Array) -> jax.Array:
    """ReLU whose backward pass passes the cotangent unchanged (every input reaches the output)."""
    return jnp.maximum(x, 0)


support_relu.defvjp(lambda x: (jnp.maximum(x, 0), None), lambda _, g: (g,))


@jax.custom_vjp
def support_relu6(x: jax.Array) -> jax.Array:
    """ReLU6 whose backward pass passes the cotangent unchanged."""
    return jnp.clip(x, 0, 6)


support_relu6.defvjp(lambda x: (jnp.clip(x, 0, 6), None), lambda _, g: (g,))


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def support_max_pool(x: jax.Array, window: int, stride: int, padding: int = 0) -> jax.Array:
    """Max-pooling whose backward pass marks every input of a window with a non-zero cotangent."""
    return standard_max_pool(x, window, stride, padding)


def _support_max_pool_fwd(x, window, stride, padding):
    return standard_max_pool(x, window, stride, padding), jnp.zeros_like(x)


def _support_max_pool_bwd(window, stride, padding, zero, g):
    pad = ((0, 0), (padding, padding), (padding, padding), (0, 0))

    def window_sum(a):
        return lax.reduce_window(a, 0.0, lax.add, (1, window, window, 1), (1, stride, stride, 1), pad)

    return (_indicator(jax.vjp(window_sum, zero)[1](jnp.abs(g))[0]),)


support_max_pool.defvjp(_support_max_pool_fwd, _support_max_pool_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def support_linear(f: Callable, x: jax.Array, *weights) -> jax.Array:
    """An affine map whose backward pass marks the inputs its kernel's footprint connects to a non-zero cotangent.

    Convolutions, dense layers and batch norms are transposed with an all-ones kernel of
    the same shape (their support, whatever the weights); average pools with their own
    positive weights; any other affine map with its own weights (its support may then
    miss inputs whose weights are zero).  The weights get zero cotangents.
    """
    return f(x, *weights)


def _support_linear_fwd(f, x, *weights):
    return f(x, *weights), (x, weights)


def _support_linear_bwd(f, res, g):
    x, weights = res
    parts = affine_parts(f, x, weights)
    kernel = None if parts.kernel is None else jnp.ones_like(parts.kernel)
    dx = jax.vjp(lambda a: parts.lin(a, kernel), x)[1](jnp.abs(g))[0]
    return (_indicator(dx), *(jnp.zeros_like(w) for w in weights))


support_linear.defvjp(_support_linear_fwd, _support_linear_bwd)


SUPPORT = STANDARD.replace(name="support", relu=support_relu, relu6=support_relu6, max_pool=support_max_pool,
                           linear=support_linear)
"""The backward pass of "which inputs can reach this output": cotangents are 0 / 1 indicators.

ReLUs pass the cotangent, max-pools spread it over their whole window, affine maps transpose
their kernel's footprint (all-ones kernels), and every result is turned back into 0 / 1
(so nothing overflows in deep nets and no weight cancels another).  The gradient of a unit
under these rules is non-zero exactly on the unit's theoretical receptive field."""


class ReceptiveField(NamedTuple):
    """The input box seen by each unit of a layer, at one image size.

    Attributes:
      boxes: int32 NumPy (h, w, 4), (y0, x0, y1, x1) inclusive input pixels seen by unit (y, x),
        clipped to the image (and to the pixels the layer sees at all: a pool or strided layer
        may drop the image's last rows or columns).
      size: (r_y, r_x), the unclipped box's side (None when the image is too small to tell).
      stride: (j_y, j_x), the input distance between neighbouring units (None likewise).
      offset: (a_y, a_x), the unclipped box's first row and column for unit (0, 0) (negative
        where padding lies before the image; None likewise).  Unit (y, x) sees rows
        a_y + y j_y ... a_y + y j_y + r_y - 1 and the matching columns, clipped as the boxes.
    """

    boxes: np.ndarray
    size: tuple[int, int] | None
    stride: tuple[int, int] | None
    offset: tuple[int, int] | None


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _support_intervals(net: Net, layer: str, hw: tuple[int, int]):
    """First and last input row of each row of units, and first and last column of each column (int32)."""
    params = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), net.abstract_params())
    x = jnp.zeros((1, *hw, 3), jnp.float32)
    y, backward = jax.vjp(lambda a: net.apply(params, a, stop=layer, rules=SUPPORT), x)
    _, h, w, c = y.shape

    def seen(cotangent):
        return jnp.any(backward(cotangent)[0][0] != 0, axis=-1)           # (H, W) input pixels reached

    rows = jnp.broadcast_to(jnp.eye(h, dtype=y.dtype)[:, None, :, None, None], (h, 1, h, w, c))
    cols = jnp.broadcast_to(jnp.eye(w, dtype=y.dtype)[:, None, None, :, None], (w, 1, h, w, c))
    row_seen = lax.map(lambda t: jnp.any(seen(t), axis=1), rows, batch_size=8)    # (h, H)
    col_seen = lax.map(lambda t: jnp.any(seen(t), axis=0), cols, batch_size=8)    # (w, W)

    def first_last(m):
        n = m.shape[1]
        return jnp.argmax(m, axis=1).astype(jnp.int32), (n - 1 - jnp.argmax(m[:, ::-1], axis=1)).astype(jnp.int32)

    return first_last(row_seen), first_last(col_seen)


def _geometry(first: np.ndarray, last: np.ndarray):
    """(size, stride, offset) of one axis from its clipped intervals, or None if they do not determine it.

    The intervals are clipped to the rows the layer sees at all, [min first, max last]: the image,
    less the last rows when a pooling or strided layer drops them.
    """
    m = len(first)
    lo, hi = int(first.min()), int(last.max())
    free_start = np.flatnonzero(first > lo)           # intervals not clipped at the start
    free_end = np.flatnonzero(last < hi)              # not clipped at the end
    if m < 2 or not len(free_start) or not len(free_end):
        return None
    if len(free_start) >= 2:
        i, i2 = free_start[0], free_start[-1]
        stride = (first[i2] - first[i]) / (i2 - i)
    elif len(free_end) >= 2:
        i, i2 = free_end[0], free_end[-1]
        stride = (last[i2] - last[i]) / (i2 - i)
    else:
        return None
    if stride != int(stride) or stride < 1:
        return None
    stride = int(stride)
    offset = int(first[free_start[0]] - free_start[0] * stride)
    size = int(last[free_end[0]] - free_end[0] * stride - offset + 1)
    begin = offset + stride * np.arange(m)
    if not (np.array_equal(np.clip(begin, lo, hi), first) and np.array_equal(np.clip(begin + size - 1, lo, hi), last)):
        return None                                    # not one regular grid of boxes
    return size, stride, offset


@functools.lru_cache(maxsize=128)
def _receptive_field(net: Net, layer: str, hw: tuple[int, int]) -> ReceptiveField:
    # compiled ahead of time and called with no arguments: it runs, on concrete values, even inside a jit trace
    (y0, y1), (x0, x1) = jax.tree.map(np.asarray, _support_intervals.lower(net, layer, hw).compile()())
    h, w = len(y0), len(x0)
    boxes = np.stack(np.broadcast_arrays(y0[:, None], x0[None, :], y1[:, None], x1[None, :]), axis=-1)
    gy, gx = _geometry(y0, y1), _geometry(x0, x1)
    boxes = boxes.astype(np.int32).reshape(h, w, 4)
    boxes.flags.writeable = False
    if gy is None or gx is None:
        return ReceptiveField(boxes, None, None, None)
    return ReceptiveField(boxes, (gy[0], gx[0]), (gy[1], gx[1]), (gy[2], gx[2]))


def receptive_field(net: Net, layer: str, image_size) -> ReceptiveField:
    """The input box that each unit of a convolutional layer sees, computed from the net itself.

    Method: the net is run with the :data:`SUPPORT` rule set (weights are irrelevant: all-zero
    params); one backward pass per row of units (a cotangent of ones on that row) gives the
    input rows that row depends on, one per column the columns (the support of a unit is the
    product of the two, a box, for the zoo's convolutions and pools).  From those boxes the
    unclipped geometry (size, stride, offset) is read off units whose box is not clipped by the
    image border, and checked to reproduce every box; it equals the textbook recurrence
    ``r_l = r_{l-1} + (k_l - 1) j_{l-1}``, ``j_l = j_{l-1} s_l``, ``a_l = a_{l-1} - p_l j_{l-1}``
    for a chain of convolutions and pools, and the largest box over all paths of a residual
    net.  One compiled call per (net, layer, image size), remembered; it needs no params and
    runs on concrete values even inside a ``jax.jit`` trace.

    Args:
      net: a :class:`~jaxinterp.nets.Net`.
      layer: a split point whose activation is (N, h, w, C).
      image_size: (H, W) or one int for a square image.

    Returns:
      :class:`ReceptiveField`: boxes (h, w, 4) int32 NumPy, inclusive, clipped to the image;
      size, stride, offset as (y, x) pairs, or None when the image is too small for a unit's
      box to be unclipped at each end (use a larger ``image_size``).
    """
    check_stop_layer(net, layer)
    hw = check_size(image_size, "image_size")
    shape = net.activation_shape(layer, hw)
    if len(shape) != 3:
        raise ValueError(f"layer: expected a convolutional split point with activations (N, h, w, C), "
                         f"{layer!r} of {net.name} gives {(None, *shape)}")
    return _receptive_field(net, layer, hw)


# ----------------------------------------------------------------------------------------------------------------
# Patches and filters.


def _crop_matrix(lo: jax.Array, hi: jax.Array, n_in: int, n_out: int) -> jax.Array:
    """(n_out, n_in) bilinear matrix resizing input indices lo..hi (inclusive) to n_out samples.

    Half-pixel centres, source clamped to the crop, as ``ops.resize_bilinear`` of the crop.
    """
    lo, hi = lo.astype(jnp.float32), hi.astype(jnp.float32)
    src = (jnp.arange(n_out, dtype=jnp.float32) + 0.5) * ((hi - lo + 1) / n_out) - 0.5
    src = lo + jnp.clip(src, 0.0, hi - lo)
    below = jnp.floor(src)
    frac = src - below
    above = jnp.minimum(below + 1, hi)
    cols = jnp.arange(n_in, dtype=jnp.float32)
    return (cols == below[:, None]) * (1 - frac)[:, None] + (cols == above[:, None]) * frac[:, None]


def crop_patches(images: jax.Array, boxes: jax.Array, size) -> jax.Array:
    """Cut box ``n`` out of image ``n`` and resize it bilinearly to ``size``.

    Equals ``ops.resize_bilinear(images[n, y0:y1 + 1, x0:x1 + 1], size, axes=(0, 1))`` for every
    n (half-pixel centres, no antialiasing), as two small matrix products, so boxes of any size
    go through one compiled program.

    Args:
      images: float (N, H, W, C).
      boxes: int (N, 4) (y0, x0, y1, x1) inclusive, inside the image, y0 <= y1 and x0 <= x1
        (checked when concrete; a traced box is clipped to the image).
      size: (h, w) of the patches or one int (static).

    Returns:
      float32 (N, h, w, C).
    """
    if not is_array(images) or len(images.shape) != 4 or min(images.shape) < 1:
        raise ValueError(f"images: expected an array (N, H, W, C), got shape {tuple(getattr(images, 'shape', ()))}")
    if not jnp.issubdtype(images.dtype, jnp.floating):
        raise ValueError(f"images: expected a floating dtype, got {images.dtype}")
    n, height, width, _ = images.shape
    h, w = check_size(size, "size")
    if not is_array(boxes):
        boxes = np.asarray(boxes)
    if tuple(boxes.shape) != (n, 4) or not jnp.issubdtype(boxes.dtype, jnp.integer):
        raise ValueError(f"boxes: expected int boxes ({n}, 4) as (y0, x0, y1, x1), got {tuple(boxes.shape)} "
                         f"{boxes.dtype}")
    if is_concrete(boxes):
        b = np.asarray(boxes)
        if not (np.all(b[:, :2] >= 0) and np.all(b[:, 2] < height) and np.all(b[:, 3] < width)
                and np.all(b[:, 2] >= b[:, 0]) and np.all(b[:, 3] >= b[:, 1])):
            raise ValueError(f"boxes: expected non-empty inclusive boxes inside the {height} x {width} images, "
                             f"got {b.tolist()}")
    return _crop(jnp.asarray(images), jnp.asarray(boxes), (h, w))


@functools.partial(jax.jit, static_argnums=2)
def _crop(images: jax.Array, boxes: jax.Array, size: tuple[int, int]) -> jax.Array:
    _, height, width, _ = images.shape
    limit = jnp.array([height - 1, width - 1, height - 1, width - 1])
    boxes = jnp.clip(boxes, 0, limit)
    boxes = jnp.concatenate([boxes[:, :2], jnp.maximum(boxes[:, 2:], boxes[:, :2])], axis=1)

    def one(image, box):
        my = _crop_matrix(box[0], box[2], height, size[0])
        mx = _crop_matrix(box[1], box[3], width, size[1])
        return jnp.einsum("yY,YXc,xX->yxc", my, image.astype(jnp.float32), mx, precision=lax.Precision.HIGHEST)

    return jax.vmap(one)(images, boxes)


def filters_as_images(kernel: jax.Array) -> jax.Array:
    """First-layer convolution filters as colour images in [0, 1], one scale per filter.

    ``image_c = 0.5 + 0.5 w_c / max |w_c|``: zero maps to grey 0.5 and the largest weight
    of either sign to 0 or 1 (symmetric around 0.5, so the sign of a weight is its side of
    grey); an all-zero filter is grey.

    Args:
      kernel: float (kh, kw, 3, C), a first-layer kernel in the zoo's HWIO layout.

    Returns:
      float32 (C, kh, kw, 3).
    """
    if not is_array(kernel):
        kernel = np.asarray(kernel)
    if len(kernel.shape) != 4 or kernel.shape[2] != 3 or min(kernel.shape) < 1:
        raise ValueError(f"kernel: expected a first-layer kernel (kh, kw, 3, C), got shape {tuple(kernel.shape)}")
    if not jnp.issubdtype(kernel.dtype, jnp.floating):
        raise ValueError(f"kernel: expected a floating dtype, got {kernel.dtype}")
    w = jnp.transpose(jnp.asarray(kernel, jnp.float32), (3, 0, 1, 2))
    scale = jnp.max(jnp.abs(w), axis=(1, 2, 3), keepdims=True)
    return 0.5 + 0.5 * w / jnp.where(scale > 0, scale, 1.0)
