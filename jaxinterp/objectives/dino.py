"""DINO self-distillation (Caron et al. ICCV 2021): loss with centring and sharpening, schedules, EMA.

The teacher's outputs are centred (minus an EMA ``centre`` of its batch
means over all devices) and sharpened (a low temperature); the student
predicts the teacher's distribution of each global crop from every other crop.
The teacher's parameters are an EMA of the student's, with a momentum that
rises from 0.996 to 1 on a cosine.  Defaults: docs/references.md (DINO).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from jaxinterp.checks import check_float_array, check_fraction, check_positive_float, check_int
from jaxinterp.objectives._common import global_count, psum

__all__ = ["dino_loss", "update_centre", "teacher_temperature", "cosine_schedule", "ema_update"]


def dino_loss(student: jax.Array, teacher: jax.Array, centre: jax.Array, *,
              student_temp: float = 0.1, teacher_temp: float | jax.Array = 0.04,
              axis_name: str | None = None) -> jax.Array:
    """DINO's cross-entropy between the centred, sharpened teacher and the student.

    With P_t = softmax((teacher_i - centre) / teacher_temp) (gradient stopped)
    and log P_s = log_softmax(student_j / student_temp),

        loss = mean over pairs (i, j), j != i, of 1/N sum_n -sum_k P_t[n, i, k] log P_s[n, j, k],

    i over the Vt teacher (global) views and j over the Vs student views, whose
    first Vt are the same global crops (DINO: 2 global + 8 local).

    Args:
      student: float (N, Vs, K) student head outputs.
      teacher: float (N, Vt, K) teacher head outputs, 1 <= Vt <= Vs.
      centre: float (K,), e.g. from :func:`update_centre` (zeros at the start).
      student_temp: > 0 (default 0.1).
      teacher_temp: > 0 (default 0.04; may be a traced value from
        :func:`teacher_temperature`).
      axis_name: mesh axis of the batch under ``shard_map``, or None.

    Returns:
      float32 scalar.
    """
    student = check_float_array(student, "student", (3,))
    teacher = check_float_array(teacher, "teacher", (3,))
    centre = check_float_array(centre, "centre", (1,))
    n, vs, k = student.shape
    if teacher.shape[0] != n or teacher.shape[2] != k or not 1 <= teacher.shape[1] <= vs:
        raise ValueError(f"teacher: expected (N={n}, Vt <= {vs}, K={k}), got {tuple(teacher.shape)}")
    if centre.shape != (k,):
        raise ValueError(f"centre: expected shape ({k},), got {tuple(centre.shape)}")
    student_temp = check_positive_float(student_temp, "student_temp")
    if not isinstance(teacher_temp, jax.core.Tracer):
        teacher_temp = check_positive_float(teacher_temp, "teacher_temp")
    vt = teacher.shape[1]
    pairs = vt * vs - vt if vs > 1 else vt  # one student view: it predicts its own teacher
    logps = jax.nn.log_softmax(student.astype(jnp.float32) / student_temp, axis=-1)
    pt = jax.nn.softmax(jax.lax.stop_gradient(teacher.astype(jnp.float32) - centre) / teacher_temp,
                        axis=-1)
    ce = -jnp.einsum("nik,njk->ij", pt, logps)                                   # (Vt, Vs)
    mask = 1.0 - jnp.eye(vt, vs) if vs > 1 else jnp.ones((vt, vs))
    return psum(jnp.sum(ce * mask), axis_name) / (pairs * global_count(n, axis_name))


def update_centre(centre: jax.Array, teacher: jax.Array, *, momentum: float = 0.9,
                  axis_name: str | None = None) -> jax.Array:
    """EMA of the teacher's batch mean: ``m * centre + (1 - m) * mean_{n, views} teacher``.

    The mean runs over the whole batch (``psum`` of a K-vector under
    ``shard_map``) and over the teacher views, as in DINO.

    Args:
      centre: float (K,); teacher: float (N, Vt, K) or (N, K).
      momentum: in [0, 1] (default 0.9, DINO).
      axis_name: mesh axis of the batch under ``shard_map``, or None.

    Returns:
      float32 (K,).
    """
    centre = check_float_array(centre, "centre", (1,))
    teacher = check_float_array(teacher, "teacher", (2, 3))
    if teacher.shape[-1] != centre.shape[0]:
        raise ValueError(f"teacher: expected last axis {centre.shape[0]}, got {tuple(teacher.shape)}")
    momentum = check_fraction(momentum, "momentum")
    t = jax.lax.stop_gradient(teacher.astype(jnp.float32)).reshape(teacher.shape[0], -1, centre.shape[0])
    count = global_count(t.shape[0], axis_name) * t.shape[1]
    mean = psum(jnp.sum(t, axis=(0, 1)), axis_name) / count
    return momentum * centre.astype(jnp.float32) + (1.0 - momentum) * mean


def teacher_temperature(epoch, *, warmup_temp: float = 0.04, temp: float = 0.07,
                        warmup_epochs: int = 30):
    """Teacher temperature: linear from ``warmup_temp`` to ``temp`` over ``warmup_epochs``, then ``temp``.

    Defaults: docs/references.md, DINO (0.04 warmed up to 0.07 over 30 epochs).  ``epoch``
    may be a float (fractional epochs) or a traced value; returns float32.
    """
    check_positive_float(warmup_temp, "warmup_temp")
    check_positive_float(temp, "temp")
    warmup_epochs = check_int(warmup_epochs, "warmup_epochs", minimum=0)
    e = jnp.asarray(epoch, jnp.float32)
    if warmup_epochs == 0:
        return jnp.full_like(e, temp)
    frac = jnp.clip(e / warmup_epochs, 0.0, 1.0)
    return warmup_temp + (temp - warmup_temp) * frac


def cosine_schedule(step, total_steps: int, start: float, end: float):
    """``end + (start - end) (1 + cos(pi t / T)) / 2`` for t = min(step, T): start at 0, end at T.

    DINO's teacher momentum is ``cosine_schedule(step, total, 0.996, 1.0)``
    (and its learning-rate / weight-decay schedules after warm-up).  Works on a
    traced ``step``; returns float32.
    """
    total_steps = check_int(total_steps, "total_steps")
    t = jnp.clip(jnp.asarray(step, jnp.float32), 0.0, total_steps)
    return end + (start - end) * 0.5 * (1.0 + jnp.cos(math.pi * t / total_steps))


def ema_update(teacher_params, student_params, momentum):
    """The teacher's EMA step: ``m * teacher + (1 - m) * student`` on every leaf (same pytrees).

    ``momentum`` in [0, 1], e.g. from :func:`cosine_schedule` (DINO: 0.996 -> 1).
    The teacher receives no gradient (stop_gradient on the student's leaves).
    """
    momentum = check_fraction(momentum, "momentum")
    if jax.tree.structure(teacher_params) != jax.tree.structure(student_params):
        raise ValueError("student_params: expected the same pytree structure as teacher_params")
    return jax.tree.map(
        lambda t, s: (momentum * t + (1.0 - momentum) * jax.lax.stop_gradient(s)).astype(t.dtype),
        teacher_params, student_params)
