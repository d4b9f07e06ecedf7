"""A learned inverter: an up-convolutional decoder from a net's features back to images.

Dosovitskiy and Brox (2016) invert a representation phi by training a decoder D
on images x to minimise the squared pixel error::

    min_D  sum_x || x - D(phi(x)) ||^2

and read what D(phi(x)) keeps and loses as what phi keeps and loses (the
expected pre-image of phi(x) under the training distribution).  Deeper layers
give blurrier, less faithful reconstructions: they are more invariant.

    params = inverter_init(key, net.activation_shape("features.4"), (64, 64))
    y = inverter_apply(params, net.apply(net_params, x, stop="features.4"))   # (N, 64, 64, 3)

    inv, history = train_inverter(net, net_params, "features.4",
                                  lambda k, n: synthetic.generate(k, n)["image"],
                                  steps=2000, batch_size=64, key=jax.random.key(0))
    recon = invert(net, net_params, inv, x, "features.4")

The decoder (the paper's family, scaled down for 64 x 64 images):

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

The parameters are a plain dict of arrays; the architecture is read from its
keys and shapes, so :func:`inverter_apply` is a pure function of
``(params, features)``.  ``params['scale']`` is a fixed scalar that the
features are multiplied by before the decoder (1 at init;
:func:`train_inverter` sets it to 1 / RMS of the training features, because
activations at different depths differ in scale by orders of magnitude and
Adam's step size is then right for all of them; the paper feeds raw
features).  It is never trained (``stop_gradient``).

References:
  Dosovitskiy and Brox, "Inverting visual representations with
  convolutional networks", CVPR 2016.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxinterp.checks import check_int, check_positive_float
from jaxinterp.nets import Net
from jaxinterp.synthesis.params import check_image_size
from jaxinterp.train import loop, sharding

__all__ = ["DEFAULT_WIDTHS", "LEAKY_SLOPE", "inverter_init", "inverter_apply", "inverter_image_size",
           "reconstruction_loss", "train_inverter", "invert", "InverterState"]

DEFAULT_WIDTHS = (64, 64, 32, 32)
"""Channels of the conv layers on the feature map (first), then of each up-convolution."""
LEAKY_SLOPE = 0.2
"""Negative slope of the leaky ReLUs (the paper's)."""
_MIN_SEED = 4


# ----------------------------------------------------------------------------
# Checks.


def _check_widths(widths) -> tuple[int, ...]:
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


# ----------------------------------------------------------------------------
# The decoder.


def inverter_init(key: jax.Array, feature_shape, image_size, *, widths=DEFAULT_WIDTHS,
                  num_convs: int = 2, fc_width: int = 256) -> dict:
    """Random parameters of a decoder from features of one shape to images of one size.

    Args:
      key: a ``jax.random.key``.
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

    Returns:
      A dict of float32 arrays (see the module docstring for the layers):
      ``{'scale': (), 'conv0': {'w': (3, 3, C, widths[0]), 'b'}, ...,
      'up0': {'w': (3, 3, cin, cout), 'b'}, ..., 'out': {'w': (3, 3, cin, 3), 'b': (3,)}}``
      and for (C,) features ``'fc0'`` and ``'seed'`` ({'w': (fc_width, h0, w0, widths[0])}).

    Raises:
      ValueError: bad ``feature_shape``, ``image_size`` (not the feature map
        size times a power of 2), ``widths``, ``num_convs`` or ``fc_width``.
    """
    feature_shape = _check_feature_shape(feature_shape)
    image_size = check_image_size(image_size)
    widths = _check_widths(widths)
    num_convs = check_int(num_convs, "num_convs")
    fc_width = check_int(fc_width, "fc_width")
    return _init(key, feature_shape, image_size, widths, num_convs, fc_width)


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4, 5))
def _init(key, feature_shape, image_size, widths, num_convs, fc_width) -> dict:
    """:func:`inverter_init` after its checks, compiled once per architecture.

    All weights come from ONE ``jax.random.normal`` draw, cut into pieces (one
    threefry program to compile rather than one per layer).
    """
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
    sizes = [math.prod(shape) for _, shape, _ in layers]
    noise = jax.random.normal(key, (sum(sizes),), jnp.float32)
    params: dict[str, Any] = {"scale": jnp.ones((), jnp.float32)}
    offset = 0
    for (name, shape, fan_in), size in zip(layers, sizes):
        # He initialisation for leaky ReLUs: N(0, 2 / ((1 + a^2) fan_in)); the output layer 10x smaller
        # so that the first reconstructions are near grey (sigmoid(0) = 0.5).
        std = math.sqrt(2.0 / ((1.0 + LEAKY_SLOPE ** 2) * fan_in)) * (0.1 if name == "out" else 1.0)
        w = std * noise[offset:offset + size].reshape(shape)
        bias_shape = shape[1:] if name == "seed" else shape[-1:]
        params[name] = {"w": w, "b": jnp.zeros(bias_shape, jnp.float32)}
        offset += size
    return params


def _layer_count(params: dict, prefix: str) -> int:
    n = 0
    while f"{prefix}{n}" in params:
        n += 1
    return n


def _check_params(params) -> None:
    if not isinstance(params, dict) or "out" not in params or "scale" not in params \
            or ("conv0" not in params and "up0" not in params and "seed" not in params):
        raise ValueError("params: expected the dict of inverter_init (with 'scale', 'out' and "
                         "'conv0' / 'up0' / 'seed' layers)")


def _feature_shape_of(params: dict) -> tuple[int | None, ...]:
    """The per-example feature shape the decoder takes: (C,) or (None, None, C)."""
    if "fc0" in params:
        return (params["fc0"]["w"].shape[0],)
    first = params["conv0"] if "conv0" in params else params["up0"]
    return (None, None, first["w"].shape[2])


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


def _leaky(x):
    return jax.nn.leaky_relu(x, LEAKY_SLOPE)


def _conv3x3(x, layer):
    """3 x 3 convolution, zero padding 1, as a matmul of the 9 shifted copies of x (im2col).

    The same numbers as ``lax.conv_general_dilated`` (tested); written as one matmul
    because XLA:CPU runs the kernel gradient of a convolution inside a ``lax.scan``
    about 5x slower than outside one, and the matmul's gradient has no such cliff.
    """
    n, h, w, c = x.shape
    xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    cols = jnp.concatenate([xp[:, dy:dy + h, dx:dx + w] for dy in range(3) for dx in range(3)], -1)
    return cols @ layer["w"].reshape(9 * c, -1) + layer["b"]


def _upconv(x, layer):
    """Up-convolution: nearest-neighbour 2x upsampling, then a 3 x 3 conv: (n, h, w, cin) -> (n, 2h, 2w, cout)."""
    return _conv3x3(jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2), layer)


def _decode_one(params: dict, f: jax.Array) -> jax.Array:
    """The decoder for ONE example: features (h, w, C) or (C,) -> image (H, W, 3) in (0, 1)."""
    f = f * jax.lax.stop_gradient(params["scale"])
    if "fc0" in params:
        h = _leaky(f @ params["fc0"]["w"] + params["fc0"]["b"])
        x = _leaky(jnp.einsum("d,dhwc->hwc", h, params["seed"]["w"]) + params["seed"]["b"])[None]
    else:
        x = f[None]
    for i in range(_layer_count(params, "conv")):
        x = _leaky(_conv3x3(x, params[f"conv{i}"]))
    for i in range(_layer_count(params, "up")):
        x = _leaky(_upconv(x, params[f"up{i}"]))
    return jax.nn.sigmoid(_conv3x3(x, params["out"]))[0]


def _check_features(params: dict, features) -> jax.Array:
    if not hasattr(features, "shape") or not hasattr(features, "dtype"):
        raise ValueError(f"features: expected an array, got {type(features).__name__}")
    if not jnp.issubdtype(features.dtype, jnp.floating):
        raise ValueError(f"features: expected a floating dtype, got {features.dtype}")
    want = _feature_shape_of(params)
    got = tuple(features.shape[1:])
    if features.ndim != len(want) + 1 or got[-1] != want[-1]:
        shape = "(N, h, w, %d)" % want[-1] if len(want) == 3 else "(N, %d)" % want[0]
        raise ValueError(f"features: expected shape {shape} for this inverter, got {tuple(features.shape)}")
    return jnp.asarray(features)


def inverter_apply(params: dict, features: jax.Array) -> jax.Array:
    """Decode a batch of features to images: D(phi(x)).

    Written for one example and vmapped over the batch.  Pure and jit-compatible
    (no static arguments: the architecture is read from ``params``' keys and shapes).

    Args:
      params: from :func:`inverter_init` or :func:`train_inverter`.
      features: (N, h, w, C) for a conv decoder, any (h, w) (it is fully
        convolutional; images are (h 2^k, w 2^k)), or (N, C) for a vector decoder.

    Returns:
      images: (N, H, W, 3) float32 in (0, 1) (a sigmoid, see the module docstring).

    Raises:
      ValueError: ``params`` not an inverter's; ``features`` of the wrong rank,
        channel count or dtype.
    """
    _check_params(params)
    features = _check_features(params, features)
    return _decode_batch(params, features.astype(jnp.float32))


@jax.jit
def _decode_batch(params: dict, features: jax.Array) -> jax.Array:
    """:func:`_decode_one` vmapped over the batch, compiled once per shape (also called eagerly)."""
    return jax.vmap(lambda f: _decode_one(params, f))(features)


def reconstruction_loss(params: dict, features: jax.Array, images: jax.Array) -> jax.Array:
    """The paper's objective per pixel: mean over (N, H, W, 3) of (x - D(phi(x)))^2.

    The paper sums the squared error over images; the mean differs by a
    constant factor only (same minimiser; Adam is invariant to the scale).
    """
    return jnp.mean((inverter_apply(params, features) - images) ** 2)


# ----------------------------------------------------------------------------
# Training.


class InverterState(NamedTuple):
    """What a training run checkpoints.

    Attributes:
      step: () int32, updates applied so far.
      params: the decoder's params.
      opt_state: Adam's state.
      losses: (steps,) float32, the batch loss of every step done so far (0 after).
    """

    step: jax.Array
    params: Any
    opt_state: Any
    losses: jax.Array


@functools.lru_cache(maxsize=None)
def _adam(lr: float) -> optax.GradientTransformation:
    """Adam(lr, b1=0.9, b2=0.999), built once per lr so compiled chunks are reused."""
    return optax.adam(lr, b1=0.9, b2=0.999)


@functools.partial(jax.jit, static_argnames=("net", "layer", "tx"))
def _train_chunk(net: Net, layer: str, tx, net_params, state: InverterState,
                 images: jax.Array) -> InverterState:
    """One compiled call: ``images.shape[0]`` Adam steps, a lax.scan over (c, B, H, W, 3)."""
    def step(state, x):
        f = jax.lax.stop_gradient(net.apply(net_params, x, stop=layer))
        loss, grads = jax.value_and_grad(reconstruction_loss)(state.params, f, x)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        losses = jax.lax.dynamic_update_index_in_dim(state.losses, loss, state.step, 0)
        return InverterState(state.step + 1, params, opt_state, losses), None

    state, _ = jax.lax.scan(step, state, images)
    return state


def _batch_fn(data, image_size_hint=None) -> Callable[[jax.Array, int], jax.Array]:
    """``data`` (a callable or an (M, H, W, 3) array) as ``fn(key, n) -> (n, H, W, 3)``."""
    if callable(data):
        def fn(key, n):
            out = data(key, n)
            if isinstance(out, dict):
                if "image" not in out:
                    raise ValueError(f"data: a callable returning a dict must give 'image', got keys "
                                     f"{sorted(out)}")
                out = out["image"]
            return out
        return fn
    if not hasattr(data, "shape") or np.ndim(data) != 4 or np.shape(data)[-1] != 3 or not len(data):
        raise ValueError(f"data: expected a callable data(key, n) -> images or an array (M, H, W, 3) "
                         f"with M >= 1, got {getattr(data, 'shape', type(data).__name__)}")
    data = jnp.asarray(data)

    def take(key, n):
        return data[jax.random.randint(key, (n,), 0, data.shape[0])]
    return take


def _check_batch(x, batch_size: int, image_size: tuple[int, int] | None) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 4 or x.shape[0] != batch_size or x.shape[-1] != 3 \
            or (image_size is not None and tuple(x.shape[1:3]) != image_size):
        want = f"({batch_size}, {image_size[0]}, {image_size[1]}, 3)" if image_size else \
            f"({batch_size}, H, W, 3)"
        raise ValueError(f"data: expected batches of images {want}, got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"data: expected floating images, got dtype {x.dtype}")
    lo, hi = float(x.min()), float(x.max())
    if lo < 0.0 or hi > 1.0:
        raise ValueError(f"data: expected pixel values in [0, 1], got range [{lo:.4g}, {hi:.4g}]")
    return x.astype(np.float32)


def _check_layer(net: Net, layer) -> str:
    if not isinstance(layer, str) or layer not in net.layers:
        raise ValueError(f"layer: unknown split point {layer!r} of {net.name}; "
                         f"expected one of {list(net.layers)}")
    return layer


def train_inverter(net: Net, params, layer: str, data, *, steps: int, batch_size: int = 64,
                   lr: float = 1e-3, key: jax.Array, widths=DEFAULT_WIDTHS, num_convs: int = 2,
                   fc_width: int = 256, steps_per_call: int = 50,
                   checkpoint_dir: str | None = None, progress: Callable[[str], Any] | None = None,
                   mesh: jax.sharding.Mesh | None = None) -> tuple[dict, dict]:
    """Train a decoder from ``net``'s features at ``layer`` back to images (Adam on the pixel MSE).

    The loss of a batch is :func:`reconstruction_loss`, the paper's
    ``||x - D(phi(x))||^2`` per pixel, with phi = ``net.apply(params, x, stop=layer)``
    frozen.  The batch of step s is ``data(fold_in(k_data, s), batch_size)``
    with ``k_init, k_data = split(key)``; the decoder is ``inverter_init(k_init,
    ...)`` with ``scale`` = 1 / RMS of the features of the step-0 batch.  So a
    run is a pure function of its arguments: a run killed and restarted with
    the same ``checkpoint_dir`` resumes from its last checkpoint and ends with
    the same params as an uninterrupted run.

    ``steps_per_call`` steps run as one ``lax.scan`` inside one compiled call
    (the batches of the chunk are drawn first, on the host side, so any data
    source works); after each call the state is checkpointed (if
    ``checkpoint_dir``) and a progress line reports the chunk's mean loss
    (the loop, checkpoints, resume and NaN checks are
    :func:`jaxinterp.train.loop.run`'s).  This function is the host-side driver
    and is not itself jit-able; :func:`inverter_apply` and :func:`invert` are.

    Defaults from the paper (Sec. 3, "Training"): Adam with b1 = 0.9, b2 =
    0.999, mini-batches of 64 and an initial learning rate of 0.001, which
    the paper reports works for most of its networks.  The paper lowers the
    rate towards the end of its long runs; here it stays constant (runs are short).

    Args:
      net: the net (static).
      params: its params (frozen).
      layer: the split point whose activation is inverted (``net.layers``).
      data: ``data(key, n) -> images (n, H, W, 3)`` (or a dict with ``'image'``)
        in [0, 1], a pure function of its key (e.g. ``synthetic.generate``);
        or an array of images (M, H, W, 3), sampled uniformly with replacement.
      steps: total Adam updates (a resumed run counts the restored ones), >= 1.
      batch_size: images per update (default 64, the paper's); with ``mesh``
        a multiple of its ``'data'`` axis.
      lr: Adam's learning rate (default 1e-3, the paper's).
      key: a ``jax.random.key`` (init and data).
      widths, num_convs, fc_width: the decoder (:func:`inverter_init`).
      steps_per_call: steps per compiled call (default 50).
      checkpoint_dir: if given, save after every call and resume from the latest
        checkpoint there, which must come from a run with the same arguments.
      progress: called with a progress line after every call; None = silent.
      mesh: a ``'data'`` mesh (:func:`jaxinterp.train.sharding.data_mesh`) to
        split each batch over (data parallel); None = the default device.

    Returns:
      (inverter_params, history): the decoder's params (on the default device) and
      ``{'loss': (steps,) float32 numpy, the batch loss of every step;
      'seconds': training time of this call}``.

    Raises:
      ValueError: unknown ``layer``; ``steps``, ``batch_size``, ``steps_per_call``
        < 1; ``lr`` <= 0; bad ``data`` batches (shape, range); ``checkpoint_dir``
        holding another run; bad decoder arguments.
      FloatingPointError: the loss became NaN or infinite (that chunk is not saved).

    References:
      Dosovitskiy and Brox, "Inverting visual representations with
      convolutional networks", CVPR 2016.
    """
    layer = _check_layer(net, layer)
    steps = check_int(steps, "steps")
    batch_size = check_int(batch_size, "batch_size")
    steps_per_call = check_int(steps_per_call, "steps_per_call")
    check_positive_float(lr, "lr")
    if mesh is not None:
        n_dev = sharding.data_size(mesh)
        if batch_size % n_dev:
            raise ValueError(f"batch_size: expected a multiple of the {n_dev} devices of the 'data' "
                             f"axis, got {batch_size}")
    draw = _batch_fn(data)
    k_init, k_data = jax.random.split(key)
    first = _check_batch(draw(jax.random.fold_in(k_data, 0), batch_size), batch_size, None)
    image_size = tuple(first.shape[1:3])
    feature_shape = net.activation_shape(layer, image_size)
    inv = inverter_init(k_init, feature_shape, image_size, widths=widths, num_convs=num_convs,
                        fc_width=fc_width)
    f0 = np.asarray(_features(net, layer, params, jnp.asarray(first)), np.float64)
    rms = float(np.sqrt(np.mean(f0 ** 2)))
    inv["scale"] = jnp.asarray(1.0 / rms if rms > 0 else 1.0, jnp.float32)
    tx = _adam(float(lr))
    state = InverterState(jnp.zeros((), jnp.int32), inv, tx.init(inv), jnp.zeros((steps,), jnp.float32))
    config = {"net": repr(net), "layer": layer, "steps": steps, "batch_size": batch_size,
              "lr": float(lr), "widths": list(_check_widths(widths)), "num_convs": num_convs,
              "fc_width": fc_width, "image_size": list(image_size),
              "key": np.asarray(jax.random.key_data(key)).tolist()}
    if mesh is not None:
        params = sharding.replicate(params, mesh)
        images_sharding = jax.NamedSharding(mesh, jax.P(None, sharding.DATA))

    def advance(state, s, end):
        """Steps s to end as one compiled ``lax.scan``, on batches drawn first on the host."""
        batches = np.stack([first if t == 0 else
                            _check_batch(draw(jax.random.fold_in(k_data, t), batch_size), batch_size,
                                         image_size) for t in range(s, end)])
        images = jnp.asarray(batches) if mesh is None else jax.device_put(batches, images_sharding)
        state = _train_chunk(net, layer, tx, params, state, images)
        return state, {"loss": jnp.mean(state.losses[s:end])}

    settings = loop.Loop(units=steps, chunk=steps_per_call, checkpoint_dir=checkpoint_dir,
                         prefix=f"inverter {layer}: ")
    state, history = loop.run(state, advance, settings, config=config, progress=progress, mesh=mesh)
    state = jax.device_put(state, jax.devices()[0])
    return state.params, {"loss": np.asarray(state.losses), "seconds": history[-1]["seconds"] if history else 0.0}


@functools.partial(jax.jit, static_argnums=(0, 1))
def _features(net: Net, layer: str, params, x: jax.Array) -> jax.Array:
    return net.apply(params, x, stop=layer)


def invert(net: Net, params, inverter_params: dict, x: jax.Array, layer: str) -> jax.Array:
    """Reconstruct images from their features at ``layer``: D(phi(x)).

    Pure and jit-compatible with ``net`` and ``layer`` static.

    Args:
      net: the net (static).
      params: its params.
      inverter_params: a decoder trained for ``layer`` (:func:`train_inverter`).
      x: images (N, H, W, 3), float RGB in [0, 1].
      layer: the split point the decoder was trained on.

    Returns:
      reconstructions: (N, H', W', 3) float32 in (0, 1); H' = H when the decoder
      was trained on images of this size.

    Raises:
      ValueError: unknown ``layer``; bad ``x``; the features at ``layer`` do not
        fit ``inverter_params`` (named ``inverter_params``).
    """
    layer = _check_layer(net, layer)
    if not hasattr(x, "shape") or getattr(x, "ndim", 0) != 4 or x.shape[-1] != 3:
        raise ValueError(f"x: expected images (N, H, W, 3), got {getattr(x, 'shape', type(x).__name__)}")
    _check_params(inverter_params)
    f = jax.eval_shape(lambda p, x: net.apply(p, x, stop=layer), params, x)
    want = _feature_shape_of(inverter_params)
    if f.ndim != len(want) + 1 or f.shape[-1] != want[-1]:
        raise ValueError(f"inverter_params: a decoder of features {want} (None: any size) does not fit "
                         f"the features {tuple(f.shape[1:])} of {net.name} at {layer!r}")
    return _invert(net, layer, params, inverter_params, x)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _invert(net: Net, layer: str, params, inverter_params: dict, x: jax.Array) -> jax.Array:
    return _decode_batch(inverter_params, net.apply(params, x, stop=layer).astype(jnp.float32))
