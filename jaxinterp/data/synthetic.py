"""Objects in clutter: a synthetic classification set with ground-truth masks and boxes.

Every example is one labelled object (one of :data:`CLASSES`) on a cluttered
background, rendered entirely in JAX from a key, so generation is
deterministic, jit-able and vmap-able:

    ex = synthetic.sample(jax.random.key(0), variant="easy", size=64)
    ex["image"]  # (64, 64, 3) float32 in [0, 1]
    ex["label"]  # () int32, index into CLASSES
    ex["mask"]   # (64, 64) bool, the labelled object's pixels
    ex["box"]    # (4,) float32 (y0, x0, y1, x1), the tight half-open box of the mask
    batch = synthetic.generate(jax.random.key(0), 1000)   # example i = sample(fold_in(key, i))

Rendering is analytic: each shape is a signed distance function ``d`` (in
pixels, negative inside) evaluated at the pixel centres, drawn with coverage
``clip(0.5 - d, 0, 1)`` (a one-pixel anti-aliased edge); the mask is ``d <= 0``.
Shape classes (disk, square, triangle, cross, ring, star) are filled with one
colour; texture classes (stripes, checker) are a patch (a disk or a square,
chosen at random for both classes) filled with two colours in stripes or a
checkerboard of random period.  Every object has a random position, scale and
rotation.

The background is smooth multi-scale colour noise plus random thin strokes and
soft blobs; the ``difficult`` variant adds 1 to 3 distractors of types that are
not classes (thin bars, open arcs, dot clusters), smaller objects and lower
contrast.  The object is drawn last, so nothing covers its mask.

Why the label depends on the object only: the key is split into independent
streams for the label, the object geometry, the object colours and the clutter
(background and distractors).  The clutter is a function of its own stream
only and never sees the label (:func:`clutter` renders exactly the image of
:func:`sample` without its object).  The object's position, scale, rotation,
texture period and patch outline are drawn from distributions that are the
same for every class, and its colours are drawn at a random distance
("contrast") in a random direction from the mean clutter colour over the
object's circumscribed disk, a region that does not depend on the class.  So
colour, position, size and the background carry no information about the
label; only the object's shape (or texture) does.

Variants (object side = the diameter of the object's unit disk, as a fraction of
the image side; shapes turn by up to +-rotation, stripes and checkerboards
always take any orientation):

==========  ===========  ========  =================  ===========  =======  =====  =====
variant     object side  rotation  contrast (RGB L2)  distractors  strokes  blobs  noise
==========  ===========  ========  =================  ===========  =======  =====  =====
easy        0.35 - 0.55  15 deg    0.55 - 0.85        0            4        3      0.08
difficult   0.12 - 0.25  180 deg   0.20 - 0.40        1 - 3        10       6      0.15
==========  ===========  ========  =================  ===========  =======  =====  =====
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["CLASSES", "NUM_CLASSES", "VARIANTS", "MIN_SIZE", "sample", "generate", "clutter"]

CLASSES = ("disk", "square", "triangle", "cross", "ring", "star", "stripes", "checker")
NUM_CLASSES = len(CLASSES)
VARIANTS = ("easy", "difficult")
MIN_SIZE = 32

_SHAPES = 6          # CLASSES[:_SHAPES] are one-colour shapes, the rest textures.
_MAX_DOTS = 5        # dots in a dot-cluster distractor.
_CHUNK = 128         # examples rendered at once by generate().


@dataclasses.dataclass(frozen=True)
class _Variant:
    side: tuple[float, float]      # object side / image side (uniform range).
    rotation: float                # shapes turn by up to +- this many degrees.
    contrast: tuple[float, float]  # RGB distance of object colours from the clutter under it.
    distractors: tuple[int, int]   # inclusive range of the number of distractors.
    strokes: int                   # thin line segments in the background.
    blobs: int                     # soft Gaussian blobs in the background.
    noise: float                   # amplitude of the smooth colour noise.


_VARIANTS = {
    "easy": _Variant(side=(0.35, 0.55), rotation=15.0, contrast=(0.55, 0.85), distractors=(0, 0),
                     strokes=4, blobs=3, noise=0.08),
    "difficult": _Variant(side=(0.12, 0.25), rotation=180.0, contrast=(0.20, 0.40), distractors=(1, 3),
                          strokes=10, blobs=6, noise=0.15),
}


# --------------------------------------------------------------------------
# Signed distance functions.  p: (..., 2) points as (x, y); result (...,).
# Shapes are in normalised units and fit inside the unit disk at any rotation.
# --------------------------------------------------------------------------

def _length(p):
    return jnp.sqrt(jnp.sum(p * p, axis=-1))


def _sd_disk(p, radius):
    return _length(p) - radius


def _sd_box(p, half):
    """Axis-aligned box of half-sides ``half`` = (hx, hy)."""
    q = jnp.abs(p) - jnp.asarray(half)
    outside = _length(jnp.maximum(q, 0.0))
    inside = jnp.minimum(jnp.maximum(q[..., 0], q[..., 1]), 0.0)
    return outside + inside


def _sd_triangle(p, half_side):
    """Equilateral triangle centred on its centroid (Quilez), apex on +y."""
    k = math.sqrt(3.0)
    x = jnp.abs(p[..., 0]) - half_side
    y = p[..., 1] + half_side / k
    fold = x + k * y > 0.0
    x, y = jnp.where(fold, (x - k * y) / 2.0, x), jnp.where(fold, (-k * x - y) / 2.0, y)
    x = x - jnp.clip(x, -2.0 * half_side, 0.0)
    return -jnp.sqrt(x * x + y * y) * jnp.sign(y)


def _sd_star5(p, radius, inner):
    """Five-pointed star of outer radius ``radius``, inner/outer ratio ``inner`` (Quilez)."""
    k1 = jnp.array([0.809016994375, -0.587785252292])
    k2 = jnp.array([-0.809016994375, -0.587785252292])
    p = jnp.stack([jnp.abs(p[..., 0]), p[..., 1]], axis=-1)
    p = p - 2.0 * jnp.maximum(p @ k1, 0.0)[..., None] * k1
    p = p - 2.0 * jnp.maximum(p @ k2, 0.0)[..., None] * k2
    p = jnp.stack([jnp.abs(p[..., 0]), p[..., 1] - radius], axis=-1)
    ba = inner * jnp.array([-k1[1], k1[0]]) - jnp.array([0.0, 1.0])
    h = jnp.clip((p @ ba) / (ba @ ba), 0.0, radius)
    side = jnp.sign(p[..., 1] * ba[0] - p[..., 0] * ba[1])
    return _length(p - h[..., None] * ba) * side


def _sd_segment(p, a, b):
    """Unsigned distance to the segment from ``a`` to ``b``, each (2,)."""
    pa, ba = p - a, b - a
    h = jnp.clip((pa @ ba) / jnp.maximum(ba @ ba, 1e-12), 0.0, 1.0)
    return _length(pa - h[..., None] * ba)


def _sd_arc(p, radius, start, extent):
    """Unsigned distance to the circular arc of ``radius`` from angle ``start`` over ``extent``."""
    mid = start + extent / 2.0
    angle = jnp.arctan2(p[..., 1], p[..., 0])
    off = jnp.abs(jnp.mod(angle - mid + jnp.pi, 2.0 * jnp.pi) - jnp.pi)
    ends = radius * jnp.stack([jnp.cos(jnp.array([start, start + extent])),
                               jnp.sin(jnp.array([start, start + extent]))], axis=-1)
    to_ends = jnp.minimum(_length(p - ends[0]), _length(p - ends[1]))
    return jnp.where(off <= extent / 2.0, jnp.abs(_length(p) - radius), to_ends)


def _sd_shapes(u):
    """Signed distances (in unit-disk units) to the six shape classes, (6, ...)."""
    return jnp.stack([
        _sd_disk(u, 0.9),
        _sd_box(u, (0.68, 0.68)),
        _sd_triangle(u, 0.85),
        jnp.minimum(_sd_box(u, (0.95, 0.3)), _sd_box(u, (0.3, 0.95))),
        jnp.abs(_length(u) - 0.72) - 0.23,
        _sd_star5(u, 1.0, 0.45),
    ])


def _coverage(sd):
    """Anti-aliased coverage of the region ``sd <= 0`` (sd in pixels): one-pixel ramp."""
    return jnp.clip(0.5 - sd, 0.0, 1.0)


def _square_wave(t, period):
    """Signed distance (pixels) to the edges of stripes ``|frac(t / period) - 1/2| < 1/4``."""
    return (jnp.abs(jnp.mod(t / period, 1.0) - 0.5) - 0.25) * period


def _stripes(v, period):
    """Stripe pattern in [0, 1] along the first coordinate of ``v`` (pixels)."""
    return _coverage(_square_wave(v[..., 0], period))


def _checker(v, period):
    """Checkerboard pattern in [0, 1] with cells of side ``period / 2`` (pixels)."""
    dx, dy = _square_wave(v[..., 0], period), _square_wave(v[..., 1], period)
    sd = jnp.sign(dx) * jnp.sign(dy) * jnp.minimum(jnp.abs(dx), jnp.abs(dy))
    return _coverage(sd)


# --------------------------------------------------------------------------
# Randomness, colours and compositing.  Each stream draws its numbers in one
# call (a table of uniforms), which keeps the compiled program small.
# --------------------------------------------------------------------------

def _grid(size):
    """Pixel centres as (x, y), (size, size, 2) float32; row index is y."""
    c = jnp.arange(size, dtype=jnp.float32) + 0.5
    y, x = jnp.meshgrid(c, c, indexing="ij")
    return jnp.stack([x, y], axis=-1)


def _lerp(u, lo, hi):
    """Map uniforms ``u`` in [0, 1) to [lo, hi)."""
    return lo + (hi - lo) * u


def _circle(u):
    """Unit 2-vectors (..., 2) from uniform angles ``u`` (...,) in [0, 1)."""
    angle = 2.0 * jnp.pi * u
    return jnp.stack([jnp.cos(angle), jnp.sin(angle)], axis=-1)


def _sphere(u):
    """Uniformly distributed unit 3-vectors (..., 3) from uniforms ``u`` (..., 2)."""
    z = 2.0 * u[..., 0] - 1.0
    xy = jnp.sqrt(1.0 - z * z)[..., None] * _circle(u[..., 1])
    return jnp.concatenate([xy, z[..., None]], axis=-1)


def _rotate(p, angle):
    """Points ``p`` (..., 2) rotated by ``-angle`` (radians): coordinates in a frame turned by ``angle``."""
    cos, sin = jnp.cos(angle), jnp.sin(angle)
    return p @ jnp.stack([jnp.stack([cos, -sin]), jnp.stack([sin, cos])])


def _over(image, colour, alpha):
    """Composite ``colour`` (3,) or (H, W, 3) with coverage ``alpha`` (H, W) over ``image``."""
    return image + (colour - image) * alpha[..., None]


def _over_all(image, colours, alphas):
    """Composite layers ``colours`` (L, 3) with ``alphas`` (L, H, W) over ``image`` in order."""
    for colour, alpha in zip(colours, alphas):
        image = _over(image, colour, alpha)
    return image


def _contrasting(reference, direction, contrast):
    """The colour at ``reference +- contrast * direction`` (clipped) farther from ``reference``."""
    candidates = jnp.clip(reference + jnp.array([[1.0], [-1.0]]) * contrast * direction, 0.0, 1.0)
    return candidates[jnp.argmax(_length(candidates - reference))]


def _disk_mean(image, grid, centre, radius):
    """Mean colour (3,) of ``image`` (H, W, 3) over the disk of ``radius`` around ``centre``."""
    w = (_length(grid - centre) <= radius).astype(image.dtype)
    return jnp.einsum("hw,hwc->c", w, image) / jnp.maximum(jnp.sum(w), 1.0)


# --------------------------------------------------------------------------
# Clutter: background noise, strokes, blobs, distractors.  Never sees the label.
# --------------------------------------------------------------------------

def _upsampler(size, cells):
    """(size, cells) Gaussian interpolation weights with unit-norm rows (unit output variance)."""
    spacing = size / cells
    d = (np.arange(size)[:, None] + 0.5) - (np.arange(cells)[None, :] + 0.5) * spacing
    w = np.exp(-0.5 * (d / (0.7 * spacing)) ** 2)
    return jnp.asarray(w / np.linalg.norm(w, axis=1, keepdims=True), jnp.float32)


def _smooth_noise(key, size, amplitude):
    """Random base colour plus smooth colour noise at three scales, (size, size, 3)."""
    octaves = [(max(2, size * c // 64), weight) for c, weight in ((4, 1.0), (8, 0.6), (16, 0.35))]
    k_base, k_noise = jax.random.split(key)
    z = jax.random.normal(k_noise, (sum(g * g for g, _ in octaves), 3))
    image = _lerp(jax.random.uniform(k_base, (3,)), 0.2, 0.8)
    offset = 0
    for g, weight in octaves:
        coarse = z[offset:offset + g * g].reshape(g, g, 3)
        offset += g * g
        up = _upsampler(size, g)
        image = image + amplitude * weight * jnp.einsum("hg,gkc,wk->hwc", up, coarse, up)
    return image


def _strokes(key, grid, count):
    """Thin line segments of random colour and opacity: colours (L, 3), alphas (L, H, W)."""
    size = grid.shape[0]
    u = jax.random.uniform(key, (count, 9))
    a = u[:, 0:2] * size
    b = a + _lerp(u[:, 3:4], 0.15, 0.5) * size * _circle(u[:, 2])
    half_width = _lerp(u[:, 4], 0.4, 1.0)
    opacity = _lerp(u[:, 8], 0.4, 0.9)
    sd = jax.vmap(_sd_segment, (None, 0, 0))(grid, a, b) - half_width[:, None, None]
    return u[:, 5:8], opacity[:, None, None] * _coverage(sd)


def _blobs(key, grid, count):
    """Soft Gaussian blobs of random colour, width and opacity: colours (L, 3), alphas (L, H, W)."""
    size = grid.shape[0]
    u = jax.random.uniform(key, (count, 7))
    centre = u[:, 0:2] * size
    sigma = _lerp(u[:, 2], 0.03, 0.08) * size
    opacity = _lerp(u[:, 6], 0.3, 0.7)
    r2 = jnp.sum((grid[None] - centre[:, None, None]) ** 2, axis=-1)
    return u[:, 3:6], opacity[:, None, None] * jnp.exp(-r2 / (2.0 * sigma[:, None, None] ** 2))


def _distractor_sd(u, grid, side):
    """Signed distance (pixels) to a thin bar, open arc or dot cluster, by ``u`` (12 + 2 * dots,)."""
    centre = u[0:2] * grid.shape[0]
    half_width = _lerp(u[2], 0.6, 1.0)
    half = 0.5 * side * _circle(u[3])
    bar = _sd_segment(grid, centre - half, centre + half) - half_width
    arc = _sd_arc(grid - centre, 0.4 * side, 2.0 * jnp.pi * u[4], _lerp(u[5], 0.5, 1.0) * jnp.pi)
    arc = arc - half_width
    offsets = (u[12:].reshape(_MAX_DOTS, 2) - 0.5) * side
    radius = _lerp(u[6], 0.9, 1.5)
    dots = jnp.min(_length(grid[None] - centre - offsets[:, None, None]), axis=0) - radius
    kind = jnp.floor(3.0 * u[7]).astype(jnp.int32)
    return jnp.stack([bar, arc, dots])[kind]


def _distractors(key, image, grid, cfg):
    """Salient items that are not classes: colours (L, 3) and alphas (L, H, W).

    Their number is uniform in ``cfg.distractors``; unused layers have zero alpha.
    """
    lo, hi = cfg.distractors
    k_n, k_u = jax.random.split(key)
    count = jax.random.randint(k_n, (), lo, hi + 1)
    u = jax.random.uniform(k_u, (hi, 12 + 2 * _MAX_DOTS))
    side = _lerp(u[:, 8], *cfg.side) * grid.shape[0]
    contrast = _lerp(u[:, 9], *cfg.contrast)
    reference = jnp.mean(image, axis=(0, 1))
    colours = jax.vmap(_contrasting, (None, 0, 0))(reference, _sphere(u[:, 10:12]), contrast)
    sd = jax.vmap(_distractor_sd, (0, None, 0))(u, grid, side)
    visible = jnp.arange(hi) < count
    return colours, visible[:, None, None] * _coverage(sd)


def _keys(key):
    """Independent streams: label, geometry, colours, clutter."""
    return dict(zip(("label", "geometry", "colour", "clutter"), jax.random.split(key, 4)))


def _clutter(key, cfg, size):
    """The clutter image (size, size, 3) in [0, 1] from the clutter stream ``key``."""
    k_noise, k_strokes, k_blobs, k_dis = jax.random.split(key, 4)
    grid = _grid(size)
    image = jnp.clip(_smooth_noise(k_noise, size, cfg.noise), 0.0, 1.0)
    image = _over_all(image, *_blobs(k_blobs, grid, cfg.blobs))
    image = _over_all(image, *_strokes(k_strokes, grid, cfg.strokes))
    if cfg.distractors[1] > 0:
        image = _over_all(image, *_distractors(k_dis, image, grid, cfg))
    return image


# --------------------------------------------------------------------------
# The object.
# --------------------------------------------------------------------------

def _object(keys, background, cfg):
    """Label () int32, fill colours (H, W, 3), coverage (H, W) and mask (H, W) of the object."""
    size = background.shape[0]
    grid = _grid(size)
    label = jax.random.randint(keys["label"], (), 0, NUM_CLASSES, dtype=jnp.int32)

    g = jax.random.uniform(keys["geometry"], (7,))
    radius = 0.5 * size * _lerp(g[0], *cfg.side)
    centre = _lerp(g[1:3], radius + 1.0, size - radius - 1.0)
    local = _rotate(grid - centre, math.radians(cfg.rotation) * _lerp(g[3], -1.0, 1.0))
    u = local / radius                                  # object frame, unit disk

    patch = jnp.where(g[5] < 0.5, _sd_disk(u, 0.9), _sd_box(u, (0.7, 0.7)))
    sd = jnp.concatenate([_sd_shapes(u), jnp.stack([patch, patch])])[label] * radius
    period = jnp.maximum(2.0 * radius / _lerp(g[4], 2.5, 4.0), 3.5)
    texture = _rotate(grid - centre, 2.0 * jnp.pi * g[6])  # any orientation, pixels
    flat = jnp.zeros((size, size))
    pattern = jnp.stack([flat] * _SHAPES + [_stripes(texture, period), _checker(texture, period)])
    pattern = pattern[label]

    c = jax.random.uniform(keys["colour"], (5,))
    reference = _disk_mean(background, grid, centre, radius)
    contrast = _lerp(c[0], *cfg.contrast)
    d1, d2 = _sphere(c[1:3]), _sphere(c[3:5])
    d2 = d2 - (d2 @ d1) * d1                       # second colour away from the first
    d2 = d2 / jnp.maximum(jnp.linalg.norm(d2), 1e-6)
    c1, c2 = _contrasting(reference, d1, contrast), _contrasting(reference, d2, contrast)
    fill = c1 + (c2 - c1) * pattern[..., None]
    return label, fill, _coverage(sd), sd <= 0.0


def _box(mask):
    """Tight half-open box (y0, x0, y1, x1) float32 of a non-empty (H, W) bool mask."""
    h, w = mask.shape
    rows, cols = jnp.any(mask, axis=1), jnp.any(mask, axis=0)
    y0, y1 = jnp.argmax(rows), h - jnp.argmax(rows[::-1])
    x0, x1 = jnp.argmax(cols), w - jnp.argmax(cols[::-1])
    return jnp.stack([y0, x0, y1, x1]).astype(jnp.float32)


@functools.partial(jax.jit, static_argnames=("variant", "size"))
def _sample(key, variant, size):
    cfg = _VARIANTS[variant]
    keys = _keys(key)
    background = _clutter(keys["clutter"], cfg, size)
    label, fill, alpha, mask = _object(keys, background, cfg)
    image = jnp.clip(_over(background, fill, alpha), 0.0, 1.0)
    return {"image": image, "label": label, "box": _box(mask), "mask": mask}


@functools.partial(jax.jit, static_argnames=("variant", "size"))
def _chunk(key, start, variant, size):
    """Examples start .. start + _CHUNK - 1, each from ``fold_in(key, i)``."""
    keys = jax.vmap(jax.random.fold_in, (None, 0))(key, start + jnp.arange(_CHUNK))
    return jax.vmap(_sample, (0, None, None))(keys, variant, size)


def _check(variant, size):
    if variant not in _VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    if not isinstance(size, int) or size < MIN_SIZE:
        raise ValueError(f"size must be an int >= {MIN_SIZE}, got {size!r}")


def sample(key: jax.Array, *, variant: str = "easy", size: int = 64) -> dict[str, jax.Array]:
    """One example of objects in clutter, deterministic in ``key``.

    Args:
      key: a PRNG key (typed ``jax.random.key`` or raw ``PRNGKey``).
      variant: ``'easy'`` or ``'difficult'`` (see the module docstring).
      size: image side in pixels, an int >= 32.

    Returns:
      A dict with ``image`` (size, size, 3) float32 in [0, 1]; ``label`` () int32 in
      [0, NUM_CLASSES); ``mask`` (size, size) bool, the object's pixels (non-empty,
      inside the image); ``box`` (4,) float32 (y0, x0, y1, x1), the tight half-open
      box of ``mask`` in pixels.

    Raises:
      ValueError: unknown ``variant`` or ``size`` < 32.
    """
    _check(variant, size)
    return _sample(key, variant, size)


def generate(key: jax.Array, n: int, *, variant: str = "easy", size: int = 64) -> dict[str, jax.Array]:
    """``n`` examples; example i is ``sample(jax.random.fold_in(key, i))``, whatever ``n``.

    Rendered by one jitted program for chunks of 128 examples (the last chunk is
    truncated), so any ``n`` reuses the same compilation and example i is bitwise the
    same whatever ``n``.

    Args:
      key: a PRNG key.
      n: number of examples, an int >= 1.
      variant: ``'easy'`` or ``'difficult'``.
      size: image side in pixels, an int >= 32.

    Returns:
      The dict of :func:`sample` with a leading axis n: ``image`` (n, size, size, 3)
      float32, ``label`` (n,) int32, ``box`` (n, 4) float32, ``mask`` (n, size, size) bool.

    Raises:
      ValueError: ``n`` < 1, unknown ``variant`` or ``size`` < 32.
    """
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an int >= 1, got {n!r}")
    _check(variant, size)
    chunks = [_chunk(key, start, variant, size) for start in range(0, n, _CHUNK)]
    return jax.tree.map(lambda *x: jnp.concatenate(x)[:n], *chunks)


def clutter(key: jax.Array, *, variant: str = "easy", size: int = 64) -> jax.Array:
    """The image of ``sample(key)`` without its object: background and distractors only.

    Pixels away from the object (farther than its one-pixel anti-aliased edge) equal
    those of ``sample(key)['image']``.  Useful as an "object removed" baseline and to
    check that the clutter carries no information about the label.

    Args:
      key: a PRNG key.
      variant: ``'easy'`` or ``'difficult'``.
      size: image side in pixels, an int >= 32.

    Returns:
      (size, size, 3) float32 in [0, 1].

    Raises:
      ValueError: unknown ``variant`` or ``size`` < 32.
    """
    _check(variant, size)
    return _clutter_image(key, variant, size)


@functools.partial(jax.jit, static_argnames=("variant", "size"))
def _clutter_image(key, variant, size):
    return jnp.clip(_clutter(_keys(key)["clutter"], _VARIANTS[variant], size), 0.0, 1.0)
