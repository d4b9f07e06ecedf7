"""Adversarial examples: closed forms on a linear net, optimum of the ball, projection, small conv net,
patch geometry (slicing, np.rot90), patch training, vmap == loop, jit, sharding, bad input."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxinterp import nets
from jaxinterp.targets import Unit
from jaxinterp.nets import layers as L
from jaxinterp.nets.core import register
from jaxinterp.perturbation.adversarial import (PatchTransform, adversarial_patch, apply_patch, fgsm, pgd,
                                                random_patch_transforms)
from jaxinterp.train.sharding import data_mesh, shard_batch
from tests.attribution._small_nets import NUM_CLASSES, SIZE, small_setup

PGD_STATIC = ("net", "steps", "norm", "step_norm", "targeted", "random_start", "loss", "clip",
              "return_history")
LIN_SIZE, LIN_CLASSES = 4, 3


class _Linear(nnx.Module):
    """z = W^T vec(x) + b on raw pixels (identity normalisation): the closed-form test model."""

    MEAN = (0.0, 0.0, 0.0)
    STD = (1.0, 1.0, 1.0)
    INPUT_SIZE = (LIN_SIZE, LIN_SIZE)

    def __init__(self, num_classes: int, size: int, *, rngs: nnx.Rngs):
        self.classifier = L.Linear(size * size * 3, num_classes, rngs=rngs)

    def stages(self):
        return [("flatten", lambda x, rules: x.reshape(x.shape[0], -1)), ("classifier", self.classifier)]


register("_test_linear_adversarial", _Linear, num_classes=LIN_CLASSES, size=LIN_SIZE)


@pytest.fixture(scope="module")
def linear():
    """The linear net in float64: (net, params, W (D, C), b (C,), images (2, 4, 4, 3) in [0.2, 0.8])."""
    net = nets.get("_test_linear_adversarial")
    rng = np.random.default_rng(0)
    w = rng.normal(size=(LIN_SIZE * LIN_SIZE * 3, LIN_CLASSES))
    b = rng.normal(size=LIN_CLASSES) * 0.1
    x = rng.uniform(0.2, 0.8, (2, LIN_SIZE, LIN_SIZE, 3))
    return net, w, b, x


def _params(w, b):
    return {"classifier": {"kernel": jnp.asarray(w), "bias": jnp.asarray(b)}}


def _softmax(z):
    e = np.exp(z - z.max())
    return e / e.sum()


def _ce_grad(w, b, x1, t):
    """d(-log softmax(z)_t)/dx = W (p - e_t) for the linear net, float64."""
    p = _softmax(x1.reshape(-1) @ w + b)
    return (w @ (p - np.eye(w.shape[1])[t])).reshape(x1.shape)


@pytest.fixture(scope="module")
def small():
    net, params, x = small_setup()
    return net, params, x


# --------------------------------------------------------------------------- FGSM closed forms


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("targeted", [False, True])
def test_fgsm_linear_cross_entropy_closed_form(linear, norm, targeted):
    """x + s eps d(W (p - e_t)) with d = sign or g / |g|, s = -1 targeted: (N=2, T=2) float64."""
    net, w, b, x = linear
    targets = np.array([[0, 2], [1, 0]])
    eps = 0.1 if norm == "linf" else 0.5
    with jax.enable_x64(True):
        adv = np.asarray(fgsm(net, _params(w, b), jnp.asarray(x), jnp.asarray(targets), epsilon=eps,
                              norm=norm, targeted=targeted))
    assert adv.shape == (2, 2, LIN_SIZE, LIN_SIZE, 3) and adv.dtype == np.float64
    s = -1.0 if targeted else 1.0
    for n in range(2):
        for j in range(2):
            g = _ce_grad(w, b, x[n], targets[n, j])
            d = np.sign(g) if norm == "linf" else g / np.linalg.norm(g)
            np.testing.assert_allclose(adv[n, j], np.clip(x[n] + s * eps * d, 0, 1), rtol=1e-12, atol=1e-12)


def test_fgsm_linear_logit_margin_unit_and_clip(linear):
    """logit: x - eps sign(w_t); margin: x + eps sign(w_j* - w_t); a Unit (the logit) untargeted lowers
    it: x - eps sign(w_c), targeted raises it; a large eps is clipped to [0, 1]."""
    net, w, b, x = linear
    params = _params(w, b)
    t = np.array([2, 1])
    with jax.enable_x64(True):
        xj = jnp.asarray(x)
        logit = np.asarray(fgsm(net, params, xj, jnp.asarray(t), epsilon=0.05, loss="logit"))[:, 0]
        margin = np.asarray(fgsm(net, params, xj, jnp.asarray(t), epsilon=0.05, loss="margin"))[:, 0]
        unit = Unit("classifier", jnp.asarray(t))
        down = np.asarray(fgsm(net, params, xj, unit, epsilon=0.05))[:, 0]
        up = np.asarray(fgsm(net, params, xj, unit, epsilon=0.05, targeted=True))[:, 0]
        big = np.asarray(fgsm(net, params, xj, jnp.asarray(t), epsilon=0.5, loss="logit"))[:, 0]
        free = np.asarray(fgsm(net, params, xj, jnp.asarray(t), epsilon=0.5, loss="logit", clip=None))[:, 0]
    for n in range(2):
        wt = w[:, t[n]].reshape(x[n].shape)
        np.testing.assert_allclose(logit[n], x[n] - 0.05 * np.sign(wt), atol=1e-12)
        np.testing.assert_allclose(down[n], x[n] - 0.05 * np.sign(wt), atol=1e-12)
        np.testing.assert_allclose(up[n], x[n] + 0.05 * np.sign(wt), atol=1e-12)
        z = x[n].reshape(-1) @ w + b
        other = np.argmax(np.where(np.arange(LIN_CLASSES) == t[n], -np.inf, z))
        step = np.sign(w[:, other] - w[:, t[n]]).reshape(x[n].shape)
        np.testing.assert_allclose(margin[n], x[n] + 0.05 * step, atol=1e-12)
        np.testing.assert_allclose(big[n], np.clip(x[n] - 0.5 * np.sign(wt), 0, 1), atol=1e-12)
        np.testing.assert_allclose(free[n], x[n] - 0.5 * np.sign(wt), atol=1e-12)
    assert big.min() == 0.0 and big.max() == 1.0 and free.min() < 0 and free.max() > 1


def test_fgsm_vmap_over_epsilon(linear):
    """epsilon may be traced: vmapped over a batch of budgets == the closed form for each."""
    net, w, b, x = linear
    eps = np.array([0.0, 0.02, 0.07])
    with jax.enable_x64(True):
        adv = np.asarray(jax.vmap(lambda e: fgsm(net, _params(w, b), jnp.asarray(x), jnp.array([0, 1]),
                                                 epsilon=e, loss="logit"))(jnp.asarray(eps)))
    assert adv.shape == (3, 2, 1, LIN_SIZE, LIN_SIZE, 3)
    for k, e in enumerate(eps):
        for n in range(2):
            ref = x[n] - e * np.sign(w[:, n]).reshape(x[n].shape)
            np.testing.assert_allclose(adv[k, n, 0], ref, atol=1e-12)


def test_fgsm_grad_threshold(linear):
    """Entries with |g| <= threshold stay put (Captum's zero_thresh)."""
    net, w, b, x = linear
    w = w.copy()
    w[:5, 0] = 1e-8
    with jax.enable_x64(True):
        adv = np.asarray(fgsm(net, _params(w, b), jnp.asarray(x), jnp.array([0, 0]), epsilon=0.1,
                              loss="logit", grad_threshold=1e-6))[:, 0]
    ref = x - 0.1 * np.where(np.abs(w[:, 0]) > 1e-6, np.sign(w[:, 0]), 0).reshape(x.shape[1:])
    np.testing.assert_allclose(adv, ref, atol=1e-12)
    assert np.array_equal(adv.reshape(2, -1)[:, :5], x.reshape(2, -1)[:, :5])


# --------------------------------------------------------------------------- PGD on the linear net


def test_pgd_linf_reaches_box_corner(linear):
    """Minimising the logit -> the analytic optimum clip(x - eps sign(w_t), 0, 1), from a random start;
    the loss history is monotone and ends at the optimum's value."""
    net, w, b, x = linear
    x = x.copy()
    x[0, 0, 0] = (0.01, 0.99, 0.5)  # near the box: the clip binds
    t = np.array([[1, 2], [0, 1]])
    with jax.enable_x64(True):
        adv, hist = pgd(net, _params(w, b), jnp.asarray(x), jnp.asarray(t), jax.random.key(0),
                        epsilon=0.1, step_size=0.03, steps=10, loss="logit", return_history=True)
        adv, hist = np.asarray(adv), np.asarray(hist)
    assert adv.shape == (2, 2, LIN_SIZE, LIN_SIZE, 3) and hist.shape == (2, 2, 11)
    for n in range(2):
        for j in range(2):
            wt = w[:, t[n, j]].reshape(x[n].shape)
            opt = np.clip(x[n] - 0.1 * np.sign(wt), 0, 1)
            np.testing.assert_allclose(adv[n, j], opt, atol=1e-12)
            np.testing.assert_allclose(hist[n, j, -1], -(opt.reshape(-1) @ w[:, t[n, j]] + b[t[n, j]]),
                                       rtol=1e-12)
            assert np.all(np.diff(hist[n, j]) >= -1e-12)


def test_pgd_l2_reaches_ball_optimum(linear):
    """Normalised-gradient steps on -z_t: x - eps w_t / |w_t| (no clipping; x far from the box edge)."""
    net, w, b, x = linear
    t = np.array([0, 2])
    with jax.enable_x64(True):
        adv = np.asarray(pgd(net, _params(w, b), jnp.asarray(x), jnp.asarray(t), epsilon=0.2, step_size=0.05,
                             steps=6, norm="l2", random_start=False, loss="logit"))[:, 0]
    for n in range(2):
        wt = w[:, t[n]].reshape(x[n].shape)
        np.testing.assert_allclose(adv[n], x[n] - 0.2 * wt / np.linalg.norm(wt), atol=1e-12)


def test_pgd_l2_random_start_converges(linear):
    """From a random start in the L2 ball, projected steps approach the optimum (not in finitely many)."""
    net, w, b, x = linear
    with jax.enable_x64(True):
        adv = np.asarray(pgd(net, _params(w, b), jnp.asarray(x), jnp.array([1, 1]), jax.random.key(3),
                             epsilon=0.2, step_size=0.1, steps=60, norm="l2", loss="logit"))[:, 0]
    wt = w[:, 1].reshape(x.shape[1:])
    np.testing.assert_allclose(adv, x - 0.2 * wt / np.linalg.norm(wt), atol=2e-3)


# --------------------------------------------------------------------------- PGD on a small conv net


@pytest.mark.parametrize("norm, eps", [("linf", 0.03), ("l2", 0.5)])
def test_pgd_projection_and_effect(small, norm, eps):
    """Steps as large as the ball: the result stays in the ball and in [0, 1]; untargeted PGD lowers the
    true-class probability to under half its clean value.  L-inf: targeted PGD at least doubles the least
    likely class's probability, and untargeted PGD lowers the true class at least as much as FGSM."""
    net, params, x = small
    clean = jax.nn.softmax(net.apply(params, x))
    label, goal = jnp.argmax(clean, -1), jnp.argmin(clean, -1)
    fn = jax.jit(pgd, static_argnames=PGD_STATIC)
    adv = fn(net, params, x, label, jax.random.key(1), epsilon=eps, step_size=eps, steps=8, norm=norm)[:, 0]
    d = np.asarray(adv - x).reshape(3, -1)
    bound = np.abs(d).max(1) if norm == "linf" else np.linalg.norm(d, axis=1)
    assert np.all(bound <= eps * (1 + 1e-5)) and np.all(bound >= 0.5 * eps)
    assert float(adv.min()) >= 0.0 and float(adv.max()) <= 1.0
    n = jnp.arange(3)
    prob = lambda a, c: jax.nn.softmax(net.apply(params, a))[n, c]  # noqa: E731
    assert np.all(prob(adv, label) < 0.5 * clean[n, label]), (prob(adv, label), clean[n, label])
    if norm == "linf":
        tgt = fn(net, params, x, goal, jax.random.key(1), epsilon=eps, step_size=eps / 4, steps=8, norm=norm,
                 targeted=True)[:, 0]
        assert np.all(prob(tgt, goal) > 2 * clean[n, goal]), (prob(tgt, goal), clean[n, goal])
        one_step = fgsm(net, params, x, label, epsilon=eps)[:, 0]
        assert np.all(prob(adv, label) <= prob(one_step, label) + 1e-6)


def test_vmap_equals_loop_and_jit(small):
    """(N=3, T=2) in one jitted call == per (image, target) calls."""
    net, params, x = small
    t = jnp.array([[0, 4], [2, 2], [1, 3]])
    kw = dict(epsilon=0.05, step_size=0.02, steps=3)
    both = jax.jit(pgd, static_argnames=PGD_STATIC)(net, params, x, t, random_start=False, **kw)
    assert both.shape == (3, 2, SIZE, SIZE, 3)
    for n in range(3):
        for j in range(2):
            one = pgd(net, params, x[n:n + 1], t[n:n + 1, j], random_start=False, **kw)[0, 0]
            np.testing.assert_allclose(both[n, j], one, rtol=1e-5, atol=1e-6)


def test_vmap_over_keys_equals_loop(linear):
    """pgd vmapped over random-start keys == a loop over the keys; different keys, different starts."""
    net, w, b, x = linear
    keys = jax.random.split(jax.random.key(4), 3)
    run = lambda k: pgd(net, _params(w, b), jnp.asarray(x), jnp.array([[0, 1], [2, 0]]), k,  # noqa: E731
                        epsilon=0.1, step_size=0.01, steps=2, return_history=True)
    over_keys = jax.vmap(run)(keys)
    for i in range(3):
        for a, r in zip(over_keys, run(keys[i])):
            np.testing.assert_allclose(a[i], r, rtol=1e-5, atol=1e-6)
    assert not np.allclose(over_keys[0][0], over_keys[0][1])


def test_sharded_equals_single_device(small):
    net, params, _ = small
    x = jax.random.uniform(jax.random.key(2), (8, SIZE, SIZE, 3))
    t = jax.random.randint(jax.random.key(3), (8, 2), 0, NUM_CLASSES)
    fn = jax.jit(pgd, static_argnames=PGD_STATIC)
    kw = dict(epsilon=0.05, step_size=0.02, steps=1)
    single = fn(net, params, x, t, jax.random.key(5), **kw)
    xs, ts = shard_batch((x, t), data_mesh())
    sharded = fn(net, params, xs, ts, jax.random.key(5), **kw)
    assert len(sharded.sharding.device_set) == 8
    np.testing.assert_allclose(sharded, single, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kwargs, match", [
    ({"epsilon": -0.1}, r"^epsilon: expected a number in \[0, inf\)"),
    ({"epsilon": float("nan")}, r"^epsilon: expected a number in \[0, inf\), got nan"),
    ({"step_size": -1.0}, r"^step_size: expected a number in \[0, inf\)"),
    ({"steps": 0}, r"^steps: expected a positive integer"),
    ({"norm": "l1"}, r"^norm: expected one of"),
    ({"step_norm": "l3"}, r"^step_norm: expected one of"),
    ({"loss": "hinge"}, r"^loss: expected one of"),
    ({"clip": (1, 0)}, r"^clip: expected \(lo, hi\) numbers with lo < hi"),
    ({"key": None}, r"^key: a jax.random.key is needed"),
    ({"targeted": "yes"}, r"^targeted: expected True or False"),
    ({"x": jnp.ones((3, SIZE, SIZE))}, r"^x: expected images of rank 4"),
    ({"x": jnp.full((3, SIZE, SIZE, 3), 1.5)}, r"^x: expected pixel values in the clip range"),
    ({"target": jnp.array([0, 5, 1])}, r"^target: expected indices in \[0, 5\)"),
    ({"target": jnp.array([0, 1])}, r"^target: expected shape \(3,\)"),
    ({"target": jnp.array([0.0, 1.0, 2.0])}, r"^target: expected integer indices"),
])
def test_pgd_bad_input_raises(small, kwargs, match):
    net, params, x = small
    kwargs = {"key": jax.random.key(0), "steps": 2, **kwargs}
    x = kwargs.pop("x", x)
    target = kwargs.pop("target", jnp.array([0, 1, 2]))
    with pytest.raises(ValueError, match=match):
        pgd(net, params, x, target, **kwargs)


@pytest.mark.parametrize("kwargs, match", [
    ({"epsilon": -1}, r"^epsilon: expected a number in \[0, inf\)"),
    ({"epsilon": jnp.ones(3)}, r"^epsilon: expected a real scalar"),
    ({"norm": "L1"}, r"^norm: expected one of"),
    ({"loss": None}, r"^loss: expected one of"),
    ({"clip": (0, 1, 2)}, r"^clip: expected \(lo, hi\)"),
    ({"grad_threshold": -1e-6}, r"^grad_threshold: expected a number in \[0, inf\)"),
])
def test_fgsm_bad_input_raises(small, kwargs, match):
    net, params, x = small
    with pytest.raises(ValueError, match=match):
        fgsm(net, params, x, jnp.array([0, 1, 2]), **kwargs)


# --------------------------------------------------------------------------- the patch


@pytest.mark.parametrize("p", [3, 4])
def test_apply_patch_slicing_and_rotation(p):
    """Scale 1, angle 0 at an integer corner == slicing; angle k pi/2 == np.rot90(patch, k); batched ==
    per image; a scale-2 unrotated patch covers 2P x 2P pixels."""
    rng = np.random.default_rng(p)
    img = rng.uniform(size=(9, 11, 3)).astype(np.float32)
    patch = rng.uniform(size=(p, p, 3)).astype(np.float32)
    i0, j0 = 2, 5
    c = (i0 + (p - 1) / 2, j0 + (p - 1) / 2)
    for k in range(4):
        out = np.asarray(apply_patch(jnp.asarray(img), jnp.asarray(patch),
                                     PatchTransform(c[0], c[1], 1.0, k * math.pi / 2)))
        ref = img.copy()
        ref[i0:i0 + p, j0:j0 + p] = np.rot90(patch, k)
        np.testing.assert_allclose(out, ref, atol=1e-6)
    imgs = rng.uniform(size=(3, 9, 11, 3)).astype(np.float32)
    tr = PatchTransform(jnp.array([4.0, 3.5, 5.2]), jnp.array([5.0, 6.5, 4.1]), jnp.array([1.0, 1.3, 0.7]),
                        jnp.array([0.0, 0.4, -1.0]))
    batched = apply_patch(jnp.asarray(imgs), jnp.asarray(patch), tr)
    for n in range(3):
        one = apply_patch(jnp.asarray(imgs[n]), jnp.asarray(patch), PatchTransform(*(f[n] for f in tr)))
        np.testing.assert_allclose(batched[n], one, atol=1e-6)
    covered = np.asarray(apply_patch(jnp.zeros((20, 20, 3)), jnp.ones((p, p, 3)),
                                     PatchTransform(9.5, 9.5, 2.0, 0.0)))[..., 0]
    assert covered.sum() == (2 * p) ** 2 and covered[10 - p:10 + p, 10 - p:10 + p].all()


def test_random_patch_transforms_stay_inside():
    tr = random_patch_transforms(jax.random.key(0), 200, (20, 24), 6, scale_range=(0.5, 1.5),
                                 rotation_range=(-1.0, 1.0))
    s, a = np.asarray(tr.scale), np.asarray(tr.angle)
    assert s.min() >= 0.5 and s.max() <= 1.5 and a.min() >= -1.0 and a.max() <= 1.0
    half = s * 6 * (np.abs(np.cos(a)) + np.abs(np.sin(a))) / 2
    assert np.all(tr.y >= half - 0.5 - 1e-5) and np.all(tr.y <= 19.5 - half + 1e-5)
    assert np.all(tr.x >= half - 0.5 - 1e-5) and np.all(tr.x <= 23.5 - half + 1e-5)
    # every patch pixel lands in the image: the covered area is the scaled patch's
    covered = apply_patch(jnp.zeros((200, 20, 24, 3)), jnp.ones((6, 6, 3)), tr)[..., 0].sum((1, 2))
    np.testing.assert_allclose(covered, (6 * s) ** 2, rtol=0.25)


def test_patch_training_raises_target_probability(small):
    """Two patches (K=2) trained at once, on 8 images: the targets' mean probability over fresh random
    placements on the images is >= 3 times that with a random patch; images sharded over 8 devices give
    the same patches; an int target gives one patch (P, P, 3)."""
    net, params, _ = small
    x = jax.random.uniform(jax.random.key(5), (8, SIZE, SIZE, 3))
    targets = jnp.array([1, 2])
    fn = jax.jit(adversarial_patch, static_argnames=("net", "patch_size", "steps"))
    patches, hist = fn(net, params, x, targets, jax.random.key(1), patch_size=10, steps=100, lr=0.1)
    assert patches.shape == (2, 10, 10, 3) and hist["loss"].shape == hist["success"].shape == (2, 100)
    assert float(patches.min()) >= 0.0 and float(patches.max()) <= 1.0
    tr = random_patch_transforms(jax.random.key(9), 64, (SIZE, SIZE), 10)
    xs = jnp.tile(x, (8, 1, 1, 1))

    def prob(patch, t):
        return float(jax.nn.softmax(net.apply(params, apply_patch(xs, patch, tr)))[:, t].mean())

    # an int target with key fold_in(key, 1), on the images sharded over 8 devices == the second patch
    sharded, hist8 = fn(net, params, shard_batch(x, data_mesh()), 2, jax.random.fold_in(jax.random.key(1), 1),
                        patch_size=10, steps=100, lr=0.1)
    assert sharded.shape == (10, 10, 3) and hist8["loss"].shape == (100,)
    np.testing.assert_allclose(sharded, patches[1], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(hist8["loss"], hist["loss"][1], rtol=1e-4, atol=1e-5)
    noise = jax.random.uniform(jax.random.key(3), (10, 10, 3))
    for k, t in enumerate([1, 2]):
        assert prob(patches[k], t) >= 3 * prob(noise, t), (t, prob(patches[k], t), prob(noise, t))
        assert hist["loss"][k, -20:].mean() < hist["loss"][k, :5].mean()


@pytest.mark.parametrize("kwargs, match", [
    ({"target_class": 5}, r"^target_class: expected classes in \[0, 5\)"),
    ({"target_class": 1.0}, r"^target_class: expected an int"),
    ({"key": None}, r"^key: a jax.random.key is needed"),
    ({"patch_size": 0}, r"^patch_size: expected a positive integer"),
    ({"patch_size": 15}, r"^patch_size: 15 pixels at scale 1.2 do not fit"),
    ({"steps": 0}, r"^steps: expected a positive integer"),
    ({"scale_range": (0.0, 1.0)}, r"^scale_range: expected \(lo, hi\)"),
    ({"rotation_range": (1.0, -1.0)}, r"^rotation_range: expected \(lo, hi\)"),
    ({"lr": 0.0}, r"^lr: expected a number in \(0, inf\)"),
    ({"init": jnp.ones((4, 4, 3))}, r"^init: expected a patch \(6, 6, 3\)"),
    ({"images": jnp.ones((SIZE, SIZE, 3))}, r"^images: expected images of rank 4"),
])
def test_patch_bad_input_raises(small, kwargs, match):
    net, params, x = small
    kwargs = {"images": x, "target_class": 1, "key": jax.random.key(0), "patch_size": 6, "steps": 2, **kwargs}
    with pytest.raises(ValueError, match=match):
        adversarial_patch(net, params, **kwargs)


@pytest.mark.parametrize("args, match", [
    ((jnp.ones((4, 4)), jnp.ones((2, 2, 3)), PatchTransform(1.0, 1.0, 1.0, 0.0)), r"^images: expected"),
    ((jnp.ones((4, 4, 3)), jnp.ones((2, 3, 3)), PatchTransform(1.0, 1.0, 1.0, 0.0)), r"^patch: expected"),
    ((jnp.ones((4, 4, 3)), jnp.ones((2, 2, 3)), (1.0, 1.0, 1.0, 0.0)),
     r"^transform: expected a PatchTransform"),
    ((jnp.ones((2, 4, 4, 3)), jnp.ones((2, 2, 3)), PatchTransform(1.0, 1.0, 1.0, 0.0)),
     r"^transform: expected fields of shape \(2,\)"),
])
def test_apply_patch_bad_input_raises(args, match):
    with pytest.raises(ValueError, match=match):
        apply_patch(*args)
