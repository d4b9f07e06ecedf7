"""Checkpoints of training state over orbax ``CheckpointManager``.

A checkpoint at step s is a directory ``<directory>/<s>/`` with two items:
``state``, any pytree of arrays (params, optax state, step counter, PRNG keys),
and ``metadata``, a JSON-able dict (config, metrics).  Orbax writes each step
to a temporary directory and renames it when complete, so a run killed while
saving leaves the previous checkpoints intact and :meth:`Checkpointer.latest_step`
never sees a partial one.

    ckpt = Checkpointer("runs/x/ckpt", max_to_keep=3)
    ckpt.save(step, state, {"lr": 1e-3})
    state, meta = ckpt.restore(like=state)         # the latest step
    state, meta = ckpt.restore(100, like=state)    # a given step

``restore`` returns a pytree of the structure of ``like`` (NamedTuples of optax
states included) with each array on the sharding of the matching leaf of
``like``, so a checkpoint saved on one mesh restores onto another.  Typed PRNG
keys (``jax.random.key``) are stored as their raw ``key_data`` and re-wrapped.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

__all__ = ["Checkpointer", "latest_step"]


class Checkpointer:
    """Saves and restores ``(state pytree, metadata dict)`` pairs by integer step.

    Args:
      directory: where the step directories live (created if missing).
      max_to_keep: keep only the most recent this many checkpoints (None: all).
      save_interval_steps: :meth:`save` writes only steps that are multiples of this
        (``force=True`` overrides).
    """

    def __init__(self, directory: str | os.PathLike, *, max_to_keep: int | None = 3,
                 save_interval_steps: int = 1):
        if max_to_keep is not None and max_to_keep < 1:
            raise ValueError(f"max_to_keep: expected None or an int >= 1, got {max_to_keep}")
        if save_interval_steps < 1:
            raise ValueError(f"save_interval_steps: expected an int >= 1, got {save_interval_steps}")
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, save_interval_steps=save_interval_steps,
            enable_async_checkpointing=False, create=True)
        self.directory = os.path.abspath(os.fspath(directory))
        self._manager = ocp.CheckpointManager(self.directory, options=options,
                                              item_names=("state", "metadata"))

    def all_steps(self) -> tuple[int, ...]:
        """Steps of the complete checkpoints on disk, ascending."""
        return tuple(sorted(self._manager.all_steps()))

    def latest_step(self) -> int | None:
        """The last complete step, or None if there is no checkpoint."""
        return self._manager.latest_step()

    def save(self, step: int, state: Any, metadata: dict | None = None, *,
             force: bool = False) -> bool:
        """Write ``state`` and ``metadata`` as step ``step`` (blocks until written).

        Args:
          step: a non-negative int, larger than every step saved before.
          state: a pytree of arrays (jax, numpy or typed PRNG keys), sharded or not.
          metadata: a JSON-serialisable dict (None: ``{}``).
          force: save even if ``step`` is not a multiple of ``save_interval_steps``.

        Returns:
          Whether a checkpoint was written.
        """
        if int(step) < 0:
            raise ValueError(f"step: expected a non-negative int, got {step}")
        args = ocp.args.Composite(state=ocp.args.StandardSave(_unwrap_keys(state)),
                                  metadata=ocp.args.JsonSave(dict(metadata or {})))
        return self._manager.save(int(step), args=args, force=force)

    def restore(self, step: int | None = None, *, like: Any) -> tuple[Any, dict]:
        """Read the checkpoint of ``step`` into the structure and shardings of ``like``.

        Args:
          step: the step to read; None = :meth:`latest_step`.
          like: a pytree with the structure of the saved state whose leaves give each
            array's shape, dtype and sharding: ``jax.Array`` (its sharding),
            ``jax.ShapeDtypeStruct`` (its sharding, or the default device if None) or
            numpy arrays (the default device).  PRNG-key leaves must be key arrays.

        Returns:
          (state, metadata): state has the structure of ``like`` with ``jax.Array`` leaves.
        """
        step = self.latest_step() if step is None else int(step)
        if step is None:
            raise ValueError(f"step: no checkpoint in {self.directory}")
        if step not in self.all_steps():
            raise ValueError(f"step: no checkpoint for step {step} in {self.directory}; "
                             f"expected one of {list(self.all_steps())}")
        args = ocp.args.Composite(state=ocp.args.StandardRestore(_abstract(like)),
                                  metadata=ocp.args.JsonRestore())
        restored = self._manager.restore(step, args=args)
        return _rewrap_keys(restored["state"], like), dict(restored["metadata"])

    def close(self) -> None:
        """Release orbax's resources (pending writes are already finished)."""
        self._manager.close()

    def __enter__(self) -> "Checkpointer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def latest_step(directory: str | os.PathLike) -> int | None:
    """The last complete checkpoint step in ``directory``, or None (also if it does not exist)."""
    if not os.path.isdir(directory):
        return None
    with Checkpointer(directory, max_to_keep=None) as ckpt:
        return ckpt.latest_step()


def _is_key(x) -> bool:
    return jnp.issubdtype(getattr(x, "dtype", np.float32), jax.dtypes.prng_key)


def _unwrap_keys(tree):
    return jax.tree.map(lambda x: jax.random.key_data(x) if _is_key(x) else x, tree)


def _abstract(like):
    """Leaves of ``like`` -> ShapeDtypeStruct with a sharding (keys -> their raw data)."""
    default = jax.sharding.SingleDeviceSharding(jax.devices()[0])

    def leaf(x):
        if _is_key(x):
            x = jax.random.key_data(x)
        sharding = getattr(x, "sharding", None) or default
        dtype = x.dtype if hasattr(x, "dtype") else np.result_type(x)
        return jax.ShapeDtypeStruct(np.shape(x), dtype, sharding=sharding)

    return jax.tree.map(leaf, like)


def _rewrap_keys(tree, like):
    return jax.tree.map(
        lambda x, ref: jax.random.wrap_key_data(x, impl=jax.random.key_impl(ref)) if _is_key(ref) else x,
        tree, like)
