"""The feature-inversion decoder of Dosovitskiy and Brox (CVPR 2016) as a Flax NNX module.

:class:`Decoder` is an up-convolutional network from a net's features phi(x)
back to images; :func:`jaxinterp.synthesis.inverter.train_inverter` trains it on
the squared pixel error.  :func:`inverter_init` and :func:`inverter_apply` are
its pure form: the params are a plain dict of arrays (``nnx.to_pure_dict`` of
the module's state) whose keys and shapes give the architecture, so
:func:`inverter_apply` is a pure function of ``(params, features)`` that merges
them into a graph built once per architecture
(:func:`jaxinterp.nets.core.module_merge`).  The decoder takes features, not RGB
images, and has no split points or backward rules, so it is not a net of
:func:`jaxinterp.nets.get`.

The layers (the paper's family, scaled down for 64 x 64 images):

* vector features (C,) (e.g. after global pooling): ``fc0`` (C -> ``fc_width``)
  then ``seed``, a fully connected map to a (h0, w0, widths[0]) grid, h0 = H / 2^k
  with the largest k that leaves h0, w0 >= 4 (the paper reshapes its fc
  output to 4 x 4 the same way);
* ``conv0`` .. ``conv{num_convs-1}``: 3 x 3 convolutions with ``widths[0]``
  channels on the feature map (the paper's "conv" layers before upsampling);
* ``up0`` .. ``up{k-1}``: k up-convolutions (nearest-neighbour 2x upsampling
  then a 3 x 3 convolution, each doubling the resolution; stage i has
  ``widths[min(i + 1, -1)]`` channels) until the image size;
* ``out``: a 3 x 3 convolution to 3 channels, then a sigmoid.

Every hidden layer is followed by a leaky ReLU of slope 0.2 (the paper's).
The paper's up-convolutions are unpooling (each value to the top-left of a
2 x 2 block of zeros) then a 5 x 5 conv; here the unpooling copies the value
to the whole block (nearest-neighbour upsampling) and the conv is 3 x 3,
which avoids the checkerboard artefacts of zero-filled unpooling and
transposed convolutions (Odena, Dumoulin and Olah 2016) at a lower cost.
The 3 x 3 convolutions are computed as one matmul of shifted copies (im2col;
the same numbers as ``lax.conv_general_dilated``, tested), because XLA:CPU
runs a convolution's kernel gradient inside ``lax.scan`` about 5x slower.
The paper's last layer is linear (no output non-linearity); here the output
goes through a **sigmoid**, because the project's images are RGB in [0, 1]
by contract: a sigmoid keeps every reconstruction in range and, unlike
clipping, never zeroes the gradient of a pixel that is out of range.

``params['scale']`` is a fixed scalar that the features are multiplied by
before the decoder (1 at init;
:func:`~jaxinterp.synthesis.inverter.train_inverter` sets it to 1 / RMS of the
training features, because activations at different depths differ in scale by
orders of magnitude and Adam's step size is then right for all of them; the
paper feeds raw features).  It is never trained (``stop_gradient``; in the
module a :class:`FixedScale` variable, not an ``nnx.Param``).

References:
  Dosovitskiy and Brox, "Inverting visual representations with
  convolutional networks", CVPR 2016.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from flax import nnx

from jaxinterp.checks import check_int, check_size
from jaxinterp.nets import layers as L
from jaxinterp.nets.core import check_params_tree, module_graph, module_init, module_merge

__all__ = ["DEFAULT_WIDTHS", "LEAKY_SLOPE", "FixedScale", "Decoder", "inverter_init", "inverter_apply",
           "inverter_image_size", "inverter_feature_shape"]

DEFAULT_WIDTHS = (64, 64, 32, 32)
"""Channels of the conv layers on the feature map (first), then of each up-convolution."""
LEAKY_SLOPE = 0.2
"""Negative slope of the leaky ReLUs (the paper's)."""
_MIN_SEED = 4


# ----------------------------------------------------------------------------
# Checks and shapes.


def check_widths(widths) -> tuple[int, ...]:
    """``widths`` as a non-empty tuple of positive ints; ValueError naming ``widths`` otherwise."""
    if not isinstance(widths, (tuple, list)) or not widths:
        raise ValueError(f"widths: expected a non-empty tuple of positive ints, got {widths!r}")
    return tuple(check_int(w, "widths") for w in widths)


def _check_feature_shape(feature_shape) -> tuple[int, ...]:
    if not isinstance(feature_shape, (tuple, list)) or len(feature_shape) not in (1, 3):
        raise ValueError(f"feature_shape: expected (h, w, C) or (C,) for one example, "
                         f"got {feature_shape!r}")
    return tuple(check_int(d, "feature_shape") for d in feature_shape)


def _num_doublings(feature_hw: tuple[int, int], image_size: tuple[int, int]) -> int:
    """k with feature_hw * 2^k == image_size; ValueError naming image_size otherwise."""
    (h, w), (H, W) = feature_hw, image_size
    for k in range(32):
        if (h << k, w << k) == (H, W):
            return k
        if (h << k) > H or (w << k) > W:
            break
    raise ValueError(f"image_size: {(H, W)} is not the feature map size {(h, w)} times a power of 2; "
                     f"the decoder doubles the resolution at each up-convolution")


def _seed_size(image_size: tuple[int, int]) -> tuple[int, int, int]:
    """(h0, w0, k): the largest k with image_size / 2^k integral and >= 4 on both sides."""
    H, W = image_size
    k = 0
    while H % (2 << k) == 0 and W % (2 << k) == 0 and min(H, W) >> (k + 1) >= _MIN_SEED:
        k += 1
    return H >> k, W >> k, k


def _check_config(feature_shape, image_size, widths, num_convs, fc_width) -> tuple:
    """The constructor arguments checked, as ints and tuples (ValueError naming the bad one)."""
    return (_check_feature_shape(feature_shape), check_size(image_size, "image_size"), check_widths(widths),
            check_int(num_convs, "num_convs"), check_int(fc_width, "fc_width"))


# ----------------------------------------------------------------------------
# The layers as pure functions.


def _leaky(x):
    return jax.nn.leaky_relu(x, LEAKY_SLOPE)


def _conv3x3(x, w, b):
    """3 x 3 convolution, zero padding 1, as a matmul of the 9 shifted copies of x (im2col).

    The same numbers as ``lax.conv_general_dilated`` (tested); written as one matmul
    because XLA:CPU runs the kernel gradient of a convolution inside a ``lax.scan``
    about 5x slower than outside one, and the matmul's gradient has no such cliff.
    """
    n, h, wd, c = x.shape
    xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    cols = jnp.concatenate([xp[:, dy:dy + h, dx:dx + wd] for dy in range(3) for dx in range(3)], -1)
    return cols @ w.reshape(9 * c, -1) + b


def _upconv(x, w, b):
    """Up-convolution: nearest-neighbour 2x upsampling, then a 3 x 3 conv: (n, h, w, cin) -> (n, 2h, 2w, cout)."""
    return _conv3x3(jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2), w, b)


# ----------------------------------------------------------------------------
# The module.


class FixedScale(nnx.Variable):
    """A fixed factor stored with the params and never trained (not an ``nnx.Param``)."""


class _Layer(nnx.Module):
    """A layer's weight ``w`` and bias ``b``."""

    def __init__(self, w: jax.Array, b: jax.Array):
        self.w = nnx.Param(w)
        self.b = nnx.Param(b)


class Decoder(nnx.Module):
    """An up-convolutional decoder from features of one shape to images of one size (module docstring).

    Weights: He initialisation for leaky ReLUs, N(0, 2 / ((1 + 0.2^2) fan_in)),
    the output layer's 10x smaller so that the first reconstructions are near grey
    (sigmoid(0) = 0.5); biases 0; ``scale`` 1.  All weights are cut from ONE
    normal draw (:func:`~jaxinterp.nets.layers.draw_pieces`).  Not a net of
    :func:`jaxinterp.nets.get`: it takes features, not RGB images, and has no
    split points or backward rules.

    Args:
      feature_shape: the features of ONE example: (h, w, C) for a conv layer
        (``net.activation_shape(layer)``), or (C,) for a vector.
      image_size: (H, W) of the images; for (h, w, C) features, (h, w) times
        2^k for some k >= 0 (k up-convolutions).
      widths: channels of the ``num_convs`` conv layers on the feature map
        (``widths[0]``) and of up-convolution i (``widths[min(i + 1, -1)]``);
        default :data:`DEFAULT_WIDTHS` (the paper's AlexNet decoders use
        256 .. 32 channels; these suit 64 x 64 images).
      num_convs: 3 x 3 conv layers before upsampling (default 2; the paper
        uses 3 on AlexNet's conv5).
      fc_width: width of the hidden fully connected layer for (C,) features
        (default 256; the paper uses 4096 on AlexNet's fc layers).
      rngs: ``nnx.Rngs`` with a ``params`` stream.

    Raises:
      ValueError: bad ``feature_shape``, ``image_size`` (not the feature map
        size times a power of 2), ``widths``, ``num_convs`` or ``fc_width``.

    Examples:
      >>> import jax
      >>> from flax import nnx
      >>> from jaxinterp.nets import Decoder
      >>> decoder = Decoder((4, 4, 8), (16, 16), widths=(8, 4), rngs=nnx.Rngs(params=0))
      >>> decoder(jax.numpy.ones((2, 4, 4, 8))).shape     # two up-convolutions
      (2, 16, 16, 3)
    """

    def __init__(self, feature_shape, image_size, *, widths=DEFAULT_WIDTHS, num_convs: int = 2,
                 fc_width: int = 256, rngs: nnx.Rngs):
        feature_shape, image_size, widths, num_convs, fc_width = _check_config(
            feature_shape, image_size, widths, num_convs, fc_width)
        layers: list[tuple[str, tuple[int, ...], int]] = []     # (name, weight shape, fan_in)
        if len(feature_shape) == 1:
            h0, w0, k = _seed_size(image_size)
            c = feature_shape[0]
            layers += [("fc0", (c, fc_width), c), ("seed", (fc_width, h0, w0, widths[0]), fc_width)]
            cin = widths[0]
        else:
            k = _num_doublings(feature_shape[:2], image_size)
            cin = feature_shape[2]
        for i in range(num_convs):
            layers.append((f"conv{i}", (3, 3, cin, widths[0]), 9 * cin))
            cin = widths[0]
        for i in range(k):
            cout = widths[min(i + 1, len(widths) - 1)]
            layers.append((f"up{i}", (3, 3, cin, cout), 9 * cin))
            cin = cout
        layers.append(("out", (3, 3, cin, 3), 9 * cin))
        noise = L.draw_pieces(functools.partial(jax.random.normal, dtype=jnp.float32), rngs.params(),
                              [shape for _, shape, _ in layers])
        self.scale = FixedScale(jnp.ones((), jnp.float32))
        for (name, shape, fan_in), z in zip(layers, noise):
            # He initialisation for leaky ReLUs: N(0, 2 / ((1 + a^2) fan_in)); the output layer 10x smaller
            # so that the first reconstructions are near grey (sigmoid(0) = 0.5).
            std = math.sqrt(2.0 / ((1.0 + LEAKY_SLOPE ** 2) * fan_in)) * (0.1 if name == "out" else 1.0)
            bias_shape = shape[1:] if name == "seed" else shape[-1:]
            setattr(self, name, _Layer(std * z, jnp.zeros(bias_shape, jnp.float32)))
        self.vector = len(feature_shape) == 1
        self.in_channels = feature_shape[-1]
        self.num_convs = num_convs
        self.num_ups = k

    def __call__(self, features: jax.Array) -> jax.Array:
        """Decode a batch of features (N, h, w, C) or (N, C) to images (N, H, W, 3): see :func:`inverter_apply`."""
        features = _check_features(features, self.vector, self.in_channels)
        return self.decode(features.astype(jnp.float32))

    def decode(self, features: jax.Array) -> jax.Array:
        """:meth:`decode_one` vmapped over the batch (no checks)."""
        return jax.vmap(self.decode_one)(features)

    def decode_one(self, f: jax.Array) -> jax.Array:
        """The decoder for ONE example: features (h, w, C) or (C,) -> image (H, W, 3) in (0, 1)."""
        f = f * jax.lax.stop_gradient(self.scale[...])
        if self.vector:
            h = _leaky(f @ self.fc0.w[...] + self.fc0.b[...])
            x = _leaky(jnp.einsum("d,dhwc->hwc", h, self.seed.w[...]) + self.seed.b[...])[None]
        else:
            x = f[None]
        for i in range(self.num_convs):
            layer = getattr(self, f"conv{i}")
            x = _leaky(_conv3x3(x, layer.w[...], layer.b[...]))
        for i in range(self.num_ups):
            layer = getattr(self, f"up{i}")
            x = _leaky(_upconv(x, layer.w[...], layer.b[...]))
        return jax.nn.sigmoid(_conv3x3(x, self.out.w[...], self.out.b[...]))[0]


def _check_features(features, vector: bool, channels: int) -> jax.Array:
    if not hasattr(features, "shape") or not hasattr(features, "dtype"):
        raise ValueError(f"features: expected an array, got {type(features).__name__}")
    if not jnp.issubdtype(features.dtype, jnp.floating):
        raise ValueError(f"features: expected a floating dtype, got {features.dtype}")
    rank = 2 if vector else 4
    if features.ndim != rank or features.shape[-1] != channels:
        shape = "(N, %d)" % channels if vector else "(N, h, w, %d)" % channels
        raise ValueError(f"features: expected shape {shape} for this inverter, got {tuple(features.shape)}")
    return jnp.asarray(features)


# ----------------------------------------------------------------------------
# The pure functions.


def _config(feature_shape, image_size, widths, num_convs, fc_width) -> tuple:
    return (("fc_width", fc_width), ("feature_shape", feature_shape), ("image_size", image_size),
            ("num_convs", num_convs), ("widths", widths))


def inverter_init(key: jax.Array, feature_shape, image_size, *, widths=DEFAULT_WIDTHS,
                  num_convs: int = 2, fc_width: int = 256) -> dict:
    """Random parameters of a :class:`Decoder` from features of one shape to images of one size.

    Compiled once per architecture (``jax.jit``).

    Args:
      key: a ``jax.random.key``.
      feature_shape, image_size, widths, num_convs, fc_width: as :class:`Decoder`.

    Returns:
      A dict of float32 arrays (see the module docstring for the layers):
      ``{'scale': (), 'conv0': {'w': (3, 3, C, widths[0]), 'b'}, ...,
      'up0': {'w': (3, 3, cin, cout), 'b'}, ..., 'out': {'w': (3, 3, cin, 3), 'b': (3,)}}``
      and for (C,) features ``'fc0'`` and ``'seed'`` ({'w': (fc_width, h0, w0, widths[0])}).

    Raises:
      ValueError: bad ``feature_shape``, ``image_size`` (not the feature map
        size times a power of 2), ``widths``, ``num_convs`` or ``fc_width``.
    """
    config = _check_config(feature_shape, image_size, widths, num_convs, fc_width)
    if len(config[0]) == 3:
        _num_doublings(config[0][:2], config[1])          # ValueError naming image_size, before compiling
    return module_init(Decoder, _config(*config))(key)


def _layer_count(params: dict, prefix: str) -> int:
    n = 0
    while f"{prefix}{n}" in params:
        n += 1
    return n


def _check_params(params) -> tuple:
    """The constructor config of the :class:`Decoder` whose params these are; ValueError naming ``params``."""
    bad = ValueError("params: expected the dict of inverter_init (with 'scale', 'out' and "
                     "'conv0' / 'up0' / 'seed' layers)")
    if not isinstance(params, dict) or "out" not in params or "scale" not in params \
            or ("conv0" not in params and "up0" not in params and "seed" not in params):
        raise bad
    try:
        k, num_convs = _layer_count(params, "up"), _layer_count(params, "conv")
        widths = tuple(int(params[name]["w"].shape[3]) for name in
                       ["conv0" if num_convs else "seed"] + [f"up{i}" for i in range(k)])
        if "fc0" in params:
            fc_width, h0, w0 = (int(d) for d in params["seed"]["w"].shape[:3])
            feature_shape, image_size = (int(params["fc0"]["w"].shape[0]),), (h0 << k, w0 << k)
        else:
            first = params["conv0"] if num_convs else params["up0"]
            fc_width, feature_shape, image_size = 256, (1, 1, int(first["w"].shape[2])), (1 << k, 1 << k)
        config = _config(*_check_config(feature_shape, image_size, widths, num_convs, fc_width))
    except (KeyError, TypeError, AttributeError, IndexError, ValueError):
        raise bad from None
    check_params_tree(params, module_graph(Decoder, config)[1], "this decoder", "the output of inverter_init")
    return config


def inverter_feature_shape(params: dict) -> tuple[int | None, ...]:
    """The per-example feature shape a decoder takes: (C,), or (None, None, C) (any h, w).

    Raises:
      ValueError: ``params`` not a decoder's.
    """
    feature_shape = dict(_check_params(params))["feature_shape"]
    return feature_shape if len(feature_shape) == 1 else (None, None, feature_shape[2])


def inverter_image_size(params: dict, feature_hw: tuple[int, int] | None = None) -> tuple[int, int]:
    """(H, W) of the images the decoder makes (from (h, w) features of size ``feature_hw``)."""
    _check_params(params)
    k = _layer_count(params, "up")
    if "seed" in params:
        h0, w0 = params["seed"]["b"].shape[:2]
    elif feature_hw is None:
        raise ValueError("feature_hw: needed for a decoder of (h, w, C) features")
    else:
        h0, w0 = feature_hw
    return (h0 << k, w0 << k)


def inverter_apply(params: dict, features: jax.Array) -> jax.Array:
    """Decode a batch of features to images: D(phi(x)).

    Written for one example (:meth:`Decoder.decode_one`) and vmapped over the
    batch.  Pure and jit-compatible (no static arguments: the architecture is read
    from ``params``' keys and shapes); vmaps over features and over params.

    Args:
      params: from :func:`inverter_init` or
        :func:`~jaxinterp.synthesis.inverter.train_inverter`.
      features: (N, h, w, C) for a conv decoder, any (h, w) (it is fully
        convolutional; images are (h 2^k, w 2^k)), or (N, C) for a vector decoder.

    Returns:
      images: (N, H, W, 3) float32 in (0, 1) (a sigmoid, see the module docstring).

    Raises:
      ValueError: ``params`` not an inverter's; ``features`` of the wrong rank,
        channel count or dtype.

    Examples:
      >>> import jax
      >>> from jaxinterp import nets
      >>> params = nets.inverter_init(jax.random.key(0), (4, 4, 8), (16, 16), widths=(8, 4))
      >>> sorted(params)                                   # two convs, two up-convolutions
      ['conv0', 'conv1', 'out', 'scale', 'up0', 'up1']
      >>> images = jax.jit(nets.inverter_apply)(params, jax.numpy.ones((2, 4, 4, 8)))
      >>> images.shape, nets.inverter_image_size(params, (4, 4))
      ((2, 16, 16, 3), (16, 16))
    """
    config = _check_params(params)
    feature_shape = dict(config)["feature_shape"]
    features = _check_features(features, len(feature_shape) == 1, feature_shape[-1])
    return _decode_batch(params, features.astype(jnp.float32))


@jax.jit
def _decode_batch(params: dict, features: jax.Array) -> jax.Array:
    """:meth:`Decoder.decode` of ``params``, compiled once per shape (also called eagerly)."""
    return module_merge(Decoder, _check_params(params), params).decode(features)
