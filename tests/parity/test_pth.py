"""PyTorch .pth files: round trip and weights_only loading."""

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from jaxinterp import nets  # noqa: E402


def test_pth_round_trip(tmp_path):
    net = nets.get("smallcnn")
    params = net.init(jax.random.key(0))
    path = tmp_path / "w.pth"
    nets.save(params, str(path))
    sd = torch.load(path, weights_only=True)
    np.testing.assert_array_equal(sd["features.0.weight"].numpy(),
                                  np.asarray(params["features"]["0"]["kernel"]).transpose(3, 2, 0, 1))
    loaded = nets.load("smallcnn", str(path))
    for a, b in zip(jax.tree.leaves(loaded), jax.tree.leaves(params)):
        np.testing.assert_array_equal(a, b)


def test_pth_is_read_with_weights_only(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("this must never run",))

    path = tmp_path / "evil.pth"
    torch.save({"features.0.weight": torch.zeros(1), "payload": Evil()}, path)
    with pytest.raises(Exception, match="(?i)weights.only|unsupported|global"):
        nets.load("smallcnn", str(path))
