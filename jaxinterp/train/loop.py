"""One training loop: stepping, checkpoints, resume, NaN checks, progress lines and history.

Every trainer of the project (the classifier, :mod:`jaxinterp.train.selfsup`'s four
methods and the learned inverter of :mod:`jaxinterp.synthesis.inverter`) is a state
pytree with a ``step`` field, a compiled ``advance`` that moves it on, and one call
of :func:`run`, which does the rest, once:

    settings = Loop(units=steps, checkpoint_dir="runs/x/ckpt", checkpoint_every=100, log_every=50)
    state, history = run(state, advance, settings, config={"lr": lr, ...}, mesh=mesh)

* **Units.** A run is ``settings.units`` units of work (updates, or epochs of
  ``steps_per_unit`` updates).  ``advance(state, done, end)`` takes the state from
  ``done`` units to ``end`` (``end - done`` is 1, or up to ``chunk`` units that run
  as one compiled call, e.g. a ``lax.scan`` over updates) and returns
  ``(state, metrics)``: a dict of scalars (device arrays are fine; they are summed on
  the devices and read only when a line is written).
* **Sharding.** With ``mesh`` the state is replicated over it before anything else
  (:func:`jaxinterp.train.sharding.replicate`); ``advance`` puts its batches on the
  ``'data'`` axis, so the compiled update is data parallel.  With several processes
  only process 0 writes progress lines.
* **Checkpoints and resume.** With ``checkpoint_dir`` the state is saved through
  :class:`~jaxinterp.train.checkpoint.Checkpointer` (orbax; the last 2 kept) as step
  ``units done x steps_per_unit`` every ``checkpoint_every`` units and at the end,
  with ``config`` as its metadata; a run started on a directory that holds a
  checkpoint resumes from the latest one (:func:`resume`), which must come from a run
  with the same ``config``.  Since every random draw derives from keys in the state
  and the step, a run killed and restarted ends with the same params as an
  uninterrupted one.
* **NaN checks.** Before each checkpoint and each history row the mean ``'loss'``
  since the last row must be finite, else :class:`FloatingPointError` (nothing is saved).
* **History and progress.** Every ``log_every`` units (and at the end) one row:
  ``row(state, done, means)`` (default ``{unit: done, **means}``; a method adds its
  evaluations there) and ``'seconds'`` (training time of this call); the progress
  line shows it.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp

from jaxinterp.checks import check_int
from jaxinterp.train import sharding
from jaxinterp.train.checkpoint import Checkpointer

__all__ = ["Loop", "run", "resume"]

Advance = Callable[[Any, int, int], tuple[Any, dict]]
Row = Callable[[Any, int, dict], dict]


@dataclasses.dataclass(frozen=True)
class Loop:
    """How :func:`run` drives a training run (the method's own hyper-parameters live with the method).

    Attributes:
      units: units of work of the whole run, >= 1 (a resumed run counts the restored ones).
      unit: the name of a unit in the history rows and progress lines (``'step'``, ``'epoch'``).
      steps_per_unit: updates (``state.step``) per unit, >= 1.
      chunk: units per call of ``advance`` at most, >= 1 (chunks end at multiples of it).
      checkpoint_dir: where to save and resume from; None = no checkpoints.
      checkpoint_every: units between checkpoints (and at the end), >= 1.
      log_every: units between history rows and progress lines (and at the end), >= 1.
      until: stop after this many units (as if killed; a later run resumes), or None.
      prefix: the start of every progress line (e.g. ``'inverter features.2: '``).
    """

    units: int
    unit: str = "step"
    steps_per_unit: int = 1
    chunk: int = 1
    checkpoint_dir: str | None = None
    checkpoint_every: int = 1
    log_every: int = 1
    until: int | None = None
    prefix: str = ""

    def __post_init__(self):
        for name in ("units", "steps_per_unit", "chunk", "checkpoint_every", "log_every"):
            check_int(getattr(self, name), name)
        if self.until is not None:
            check_int(self.until, "until", minimum=0)


def resume(ckpt: Checkpointer, state, config: dict, progress: Callable[[str], Any] | None = None):
    """The latest checkpoint of ``ckpt``, restored onto the placement of ``state`` (any pytree with ``step``).

    Raises:
      ValueError: naming ``checkpoint_dir``, if the checkpoint's saved ``config`` differs.
    """
    state, saved = ckpt.restore(like=state)
    for name, value in config.items():
        if saved.get(name) != value:
            raise ValueError(f"checkpoint_dir: {ckpt.directory} holds a run with {name}="
                             f"{saved.get(name)!r}, not {value!r}; use another directory")
    if progress is not None:
        progress(f"resumed from step {int(sharding.local_value(state.step))} of {ckpt.directory}")
    return state


def run(state, advance: Advance, settings: Loop, *, config: dict, row: Row | None = None,
        progress: Callable[[str], Any] | None = print,
        mesh: jax.sharding.Mesh | None = None) -> tuple[Any, list[dict]]:
    """Advance ``state`` to ``settings.units`` units, with checkpoints, resume, NaN checks and progress.

    Args:
      state: the fresh state of the run (a pytree with a () int32 ``step``); replaced by the
        latest checkpoint of ``settings.checkpoint_dir`` if there is one.
      advance: ``advance(state, done, end) -> (state, metrics)``, the units ``done`` to
        ``end``; ``metrics`` a dict of float scalars of those units (``'loss'`` checked).
      settings: the :class:`Loop`.
      config: a JSON-able dict saved with every checkpoint; resuming requires equality.
      row: ``row(state, done, means) -> dict``, the history row after ``done`` units from
        the means of ``metrics`` since the last row; None = ``{unit: done, **means}``.
      progress: called with each progress line (and the resume line); None = silent.
      mesh: replicate the state over this mesh first; None = leave it where it is.

    Returns:
      (state, history): the state after the last unit run, and the rows, each ending with
      ``'seconds'``, the training time of this call so far (compilation included).

    Raises:
      FloatingPointError: the mean loss became NaN or infinite.
      ValueError: ``checkpoint_dir`` holds another run.
    """
    if jax.process_index() != 0:
        progress = None                                           # one process reports
    if mesh is not None:
        state = sharding.replicate(state, mesh)
    steps_per_unit = settings.steps_per_unit
    ckpt = None if settings.checkpoint_dir is None else Checkpointer(settings.checkpoint_dir, max_to_keep=2)
    history: list[dict] = []
    try:
        if ckpt is not None and ckpt.latest_step() is not None:
            state = resume(ckpt, state, config, progress)
        start = time.perf_counter()
        done = int(sharding.local_value(state.step)) // steps_per_unit
        last = settings.units if settings.until is None else min(settings.units, settings.until)
        running, since = None, 0
        while done < last:
            end = min(last, (done // settings.chunk + 1) * settings.chunk)
            state, metrics = advance(state, done, end)
            running = metrics if running is None else jax.tree.map(jnp.add, running, metrics)
            since, done = since + 1, end
            save = ckpt is not None and (done % settings.checkpoint_every == 0 or done == last)
            log = done % settings.log_every == 0 or done == last
            if not (save or log):
                continue
            means = {k: float(sharding.local_value(v)) / since for k, v in running.items()}
            if "loss" in means and not math.isfinite(means["loss"]):
                raise FloatingPointError(f"loss: {means['loss']} by {settings.unit} {done} "
                                         f"({settings.prefix or 'training'}); lower lr or check the inputs")
            if log:
                out = {settings.unit: done, **means} if row is None else row(state, done, means)
                out["seconds"] = time.perf_counter() - start
                history.append(out)
            if save:
                ckpt.save(done * steps_per_unit, state, config, force=True)
            if log:
                running, since = None, 0
                if progress is not None:
                    progress(_line(settings, out))
    finally:
        if ckpt is not None:
            ckpt.close()
    return state, history


def _line(settings: Loop, row: dict) -> str:
    shown = "".join(f"  {k} {v:.4f}" for k, v in row.items()
                    if k not in (settings.unit, "step", "epoch", "seconds") and isinstance(v, (int, float)))
    return (f"{settings.prefix}{settings.unit} {row[settings.unit]}/{settings.units}{shown}"
            f"  {row['seconds']:.1f}s")
