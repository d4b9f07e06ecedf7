"""Data-parallel sharding helpers: one ``'data'`` mesh axis over all devices.

    mesh = data_mesh()                        # Mesh('data': n_devices)
    batch = shard_batch(batch, mesh)          # leading axis split over 'data'
    params = replicate(params, mesh)          # a full copy on every device
    logits = jax.jit(net.apply)(params, batch["image"])   # data-parallel
    host = gather(logits)                     # numpy, on the host

The mesh axis is ``Auto``: ``jax.jit`` propagates the input shardings through
any net (GSPMD), and ``jax.shard_map(f, mesh=mesh, in_specs=jax.P('data'),
out_specs=...)`` works on the sharded arrays as well, on jax 0.10 and 0.11.
On one device the same code runs unchanged (a mesh of size 1).
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import numpy as np

__all__ = ["DATA", "data_mesh", "shard_batch", "replicate", "gather"]

DATA = "data"


def data_mesh(devices: Sequence[jax.Device] | None = None) -> jax.sharding.Mesh:
    """A 1-D mesh with the single axis ``'data'`` over ``devices``.

    Args:
      devices: the devices to use, in order; None = ``jax.devices()`` (all of them).

    Returns:
      A ``jax.sharding.Mesh`` of shape ``{'data': len(devices)}`` with an ``Auto`` axis.
    """
    devices = jax.devices() if devices is None else list(devices)
    if not devices:
        raise ValueError("devices: expected at least one device, got an empty sequence")
    return jax.make_mesh((len(devices),), (DATA,), axis_types=(jax.sharding.AxisType.Auto,),
                         devices=devices)


def shard_batch(batch: Any, mesh: jax.sharding.Mesh) -> Any:
    """Put every leaf of ``batch`` on ``mesh`` with its leading axis split over ``'data'``.

    Args:
      batch: a pytree of arrays (numpy or jax), each of shape (B, ...) with B divisible
        by the number of devices in ``mesh``.
      mesh: a mesh with a ``'data'`` axis, e.g. from :func:`data_mesh`.

    Returns:
      The same pytree of ``jax.Array`` with sharding ``NamedSharding(mesh, P('data'))``;
      device d holds rows [d * B / n, (d + 1) * B / n).
    """
    n = _data_size(mesh)
    for path, leaf in jax.tree_util.tree_leaves_with_path(batch):
        shape = np.shape(leaf)
        if not shape or shape[0] % n:
            raise ValueError(f"batch: leaf {jax.tree_util.keystr(path) or '(root)'} has shape "
                             f"{shape}; expected a leading (batch) dimension divisible by the "
                             f"{n} devices of the 'data' axis")
    return jax.device_put(batch, jax.NamedSharding(mesh, jax.P(DATA)))


def replicate(tree: Any, mesh: jax.sharding.Mesh) -> Any:
    """A full copy of every leaf of ``tree`` on every device of ``mesh`` (``P()``).

    Args:
      tree: a pytree of arrays of any shapes (params, optimiser state, keys).
      mesh: the target mesh.

    Returns:
      The same pytree of ``jax.Array`` with sharding ``NamedSharding(mesh, P())``.
    """
    return jax.device_put(tree, jax.NamedSharding(mesh, jax.P()))


def gather(tree: Any) -> Any:
    """Copy every leaf of ``tree`` to the host as a numpy array, whatever its sharding.

    Args:
      tree: a pytree of (possibly sharded) arrays, fully addressable from this process.

    Returns:
      The same pytree with ``numpy.ndarray`` leaves of the global shapes.
    """
    return jax.tree.map(np.asarray, jax.device_get(tree))


def _data_size(mesh: jax.sharding.Mesh) -> int:
    if not isinstance(mesh, jax.sharding.Mesh) or DATA not in mesh.shape:
        raise ValueError(f"mesh: expected a jax.sharding.Mesh with a {DATA!r} axis, got {mesh!r}")
    return mesh.shape[DATA]
