"""jaxinterp.train.metrics (vs brute force) and jaxinterp.train.selfsup (runs, resume, sharding; DINO, GDT)."""

import dataclasses
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinterp import nets, objectives
from jaxinterp.train import classifier, metrics, selfsup
from jaxinterp.train.augment import AugmentConfig, augment_one, multicrop, sample_params
from jaxinterp.nets import dino_mlp, dino_mlp_init
from jaxinterp.train.dino import DINO, DinoParams, backbone_params, dino_head
from jaxinterp.train.gdt import GDT, gdt_contrast
from jaxinterp.train.sela import SeLa
from jaxinterp.train.simclr import SimCLR


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


def test_purity_vs_brute_force_and_closed_forms():
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 5, 50), rng.integers(0, 3, 50)
    brute = sum(max(np.sum((a == k) & (b == j)) for j in set(b)) for k in set(a)) / len(a)
    assert metrics.purity(a, b) == pytest.approx(brute, abs=1e-12)
    # Manning et al.'s worked example (Fig. 16.4): purity (5 + 4 + 3) / 17.
    clusters = np.repeat([0, 1, 2], [6, 6, 5])
    classes = np.array([0, 0, 0, 0, 0, 1, 0, 1, 1, 1, 1, 2, 0, 0, 2, 2, 2])
    assert metrics.purity(clusters, classes) == pytest.approx(12 / 17)
    assert metrics.purity(np.arange(7), np.zeros(7, int)) == 1.0
    with pytest.raises(ValueError, match="b"):
        metrics.purity(a, b[:3])


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


def _net(k=4, batch_norm=False):
    return nets.get("smallcnn", num_classes=k, widths=(4, 4, 4, 8), batch_norm=batch_norm)


_METHODS = {"sela": SeLa, "simclr": SimCLR, "dino": DINO, "gdt": GDT}
_SETTINGS = {f.name for f in dataclasses.fields(selfsup.Settings)}


def _fit(images, classes, mesh, method="sela", **kw):
    """selfsup.fit of the method called ``method`` (or ``method`` itself if unknown); ``kw`` holds the
    method's fields, the Settings' fields and fit's keyword arguments, with the defaults below."""
    kw = {"epochs": 2, "batch_size": 16, "lr": 1e-3, "aug": _AUG, "eval_every": 2, "knn_k": 3,
          **({"lam": 10.0} if method == "sela" else {}), **kw}
    fit_kw = {"classes": classes, "heldout": (images[:8], np.zeros(8, np.int32)), "progress": None, "mesh": mesh}
    fit_kw.update({k: kw.pop(k) for k in list(kw) if k in fit_kw})
    settings = selfsup.Settings(**{k: kw.pop(k) for k in list(kw) if k in _SETTINGS})
    net = _net(batch_norm=kw.get("batch_statistics", False))
    return selfsup.fit(net, images, _METHODS[method](**kw) if method in _METHODS else method, settings, **fit_kw)


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


def test_label_log_probs_vs_per_image_loop(data):
    """SeLa's label scores: the mean over views of log p(c | t_v(x)), each view drawn from (key, v, n).

    Oracle: a Python loop over images and views of the public per-image pipeline
    (``sample_params`` / ``augment_one``), the net on one view at a time and a float64
    NumPy log-softmax.  The batched, padded (batch 12 does not divide 32) and sharded
    (8 devices) versions must equal it, and the labels must be Sinkhorn's of it.
    """
    images, _ = data
    net = _net()
    params = net.init(jax.random.key(3))
    key, views = jax.random.key(7), 3
    want = np.zeros((_N, net.num_classes))
    for n in range(_N):
        for v in range(views):
            p = sample_params(jax.random.fold_in(jax.random.fold_in(key, v), n), (_SIZE, _SIZE), _AUG)
            z = np.asarray(net.apply(params, augment_one(jnp.asarray(images[n]), p, _AUG)[None]), np.float64)[0]
            want[n] += (z - z.max() - np.log(np.exp(z - z.max()).sum())) / views
    one = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
    eight = jax.sharding.Mesh(np.array(jax.devices()), ("data",))
    got = selfsup.label_log_probs(net, params, images, aug=_AUG, views=views, key=key, batch_size=12, mesh=one)
    np.testing.assert_allclose(got, want, atol=1e-5)
    got8 = selfsup.label_log_probs(net, params, images, aug=_AUG, views=views, key=key, mesh=eight)
    np.testing.assert_allclose(got8, want, atol=1e-5)
    # Another key draws other views (the views are not the identity).
    other = selfsup.label_log_probs(net, params, images, aug=_AUG, views=views, key=jax.random.key(8), mesh=one)
    assert np.abs(other - want).max() > 1e-3
    # views = 0: the un-augmented images' log-softmax.
    z = np.asarray(net.apply(params, jnp.asarray(images)), np.float64)
    plain = z - z.max(1, keepdims=True) - np.log(np.exp(z - z.max(1, keepdims=True)).sum(1, keepdims=True))
    np.testing.assert_allclose(selfsup.label_log_probs(net, params, images, aug=_AUG, views=0, mesh=one),
                               plain, atol=1e-5)
    labels = selfsup.self_labels(net, params, images, lam=10.0, aug=_AUG, views=views, key=key, mesh=eight).labels
    np.testing.assert_array_equal(
        np.asarray(labels), np.asarray(objectives.sinkhorn_labels(jnp.asarray(want, jnp.float32), lam=10.0).labels))


@pytest.mark.parametrize("kw,arg", [({"views": -1}, "views"), ({"views": True}, "views"),
                                    ({"aug": "sela"}, "aug"), ({"key": None}, "key")])
def test_label_log_probs_bad_arguments(data, kw, arg):
    images, _ = data
    net = _net()
    kw = {"aug": _AUG, "views": 2, "key": jax.random.key(0), **kw}
    with pytest.raises(ValueError, match=f"^{arg}"):
        selfsup.label_log_probs(net, net.init(jax.random.key(0)), images, **kw)


def test_simclr_runs(data):
    images, classes = data
    one = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
    state, hist = _fit(images, classes, one, method="simclr", epochs=1)
    assert int(state.step) == 2 and np.isfinite(hist[0]["loss"]) and "nmi" not in hist[0]
    assert hist[0]["loss"] > 0


@pytest.mark.parametrize("kw,arg", [({"method": "byol"}, "method"), ({"epochs": 0}, "epochs"),
                                    ({"batch_size": 12}, "batch_size"), ({"batch_size": 64}, "batch_size"),
                                    ({"classes": None}, "classes"), ({"label_every": 0}, "label_every"),
                                    ({"label_views": -1}, "label_views"),
                                    ({"method": "dino"}, "aug"), ({"method": "gdt", "rotation": "flip"}, "rotation"),
                                    ({"method": "gdt", "aug": AugmentConfig.simclr(size=(16, 12))}, "aug"),
                                    ({"method": "dino", "aug": None, "n_local": -1}, "n_local"),
                                    ({"method": "gdt", "temperature": 0.0}, "temperature"),
                                    ({"method": "dino", "aug": None, "student_temp": -1.0}, "student_temp"),
                                    ({"method": "dino", "aug": None, "teacher_temp": 0}, "teacher_temp"),
                                    ({"method": "dino", "aug": None, "momentum_teacher": 1.5},
                                     "momentum_teacher"),
                                    ({"method": "dino", "aug": None, "centre_momentum": -0.1}, "centre_momentum"),
                                    ({"method": "dino", "aug": None, "warmup_teacher_epochs": -1},
                                     "warmup_teacher_epochs"),
                                    ({"method": "dino", "aug": None, "head": (8,)}, "head"),
                                    ({"method": "dino", "aug": None, "freeze_last_layer": -1}, "freeze_last_layer"),
                                    ({"optimiser_name": "sgd"}, "optimiser_name"),
                                    ({"optimiser_name": "lars", "weight_decay": -1.0}, "weight_decay"),
                                    ({"images": np.zeros((32, 16, 16, 3), np.int32)}, "images"),
                                    ({"images": np.zeros((32, 16, 16), np.float32)}, "images"),
                                    ({"heldout": (np.zeros((8, 16, 16, 3), np.int64), np.zeros(8))}, "heldout")])
def test_bad_arguments(data, kw, arg):
    images, classes = data
    images = kw.pop("images", images)
    with pytest.raises(ValueError, match=f"^{arg}"):
        _fit(images, kw.pop("classes", classes), None, **kw)


@pytest.mark.parametrize("method,option", [(SimCLR, {"head": (8, 4)}), (SimCLR, {"batch_statistics": True}),
                                           (SeLa, {"head": (16, 8)}), (GDT, {"lam": 10.0})])
def test_options_of_another_method_are_refused(method, option):
    """A method takes only its own options (DINO's head and batch statistics, SeLa's lambda)."""
    with pytest.raises(TypeError):
        method(**option)


# ---------------------------------------------------------------- DINO

# 16 px globals and 8 px locals (the smallcnn's three 2x2 pools need >= 8 px); light blur.
_DINO_AUG = (AugmentConfig.dino_global(1, size=(_SIZE, _SIZE), blur_sigma=(0.1, 0.5)),
             AugmentConfig.dino_global(2, size=(_SIZE, _SIZE), blur_sigma=(0.1, 0.5)),
             AugmentConfig.dino_local(size=(8, 8), blur_sigma=(0.1, 0.5)))
# What fit(epochs=2, batch_size=16) on 32 images builds from _DINO_KW (same jit cache entry).
_DINO_KW = {"method": "dino", "aug": _DINO_AUG, "n_local": 2, "momentum_teacher": 0.5,
            "warmup_teacher_epochs": 1, "lr": 1e-2}
_DINO = DINO(aug=_DINO_AUG, n_local=2, momentum_teacher=0.5, warmup_teacher_epochs=1, freeze_last_layer=1,
             steps_per_epoch=2, total_steps=4)


def _np_softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _np_dino_loss(student, teacher, centre, tt, ts=0.1):
    """DINO's loss by loops over (teacher view i, student view j != i), float64."""
    logps = np.log(_np_softmax(student / ts))
    pt = _np_softmax((teacher - centre) / tt)
    terms = [-(pt[:, i] * logps[:, j]).sum(-1).mean()
             for i in range(teacher.shape[1]) for j in range(student.shape[1]) if j != i]
    return np.mean(terms)


def test_dino_teacher_centre_loss_vs_numpy(data):
    """Four updates by train_step against a float64 NumPy replay of DINO's EMA teacher, centre and loss."""
    images, _ = data
    net = _net()
    tx = classifier.optimiser(1e-2, 16)
    state = selfsup.init_state(net, tx, jax.random.key(3), _N, _DINO)

    @jax.jit
    def replay(teacher_params, student_params, key, x):
        g, loc = multicrop(key, x, 2, global_configs=_DINO_AUG[:2], local_config=_DINO_AUG[2])
        return (jnp.stack([dino_head(net, teacher_params, v) for v in g], 1),
                jnp.stack([dino_head(net, student_params, v) for v in g + loc], 1))

    f64 = lambda t: jax.tree.map(lambda a: np.asarray(a, np.float64), t)  # noqa: E731
    teacher, centre = f64(state.params), np.zeros(4)
    jax.tree.map(np.testing.assert_array_equal, f64(state.teacher), teacher)   # teacher starts = student
    for t in range(4):
        x = jnp.asarray(images[16 * (t % 2):16 * (t % 2) + 16])
        key = jax.random.fold_in(jax.random.fold_in(state.key, 0), t)
        # The outputs the NumPy replay needs: the step's crops through the pre-update nets.
        tout, sout = replay(state.teacher, state.params, key, x)
        tout, sout = np.asarray(tout, np.float64), np.asarray(sout, np.float64)
        tt = 0.04 if t < 2 else 0.07            # epoch 0 = warm-up start, epoch 1 = warmed up
        expected_loss = _np_dino_loss(sout, tout, centre, tt)
        state, stats = selfsup.train_step(net, tx, _DINO, state, x, jnp.zeros(16, jnp.int32))
        assert float(stats["loss"]) == pytest.approx(expected_loss, rel=1e-4, abs=1e-7)  # float32 loss of ~1e-3
        # DINO's collapse monitors: the entropy of each target and of the batch's mean target.
        logits = ((tout - centre) / tt).reshape(-1, tout.shape[-1])
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        pm = p.mean(0)
        assert float(stats["teacher_entropy"]) == pytest.approx(-(p * np.log(p)).sum(1).mean(), rel=1e-4, abs=1e-7)
        assert float(stats["teacher_marginal_entropy"]) == pytest.approx(-(pm * np.log(pm)).sum(), rel=1e-4, abs=1e-7)
        m = 1.0 - (1.0 - 0.5) * (1.0 + math.cos(math.pi * t / 4)) / 2
        teacher = jax.tree.map(lambda a, s: m * a + (1 - m) * s, teacher, f64(state.params))
        centre = 0.9 * centre + 0.1 * tout.mean(axis=(0, 1))
        jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), b, atol=1e-6, rtol=1e-5),
                     state.teacher, teacher)
        np.testing.assert_allclose(np.asarray(state.centre), centre, atol=1e-6, rtol=1e-5)
    # The teacher moved, and is not the student (compare the kernels: the cosine head leaves the bias unused).
    assert not all(np.allclose(a, b) for a, b in zip(jax.tree.leaves(state.teacher), jax.tree.leaves(state.params)))


def test_dino_head_is_the_cosine_with_normalised_prototypes(data):
    images, _ = data
    net = _net()
    params = net.init(jax.random.key(5))
    x = jnp.asarray(images[:4])
    feats = np.asarray(net.apply(params, x, stop=net.layers[-2]), np.float64).reshape(4, -1)
    w = np.asarray(params[net.layers[-1]]["kernel"], np.float64)
    want = (feats / np.linalg.norm(feats, axis=1, keepdims=True)) @ (w / np.linalg.norm(w, axis=0, keepdims=True))
    np.testing.assert_allclose(np.asarray(dino_head(net, params, x)), want, atol=1e-5)
    with pytest.raises(ValueError, match="net"):
        dino_head(net, {k: v for k, v in params.items() if k != net.layers[-1]}, x)


def test_dino_distils_into_the_student_only(data):
    """Momentum 1 and a frozen centre: DINO is distillation from a fixed (peaked) teacher; the loss falls."""
    images, _ = data
    net = _net()
    tx = classifier.optimiser(1e-2, 12)
    method = DINO(aug=_DINO_AUG, n_local=2, momentum_teacher=1.0, centre_momentum=1.0, warmup_teacher_epochs=0,
                  freeze_last_layer=0, steps_per_epoch=12, total_steps=12)
    state = selfsup.init_state(net, tx, jax.random.key(3), _N, method)
    # Another init, doubled: logits ~30x larger (5 homogeneous layers), so the targets are peaked.
    teacher = jax.tree.map(lambda a: 2 * a, net.init(jax.random.key(99)))
    state = state._replace(teacher=teacher)
    x, y = jnp.asarray(images[:16]), jnp.zeros(16, jnp.int32)
    losses = []
    for _ in range(12):
        state, stats = selfsup.train_step(net, tx, method, state, x, y)
        losses.append(float(stats["loss"]))
    jax.tree.map(np.testing.assert_array_equal, state.teacher, teacher)
    np.testing.assert_array_equal(np.asarray(state.centre), np.zeros(4))
    assert np.mean(losses[-3:]) < 0.5 * np.mean(losses[:2]), losses


# The MLP head, LARS and the backbone's batch statistics in one case: each case compiles its own one- and
# eight-device training steps (a case of the MLP head and LARS alone added 30 s and no code path).
@pytest.mark.parametrize("head_kw", [{}, {"head": (16, 8), "optimiser_name": "lars", "lr": 0.1,
                                          "batch_statistics": True}],
                         ids=["linear_head", "mlp_head_lars_bn_backbone"])
def test_dino_resumes_and_matches_sharded(data, tmp_path, head_kw):
    """Resume == uninterrupted, 8 devices == 1; with the MLP head and a backbone on batch statistics the
    batch norms' statistics are global too, and so are the evaluations' recomputed ones."""
    images, classes = data
    one = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
    kw = {**_DINO_KW, "heldout": None, **head_kw}
    if head_kw.get("batch_statistics"):
        del kw["heldout"]                      # _fit's: k-NN and linear probe with precise_bn
    full, hist = _fit(images, classes, one, **kw)
    assert int(full.step) == 4 and all(np.isfinite(h["loss"]) for h in hist)
    for h in hist:   # the collapse monitors' epoch means: mean entropy <= entropy of the mean <= ln K; KL >= 0
        assert 0 <= h["teacher_entropy"] <= h["teacher_marginal_entropy"] + 1e-5 <= math.log(4) + 2e-5, h
        assert h["kl"] > -1e-6, h
    assert np.abs(np.asarray(full.centre)).sum() > 0
    d = str(tmp_path / "ckpt")
    _fit(images, classes, one, checkpoint_dir=d, until_epoch=1, **kw)
    lines = []
    resumed, h2 = _fit(images, classes, one, checkpoint_dir=d, progress=lines.append, **kw)
    assert "resumed from step 2" in lines[0] and [h["epoch"] for h in h2] == [2]
    for a, b in ((resumed.params, full.params), (resumed.teacher, full.teacher), (resumed.centre, full.centre)):
        jax.tree.map(lambda u, v: np.testing.assert_allclose(np.asarray(u), np.asarray(v), atol=1e-6), a, b)
    # 8 devices == 1: the centre's batch mean is global under the sharded jit.
    eight, h8 = _fit(images, classes, jax.sharding.Mesh(np.array(jax.devices()), ("data",)), **kw)
    for a, b in ((eight.params, full.params), (eight.teacher, full.teacher), (eight.centre, full.centre)):
        jax.tree.map(lambda u, v: np.testing.assert_allclose(np.asarray(u), np.asarray(v), atol=2e-4), a, b)
    for name in ("loss", "teacher_entropy", "teacher_marginal_entropy", "kl"):   # batch means over all devices
        np.testing.assert_allclose([h[name] for h in h8], [h[name] for h in hist], rtol=1e-4, atol=1e-6)
    if head_kw.get("batch_statistics"):
        assert hist[-1]["knn_accuracy"] == h8[-1]["knn_accuracy"] and "student_linear_probe" in hist[-1]


def test_dino_batch_statistics_needs_batch_norms(data):
    images, classes = data
    with pytest.raises(ValueError, match="^batch_statistics"):
        selfsup.fit(_net(), images, DINO(aug=_DINO_AUG, n_local=2, batch_statistics=True),
                    selfsup.Settings(epochs=1, batch_size=16), progress=None)


def test_dino_evaluates_the_teacher(data):
    """DINO's metrics are its teacher's (DINO Sec. 5.2); with momentum 1 the teacher stays the untrained net."""
    images, _ = data
    one = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
    classes = np.random.default_rng(1).integers(0, 4, _N)   # random labels: the accuracies depend on the features
    held = (images[:16], classes[:16])
    state, hist = _fit(images, classes, one, **{**_DINO_KW, "momentum_teacher": 1.0, "heldout": held, "lr": 5e-2})
    untrained = selfsup.init_state(_net(), classifier.optimiser(1e-3, 1), jax.random.key(0), _N, _DINO).params
    jax.tree.map(np.testing.assert_array_equal, state.teacher, untrained)
    teacher, student = (selfsup.evaluate(_net(), p, (images, classes), held, k=3) for p in (untrained, state.params))
    assert teacher != student                       # the two nets score differently, so the check below can fail
    assert {k: hist[-1][k] for k in teacher} == teacher
    assert {k: hist[-1][f"student_{k}"] for k in student} == student
    assert selfsup.evaluate_state(_net(), state, SeLa(), (images, classes), held, k=3) == student
    with pytest.raises(ValueError, match="method"):
        selfsup.evaluate_state(_net(), state, "byol", (images, classes), held)


def _np_gelu(x):
    return 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))


def _np_dino_mlp(head, feats):
    """DINO's convnet head in float64: (Linear, BatchNorm1d (train mode), GELU) x 2, Linear, L2 norm, cosines."""
    h = jax.tree.map(lambda a: np.asarray(a, np.float64), head)
    x = np.asarray(feats, np.float64)
    for i in (1, 2):
        x = x @ h[f"dense{i}"]["kernel"] + h[f"dense{i}"]["bias"]
        x = (x - x.mean(0)) / np.sqrt(x.var(0) + 1e-5) * h[f"norm{i}"]["scale"] + h[f"norm{i}"]["bias"]
        x = _np_gelu(x)
    x = x @ h["dense3"]["kernel"] + h["dense3"]["bias"]
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    w = h["prototypes"] / np.linalg.norm(h["prototypes"], axis=1, keepdims=True)
    return x @ w.T


def test_dino_mlp_head_vs_numpy_with_batch_norm_over_all_crops(data):
    images, _ = data
    net = _net(k=6)
    state = selfsup.init_state(net, classifier.optimiser(1e-3, 1), jax.random.key(5), _N, DINO(head=(16, 8)))
    p = state.params
    assert isinstance(p, DinoParams) and p.head["prototypes"].shape == (6, 8)
    assert p.head["dense1"]["kernel"].shape == (8, 16) and p.head["dense3"]["kernel"].shape == (16, 8)
    # The backbone is net.init of the same key (as without a head), so the untrained baselines agree.
    jax.tree.map(np.testing.assert_array_equal, p.net, net.init(jax.random.split(jax.random.key(5))[0]))
    p = p._replace(head=jax.tree.map(lambda a: a + 0.1 * jax.random.normal(jax.random.key(1), a.shape), p.head))
    g, loc = jnp.asarray(images[:6]), jnp.asarray(images[6:10, ::2, ::2])     # 16 px and 8 px groups
    feats = np.concatenate([np.asarray(net.apply(p.net, v, stop=net.layers[-2])).reshape(len(v), -1)
                            for v in (g, loc)])
    out = np.asarray(dino_head(net, p, [g, loc]))
    np.testing.assert_allclose(out, _np_dino_mlp(p.head, feats), atol=2e-5)
    # Negative control: the head applied to each group alone normalises by other statistics.
    alone = np.concatenate([np.asarray(dino_head(net, p, v)) for v in (g, loc)])
    assert np.abs(alone - out).max() > 1e-2
    with pytest.raises(ValueError, match="^hidden"):
        dino_mlp_init(jax.random.key(0), 8, 0, 4, 6)
    for bad in (feats[:, :7], feats[:1], feats[None]):
        with pytest.raises(ValueError, match="^feats"):
            dino_mlp(p.head, jnp.asarray(bad))


@pytest.mark.parametrize("head", [None, (16, 8)], ids=["linear_head", "mlp_head"])
def test_dino_freezes_the_last_layer_then_trains_it(data, head):
    """DINO's freeze_last_layer: the prototypes get no update in the frozen steps, the rest does; then they move."""
    images, _ = data
    net = _net()
    tx = classifier.optimiser(1e-2, 8)
    method = dataclasses.replace(_DINO, head=head)          # the last layer frozen for 1 epoch = 2 steps
    state = selfsup.init_state(net, tx, jax.random.key(3), _N, method)

    def last(p):
        return np.asarray(p.head["prototypes"] if head else p[net.layers[-1]]["kernel"])

    def first(p):
        return np.asarray(backbone_params(p)["features"]["0"]["kernel"])

    x, y = jnp.asarray(images[:16]), jnp.zeros(16, jnp.int32)
    start = state.params
    for _ in range(2):
        state, _ = selfsup.train_step(net, tx, method, state, x, y)
    np.testing.assert_array_equal(last(state.params), last(start))       # Adam: zero gradient, zero update
    assert np.abs(first(state.params) - first(start)).max() > 1e-4
    state, _ = selfsup.train_step(net, tx, method, state, x, y)
    assert np.abs(last(state.params) - last(start)).max() > 1e-4
    if head:   # evaluate_state scores the backbones of the teacher and the student
        train, held = (images, np.arange(_N) % 4), (images[:8], np.arange(8) % 4)
        got = selfsup.evaluate_state(net, state, method, train, held, k=3)
        want = {**selfsup.evaluate(net, state.teacher.net, train, held, k=3),
                **{f"student_{k}": v for k, v in selfsup.evaluate(net, state.params.net, train, held, k=3).items()}}
        assert got == want


def test_lars_optimiser_vs_numpy():
    """lars_optimiser's second update (the first has lr 0) against LARS written out: no decay or trust on vectors."""
    params = {"w": jnp.asarray(np.random.default_rng(0).normal(size=(3, 4)), jnp.float32),
              "b": jnp.asarray([0.5, -1.0, 2.0, 0.1], jnp.float32)}
    grads = {"w": jnp.asarray(np.random.default_rng(1).normal(size=(3, 4)), jnp.float32),
             "b": jnp.asarray([0.3, 0.2, -0.1, 0.4], jnp.float32)}
    lr, steps, wd = 0.5, 100, 1e-2
    tx = classifier.lars_optimiser(lr, steps, wd)
    opt = tx.init(params)
    for _ in range(2):
        updates, opt = tx.update(grads, opt, params)
    lr1 = lr * 1 / (steps // 20)                        # step 1 of the linear warm-up from 0
    w, gw = np.asarray(params["w"], np.float64), np.asarray(grads["w"], np.float64)
    dw = gw + wd * w
    trust = 0.001 * np.linalg.norm(w) / np.linalg.norm(dw)
    np.testing.assert_allclose(np.asarray(updates["w"]), -lr1 * trust * dw, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(updates["b"]), -lr1 * np.asarray(grads["b"]), rtol=1e-5)
    with pytest.raises(ValueError, match="^weight_decay"):
        classifier.lars_optimiser(lr, steps, -1.0)


# ---------------------------------------------------------------- GDT

def test_gdt_contrast_hand_written():
    # B = 2; embedding m = v B + n, views v = (draw 0, upright), (draw 0, rotated), (draw 1, upright),
    # (draw 1, rotated).  Distinctive rotation: positives share the sample and the rotation.
    dist = np.array([
        # d0r0   d0r1   d1r0   d1r1   (n = 0, 1 in each)
        [0, -1, -1, -1, 1, -1, -1, -1],
        [-1, 0, -1, -1, -1, 1, -1, -1],
        [-1, -1, 0, -1, -1, -1, 1, -1],
        [-1, -1, -1, 0, -1, -1, -1, 1],
        [1, -1, -1, -1, 0, -1, -1, -1],
        [-1, 1, -1, -1, -1, 0, -1, -1],
        [-1, -1, 1, -1, -1, -1, 0, -1],
        [-1, -1, -1, 1, -1, -1, -1, 0]])
    np.testing.assert_array_equal(gdt_contrast(2, "distinctive"), dist)
    # Invariant rotation: every other view of the same sample is a positive.
    inv = np.array([[0 if i == j else (1 if i % 2 == j % 2 else -1) for j in range(8)] for i in range(8)])
    np.testing.assert_array_equal(gdt_contrast(2, "invariant"), inv)
    # No rotation: SimCLR's contrast on [a; b].
    np.testing.assert_array_equal(gdt_contrast(2, None),
                                  [[0, -1, 1, -1], [-1, 0, -1, 1], [1, -1, 0, -1], [-1, 1, -1, 0]])
    with pytest.raises(ValueError, match="^rotation"):
        gdt_contrast(2, "upside-down")
    with pytest.raises(ValueError, match="^batch"):
        gdt_contrast(0)


def test_gdt_two_views_is_nt_xent(data):
    """Planted equivalence: sample distinctive + augmentation invariant on 2 views is NT-Xent."""
    rng = np.random.default_rng(1)
    z = jnp.asarray(rng.normal(size=(12, 5)), jnp.float32)
    gdt = objectives.gdt_loss(z, gdt_contrast(6, None), temperature=0.2)
    np.testing.assert_allclose(float(gdt), float(objectives.nt_xent(z[:6], z[6:], temperature=0.2)), rtol=1e-6)
    # Through the trainer: method 'gdt' without rotation == 'simclr' on the same views.
    images, _ = data
    net = _net()
    tx = classifier.optimiser(1e-3, 2)
    state = selfsup.init_state(net, tx, jax.random.key(0), _N, GDT(aug=_AUG))
    x, y = jnp.asarray(images[:8]), jnp.zeros(8, jnp.int32)
    a = selfsup.batch_loss(net, GDT(aug=_AUG, temperature=0.1, rotation=None), state, x, y)
    b = selfsup.batch_loss(net, SimCLR(aug=_AUG, temperature=0.1), state, x, y)
    np.testing.assert_allclose(float(a), float(b), rtol=1e-6)


class _NoWholeArray:
    """An image set that can only be read by indexing (fit and features must not convert it whole)."""

    def __init__(self, a):
        self._a, self.shape, self.dtype = a, a.shape, a.dtype

    def __len__(self):
        return len(self._a)

    def __getitem__(self, idx):
        return np.array(self._a[idx])

    def __array__(self, *args, **kwargs):
        raise AssertionError("the whole image set was converted")


def test_gdt_learns_and_uint8_equals_float(data, tmp_path):
    images, classes = data
    u8 = np.round(images * 255).astype(np.uint8)
    mm = np.memmap(tmp_path / "images.u8", np.uint8, "w+", shape=u8.shape)
    mm[:] = u8
    mm.flush()
    one = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
    kw = {"method": "gdt", "epochs": 4, "lr": 1e-2}
    f, hf = _fit(u8.astype(np.float32) / np.float32(255), classes, one, **kw, heldout=(images[:8], classes[:8]))
    # The same run from a uint8 memmap that can only be indexed: identical, batch by batch.
    u, hu = _fit(_NoWholeArray(np.memmap(tmp_path / "images.u8", np.uint8, "r", shape=u8.shape)), classes,
                 one, **kw, heldout=(_NoWholeArray(u8[:8]), classes[:8]))
    jax.tree.map(np.testing.assert_array_equal, u.params, f.params)
    assert [h["loss"] for h in hu] == [h["loss"] for h in hf] and hu[-1]["knn_accuracy"] == hf[-1]["knn_accuracy"]
    np.testing.assert_array_equal(selfsup.features(_net(), u.params, _NoWholeArray(u8), mesh=one),
                                  selfsup.features(_net(), f.params, u8.astype(np.float32) / 255, mesh=one))
    # 24 updates on one fixed batch (the method and optimiser that fit built above): the loss falls.  Each
    # update draws new views, so single losses are noisy (over seeds 0-5 the drop is 0.36-1.2).
    tx = classifier.optimiser(1e-2, 24)
    method = GDT(aug=_AUG, temperature=0.07, rotation="distinctive")
    state = selfsup.init_state(_net(), tx, jax.random.key(0), _N, method)
    x, y = jnp.asarray(images[:16]), jnp.zeros(16, jnp.int32)
    losses = []
    for _ in range(24):
        state, stats = selfsup.train_step(_net(), tx, method, state, x, y)
        assert set(stats) == {"loss"}
        losses.append(float(stats["loss"]))
    assert np.mean(losses[-6:]) < np.mean(losses[:3]) - 0.2, losses


# ---------------------------------------------------------------- linear probe vs scipy

def _probe_problem(seed=0, n=120, d=6, k=3):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1.5, (k, d))
    y = rng.integers(0, k, n)
    x = centres[y] + rng.normal(0, 1.0, (n, d)) + 3.0          # offset: the standardisation matters
    return x.astype(np.float32), y


def _scipy_probe(x, y, k, l2):
    """The same regularised objective in float64, minimised by scipy's L-BFGS-B with exact gradients."""
    from scipy.optimize import minimize
    z = (x - x.mean(0)) / np.maximum(x.std(0), 1e-6)
    n, d = z.shape
    onehot = np.eye(k)[y]

    def f(theta):
        w, b = theta[:d * k].reshape(d, k), theta[d * k:]
        logits = z @ w + b
        logits -= logits.max(1, keepdims=True)
        p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
        loss = -np.mean(np.sum(onehot * np.log(p), 1)) + 0.5 * l2 * np.sum(w * w)
        g = (p - onehot) / n
        return loss, np.concatenate([(z.T @ g + l2 * w).ravel(), g.sum(0)])

    res = minimize(f, np.zeros(d * k + k), jac=True, method="L-BFGS-B", options={"gtol": 1e-10, "maxiter": 5000})
    return res.x[:d * k].reshape(d, k), res.x[d * k:], res.fun


@pytest.mark.parametrize("l2", [1e-1, 1e-2])
def test_linear_probe_matches_scipy_float64(l2):
    x, y = _probe_problem()
    probe = jax.jit(metrics.fit_linear_probe, static_argnames=("num_classes", "max_iters"))(
        jax.numpy.asarray(x), jax.numpy.asarray(y), 3, l2=l2)
    w, b, fun = _scipy_probe(x.astype(np.float64), y, 3, l2)
    assert float(probe.loss) == pytest.approx(fun, rel=1e-5)
    np.testing.assert_allclose(probe.kernel, w, atol=2e-3 * max(1, np.abs(w).max()))
    np.testing.assert_allclose(probe.bias, b, atol=2e-3 * max(1, np.abs(b).max()))
    assert 0 < int(probe.iterations) < 1000


def test_linear_probe_accuracy_planted_and_vmap_sharded():
    # Separable planted classes: the probe classifies held-out points perfectly; shuffled labels do not.
    x, y = _probe_problem(seed=1, n=400, d=8, k=4)
    x = x + 4.0 * np.eye(4, 8)[y]
    assert metrics.linear_probe(x[:300], y[:300], x[300:], y[300:]) == 1.0
    assert metrics.linear_probe(x[:300], np.random.default_rng(0).permutation(y[:300]), x[300:], y[300:]) < 0.6
    # vmap over two feature sets == a loop; features sharded over 8 devices == one device.
    jnp = jax.numpy
    fit = lambda f, lab: metrics.fit_linear_probe(f, lab, 4, l2=1e-2, max_iters=200)  # noqa: E731
    xs = jnp.stack([jnp.asarray(x[:96]), jnp.asarray(x[96:192])])
    ys = jnp.stack([jnp.asarray(y[:96]), jnp.asarray(y[96:192])])
    batched = jax.jit(jax.vmap(fit))(xs, ys)
    for i in range(2):
        single = jax.jit(fit)(xs[i], ys[i])
        np.testing.assert_allclose(batched.kernel[i], single.kernel, rtol=1e-4, atol=1e-4)
    from jaxinterp.train import sharding
    mesh = sharding.data_mesh()
    sharded = jax.jit(fit)(*sharding.shard_batch((xs[0], ys[0]), mesh))
    np.testing.assert_allclose(sharded.kernel, jax.jit(fit)(xs[0], ys[0]).kernel, rtol=1e-4, atol=1e-4)


def test_linear_probe_bad_arguments():
    x, y = _probe_problem()
    with pytest.raises(ValueError, match="train_features"):
        metrics.linear_probe(x[:10], y[:11], x, y)
    with pytest.raises(ValueError, match="test_features"):
        metrics.linear_probe(x, y, x[:, :3], y)
    with pytest.raises(ValueError, match="l2"):
        metrics.linear_probe(x, y, x, y, l2=0.0)
    with pytest.raises(ValueError, match="train_labels"):
        metrics.linear_probe(x, y.astype(float), x, y)
