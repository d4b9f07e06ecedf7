"""The classifier loop: a float64 reference step, learning, exact resume, data parallelism."""

import dataclasses
import os
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxinterp import nets
from jaxinterp.data import synthetic
from jaxinterp.train import checkpoint, classifier, sharding, zoo

COLOURS = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [-1, -1, -1]], np.float32)


def planted(key, n, size=16):
    """4 classes told apart by the mean colour of the image (linearly separable after pooling)."""
    label_key, noise_key = jax.random.split(key)
    label = jax.random.randint(label_key, (n,), 0, len(COLOURS), dtype=jnp.int32)
    noise = jax.random.uniform(noise_key, (n, size, size, 3), minval=-0.3, maxval=0.3)
    image = jnp.clip(0.5 + 0.15 * jnp.asarray(COLOURS)[label][:, None, None, :] + noise, 0.0, 1.0)
    return {"image": image, "label": label}


TINY = nets.get("smallcnn", num_classes=4, widths=(4, 8))


@dataclasses.dataclass(frozen=True)
class Linear:
    """logits = flatten(x) @ w + b."""

    def apply(self, params, x):
        return x.reshape(x.shape[0], -1) @ params["w"] + params["b"]


def _reference_step(w, b, x, y, lr):
    """float64 numpy: softmax cross-entropy loss and one SGD step, gradients in closed form."""
    x = x.reshape(len(x), -1).astype(np.float64)
    logits = x @ w + b
    logits -= logits.max(1, keepdims=True)
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    loss = -np.mean(np.log(p[np.arange(len(y)), y]))
    dlogits = (p - np.eye(w.shape[1])[y]) / len(y)
    return loss, w - lr * x.T @ dlogits, b - lr * dlogits.sum(0)


@pytest.mark.parametrize("devices", [1, 8])
def test_train_step_matches_float64_reference(devices):
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(16, 2, 2, 3)).astype(np.float32)
    y = rng.integers(0, 5, size=16).astype(np.int32)
    w = rng.normal(size=(12, 5)).astype(np.float32)
    b = rng.normal(size=(5,)).astype(np.float32)
    tx = optax.sgd(0.5)
    params = {"w": jnp.asarray(w), "b": jnp.asarray(b)}
    mesh = sharding.data_mesh(jax.devices()[:devices])
    state = sharding.replicate(
        classifier.TrainState(jnp.int32(0), params, tx.init(params), jax.random.key(0)), mesh)
    batch = sharding.shard_batch({"image": x, "label": y}, mesh)
    new, metrics = classifier.train_step(Linear(), tx, state, batch)

    loss, w1, b1 = _reference_step(w.astype(np.float64), b.astype(np.float64), x, y, 0.5)
    np.testing.assert_allclose(metrics["loss"], loss, rtol=1e-5)
    np.testing.assert_allclose(new.params["w"], w1, atol=1e-5)
    np.testing.assert_allclose(new.params["b"], b1, atol=1e-5)
    assert int(new.step) == 1
    logits = x.reshape(16, -1) @ w + b
    np.testing.assert_allclose(metrics["accuracy"], np.mean(logits.argmax(1) == y))


def test_evaluate_matches_direct_count():
    params = TINY.init(jax.random.key(1))
    data = planted(jax.random.key(2), 37)
    logits = np.asarray(jax.jit(TINY.apply)(params, data["image"]))
    expected = np.mean(logits.argmax(1) == np.asarray(data["label"]))
    assert classifier.evaluate(TINY, params, data["image"], data["label"], batch_size=16) == expected
    with pytest.raises(ValueError, match="labels"):
        classifier.evaluate(TINY, params, data["image"], data["label"][:5])


def test_fit_learns_planted_task():
    lines = []
    state, history = classifier.fit(TINY, planted, steps=60, batch_size=32, lr=2e-2, seed=0,
                                    log_every=20, progress=lines.append)
    assert [h["step"] for h in history] == [20, 40, 60]
    assert len(lines) == 3 and lines[-1].startswith("step 60/60")
    test = planted(jax.random.key(99), 512)
    assert classifier.evaluate(TINY, state.params, test["image"], test["label"]) > 0.9  # chance 0.25


class Stop(Exception):
    pass


def _stop_at(step):
    def progress(line):
        if line.startswith(f"step {step}/"):
            raise Stop
    return progress


def test_killed_run_resumes_to_same_params(tmp_path):
    kwargs = dict(steps=6, batch_size=16, lr=1e-2, seed=3, log_every=3)
    reference, _ = classifier.fit(TINY, planted, progress=None, **kwargs)

    directory = tmp_path / "ckpt"
    with pytest.raises(Stop):
        classifier.fit(TINY, planted, checkpoint_dir=directory, checkpoint_every=3,
                       progress=_stop_at(3), **kwargs)
    assert checkpoint.latest_step(directory) == 3

    lines = []
    resumed, _ = classifier.fit(TINY, planted, checkpoint_dir=directory, checkpoint_every=3,
                                progress=lines.append, **kwargs)
    assert lines[0].startswith("resumed from step 3")
    assert int(resumed.step) == 6
    for a, b in zip(jax.tree.leaves(resumed.params) + jax.tree.leaves(resumed.opt_state),
                    jax.tree.leaves(reference.params) + jax.tree.leaves(reference.opt_state)):
        np.testing.assert_array_equal(a, b)

    with pytest.raises(ValueError, match="checkpoint_dir"):
        classifier.fit(TINY, planted, checkpoint_dir=directory, **{**kwargs, "lr": 1e-3})


def test_data_parallel_fit_equals_single_device():
    kwargs = dict(steps=3, batch_size=16, lr=1e-2, seed=1, progress=None)
    one, _ = classifier.fit(TINY, planted, mesh=sharding.data_mesh(jax.devices()[:1]), **kwargs)
    eight, _ = classifier.fit(TINY, planted, mesh=sharding.data_mesh(), **kwargs)
    for a, b in zip(jax.tree.leaves(one.params), jax.tree.leaves(eight.params)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("steps", [1, 2, 40, 100])
def test_optimiser_schedule_closed_form(steps):
    """Adam's first step is lr(0) sign(g); lr(t) = lr t / w for t < w = max(1, steps // 20), then cosine to 0."""
    lr, warmup = 1e-2, max(1, steps // 20)
    tx = classifier.optimiser(lr, steps)
    params, grad = jnp.zeros(3), jnp.array([1.0, -2.0, 3.0])
    state, rates = tx.init(params), []
    for _ in range(min(steps, 6)):
        updates, state = tx.update(grad, state, params)   # a constant gradient: Adam's step is -lr(t) sign(g)
        rates.append(float(-updates[0]))
    expected = [lr * t / warmup if t < warmup else
                lr * 0.5 * (1 + np.cos(np.pi * (t - warmup) / max(steps - warmup, 1))) for t in range(len(rates))]
    np.testing.assert_allclose(rates, expected, rtol=1e-4, atol=1e-9)
    with pytest.raises(ValueError, match="steps"):
        classifier.optimiser(lr, 0)
    with pytest.raises(ValueError, match="lr"):
        classifier.optimiser(0.0, steps)


def test_fit_rejects_bad_arguments():
    with pytest.raises(ValueError, match="batch_size"):
        classifier.fit(TINY, planted, steps=2, batch_size=12)
    with pytest.raises(ValueError, match="steps"):
        classifier.fit(TINY, planted, steps=0, batch_size=16)
    with pytest.raises(ValueError, match="data_fn"):
        classifier.fit(TINY, lambda key, n: {"x": jnp.zeros((n, 16, 16, 3))}, steps=2, batch_size=16)


@pytest.mark.slow
def test_pretrained_smallcnn_is_accurate_and_cached(trained_smallcnn):
    net, params, info = trained_smallcnn
    assert net == nets.get("smallcnn", num_classes=synthetic.NUM_CLASSES)
    test = synthetic.generate(jax.random.key(20240601), 1024, variant="easy")
    logits = jax.jit(net.apply)(params, test["image"])
    accuracy = float(jnp.mean(jnp.argmax(logits, -1) == test["label"]))
    assert accuracy >= 0.9, (accuracy, info)
    assert info["accuracy"]["easy"] >= 0.9

    start = time.perf_counter()
    _, again, info_again = zoo.pretrained("smallcnn", progress=None)
    assert time.perf_counter() - start < 30
    assert info_again == info
    for a, b in zip(jax.tree.leaves(again), jax.tree.leaves(params)):
        np.testing.assert_array_equal(a, b)


def test_pretrained_trains_once_under_concurrent_calls(tmp_path, monkeypatch):
    """The cache logic with a stand-in for the (minutes long) training."""
    def fake_train(net, recipe, checkpoint_dir, progress):
        progress("training")
        time.sleep(0.5)  # the other caller arrives meanwhile and must wait for the lock
        return net.init(jax.random.key(recipe["steps"])), {"steps": recipe["steps"]}

    monkeypatch.setattr(zoo, "_train", fake_train)
    lines, results = [], []

    def call():
        results.append(zoo.pretrained("smallcnn", cache_dir=tmp_path, steps=2, progress=lines.append))

    threads = [threading.Thread(target=call) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert lines == ["training"] and len(results) == 2
    (net, p0, i0), (_, p1, i1) = results
    assert net == nets.get("smallcnn", num_classes=8)
    assert i0 == i1 == {"steps": 2}
    expected = net.init(jax.random.key(2))
    for a, b, c in zip(jax.tree.leaves(p0), jax.tree.leaves(p1), jax.tree.leaves(expected)):
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, c)
    zoo.pretrained("smallcnn", cache_dir=tmp_path, steps=3, progress=lines.append)
    assert lines == ["training"] * 2  # another recipe, another cache entry
    with pytest.raises(ValueError, match="name"):
        zoo.pretrained("resnet50", cache_dir=tmp_path)


def test_the_shipped_smallcnn_loads_without_training(tmp_path, monkeypatch):
    """The default recipe's checkpoint ships in the package: a fresh cache unpacks it, never trains."""
    def no_training(*args):
        raise AssertionError("trained although a checkpoint ships")

    monkeypatch.setattr(zoo, "_train", no_training)
    net, params, info = zoo.pretrained("smallcnn", cache_dir=tmp_path, progress=None)
    assert info["steps"] == zoo.RECIPES["smallcnn"]["steps"] and info["accuracy"]["easy"] >= 0.9
    test = synthetic.generate(jax.random.key(7), 256, variant="easy")
    accuracy = float(jnp.mean(jnp.argmax(jax.jit(net.apply)(params, test["image"]), -1) == test["label"]))
    assert accuracy >= 0.9
    assert os.path.isdir(zoo.cache_entry("smallcnn", cache_dir=tmp_path))
