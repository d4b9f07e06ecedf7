"""Streaming a dataset through jitted updates: batches from an array or an iterable, padding, placement.

The plumbing shared by :mod:`jaxinterp.analysis.topk` and :mod:`jaxinterp.analysis.dissection`:
a dataset is read ``batch_size`` rows at a time, the last batch padded so that one compiled
update serves every batch (``num_valid`` masks the padding), each batch optionally placed on
a sharding.  Not exported from :mod:`jaxinterp.analysis`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxinterp.checks import check_int, check_layer, is_concrete
from jaxinterp.nets import Net


def is_array(a) -> bool:
    return hasattr(a, "shape") and hasattr(a, "dtype")


def as_float_images(x):
    """float32 images from float or uint8 (divided by 255) ones."""
    if x.dtype == jnp.uint8:
        return jnp.asarray(x).astype(jnp.float32) / jnp.float32(255)
    return jnp.asarray(x, jnp.float32)


def check_image_batch(x, arg: str):
    if not is_array(x):
        raise ValueError(f"{arg}: expected arrays of images (N, H, W, 3), got {type(x).__name__}")
    if len(x.shape) != 4 or x.shape[-1] != 3 or x.shape[0] < 1 or min(x.shape[1:3]) < 1:
        raise ValueError(f"{arg}: expected images (N >= 1, H, W, 3), got shape {tuple(x.shape)}")
    if not (x.dtype == np.uint8 or jnp.issubdtype(x.dtype, jnp.floating)):
        raise ValueError(f"{arg}: expected float images in [0, 1] or uint8 ones, got dtype {x.dtype}")


def pad_rows(a, n: int):
    """``a`` with zero rows appended up to n rows (NumPy stays NumPy, a jax array or tracer stays jax)."""
    if a.shape[0] == n:
        return a
    widths = [(0, n - a.shape[0])] + [(0, 0)] * (len(a.shape) - 1)
    return np.pad(a, widths) if isinstance(a, np.ndarray) else jnp.pad(a, widths)


def row_batches(arrays: tuple, batch_size: int):
    """Yield (slices, num_valid, offset) of equal-length arrays, every slice padded to one batch size.

    NumPy arrays (and memmaps) are sliced on the host, so only one batch is read at a time; the
    last batch is padded with zero rows (``num_valid`` says how many are real), so one compiled
    update serves every batch.
    """
    n = arrays[0].shape[0]
    size = min(batch_size, n)
    for start in range(0, n, size):
        rows = [a[start:start + size] for a in arrays]
        valid = rows[0].shape[0]
        rows = [pad_rows(np.asarray(r) if isinstance(r, np.ndarray) else r, size) for r in rows]
        yield rows, valid, start


def image_batches(batches, batch_size, arg: str = "batches"):
    """Yield (float32 images (B, H, W, 3), num_valid, offset) from an array and a batch size, or an iterable."""
    if is_array(batches):
        check_image_batch(batches, arg)
        if batch_size is None:
            raise ValueError("batch_size: expected a positive integer when batches is one array of images, got None")
        batch_size = check_int(batch_size, "batch_size")
        for (x,), valid, start in row_batches((batches,), batch_size):
            yield as_float_images(x), valid, start
        return
    if batch_size is not None:
        raise ValueError(f"batch_size: expected None when batches is an iterable of batches, got {batch_size!r}")
    try:
        it = iter(batches)
    except TypeError:
        raise ValueError(f"{arg}: expected an array of images (N, H, W, 3) or an iterable of batches, "
                         f"got {type(batches).__name__}") from None
    offset, hw = 0, None
    for x in it:
        check_image_batch(x, arg)
        if hw is None:
            hw = tuple(x.shape[1:3])
        elif tuple(x.shape[1:3]) != hw:
            raise ValueError(f"{arg}: expected every batch of size {hw}, got a batch of shape {tuple(x.shape)}")
        yield as_float_images(x), x.shape[0], offset
        offset += x.shape[0]
    if hw is None:
        raise ValueError(f"{arg}: expected at least one batch of images, got none")


def place_on(x, sharding):
    """``x`` on ``sharding`` (a device_put, or a sharding constraint while traced); unchanged for None."""
    if sharding is None:
        return x
    if not is_concrete(x):
        return lax.with_sharding_constraint(x, sharding)
    return jax.device_put(x, sharding)


def check_stop_layer(net, layer: str) -> str:
    if not isinstance(net, Net):
        raise ValueError(f"net: expected a jaxinterp.nets.Net, got {type(net).__name__}")
    if layer is None:
        raise ValueError(f"layer: expected a split point of {net.name}, got None")
    return check_layer(net, layer)


def as_spatial(a: jax.Array) -> jax.Array:
    """An activation as (B, h, w, C): conv maps as they are, tokens (B, T, D) as (B, T, 1, D), vectors (B, 1, 1, C)."""
    if a.ndim == 4:
        return a
    if a.ndim == 3:
        return a[:, :, None, :]
    if a.ndim == 2:
        return a[:, None, None, :]
    raise ValueError(f"layer: expected an activation of rank 2, 3 or 4, got shape {a.shape}")


def valid_rows(n: int, num_valid) -> jax.Array:
    """bool (n,): the first ``num_valid`` rows (all of them for None)."""
    if num_valid is None:
        return jnp.ones((n,), bool)
    return jnp.arange(n) < num_valid
