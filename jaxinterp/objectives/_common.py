"""Collectives of the objectives (private); their argument checks are in :mod:`jaxinterp.checks`.

Every objective takes ``axis_name``: None on one device, or the name of the
mesh axis the batch is split over when it runs inside ``jax.shard_map``
(e.g. ``'data'``).  Sums over the batch then go through ``lax.psum`` and the
result equals the single-device one on the full batch.
"""

from __future__ import annotations

import jax

__all__ = ["psum", "axis_size", "global_count"]


def psum(x, axis_name):
    """``lax.psum(x, axis_name)``, or ``x`` when ``axis_name`` is None."""
    return x if axis_name is None else jax.lax.psum(x, axis_name)


def axis_size(axis_name) -> int:
    """Number of devices along ``axis_name`` (1 when None); static inside ``shard_map``."""
    return 1 if axis_name is None else int(jax.lax.axis_size(axis_name))


def global_count(n_local: int, axis_name) -> int:
    """Global batch size: the local size times the devices along ``axis_name``."""
    return n_local * axis_size(axis_name)
