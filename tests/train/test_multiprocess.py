"""selfsup.fit over 2 processes x 4 CPU devices (jax.distributed, gloo) equals 1 process x 8 devices."""

import json
import os
import pathlib
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from jaxinterp.train import sharding
from tests.train import _multiprocess_fit as worker

HERE = pathlib.Path(__file__).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_equal_one(tmp_path):
    port = _free_port()
    # The suite's XLA flags (tests/conftest.py: cheaper compiling) without any device count: each
    # process sets its own 4 devices.
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if "device_count" not in f]
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(HERE.parents[1]), "XLA_FLAGS": " ".join(flags)}
    procs = [subprocess.Popen([sys.executable, str(HERE / "_multiprocess_fit.py"), str(i), "2", str(port), str(tmp_path)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env) for i in range(2)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out[-4000:]
    # The reference: the same run in this process, on its 8 devices (tests/conftest.py).
    state, history = worker.run(sharding.data_mesh())
    want = {jax.tree_util.keystr(p): np.asarray(v) for p, v in jax.tree_util.tree_leaves_with_path(state.params)}
    rows = [{k: v for k, v in row.items() if k != "seconds"} for row in history]
    for pid in range(2):
        with np.load(tmp_path / f"params{pid}.npz") as f:
            np.testing.assert_array_equal(f["labels"], np.asarray(state.labels))
            for name, value in want.items():
                np.testing.assert_allclose(f[name], value, rtol=1e-4, atol=1e-5, err_msg=name)
        got = json.loads((tmp_path / f"history{pid}.json").read_text())
        assert [r["epoch"] for r in got] == [1, 2] and got[-1]["step"] == rows[-1]["step"] == 8
        for g, w in zip(got, rows):
            assert g["loss"] == pytest.approx(w["loss"], rel=1e-4)
            for key in ("nmi", "ari", "knn_accuracy", "linear_probe"):
                assert g[key] == pytest.approx(w[key], abs=1e-6), key
    assert (tmp_path / "ckpt").is_dir()                     # orbax wrote the multi-process checkpoints


def test_process_rows_and_from_process_rows_on_one_process():
    mesh = sharding.data_mesh()
    np.testing.assert_array_equal(sharding.process_rows(16, mesh), np.arange(16))
    x = np.arange(16 * 3, dtype=np.float32).reshape(16, 3)
    a = sharding.from_process_rows(x, mesh, 16)
    assert a.sharding == sharding.shard_batch(x, mesh).sharding
    np.testing.assert_array_equal(sharding.gather(a), x)
    np.testing.assert_array_equal(sharding.local_value(sharding.replicate(np.float32(3.0), mesh)), 3.0)
    with pytest.raises(ValueError, match="n"):
        sharding.process_rows(12, mesh)
    with pytest.raises(ValueError, match="local"):
        sharding.from_process_rows(x[:8], mesh, 16)
