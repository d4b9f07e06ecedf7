"""A learned inverter: an up-convolutional decoder from a net's features back to images.

Dosovitskiy and Brox (2016) invert a representation phi by training a decoder D
on images x to minimise the squared pixel error::

    min_D  sum_x || x - D(phi(x)) ||^2

and read what D(phi(x)) keeps and loses as what phi keeps and loses (the
expected pre-image of phi(x) under the training distribution).  Deeper layers
give blurrier, less faithful reconstructions: they are more invariant.

    params = nets.inverter_init(key, net.activation_shape("features.4"), (64, 64))
    y = nets.inverter_apply(params, net.apply(net_params, x, stop="features.4"))   # (N, 64, 64, 3)

    inv, history = train_inverter(net, net_params, "features.4",
                                  lambda k, n: synthetic.generate(k, n)["image"],
                                  steps=2000, batch_size=64, key=jax.random.key(0))
    recon = invert(net, net_params, inv, x, "features.4")

The decoder is :class:`jaxinterp.nets.Decoder` (its module docstring gives the
layers: fully connected layers for vector features, 3 x 3 convolutions,
up-convolutions, a sigmoid output), as the pure :func:`~jaxinterp.nets.inverter_init`
and :func:`~jaxinterp.nets.inverter_apply`; here are its training
(:func:`train_inverter`, Adam on :func:`reconstruction_loss`) and its use
(:func:`invert`).  Its params hold a fixed ``scale`` the features are multiplied
by, which :func:`train_inverter` sets to 1 / RMS of the training features.

References:
  Dosovitskiy and Brox, "Inverting visual representations with
  convolutional networks", CVPR 2016.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxinterp.checks import check_int, check_positive_float
from jaxinterp.nets import Net
from jaxinterp.nets.decoder import (DEFAULT_WIDTHS, check_widths, inverter_apply, inverter_feature_shape,
                                    inverter_init)
from jaxinterp.train import loop, sharding

__all__ = ["reconstruction_loss", "train_inverter", "invert", "InverterState"]


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
    with ``k_init, k_data = split(key)``; the decoder is
    :func:`~jaxinterp.nets.inverter_init` ``(k_init, ...)`` with ``scale`` = 1 / RMS
    of the features of the step-0 batch.  So a
    run is a pure function of its arguments: a run killed and restarted with
    the same ``checkpoint_dir`` resumes from its last checkpoint and ends with
    the same params as an uninterrupted run.

    ``steps_per_call`` steps run as one ``lax.scan`` inside one compiled call
    (the batches of the chunk are drawn first, on the host side, so any data
    source works); after each call the state is checkpointed (if
    ``checkpoint_dir``) and a progress line reports the chunk's mean loss
    (the loop, checkpoints, resume and NaN checks are
    :func:`jaxinterp.train.loop.run`'s).  This function is the host-side driver
    and is not itself jit-able; :func:`~jaxinterp.nets.inverter_apply` and
    :func:`invert` are.

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
      widths, num_convs, fc_width: the decoder (:class:`jaxinterp.nets.Decoder`).
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
              "lr": float(lr), "widths": list(check_widths(widths)), "num_convs": num_convs,
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
    want = inverter_feature_shape(inverter_params)
    f = jax.eval_shape(lambda p, x: net.apply(p, x, stop=layer), params, x)
    if f.ndim != len(want) + 1 or f.shape[-1] != want[-1]:
        raise ValueError(f"inverter_params: a decoder of features {want} (None: any size) does not fit "
                         f"the features {tuple(f.shape[1:])} of {net.name} at {layer!r}")
    return _invert(net, layer, params, inverter_params, x)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _invert(net: Net, layer: str, params, inverter_params: dict, x: jax.Array) -> jax.Array:
    return inverter_apply(inverter_params, net.apply(params, x, stop=layer).astype(jnp.float32))
