"""train.loop: chunks, cadences, resume after a kill, the config check, the NaN check, the settings' checks."""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinterp.train import checkpoint, loop


class State(NamedTuple):
    step: jax.Array
    x: jax.Array


def _fresh():
    return State(jnp.zeros((), jnp.int32), jnp.zeros((), jnp.float32))


def _advance(calls, nan_at=None, per=1):
    """x += sum of the units done; the loss of unit t is t (NaN from unit ``nan_at``); ``per`` steps a unit."""
    def advance(state, done, end):
        calls.append((done, end))
        t = jnp.arange(done, end, dtype=jnp.float32)
        loss = jnp.where(t >= (nan_at if nan_at is not None else 1e9), jnp.nan, t)
        return State(state.step + (end - done) * per, state.x + t.sum()), {"loss": loss.mean()}
    return advance


def test_chunks_cadences_and_rows():
    calls, lines = [], []
    state, history = loop.run(_fresh(), _advance(calls), loop.Loop(units=7, chunk=3, log_every=3),
                              config={}, progress=lines.append)
    assert calls == [(0, 3), (3, 6), (6, 7)] and int(state.step) == 7 and float(state.x) == 21.0
    assert [h["step"] for h in history] == [3, 6, 7]
    assert [h["loss"] for h in history] == [1.0, 4.0, 6.0]        # the chunk means
    assert lines[0].startswith("step 3/7  loss 1.0000") and len(lines) == 3
    # A row hook, the unit's name and a prefix.
    _, history = loop.run(_fresh(), _advance([]), loop.Loop(units=4, unit="epoch", log_every=2, prefix="p: "),
                          config={}, row=lambda s, done, means: {"epoch": done, "x": float(s.x), **means},
                          progress=lines.append)
    assert [list(h) for h in history] == [["epoch", "x", "loss", "seconds"]] * 2
    assert [h["loss"] for h in history] == [0.5, 2.5] and lines[-1].startswith("p: epoch 4/4  x 6.0000")


class _Killed(Exception):
    pass


def test_killed_run_resumes_and_another_config_is_refused(tmp_path):
    d = str(tmp_path / "ckpt")
    settings = loop.Loop(units=6, unit="epoch", steps_per_unit=2, checkpoint_dir=d, checkpoint_every=2, log_every=2)
    whole, _ = loop.run(_fresh(), _advance([], per=2), loop.Loop(units=6, steps_per_unit=2), config={"a": 1},
                        progress=None)

    def kill(line):
        raise _Killed(line)

    with pytest.raises(_Killed):
        loop.run(_fresh(), _advance([], per=2), settings, config={"a": 1}, progress=kill)
    assert checkpoint.latest_step(d) == 4                  # epoch 2 = step 4, saved before the line
    calls, lines = [], []
    resumed, history = loop.run(_fresh(), _advance(calls, per=2), settings, config={"a": 1}, progress=lines.append)
    assert lines[0].startswith("resumed from step 4") and calls[0] == (2, 3)
    assert [h["epoch"] for h in history] == [4, 6] and int(resumed.step) == 12
    np.testing.assert_array_equal(resumed.x, whole.x)
    assert checkpoint.latest_step(d) == 12
    with pytest.raises(ValueError, match="^checkpoint_dir: .* holds a run with a=1, not 2"):
        loop.run(_fresh(), _advance([]), loop.Loop(units=6, checkpoint_dir=d), config={"a": 2}, progress=None)


def test_until_stops_early_and_saves(tmp_path):
    d = str(tmp_path / "ckpt")
    state, history = loop.run(_fresh(), _advance([]), loop.Loop(units=6, checkpoint_dir=d, checkpoint_every=4,
                                                                log_every=4, until=3),
                              config={}, progress=None)
    assert int(state.step) == 3 and [h["step"] for h in history] == [3] and checkpoint.latest_step(d) == 3


def test_nan_loss_raises_before_saving(tmp_path):
    d = str(tmp_path / "ckpt")
    with pytest.raises(FloatingPointError, match="^loss: nan by step 4"):
        loop.run(_fresh(), _advance([], nan_at=3), loop.Loop(units=6, checkpoint_dir=d, checkpoint_every=2,
                                                             log_every=4),
                 config={}, progress=None)
    assert checkpoint.latest_step(d) == 2


@pytest.mark.parametrize("kw,arg", [({"units": 0}, "units"), ({"chunk": 0}, "chunk"), ({"log_every": 0}, "log_every"),
                                    ({"checkpoint_every": 1.5}, "checkpoint_every"),
                                    ({"steps_per_unit": 0}, "steps_per_unit"), ({"until": -1}, "until")])
def test_bad_settings(kw, arg):
    with pytest.raises(ValueError, match=f"^{arg}"):
        loop.Loop(**{"units": 2, **kw})
