"""Building blocks of the zoo: pure NHWC functions and the NNX modules that hold weights.

Parameters are stored in JAX layout (conv kernels HWIO, dense kernels (in, out));
their names follow PyTorch's state-dict names once ``kernel`` / ``scale`` are read
as ``weight`` and ``mean`` / ``var`` as ``running_mean`` / ``running_var``
(see :mod:`jaxinterp.nets.weights`).  Every module's ``__call__`` takes the
static :class:`~jaxinterp.nets.rules.Rules` so that a modified backward pass
reaches each ReLU, max-pool, linear map and residual sum.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax import lax

from jaxinterp.nets.rules import Rules

# ----------------------------------------------------------------------------
# Pure functions.


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow 'SAME' padding (before, after) of one axis: output ceil(size / stride),
    total max((out - 1) stride + kernel - size, 0), the odd pixel after."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def conv2d(x: jax.Array, kernel: jax.Array, bias: jax.Array | None = None, *,
           stride: int = 1, padding: int | str = 0, groups: int = 1) -> jax.Array:
    """2-D cross-correlation, as ``torch.nn.functional.conv2d`` (or TensorFlow's 'SAME').

    Args:
      x: (N, H, W, Cin).
      kernel: (kh, kw, Cin / groups, Cout).
      bias: (Cout,) or None.
      stride: integer stride in both directions.
      padding: symmetric integer zero padding, or ``'SAME'``: TensorFlow's padding
        (:func:`same_padding`: the odd row at the bottom, the odd column on the
        right, so H' = ceil(H / stride); timm's ``Conv2dSame``, the ``tf_`` nets).
      groups: feature groups (Cin for a depthwise convolution).

    Returns:
      (N, H', W', Cout) with H' = floor((H + 2 padding - kh) / stride) + 1, or
      ceil(H / stride) for ``'SAME'``.

    A depthwise convolution (groups = Cin = Cout) is computed as a sum of kh kw
    shifted, strided slices of the padded input scaled per channel, with a
    hand-written backward pass: the same numbers, but XLA fuses it into one
    elementwise loop, which on a CPU runs 4-20 times faster than its grouped
    convolution (measured on EfficientNet-Lite0's layers).  A 1 x 1 convolution at
    stride 1 without padding is a matrix product over the channels
    (``lax.dot_general``), which XLA's CPU backend runs faster than its convolution.
    Any other convolution without groups has a hand-written backward pass whose
    convolutions keep the NHWC / HWIO layout (:func:`_conv_nhwc`: XLA's CPU backend
    otherwise runs them on its naive emitter inside ``lax.scan`` bodies).  Those two
    backward passes are :func:`jax.custom_vjp` rules, so the zoo's nets support
    reverse-mode differentiation (``grad``, ``vjp``, second derivatives) but not
    forward mode (``jvp``, ``jacfwd``).
    """
    kh, kw = kernel.shape[:2]
    if padding == "SAME":
        pads = (same_padding(x.shape[1], kh, stride), same_padding(x.shape[2], kw, stride))
    else:
        pads = ((padding, padding), (padding, padding))
    if groups > 1 and groups == x.shape[-1] == kernel.shape[-1]:
        y = _depthwise_conv2d(x, kernel.astype(x.dtype), stride, pads)
    elif kh == kw == 1 and groups == 1 and stride == 1 and pads == ((0, 0), (0, 0)):
        y = lax.dot_general(x, kernel[0, 0].astype(x.dtype), (((3,), (0,)), ((), ())))
    elif groups == 1:
        y = _conv_nhwc(x, kernel.astype(x.dtype), stride, pads)
    else:
        y = lax.conv_general_dilated(
            x, kernel.astype(x.dtype), (stride, stride), pads,
            dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=groups)
    if bias is not None:
        y = y + bias.astype(y.dtype)
    return y


_NHWC = ("NHWC", "HWIO", "NHWC")


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv_nhwc(x: jax.Array, kernel: jax.Array, stride: int, pads) -> jax.Array:
    """``lax.conv_general_dilated`` NHWC / HWIO -> NHWC, whose backward pass is also NHWC / HWIO -> NHWC.

    JAX writes a convolution's input gradient with an OIHW-ordered kernel and its kernel
    gradient with batch and features swapped.  XLA's CPU backend rewrites such
    convolutions into the layout its fast (Eigen) convolution needs only in a program's
    entry computation (``ConvCanonicalization`` visits no other), so inside a
    ``lax.scan`` / ``while_loop`` body, where every iterative method runs its net, they
    went to a naive loop emitter: VGG16's forward and input gradient at 96 px took 2x as
    long per step inside a scan as in straight-line code.  Here both gradients are
    convolutions in the canonical layout, with the transposes written out.  The numbers
    are the automatic gradient's; other backends are unaffected.
    """
    return lax.conv_general_dilated(x, kernel, (stride, stride), pads, dimension_numbers=_NHWC)


def _conv_nhwc_fwd(x, kernel, stride, pads):
    """Residuals (x, kernel, wanted): ``wanted`` says which of (dx, dkernel) the caller differentiates,
    so that an eager (un-jitted) input gradient does not compute the kernel's, nor the reverse."""
    wanted = (x.perturbed, kernel.perturbed)
    return _conv_nhwc(x.value, kernel.value, stride, pads), (x.value, kernel.value, _Wanted(*wanted))


class _Wanted(tuple):
    """Which cotangents a convolution's backward pass computes: (dx, dkernel) booleans, static."""

    def __new__(cls, dx: bool, dk: bool):
        return super().__new__(cls, (dx, dk))


jax.tree_util.register_pytree_node(_Wanted, lambda w: ((), tuple(w)), lambda aux, _: _Wanted(*aux))


def _conv_nhwc_bwd(stride, pads, residuals, g):
    """dx: g dilated by the stride, correlated with the flipped kernel with its in / out axes swapped;
    dkernel: x's channels as the batch, correlated with g's batch as the input features."""
    x, kernel, (want_dx, want_dk) = residuals
    if isinstance(g, jax.custom_derivatives.SymbolicZero):
        return None, None
    k = kernel.shape[:2]
    span = [(o - 1) * stride + 1 for o in g.shape[1:3]]          # g's extent once dilated by the stride
    dx = dk = None
    if want_dx:
        before = [kk - 1 - lo for kk, (lo, _) in zip(k, pads)]
        dx_pads = [(b, n + kk - 1 - s - b) for b, n, kk, s in zip(before, x.shape[1:3], k, span)]
        flipped = jnp.swapaxes(lax.rev(kernel, (0, 1)), 2, 3)       # (kh, kw, Cout, Cin)
        dx = lax.conv_general_dilated(g, flipped, (1, 1), dx_pads, lhs_dilation=(stride, stride),
                                      dimension_numbers=_NHWC)
    if want_dk:
        dk_pads = [(lo, s - n + kk - lo - 1) for (lo, _), n, kk, s in zip(pads, x.shape[1:3], k, span)]
        dk = lax.conv_general_dilated(jnp.transpose(x, (3, 1, 2, 0)), jnp.transpose(g, (1, 2, 0, 3)), (1, 1),
                                      dk_pads, rhs_dilation=(stride, stride),
                                      dimension_numbers=_NHWC)                      # (Cin, kh, kw, Cout)
        dk = jnp.transpose(dk, (1, 2, 0, 3))
    return dx, dk


_conv_nhwc.defvjp(_conv_nhwc_fwd, _conv_nhwc_bwd, symbolic_zeros=True)


def _shifted_windows(xp: jax.Array, kh: int, kw: int, stride: int, oh: int, ow: int):
    """Yield (i, j, window) with window[n, h, w, c] = xp[n, i + stride h, j + stride w, c], (N, oh, ow, C)."""
    n, _, _, c = xp.shape
    for i in range(kh):
        for j in range(kw):
            yield i, j, lax.slice(xp, (0, i, j, 0), (n, i + (oh - 1) * stride + 1, j + (ow - 1) * stride + 1, c),
                                  (1, stride, stride, 1))


def _tap(kernel: jax.Array, i: int, j: int, shape) -> jax.Array:
    """kernel[i, j, 0, :] (kernel (kh, kw, 1, C)) broadcast to ``shape`` (..., C)."""
    c = kernel.shape[-1]
    k = lax.reshape(lax.slice(kernel, (i, j, 0, 0), (i + 1, j + 1, 1, c)), (c,))
    return lax.broadcast_in_dim(k, shape, (len(shape) - 1,))


def _correlate_depthwise(xp: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
    """Valid depthwise cross-correlation of the already padded (N, Hp, Wp, C) ``xp``."""
    kh, kw = kernel.shape[:2]
    hp, wp = xp.shape[1:3]
    oh, ow = (hp - kh) // stride + 1, (wp - kw) // stride + 1
    y = None
    for i, j, window in _shifted_windows(xp, kh, kw, stride, oh, ow):
        term = lax.mul(window, _tap(kernel, i, j, window.shape))
        y = term if y is None else lax.add(y, term)
    return y


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _valid_depthwise(xp: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
    return _correlate_depthwise(xp, kernel, stride)


def _valid_depthwise_fwd(xp, kernel, stride):
    return _correlate_depthwise(xp, kernel, stride), (xp, kernel)


def _valid_depthwise_bwd(stride, residuals, g):
    """d/dxp: the correlation of g (dilated by the stride, padded by the kernel) with the flipped kernel;
    d/dkernel[i, j]: sum over (n, h, w) of the (i, j) window times g."""
    xp, kernel = residuals
    kh, kw = kernel.shape[:2]
    hp, wp, c = xp.shape[1:]
    oh, ow = g.shape[1:3]
    zero = jnp.zeros((), g.dtype)
    gd = lax.pad(g, zero, ((0, 0, 0), (kh - 1, kh - 1 + hp - (oh - 1) * stride - kh, stride - 1),
                           (kw - 1, kw - 1 + wp - (ow - 1) * stride - kw, stride - 1), (0, 0, 0)))
    dxp = _correlate_depthwise(gd, lax.rev(kernel, (0, 1)), 1)
    taps = [lax.reduce(lax.mul(window, g), zero, lax.add, (0, 1, 2))
            for _, _, window in _shifted_windows(xp, kh, kw, stride, oh, ow)]
    dk = lax.reshape(lax.concatenate([lax.broadcast_in_dim(t, (1, c), (1,)) for t in taps], 0), (kh, kw, 1, c))
    return dxp, dk


_valid_depthwise.defvjp(_valid_depthwise_fwd, _valid_depthwise_bwd)


def _depthwise_conv2d(x: jax.Array, kernel: jax.Array, stride: int, pads) -> jax.Array:
    """sum_ij x_padded[:, i + stride h, j + stride w, c] * kernel[i, j, 0, c]; kernel (kh, kw, 1, C).

    The backward pass is written by hand (:func:`_valid_depthwise_bwd`): the automatic
    transpose pads every one of the kh kw slices back to the input's size and sums
    them, which made EfficientNet-Lite0's gradient at 224 px twice as slow on a CPU.
    """
    xp = lax.pad(x, jnp.zeros((), x.dtype), ((0, 0, 0), (*pads[0], 0), (*pads[1], 0), (0, 0, 0)))
    return _valid_depthwise(xp, kernel, stride)


def dense(x: jax.Array, kernel: jax.Array, bias: jax.Array | None = None) -> jax.Array:
    """Affine map x @ kernel + bias over the last axis; kernel is (in, out)."""
    y = x @ kernel.astype(x.dtype)
    if bias is not None:
        y = y + bias.astype(y.dtype)
    return y


def batch_norm_eval(x: jax.Array, scale: jax.Array, bias: jax.Array, mean: jax.Array,
                    var: jax.Array, eps: float) -> jax.Array:
    """Inference-mode batch norm (x - mean) / sqrt(var + eps) * scale + bias on the last axis."""
    inv = (scale * lax.rsqrt(var + eps)).astype(x.dtype)
    return (x - mean.astype(x.dtype)) * inv + bias.astype(x.dtype)


def batch_norm_train(x: jax.Array, scale: jax.Array, bias: jax.Array, eps: float = 1e-5) -> jax.Array:
    """Training-mode batch norm on the last axis: the statistics are those of ``x`` itself.

    (x - mean) / sqrt(var + eps) * scale + bias with the mean and biased variance over
    every axis but the last, as ``torch.nn.BatchNorm1d`` in training mode.  Inside
    ``jax.jit`` on a batch sharded over devices the statistics are those of the
    global batch (synchronised batch norm, with no explicit all-reduce).
    """
    axes = tuple(range(x.ndim - 1))
    mean = jnp.mean(x, axis=axes)
    var = jnp.mean(jnp.square(x - mean), axis=axes)
    return batch_norm_eval(x, scale, bias, mean, var, eps)


def layer_norm(x: jax.Array, scale: jax.Array, bias: jax.Array, eps: float) -> jax.Array:
    """Layer norm over the last axis, as ``torch.nn.LayerNorm`` (biased variance)."""
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
    return (x - mean) * lax.rsqrt(var + eps) * scale.astype(x.dtype) + bias.astype(x.dtype)


@functools.lru_cache(maxsize=None)
def adaptive_pool_matrix(size_in: int, size_out: int) -> np.ndarray:
    """(size_out, size_in) averaging matrix of ``torch.nn.AdaptiveAvgPool1d``.

    Output cell i averages inputs floor(i * n / m) .. ceil((i + 1) * n / m) - 1.
    """
    p = np.zeros((size_out, size_in), np.float32)
    for i in range(size_out):
        lo = (i * size_in) // size_out
        hi = -((-(i + 1) * size_in) // size_out)
        p[i, lo:hi] = 1.0 / (hi - lo)
    return p


def adaptive_avg_pool(x: jax.Array, out_hw: tuple[int, int]) -> jax.Array:
    """``torch.nn.AdaptiveAvgPool2d(out_hw)`` on x (N, H, W, C) -> (N, oh, ow, C).

    Written as two averaging matrices, so it is exact for any input size and linear.
    """
    ph = jnp.asarray(adaptive_pool_matrix(x.shape[1], out_hw[0]), x.dtype)
    pw = jnp.asarray(adaptive_pool_matrix(x.shape[2], out_hw[1]), x.dtype)
    return jnp.einsum("ih,jw,nhwc->nijc", ph, pw, x, precision=lax.Precision.HIGHEST)


def global_avg_pool(x: jax.Array) -> jax.Array:
    """Spatial mean of x (N, H, W, C) -> (N, C)."""
    return jnp.mean(x, axis=(1, 2))


def flatten_chw(x: jax.Array) -> jax.Array:
    """Flatten (N, H, W, C) in PyTorch's (C, H, W) order -> (N, C*H*W)."""
    return jnp.transpose(x, (0, 3, 1, 2)).reshape(x.shape[0], -1)


def normalise(x: jax.Array, mean: tuple[float, ...], std: tuple[float, ...]) -> jax.Array:
    """(x - mean) / std per channel on the last axis."""
    return (x - jnp.asarray(mean, x.dtype)) / jnp.asarray(std, x.dtype)


# ----------------------------------------------------------------------------
# Initialisers (those of torchvision / timm, so random nets have sensible scales).


def he_normal_fan_out(key, shape):
    """Kaiming normal, fan-out mode, ReLU gain (torchvision's conv init); shape HWIO."""
    fan_out = shape[0] * shape[1] * shape[3]
    return jax.random.normal(key, shape, jnp.float32) * math.sqrt(2.0 / fan_out)


def normal(stddev):
    def init(key, shape):
        return jax.random.normal(key, shape, jnp.float32) * stddev
    return init


def trunc_normal(stddev):
    def init(key, shape):
        return jax.random.truncated_normal(key, -2.0 / stddev, 2.0 / stddev, shape) * stddev
    return init


def draw_pieces(sample, key: jax.Array, shapes) -> list[jax.Array]:
    """Arrays of the given shapes cut, in order, from ONE draw ``sample(key, (total size,))``.

    A net whose every layer draws its own weights compiles one random-bits program
    per draw; one draw cut into pieces compiles one (under ``jit`` on a CPU, the 52
    uniform draws of the deep image prior's default generator took 6 s to compile,
    one draw cut into 52 pieces 1.5 s).  The pieces are independent with the
    distribution of ``sample``; scale each.

    Args:
      sample: e.g. ``jax.random.normal``; called as ``sample(key, (n,))``.
      key: a ``jax.random.key``.
      shapes: the shapes of the pieces.

    Returns:
      One array per shape.
    """
    sizes = [math.prod(shape) for shape in shapes]
    flat = sample(key, (sum(sizes),))
    pieces, offset = [], 0
    for shape, size in zip(shapes, sizes):
        pieces.append(flat[offset:offset + size].reshape(shape))
        offset += size
    return pieces


# ----------------------------------------------------------------------------
# Modules.


class Conv(nnx.Module):
    """Conv2d holding ``kernel`` (kh, kw, Cin / groups, Cout) and ``bias`` (Cout,).

    ``padding`` is an int or ``'SAME'`` and ``groups`` the feature groups (see :func:`conv2d`).
    """

    def __init__(self, cin: int, cout: int, size: int, *, stride: int = 1, padding: int | str = 0,
                 groups: int = 1, bias: bool = True, init=he_normal_fan_out, rngs: nnx.Rngs):
        if cin % groups or cout % groups:
            raise ValueError(f"groups: expected a divisor of cin {cin} and cout {cout}, got {groups}")
        self.kernel = nnx.Param(init(rngs.params(), (size, size, cin // groups, cout)))
        self.bias = nnx.Param(jnp.zeros((cout,), jnp.float32)) if bias else None
        self.stride = stride
        self.padding = padding
        self.groups = groups

    def __call__(self, x: jax.Array, rules: Rules) -> jax.Array:
        f = functools.partial(conv2d, stride=self.stride, padding=self.padding, groups=self.groups)
        if self.bias is None:
            return rules.linear(f, x, self.kernel[...])
        return rules.linear(f, x, self.kernel[...], self.bias[...])


class Linear(nnx.Module):
    """Dense layer holding ``kernel`` (in, out) and ``bias`` (out,)."""

    def __init__(self, cin: int, cout: int, *, bias: bool = True, init=normal(0.01),
                 rngs: nnx.Rngs):
        self.kernel = nnx.Param(init(rngs.params(), (cin, cout)))
        self.bias = nnx.Param(jnp.zeros((cout,), jnp.float32)) if bias else None

    def __call__(self, x: jax.Array, rules: Rules) -> jax.Array:
        if self.bias is None:
            return rules.linear(dense, x, self.kernel[...])
        return rules.linear(dense, x, self.kernel[...], self.bias[...])


class BatchNorm(nnx.Module):
    """Inference-mode batch norm over channels (``scale``, ``bias``, ``mean``, ``var``)."""

    def __init__(self, channels: int, *, eps: float = 1e-5):
        self.scale = nnx.Param(jnp.ones((channels,), jnp.float32))
        self.bias = nnx.Param(jnp.zeros((channels,), jnp.float32))
        self.mean = nnx.BatchStat(jnp.zeros((channels,), jnp.float32))
        self.var = nnx.BatchStat(jnp.ones((channels,), jnp.float32))
        self.eps = eps

    def __call__(self, x: jax.Array, rules: Rules) -> jax.Array:
        f = functools.partial(batch_norm_eval, eps=self.eps)
        return rules.linear(f, x, self.scale[...], self.bias[...], self.mean[...], self.var[...])


class LayerNorm(nnx.Module):
    """Layer norm over the last axis (``scale``, ``bias``)."""

    def __init__(self, channels: int, *, eps: float = 1e-6):
        self.scale = nnx.Param(jnp.ones((channels,), jnp.float32))
        self.bias = nnx.Param(jnp.zeros((channels,), jnp.float32))
        self.eps = eps

    def __call__(self, x: jax.Array) -> jax.Array:
        return layer_norm(x, self.scale[...], self.bias[...], self.eps)


def avg_pool_to(x: jax.Array, out_hw: tuple[int, int], rules: Rules) -> jax.Array:
    """Adaptive average pooling routed through ``rules.linear`` (it is a linear map)."""
    return rules.linear(functools.partial(adaptive_avg_pool, out_hw=out_hw), x)


def global_pool(x: jax.Array, rules: Rules) -> jax.Array:
    """Global average pooling (N, H, W, C) -> (N, C) routed through ``rules.linear``."""
    return rules.linear(global_avg_pool, x)
