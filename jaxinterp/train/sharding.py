"""Data-parallel sharding helpers: one ``'data'`` mesh axis over all devices.

    mesh = data_mesh()                        # Mesh('data': n_devices)
    batch = shard_batch(batch, mesh)          # leading axis split over 'data'
    params = replicate(params, mesh)          # a full copy on every device
    logits = jax.jit(net.apply)(params, batch["image"])   # data-parallel
    host = gather(logits)                     # numpy, on the host

With several processes (``jax.distributed.initialize()``: a TPU pod, several GPU
hosts, or CPU processes with gloo collectives) the mesh spans every process's
devices.  Each process then reads only the rows of a global batch that its own
devices hold (:func:`process_rows`) and :func:`from_process_rows` assembles the
global array from them, so the input pipeline is per process; :func:`gather`
all-gathers a sharded result onto every process, :func:`local_value` reads a
replicated one, and :func:`replicate` puts host values (the same on every
process) on every device.  On one process these reduce to the single-process
behaviour.

The mesh axis is ``Auto``: ``jax.jit`` propagates the input shardings through
any net (GSPMD), and ``jax.shard_map(f, mesh=mesh, in_specs=jax.P('data'),
out_specs=...)`` works on the sharded arrays as well, on jax 0.10 and 0.11.
On one device the same code runs unchanged (a mesh of size 1).
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import numpy as np

__all__ = ["DATA", "data_mesh", "data_size", "shard_batch", "process_rows", "from_process_rows", "replicate", "gather",
           "local_value"]

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
    n = data_size(mesh)
    for path, leaf in jax.tree_util.tree_leaves_with_path(batch):
        shape = np.shape(leaf)
        if not shape or shape[0] % n:
            raise ValueError(f"batch: leaf {jax.tree_util.keystr(path) or '(root)'} has shape "
                             f"{shape}; expected a leading (batch) dimension divisible by the "
                             f"{n} devices of the 'data' axis")
    return jax.device_put(batch, jax.NamedSharding(mesh, jax.P(DATA)))


def process_rows(n: int, mesh: jax.sharding.Mesh) -> np.ndarray:
    """The rows of a global batch of ``n`` rows that this process's devices hold under ``P('data')``.

    Args:
      n: the global batch size, divisible by the devices of the ``'data'`` axis.
      mesh: a mesh with a ``'data'`` axis (possibly over several processes).

    Returns:
      int64 row indices in increasing order: ``arange(n)`` on one process,
      n / processes of them with several.
    """
    d = data_size(mesh)
    if n < 1 or n % d:
        raise ValueError(f"n: expected a positive multiple of the {d} devices of the 'data' axis, got {n}")
    slices = jax.NamedSharding(mesh, jax.P(DATA)).addressable_devices_indices_map((n,)).values()
    return np.unique(np.concatenate([np.arange(n)[s[0]] for s in slices]))


def from_process_rows(local: Any, mesh: jax.sharding.Mesh, n: int) -> Any:
    """The global batch of ``n`` rows sharded over ``'data'``, from this process's rows of it.

    Args:
      local: a pytree of arrays, each (len(process_rows(n, mesh)), ...): the rows that
        :func:`process_rows` names, in that order (on one process, the whole batch).
      mesh: the mesh.
      n: the global batch size.

    Returns:
      The pytree of global ``jax.Array`` (n, ...) with sharding ``P('data')``; on one
      process the same arrays as :func:`shard_batch` of ``local``.
    """
    rows = len(process_rows(n, mesh))
    sharding = jax.NamedSharding(mesh, jax.P(DATA))

    def one(leaf):
        leaf = np.asarray(leaf)
        if leaf.shape[:1] != (rows,):
            raise ValueError(f"local: expected leaves with {rows} rows (this process's share of {n}), "
                             f"got shape {leaf.shape}")
        return jax.make_array_from_process_local_data(sharding, leaf, (n, *leaf.shape[1:]))
    return jax.tree.map(one, local)


def local_value(tree: Any) -> Any:
    """Host copies of replicated arrays (e.g. a step count or a loss) from this process's first shard.

    Args:
      tree: a pytree of arrays replicated over the mesh (or fully addressable ones).

    Returns:
      The same pytree with numpy leaves (typed PRNG keys stay keys, on this process's first device).
    """
    def one(leaf):
        if not isinstance(leaf, jax.Array):
            return np.asarray(leaf)
        local = leaf.addressable_data(0) if not leaf.is_fully_addressable else leaf
        if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            return jax.device_put(local, jax.local_devices()[0])
        return np.asarray(local)
    return jax.tree.map(one, tree)


def replicate(tree: Any, mesh: jax.sharding.Mesh) -> Any:
    """A full copy of every leaf of ``tree`` on every device of ``mesh`` (``P()``).

    Args:
      tree: a pytree of arrays of any shapes (params, optimiser state, keys).
      mesh: the target mesh.

    Returns:
      The same pytree of ``jax.Array`` with sharding ``NamedSharding(mesh, P())``.
      With several processes every process must pass the same values.
    """
    target = jax.NamedSharding(mesh, jax.P())
    if jax.process_count() == 1:
        return jax.device_put(tree, target)

    def one(leaf):                        # a global array from this process's copy of the value
        if isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            data = one(jax.random.key_data(leaf))
            return jax.random.wrap_key_data(data, impl=jax.random.key_impl(leaf))
        value = np.asarray(local_value(leaf))
        return jax.make_array_from_callback(value.shape, target, lambda index: value[index])
    return jax.tree.map(one, tree)


def gather(tree: Any) -> Any:
    """Copy every leaf of ``tree`` to the host as a numpy array, whatever its sharding.

    Args:
      tree: a pytree of (possibly sharded) arrays; with several processes, leaves that
        this process does not fully address are all-gathered (every process must call this).

    Returns:
      The same pytree with ``numpy.ndarray`` leaves of the global shapes.
    """
    def one(leaf):
        if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
            from jax.experimental import multihost_utils
            return np.asarray(multihost_utils.process_allgather(leaf, tiled=True))
        return np.asarray(jax.device_get(leaf))
    return jax.tree.map(one, tree)


def data_size(mesh: jax.sharding.Mesh) -> int:
    """The number of devices along the mesh's data axis; ValueError naming ``mesh`` without one."""
    if not isinstance(mesh, jax.sharding.Mesh) or DATA not in mesh.shape:
        raise ValueError(f"mesh: expected a jax.sharding.Mesh with a {DATA!r} axis, got {mesh!r}")
    return mesh.shape[DATA]
