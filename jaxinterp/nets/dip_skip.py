"""The deep image prior's skip generator (Ulyanov, Vedaldi and Lempitsky, CVPR 2018) as a Flax NNX module.

:class:`SkipNet` is the paper's U-Net-like generator f_theta: noise z (H, W, Cin)
of ONE image to an image (H, W, Cout) in (0, 1).  :func:`skip_net_init` and
:func:`skip_net_apply` are its pure form, used by the fitting loop
(:func:`jaxinterp.synthesis.dip.deep_image_prior`) and by any optimiser: the
params are a nested dict of float32 arrays (``nnx.to_pure_dict`` of the
module's state), and apply merges them into a graph built once per
architecture (:func:`jaxinterp.nets.core.module_merge`).  The generator takes
noise, not an RGB image, and has no split points or backward rules, so it is
not a net of :func:`jaxinterp.nets.get`.

Defaults are the paper's (docs/references.md, "Deep image prior"): 5 scales of
128 channels, 4 skip channels, 32 input channels.

References:
  Ulyanov, Vedaldi and Lempitsky, "Deep image prior", CVPR 2018 (and its
  supplementary material for the skip architecture).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from flax import nnx

from jaxinterp import ops
from jaxinterp.checks import check_int
from jaxinterp.nets import layers as L
from jaxinterp.nets.core import check_params_tree, module_graph, module_init, module_merge

__all__ = ["UPSAMPLE", "SkipNet", "skip_net_init", "skip_net_apply", "skip_net_scales"]

UPSAMPLE = ("bilinear", "nearest")
"""The upsampling modes of :func:`skip_net_apply`."""

BN_EPS = 1e-5          # torch.nn.BatchNorm2d's default, as in the paper's code
LEAKY_SLOPE = 0.2      # the paper's LeakyReLU


# -- checks ---------------------------------------------------------------------------------------


def check_channels(value, arg: str, allow_zero: bool = False) -> tuple[int, ...]:
    """``value`` as a non-empty tuple of channel counts (>= 1, or >= 0 with ``allow_zero``).

    ValueError naming ``arg`` otherwise.
    """
    if not isinstance(value, (tuple, list)) or not value:
        raise ValueError(f"{arg}: expected a non-empty tuple of channel counts, got {value!r}")
    lo = 0 if allow_zero else 1
    return tuple(check_int(c, arg, minimum=lo) for c in value)


def check_architecture(in_channels, out_channels, down, up, skip) -> tuple:
    """The generator's arguments as ``(in_channels, out_channels, down, up, skip)`` of ints and tuples.

    Raises:
      ValueError: bad channel counts or lengths (named).
    """
    in_channels, out_channels = check_int(in_channels, "in_channels"), check_int(out_channels, "out_channels")
    down, up = check_channels(down, "down"), check_channels(up, "up")
    skip = check_channels(skip, "skip", allow_zero=True)
    if not len(down) == len(up) == len(skip):
        raise ValueError(f"up: down, up and skip need one entry per scale, got lengths "
                         f"{len(down)}, {len(up)}, {len(skip)}")
    return in_channels, out_channels, down, up, skip


def check_upsample(upsample) -> str:
    """``upsample`` if it is one of :data:`UPSAMPLE`; ValueError naming it otherwise."""
    if upsample not in UPSAMPLE:
        raise ValueError(f"upsample: expected one of {UPSAMPLE}, got {upsample!r}")
    return upsample


def check_divisible(image_size, scales: int, arg: str) -> None:
    """ValueError naming ``arg`` unless H and W are divisible by 2**scales."""
    m = 2 ** scales
    if image_size[0] % m or image_size[1] % m:
        raise ValueError(f"{arg}: the skip net has {scales} scales, so H and W must be divisible by "
                         f"2**{scales} = {m}; got (H, W) = {tuple(image_size)}")


# -- the layers as pure functions ----------------------------------------------------------------------


def _conv_valid(x: jax.Array, w: jax.Array, stride: int) -> jax.Array:
    """Unpadded conv of ONE image x (Hp, Wp, Cin) by w (k, k, Cin, Cout): (Ho, Wo, Cout) float32.

    On a CPU as a matrix product of the patches (:func:`_patch_products`),
    elsewhere ``lax.conv_general_dilated``.  XLA:CPU runs the convolutions of
    the fitting loop badly: the kernel gradient, which JAX writes as a
    convolution with dim labels ``f01b_i01o->01bf``, is left in that layout
    inside the ``lax.scan`` and goes to the naive loop emitter (a step took 10x
    longer in the scan than alone); a vmap over per-image nets makes every
    convolution a grouped one, naive as well (4 images: 30x slower per image);
    and its Eigen convolutions reach about half the speed of its matrix products.
    """
    if jax.default_backend() != "cpu":
        return jax.lax.conv_general_dilated(x[None], w, (stride, stride), "VALID",
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                            preferred_element_type=jnp.float32)[0]
    return _patch_products(x, w, stride)


def _patches(x: jax.Array, k: int, stride: int) -> jax.Array:
    """The k x k patches of x (Hp, Wp, Cin) at the output pixels of an unpadded strided conv:
    (Ho, Wo, k k Cin), taps (a, b) row-major and channels fastest, the order of ``w.reshape(k k Cin, Cout)``."""
    ho, wo = (x.shape[0] - k) // stride + 1, (x.shape[1] - k) // stride + 1
    return jnp.concatenate([x[a:a + stride * (ho - 1) + 1:stride, b:b + stride * (wo - 1) + 1:stride]
                            for a in range(k) for b in range(k)], axis=-1)


def _matmul(spec: str, a: jax.Array, b: jax.Array) -> jax.Array:
    return jnp.einsum(spec, a, b, preferred_element_type=jnp.float32)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _patch_products(x: jax.Array, w: jax.Array, stride: int) -> jax.Array:
    """Unpadded strided conv (Hp, Wp, Cin) -> (Ho, Wo, Cout): the patches (im2col) times w, ONE matrix product.

    Custom VJP (:func:`_patch_products_bwd`): JAX's own kernel gradient
    contracts over the pixels two pixel-major operands; XLA:CPU's matrix
    products want the contracted axis last, so it transposes one of them first,
    and it may pick the k^2-times-larger one (with an earlier shifted-product
    form it did, and recomputed the producers of the output gradient in each
    of the k^2 copies: the backward pass took 10x the forward).
    """
    k, cout = w.shape[0], w.shape[3]
    return _matmul("hwk,ko->hwo", _patches(x, k, stride), w.reshape(-1, cout))


def _patch_products_fwd(x, w, stride):
    return _patch_products(x, w, stride), (x, w)


def _patch_products_bwd(stride, residuals, dy):
    """dx: dy @ w^T for every patch, each tap added back at its strided position; dw^T = dy^T @ patches,
    a product whose transposed operand is dy (Cout, Ho Wo), not the k^2-times-wider patches."""
    x, w = residuals
    k, cin, cout = w.shape[0], w.shape[2], w.shape[3]
    (hp, wp), (ho, wo) = x.shape[:2], dy.shape[:2]
    dy = dy.astype(x.dtype)
    dp = _matmul("hwo,ko->hwk", dy, w.reshape(-1, cout)).astype(x.dtype).reshape(ho, wo, k * k, cin)
    span_h, span_w = stride * (ho - 1) + 1, stride * (wo - 1) + 1

    def place(a, b):
        padding = ((a, hp - a - span_h, stride - 1), (b, wp - b - span_w, stride - 1), (0, 0, 0))
        return jax.lax.pad(dp[:, :, a * k + b], jnp.zeros((), x.dtype), padding)

    dx = functools.reduce(jnp.add, [place(a, b) for a in range(k) for b in range(k)])
    dw_t = _matmul("op,pk->ok", dy.reshape(ho * wo, cout).T, _patches(x, k, stride).reshape(ho * wo, -1))
    return dx, dw_t.T.reshape(k, k, cin, cout).astype(w.dtype)


_patch_products.defvjp(_patch_products_fwd, _patch_products_bwd)


def _conv(h: jax.Array, w: jax.Array, b: jax.Array, stride: int, dtype) -> jax.Array:
    """Conv (H, W, Cin) -> (H / stride, W / stride, Cout) with reflection padding (as the paper's code).

    Operands in ``dtype``, result float32 (:func:`_conv_valid`).
    """
    k = w.shape[0]
    if k > 1:
        h = jnp.pad(h, ((k // 2, k // 2), (k // 2, k // 2), (0, 0)), mode="reflect")
    return _conv_valid(h.astype(dtype), w.astype(dtype), stride) + b


def _bn(h: jax.Array, scale: jax.Array, bias: jax.Array) -> jax.Array:
    """BatchNorm with the statistics of the current input (train mode, batch of one image).

    Mean and biased variance over (H, W) per channel, eps 1e-5, as
    ``torch.nn.BatchNorm2d`` in training mode on a batch of one, which is how
    the paper's code runs (it never switches to eval mode).  Computed in float32.
    """
    h = h.astype(jnp.float32)
    mean = jnp.mean(h, axis=(0, 1))
    var = jnp.mean(jnp.square(h - mean), axis=(0, 1))
    return (h - mean) * jax.lax.rsqrt(var + BN_EPS) * scale + bias


def _act(h: jax.Array) -> jax.Array:
    return jax.nn.leaky_relu(h, LEAKY_SLOPE)


def _upsample2(h: jax.Array, mode: str) -> jax.Array:
    """x2 upsampling of (H, W, C): 'nearest', or 'bilinear' with half-pixel centres
    (``torch.nn.Upsample(scale_factor=2, mode='bilinear')``, ``align_corners=False``)."""
    if mode == "nearest":
        return jnp.repeat(jnp.repeat(h, 2, axis=0), 2, axis=1)
    return ops.resize_bilinear(h, (2 * h.shape[0], 2 * h.shape[1]), axes=(0, 1))


# -- the modules -----------------------------------------------------------------------------------


class _Conv(nnx.Module):
    """A conv's ``w`` (k, k, Cin, Cout) (HWIO) and ``b`` (Cout,); reflection padding (:func:`_conv`)."""

    def __init__(self, w: jax.Array, b: jax.Array):
        self.w = nnx.Param(w)
        self.b = nnx.Param(b)

    def __call__(self, h: jax.Array, stride: int, dtype) -> jax.Array:
        return _conv(h, self.w[...], self.b[...], stride, dtype)


class _Norm(nnx.Module):
    """A train-mode batch norm's ``scale`` (1 at init) and ``bias`` (0) (:func:`_bn`)."""

    def __init__(self, channels: int):
        self.scale = nnx.Param(jnp.ones((channels,), jnp.float32))
        self.bias = nnx.Param(jnp.zeros((channels,), jnp.float32))

    def __call__(self, h: jax.Array) -> jax.Array:
        return _bn(h, self.scale[...], self.bias[...])


class _Down(nnx.Module):
    """conv 3x3 stride 2, BN, LeakyReLU, conv 3x3, BN, LeakyReLU."""

    def __init__(self, conv1: _Conv, conv2: _Conv):
        cout = conv1.w.shape[3]
        self.conv1, self.bn1, self.conv2, self.bn2 = conv1, _Norm(cout), conv2, _Norm(cout)

    def __call__(self, h: jax.Array, dtype) -> jax.Array:
        h = _act(self.bn1(self.conv1(h, 2, dtype)))
        return _act(self.bn2(self.conv2(h, 1, dtype)))


class _Skip(nnx.Module):
    """conv 1x1, BN, LeakyReLU."""

    def __init__(self, conv: _Conv):
        self.conv, self.bn = conv, _Norm(conv.w.shape[3])

    def __call__(self, h: jax.Array, dtype) -> jax.Array:
        return _act(self.bn(self.conv(h, 1, dtype)))


class _Up(nnx.Module):
    """BN of the input, conv 3x3, BN, LeakyReLU, conv 1x1, BN, LeakyReLU."""

    def __init__(self, conv1: _Conv, conv2: _Conv):
        cin, cout = conv1.w.shape[2], conv1.w.shape[3]
        self.bn0, self.conv1, self.bn1, self.conv2, self.bn2 = _Norm(cin), conv1, _Norm(cout), conv2, _Norm(cout)

    def __call__(self, h: jax.Array, dtype) -> jax.Array:
        h = _act(self.bn1(self.conv1(self.bn0(h), 1, dtype)))
        return _act(self.bn2(self.conv2(h, 1, dtype)))


class SkipNet(nnx.Module):
    """The paper's skip (U-Net-like) generator, for ONE input z (H, W, Cin) -> image (H, W, Cout) in (0, 1).

    Scale i (0 = finest) has, as in the paper's supplementary Fig. 1:

    * ``down{i}``: conv 3x3 stride 2 (-> ``down[i]``), BN, LeakyReLU, conv 3x3
      (``down[i]`` -> ``down[i]``), BN, LeakyReLU;
    * ``skip{i}`` (absent when ``skip[i] == 0``): conv 1x1 (-> ``skip[i]``), BN,
      LeakyReLU, from the input of the scale;
    * ``up{i}``: BN of [skip_i, upsample(deeper)], conv 3x3 (-> ``up[i]``), BN,
      LeakyReLU, conv 1x1 (``up[i]`` -> ``up[i]``), BN, LeakyReLU; "deeper" is
      ``up{i+1}``'s output, or ``down{i}``'s at the coarsest scale;
    * ``out``: conv 1x1 (``up[0]`` -> ``out_channels``), then a sigmoid.

    Convs have biases (``w`` HWIO, ``b``) and PyTorch's default init (uniform in
    +-1/sqrt(fan_in), as the paper's code), all cut from one uniform draw
    (:func:`~jaxinterp.nets.layers.draw_pieces`); BN scales start at 1, biases
    at 0.  The skip convs are 1x1, the paper's code's default (its
    ``filter_skip_size``).  Not a net of :func:`jaxinterp.nets.get`: it takes
    noise, not RGB images, and has no split points or backward rules.

    Args:
      in_channels: channels of the input noise z (default 32, the paper's).
      out_channels: channels of the output image (default 3).
      down, up, skip: channels per scale, finest first (default 5 scales of
        128 / 128 / 4, the paper's); equal lengths; ``skip`` may hold zeros.
      rngs: ``nnx.Rngs`` with a ``params`` stream.

    Raises:
      ValueError: bad channel counts or lengths.

    Examples:
      >>> import jax
      >>> from flax import nnx
      >>> from jaxinterp.nets import SkipNet
      >>> net = SkipNet(in_channels=4, down=(8, 8), up=(8, 8), skip=(2, 0), rngs=nnx.Rngs(params=0))
      >>> net(jax.numpy.zeros((16, 16, 4))).shape
      (16, 16, 3)
    """

    def __init__(self, in_channels: int = 32, out_channels: int = 3, down=(128,) * 5, up=(128,) * 5,
                 skip=(4,) * 5, *, rngs: nnx.Rngs):
        in_channels, out_channels, down, up, skip = check_architecture(in_channels, out_channels, down, up, skip)
        scales = len(down)
        convs = []                                      # (k, cin, cout) in construction order
        cin = in_channels
        for i in range(scales):
            deeper = up[i + 1] if i + 1 < scales else down[i]
            convs += [(3, cin, down[i]), (3, down[i], down[i])] + ([(1, cin, skip[i])] if skip[i] else [])
            convs += [(3, skip[i] + deeper, up[i]), (1, up[i], up[i])]
            cin = down[i]
        convs.append((1, up[0], out_channels))
        shapes = [s for k, ci, co in convs for s in ((k, k, ci, co), (co,))]
        u = L.draw_pieces(lambda key, shape: jax.random.uniform(key, shape, jnp.float32, -1.0, 1.0),
                          rngs.params(), shapes)
        # PyTorch's default Conv2d init (as the paper's code): U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
        made = iter([_Conv(u[2 * j] / math.sqrt(k * k * ci), u[2 * j + 1] / math.sqrt(k * k * ci))
                     for j, (k, ci, co) in enumerate(convs)])
        for i in range(scales):
            setattr(self, f"down{i}", _Down(next(made), next(made)))
            if skip[i]:
                setattr(self, f"skip{i}", _Skip(next(made)))
            setattr(self, f"up{i}", _Up(next(made), next(made)))
        self.out = next(made)
        self.in_channels = in_channels
        self.scales = scales

    def __call__(self, z: jax.Array, *, upsample: str = "bilinear", compute_dtype=jnp.float32) -> jax.Array:
        """The generator on ONE input z (H, W, Cin): see :func:`skip_net_apply`."""
        upsample = check_upsample(upsample)
        cin = self.in_channels
        if not hasattr(z, "shape") or z.ndim != 3 or z.shape[-1] != cin:
            raise ValueError(f"z: expected one input (H, W, {cin}), got shape {getattr(z, 'shape', None)}")
        check_divisible(z.shape[:2], self.scales, "z")
        dt = compute_dtype

        def scale(i: int, h: jax.Array) -> jax.Array:
            deeper = getattr(self, f"down{i}")(h, dt)
            if i + 1 < self.scales:
                deeper = scale(i + 1, deeper)
            parts = [_upsample2(deeper, upsample)]
            if hasattr(self, f"skip{i}"):
                parts.insert(0, getattr(self, f"skip{i}")(h, dt))
            return getattr(self, f"up{i}")(jnp.concatenate(parts, axis=-1), dt)

        return jax.nn.sigmoid(self.out(scale(0, z), 1, dt))


# -- the pure functions --------------------------------------------------------------------------------


def _config(in_channels, out_channels, down, up, skip) -> tuple:
    return (("down", down), ("in_channels", in_channels), ("out_channels", out_channels), ("skip", skip),
            ("up", up))


def skip_net_init(key: jax.Array, *, in_channels: int = 32, out_channels: int = 3,
                  down: tuple[int, ...] = (128,) * 5, up: tuple[int, ...] = (128,) * 5,
                  skip: tuple[int, ...] = (4,) * 5) -> dict:
    """Random params of the paper's skip (U-Net-like) generator (:class:`SkipNet`).

    Compiled once per architecture (``jax.jit``); works on a traced key (inside the
    fitting loop's ``jit`` / ``vmap``).

    Args:
      key: a ``jax.random.key``.
      in_channels: channels of the input noise z (default 32, the paper's).
      out_channels: channels of the output image (default 3).
      down, up, skip: channels per scale, finest first (default 5 scales of
        128 / 128 / 4, the paper's); equal lengths; ``skip`` may hold zeros.

    Returns:
      params: a nested dict of float32 arrays, ``{'down0': {'conv1': {'w', 'b'},
      'bn1': {'scale', 'bias'}, 'conv2', 'bn2'}, 'skip0': {'conv', 'bn'}, 'up0':
      {'bn0', 'conv1', 'bn1', 'conv2', 'bn2'}, ..., 'out': {'w', 'b'}}``; conv
      weights are HWIO.

    Raises:
      ValueError: bad channel counts or lengths.
    """
    arch = check_architecture(in_channels, out_channels, down, up, skip)
    return module_init(SkipNet, _config(*arch))(key)


def skip_net_scales(params: dict) -> int:
    """The number of scales of a skip net's params (its output side must be divisible by 2**scales)."""
    return sum(1 for k in params if k.startswith("down"))


def _architecture(params) -> tuple:
    """The constructor config of the :class:`SkipNet` whose params these are (read from keys and shapes)."""
    bad = ValueError("params: expected the dict of skip_net_init (with 'down0', 'up0', ..., 'out')")
    if not isinstance(params, dict) or "down0" not in params or "out" not in params:
        raise bad
    scales = skip_net_scales(params)
    try:
        def cout(p):
            return int(p["w"].shape[3])
        down = tuple(cout(params[f"down{i}"]["conv1"]) for i in range(scales))
        up = tuple(cout(params[f"up{i}"]["conv1"]) for i in range(scales))
        skip = tuple(cout(params[f"skip{i}"]["conv"]) if f"skip{i}" in params else 0 for i in range(scales))
        arch = (int(params["down0"]["conv1"]["w"].shape[2]), cout(params["out"]), down, up, skip)
    except (KeyError, TypeError, AttributeError, IndexError):
        raise bad from None
    return _config(*arch)


def skip_net_apply(params: dict, z: jax.Array, *, upsample: str = "bilinear",
                   compute_dtype=jnp.float32) -> jax.Array:
    """The skip generator on ONE input: z (H, W, Cin) -> image (H, W, Cout) in (0, 1).

    Architecture: see :class:`SkipNet`, read from the params' keys and shapes.
    Convs are zero-free: 3x3 convs pad by reflection (the paper's code's
    ``pad='reflection'``); the stride-2 convs downsample; ``upsample`` doubles
    the resolution back.  BatchNorm normalises with the statistics of this input
    alone (train mode with a batch of one, as the paper's code, which fits one
    image with batch size 1): vmap this function for batches, every image is
    normalised on its own.  On a CPU the convs are matrix products of patches
    with a hand-written backward pass (:func:`_conv_valid`), elsewhere XLA
    convolutions.

    Pure and jit-compatible with ``upsample`` and ``compute_dtype`` static;
    vmaps over z and over params.

    Args:
      params: from :func:`skip_net_init`.
      z: input noise (H, W, Cin), H and W divisible by 2**scales.
      upsample: 'bilinear' (default; the paper uses bilinear for its
        restorations) or 'nearest'.  A static argument here rather than of
        init, because params hold arrays only.
      compute_dtype: dtype of the conv operands (float32 default; bfloat16 on
        accelerators); accumulation, BatchNorm and the output stay float32.

    Returns:
      (H, W, Cout) float32 in (0, 1) (sigmoid output).

    Raises:
      ValueError: ``params`` not a skip net's; ``z`` not (H, W, Cin) with the
        params' Cin, H or W not divisible by 2**scales, bad ``upsample``.

    Examples:
      >>> import jax
      >>> from jaxinterp import nets
      >>> params = nets.skip_net_init(jax.random.key(0), in_channels=4, down=(8, 8), up=(8, 8), skip=(2, 2))
      >>> params["up0"]["conv1"]["w"].shape               # HWIO: 2 skip + 8 upsampled channels in
      (3, 3, 10, 8)
      >>> z = 0.1 * jax.random.uniform(jax.random.key(1), (16, 16, 4))
      >>> image = jax.jit(nets.skip_net_apply)(params, z)
      >>> image.shape, bool((image > 0).all() & (image < 1).all())
      ((16, 16, 3), True)
    """
    upsample = check_upsample(upsample)
    config = _architecture(params)
    check_params_tree(params, module_graph(SkipNet, config)[1], f"SkipNet({dict(config)})",
                      "the output of skip_net_init")
    return module_merge(SkipNet, config, params)(z, upsample=upsample, compute_dtype=compute_dtype)
