"""Smooth masks of extremal perturbations (Fong, Patrick and Vedaldi, ICCV 2019, Sec. 3.2).

A mask is parameterised by a coarse grid of values p in [0, 1], one cell every
``step`` pixels.  Each pixel u looks at the (2r + 1)^2 cells around it,
r = 1 + ceil(sigma / step), weights each cell's value by a flat-topped
Gaussian of the distance d from u to the cell's centre,

    k(d) = exp(-2 max(d / sigma - 1/2, 0)^2),

and pools the weighted values v_k = k(d_k) p_k with a smooth max

    m(u) = sum_k v_k softmax(coldness * v)_k        (coldness 20),

or the hard max ``max_k v_k`` at infinite coldness; m is clamped to [0, 1].
The smooth max makes the mask a union of smooth blobs with sharp-but-smooth
boundaries, and keeps its values at 1 inside a blob (a Gaussian sum would not).

Geometry (the paper's and TorchRay's): cell i (integer, may be negative) is
centred at image coordinate ``step * i``; the grid has ceil(H / step) x
ceil(W / step) learnable cells, padded by ``padding = 1 + ceil((margin +
sigma) / step)`` cells of value 0 on each side, with margin = sigma (for a
small step / sigma ratio, more cells until the full mask covers the image).  The mask
is evaluated on a "full" grid of pixels starting ``margin`` pixels before the
image (image coordinate -margin), every pixel whose neighbourhood lies in the
padded grid, i.e. ``step * (g + 2 padding - 2 r) - step + 1`` pixels per axis
for g cells; the image's mask is the crop ``[margin : margin + H]``.  The area
constraint is imposed on the full mask, so a blob cannot hide beyond the
image border.  The kernel's value depends only on a pixel's offset inside its
cell and on the neighbour index, a small (step, step, (2r+1)^2) table.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp.checks import check_int, check_positive_float, check_size

__all__ = ["MaskGeometry", "mask_geometry", "smooth_mask", "smooth_max", "clamp01"]


@dataclasses.dataclass(frozen=True)
class MaskGeometry:
    """Static geometry of the smooth mask generator for one image size.

    Attributes:
      image_size: (H, W) of the image.
      step: cell spacing in pixels (default 7).
      sigma: kernel width in pixels (default 21); also the margin.
      grid_shape: (gh, gw) = (ceil(H / step), ceil(W / step)), the learnable cells.
      radius: r = 1 + ceil(sigma / step); a pixel sees (2r + 1)^2 cells.
      padding: zero cells added on each side of the grid.
      margin: pixels of the full mask before the image (= sigma).
      full_shape: (FH, FW) of the full mask (the area constraint's domain).
    """

    image_size: tuple[int, int]
    step: int
    sigma: float

    @property
    def grid_shape(self) -> tuple[int, int]:
        return tuple(math.ceil(z / self.step) for z in self.image_size)

    @property
    def radius(self) -> int:
        return 1 + math.ceil(self.sigma / self.step)

    @property
    def margin(self) -> int:
        return int(round(self.sigma))

    @property
    def padding(self) -> int:
        # The paper's padding, enlarged (for small step / sigma ratios only) until the
        # full mask reaches the image's far border, margin + H <= FH on both axes.
        p = 1 + math.ceil((self.margin + self.sigma) / self.step)
        while any(self.step * (g + 2 * p - 2 * self.radius) - self.step + 1 < self.margin + z
                  for g, z in zip(self.grid_shape, self.image_size)):
            p += 1
        return p

    @property
    def _cells(self) -> tuple[int, int]:
        """Pixels of the full mask are grouped by cell: cells per axis of the full mask."""
        return tuple(g + 2 * self.padding - 2 * self.radius for g in self.grid_shape)

    @property
    def full_shape(self) -> tuple[int, int]:
        return tuple(self.step * c - self.step + 1 for c in self._cells)

    def kernel_table(self) -> np.ndarray:
        """k(d) for pixel offset (oy, ox) inside its cell and neighbour (ky, kx): (step, step, K), float64.

        Full-mask pixel u = step * j + o (j its cell, o in [0, step)) sits at image
        coordinate u - margin; its neighbour k in [0, 2r] is cell j + k - padding,
        centred at image coordinate step * (j + k - padding).
        """
        o = np.arange(self.step)
        k = np.arange(2 * self.radius + 1)
        d1 = (o[:, None] - self.margin) - self.step * (k[None, :] - self.padding)     # (step, 2r+1)
        d = np.sqrt(d1[:, None, :, None] ** 2 + d1[None, :, None, :] ** 2)           # (oy, ox, ky, kx)
        w = np.exp(-2.0 * np.maximum(d / self.sigma - 0.5, 0.0) ** 2)
        return w.reshape(self.step, self.step, -1)


def mask_geometry(image_size, step: int = 7, sigma: float = 21.0) -> MaskGeometry:
    """The :class:`MaskGeometry` for ``image_size`` (H, W); ValueError naming a bad argument."""
    return MaskGeometry(check_size(image_size, "image_size", pair_only=True), check_int(step, "step"),
                        check_positive_float(sigma, "sigma"))


def clamp01(v: jax.Array) -> jax.Array:
    """Clamp to [0, 1] passing the gradient at the bounds themselves (as ``torch.clamp``).

    ``jnp.clip`` gives a zero gradient at a value exactly on a bound; the mask
    generator produces exact zeros (cells of value 0) whose gradient must flow.
    """
    return jnp.where(v < 0, jnp.zeros_like(v), jnp.where(v > 1, jnp.ones_like(v), v))


def smooth_max(v: jax.Array, coldness: float, axis: int = -1) -> jax.Array:
    """sum_k v_k softmax(coldness v)_k along ``axis``; ``max`` for coldness = inf."""
    if math.isinf(coldness):
        return jnp.max(v, axis=axis)
    return jnp.sum(v * jax.nn.softmax(coldness * v, axis=axis), axis=axis)


def smooth_mask(p: jax.Array, geometry: MaskGeometry, coldness: float = 20.0) -> tuple[jax.Array, jax.Array]:
    """The smooth mask of parameters ``p``.

    Args:
      p: cell values (..., gh, gw) with (gh, gw) = ``geometry.grid_shape``, in [0, 1].
      geometry: :func:`mask_geometry` of the image size (static).
      coldness: smooth-max coldness (default 20, the paper's); ``math.inf`` for
        the hard max.

    Returns:
      (mask, full): the image's mask (..., H, W) and the full margin-padded mask
      (..., FH, FW), both clamped to [0, 1].

    Raises:
      ValueError naming ``p`` if its trailing shape is not the grid's.
    """
    if tuple(p.shape[-2:]) != geometry.grid_shape:
        raise ValueError(f"p: expected trailing shape {geometry.grid_shape} (the mask grid of "
                         f"{geometry.image_size} with step {geometry.step}), got {tuple(p.shape)}")
    if not (isinstance(coldness, (int, float)) and coldness > 0):
        raise ValueError(f"coldness: expected a positive number or math.inf, got {coldness!r}")
    lead = p.shape[:-2]
    full = _full_mask(p.reshape(-1, *geometry.grid_shape), geometry, float(coldness))
    m = geometry.margin
    h, w = geometry.image_size
    crop = full[:, m:m + h, m:m + w]
    return crop.reshape(*lead, h, w), full.reshape(*lead, *geometry.full_shape)


@functools.partial(jax.vmap, in_axes=(0, None, None))
def _full_mask(p, geometry: MaskGeometry, coldness: float):
    pad, r, s = geometry.padding, geometry.radius, geometry.step
    ch, cw = geometry._cells
    padded = jnp.pad(p, pad)
    neighbours = jnp.stack([padded[ky:ky + ch, kx:kx + cw]
                            for ky in range(2 * r + 1) for kx in range(2 * r + 1)], -1)    # (ch, cw, K)
    table = jnp.asarray(geometry.kernel_table().reshape(s * s, -1), p.dtype)             # (s s, K)
    if math.isinf(coldness):
        pooled = jnp.max(neighbours[:, :, None, :] * table, axis=-1)
    else:
        pooled = _smooth_max_of_products(neighbours, table, coldness)                   # (ch, cw, s s)
    mask = clamp01(pooled).reshape(ch, cw, s, s).transpose(0, 2, 1, 3).reshape(ch * s, cw * s)
    fh, fw = geometry.full_shape
    return mask[:fh, :fw]


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _smooth_max_of_products(cells: jax.Array, table: jax.Array, coldness: float) -> jax.Array:
    """``smooth_max(cells[..., None, :] * table, coldness)``: cells (..., K), table (O, K) -> (..., O).

    The smooth max of v_ok = table_ok cells_k over k, for every pixel offset o.
    Written out with its gradient, d m_o / d v_ok = w_ok (1 + coldness (v_ok -
    m_o)) with w the softmax weights, so that neither pass keeps the (..., O,
    K) products: the forward and the backward are each one fused pass over
    them (automatic differentiation stored them and reduced them over O in
    several passes, 2-3x slower on a CPU).  ``table`` gets no gradient.
    """
    return _pooled_statistics(cells, table, coldness)[0]


def _pooled_statistics(cells, table, coldness):
    """(m, max, Z) (..., O): the smooth max, the largest product and the softmax's normaliser."""
    v = cells[..., None, :] * table
    top = jnp.max(v, axis=-1)
    e = jnp.exp(coldness * (v - top[..., None]))
    z = jnp.sum(e, axis=-1)
    return jnp.sum(v * e, axis=-1) / z, top, z


def _smooth_max_of_products_fwd(cells, table, coldness):
    m, top, z = _pooled_statistics(cells, table, coldness)
    return m, (cells, table, m, top, z)


def _smooth_max_of_products_bwd(coldness, res, g):
    cells, table, m, top, z = res
    v = cells[..., None, :] * table
    weights = jnp.exp(coldness * (v - top[..., None])) / z[..., None]
    dv = g[..., None] * weights * (1.0 + coldness * (v - m[..., None]))
    return jnp.sum(dv * table, axis=-2), None


_smooth_max_of_products.defvjp(_smooth_max_of_products_fwd, _smooth_max_of_products_bwd)
