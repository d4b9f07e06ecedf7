"""jaxinterp.train.metrics (vs brute force) and jaxinterp.train.selfsup (runs, resume, sharding)."""

import itertools
import math

import jax
import numpy as np
import pytest

from jaxinterp import nets
from jaxinterp.train import metrics, selfsup
from jaxinterp.train.augment import AugmentConfig


# ---------------------------------------------------------------- metrics vs brute force

def _nmi_brute(a, b):
    n = len(a)
    pa = {i: np.mean(a == i) for i in set(a)}
    pb = {j: np.mean(b == j) for j in set(b)}
    mi = 0.0
    for i in pa:
        for j in pb:
            pij = np.mean((a == i) & (b == j))
            if pij > 0:
                mi += pij * math.log(pij / (pa[i] * pb[j]))
    ha = -sum(p * math.log(p) for p in pa.values())
    hb = -sum(p * math.log(p) for p in pb.values())
    del n
    return mi / ((ha + hb) / 2)


def _ari_brute(a, b):
    """Pair counting over all pairs: ARI = (index - expected) / (mean - expected)."""
    pairs = list(itertools.combinations(range(len(a)), 2))
    same_a = np.array([a[i] == a[j] for i, j in pairs])
    same_b = np.array([b[i] == b[j] for i, j in pairs])
    index, sa, sb, m = np.sum(same_a & same_b), same_a.sum(), same_b.sum(), len(pairs)
    expected = sa * sb / m
    return (index - expected) / ((sa + sb) / 2 - expected)


@pytest.mark.parametrize("seed", range(4))
def test_nmi_ari_vs_brute_force(seed):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 4, 40)
    b = np.where(rng.uniform(size=40) < 0.6, a + 10, rng.integers(0, 6, 40))
    assert metrics.nmi(a, b) == pytest.approx(_nmi_brute(a, b), abs=1e-12)
    assert metrics.ari(a, b) == pytest.approx(_ari_brute(a, b), abs=1e-12)


def test_nmi_ari_closed_forms():
    a = np.array([0, 0, 1, 1, 2, 2])
    assert metrics.nmi(a, 7 - a) == pytest.approx(1.0) and metrics.ari(a, 7 - a) == pytest.approx(1.0)
    # Independent partitions: I = 0.
    x, y = np.repeat([0, 1], 4), np.tile([0, 1], 4)
    assert metrics.nmi(x, y) == pytest.approx(0.0, abs=1e-12)
    assert metrics.ari(x, y) < 0
    with pytest.raises(ValueError, match="b"):
        metrics.nmi(a, a[:3])
    with pytest.raises(ValueError, match="a"):
        metrics.ari(np.zeros(3), a[:3])


def test_knn_accuracy_vs_loop():
    rng = np.random.default_rng(0)
    ftr, ytr = rng.normal(size=(60, 5)), rng.integers(0, 3, 60)
    fte, yte = rng.normal(size=(25, 5)), rng.integers(0, 3, 25)
    k = 7
    nrm = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    correct = 0
    for f, y in zip(nrm(fte), yte):
        s = nrm(ftr) @ f
        nn = np.argsort(-s)[:k]
        counts = np.bincount(ytr[nn], minlength=3).astype(float)
        counts += 1e-6 * np.array([s[nn][ytr[nn] == c].sum() for c in range(3)]) / k
        correct += np.argmax(counts) == y
    assert metrics.knn_accuracy(ftr, ytr, fte, yte, k=k) == pytest.approx(correct / 25)
    # Planted: well separated clusters are recognised perfectly.
    centres = np.eye(5)[:3] * 10
    assert metrics.knn_accuracy(centres[ytr] + rng.normal(size=(60, 5)), ytr,
                                centres[yte] + rng.normal(size=(25, 5)), yte, k=5) == 1.0
    with pytest.raises(ValueError, match="k"):
        metrics.knn_accuracy(ftr, ytr, fte, yte, k=0)
    with pytest.raises(ValueError, match="test_features"):
        metrics.knn_accuracy(ftr, ytr, fte[:, :3], yte)


# ---------------------------------------------------------------- trainer

_N, _SIZE = 32, 16
_AUG = AugmentConfig.simclr(size=(_SIZE, _SIZE), blur_sigma=(0.1, 0.5))


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    classes = rng.integers(0, 2, _N).astype(np.int32)
    images = rng.uniform(0, 0.3, size=(_N, _SIZE, _SIZE, 3)).astype(np.float32)
    images[classes == 1, 4:12, 4:12] += 0.6        # a planted square
    return images, classes


def _net(k=4):
    return nets.get("smallcnn", num_classes=k, widths=(4, 4, 4, 8))


def _fit(images, classes, mesh, **kw):
    kw = {"epochs": 2, "batch_size": 16, "method": "sela", "lr": 1e-3, "aug": _AUG, "lam": 10.0,
          "classes": classes, "heldout": (images[:8], np.zeros(8, np.int32)), "eval_every": 2, "knn_k": 3,
          "progress": None, "mesh": mesh, **kw}
    return selfsup.fit(_net(), images, **kw)


def test_sela_runs_resumes_and_matches_sharded(data, tmp_path):
    images, classes = data
    one = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
    full, hist = _fit(images, classes, one)
    assert [h["epoch"] for h in hist] == [1, 2] and int(full.step) == 4
    assert all(np.isfinite(h["loss"]) and 0 <= h["nmi"] <= 1 for h in hist)
    assert 0 <= hist[-1]["knn_accuracy"] <= 1 and "knn_accuracy" not in hist[0]
    labels = np.asarray(full.labels)
    # Hard labels argmax_k Q_nk: near the equipartition (8 per cluster), not exactly.
    assert labels.shape == (_N,) and labels.min() >= 0 and labels.max() < 4
    assert np.count_nonzero(np.bincount(labels, minlength=4)) >= 3
    # Killed after epoch 1, then resumed: the same params as the uninterrupted run.
    d = str(tmp_path / "ckpt")
    _, h1 = _fit(images, classes, one, checkpoint_dir=d, until_epoch=1)
    assert len(h1) == 1
    lines = []
    resumed, h2 = _fit(images, classes, one, checkpoint_dir=d, progress=lines.append)
    assert "resumed from step 2" in lines[0] and [h["epoch"] for h in h2] == [2]
    jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6),
                 resumed.params, full.params)
    np.testing.assert_array_equal(np.asarray(resumed.labels), labels)
    # A checkpoint of another run is refused.
    with pytest.raises(ValueError, match="checkpoint_dir"):
        _fit(images, classes, one, checkpoint_dir=d, lr=5e-3)
    # Data-parallel over 8 devices == one device.
    eight, _ = _fit(images, classes, jax.sharding.Mesh(np.array(jax.devices()), ("data",)))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=2e-4),
                 eight.params, full.params)


def test_simclr_runs(data):
    images, classes = data
    one = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
    state, hist = _fit(images, classes, one, method="simclr", epochs=1)
    assert int(state.step) == 2 and np.isfinite(hist[0]["loss"]) and "nmi" not in hist[0]
    assert hist[0]["loss"] > 0


@pytest.mark.parametrize("kw,arg", [({"method": "byol"}, "method"), ({"epochs": 0}, "epochs"),
                                    ({"batch_size": 12}, "batch_size"), ({"batch_size": 64}, "batch_size"),
                                    ({"classes": None}, "classes"), ({"label_every": 0}, "label_every")])
def test_bad_arguments(data, kw, arg):
    images, classes = data
    with pytest.raises(ValueError, match=arg):
        _fit(images, kw.pop("classes", classes), None, **kw)
