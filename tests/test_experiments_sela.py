"""experiments/sela.py and simclr.py: tiny local runs write their metrics; a sela run killed
with SIGKILL and rerun with the same --id ends with the params and metrics of an
uninterrupted run (without redoing finished epochs), another config is refused;
``experiments.common.selfsup_data`` on mocked TFDS CIFAR-10 / ImageNet gives the mocked images
(PIL reference) as uint8 memmaps."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import PIL.Image
import pytest

from experiments import common, simclr
from experiments.configs import sela as sela_config

DATA_DIR = "/nonexistent/tfds"  # the TFDS mock never reads it


def test_simclr_local_tiny(tmp_path):
    assert simclr.main(["--config", "local", "--id", "s", "--set", f"out={tmp_path / 'runs'}", "--set", "images=64",
                        "--set", "heldout=16", "--set", "epochs=1", "--set", "batch_size=32", "--set", "embedding=16",
                        "--set", "knn_k=3"]) == 0
    metrics = json.loads((tmp_path / "runs" / "s" / "metrics.json").read_text())
    assert metrics["method"] == "simclr" and metrics["steps"] == 2 and "nmi" not in metrics


# ---------------------------------------------------------------------------
# Resume after SIGKILL: the same params as an uninterrupted run.
# ---------------------------------------------------------------------------


def _run_args(out, epochs=4):
    return [sys.executable, "-m", "experiments.sela", "--config", "local", "--id", "k",
            "--set", f"out={out}", "--set", "images=64", "--set", "heldout=16",
            "--set", f"epochs={epochs}", "--set", "batch_size=32", "--set", "clusters=8",
            "--set", "eval_every=1", "--set", "knn_k=3"]


def _final_state(ckpt_dir):
    import orbax.checkpoint as ocp
    step = max(int(d) for d in os.listdir(ckpt_dir) if d.isdigit())
    with ocp.StandardCheckpointer() as ckptr:
        return step, ckptr.restore(os.path.join(ckpt_dir, str(step), "state"))


def test_sela_resumes_after_sigkill_to_the_uninterrupted_result(tmp_path):
    # A shared persistent compilation cache: the second and third runs skip XLA compilation
    # (~15 s each on a CPU; the cached executables are those the first run compiled).
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "xla"),
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
           "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}
    # Random images in place of the synthetic set's cache (its rendering compiles for ~20 s).
    rng = np.random.default_rng(0)
    for name, n in (("train", 64), ("heldout", 16)):
        data = {"image": rng.random((n, 32, 32, 3), dtype=np.float32), "label": rng.integers(0, 8, n)}
        for run in ("whole", "killed"):
            os.makedirs(tmp_path / run / "k", exist_ok=True)
            common.save_npz(str(tmp_path / run / "k" / f"{name}.npz"), **data)
    whole = subprocess.run(_run_args(tmp_path / "whole"), capture_output=True, text=True,
                           timeout=300, env=env)
    assert whole.returncode == 0, whole.stderr[-3000:] + whole.stdout[-3000:]
    ckpt = tmp_path / "killed" / "k" / "ckpt"
    with open(tmp_path / "killed.log", "w") as log:
        victim = subprocess.Popen(_run_args(tmp_path / "killed"), stdout=log,
                                  stderr=subprocess.STDOUT, env=env)
        try:
            deadline = time.monotonic() + 300
            while not (ckpt.is_dir() and any(d.isdigit() for d in os.listdir(ckpt))):
                assert victim.poll() is None and time.monotonic() < deadline, \
                    (tmp_path / "killed.log").read_text()
                time.sleep(0.01)
            victim.send_signal(signal.SIGKILL)
            assert victim.wait(60) == -signal.SIGKILL
        finally:
            if victim.poll() is None:
                victim.kill()
                victim.wait()
    killed_at = max(int(d) for d in os.listdir(ckpt) if d.isdigit())
    assert killed_at < 8 and not (tmp_path / "killed" / "k" / "metrics.json").exists()
    resumed = subprocess.run(_run_args(tmp_path / "killed"), capture_output=True, text=True,
                             timeout=300, env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:] + resumed.stdout[-3000:]
    assert f"resumed from step {killed_at}" in resumed.stdout
    assert f"epoch {killed_at // 2}/4" not in resumed.stdout  # finished epochs are not redone
    # Same final metrics, same per-epoch losses after the resume, same params.
    read = lambda d, f: json.loads((tmp_path / d / "k" / f).read_text())  # noqa: E731
    assert read("killed", "metrics.json") == read("whole", "metrics.json")
    tail = [{k: v for k, v in r.items() if k != "seconds"} for r in read("whole", "history.json")]
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in read("killed", "history.json")] \
        == tail[killed_at // 2:]
    (step_a, a), (step_b, b) = _final_state(ckpt), _final_state(tmp_path / "whole" / "k" / "ckpt")
    assert step_a == step_b == 8
    leaves_a, leaves_b = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    assert len(leaves_a) == len(leaves_b) > 0
    for x, y in zip(leaves_a, leaves_b, strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    metrics = read("whole", "metrics.json")
    assert metrics["steps"] == 8 and 0 <= metrics["knn_accuracy"] <= 1 and 0 <= metrics["nmi"] <= 1
    # Another config in the same run directory is refused (before any work).
    _, other = common.parse(_run_args(tmp_path / "killed", epochs=5)[3:], sela_config.get_config, "")
    with pytest.raises(ValueError, match="another config"):
        common.prepare_run(other, "k", str(tmp_path / "killed"), lambda line: None)


# ---------------------------------------------------------------------------
# selfsup_data on mocked TFDS sets, and its argument checks.
# ---------------------------------------------------------------------------


def _config(**fields):
    config = sela_config.get_config("local")
    config.update({"data_dir": DATA_DIR, **fields})
    return config


def _pil_centre_crop(image, size):
    """torchvision's Resize(round(S / 0.875)) + CenterCrop(S) with PIL, as uint8."""
    h, w = image.shape[:2]
    r = round(size / 0.875)
    new_h, new_w = (r, int(r * w / h)) if h <= w else (int(r * h / w), r)
    resized = np.asarray(PIL.Image.fromarray(image).resize((new_w, new_h), PIL.Image.BILINEAR))
    top, left = int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0))
    return resized[top:top + size, left:left + size]


def test_load_data_cifar10_is_the_raw_images_as_uint8_memmaps(tmp_path):
    from tests.data.tfds_mock import indexed_mock
    config = _config(dataset="cifar10", images=6, heldout=4, size=32)
    with indexed_mock("cifar10", {"train": 8, "test": 5}) as examples:
        train, held = common.selfsup_data(config, str(tmp_path), progress=lambda line: None)
    for data, raw, n in ((train, examples["train"], 6), (held, examples["test"], 4)):
        assert isinstance(data["image"], np.memmap) and data["image"].dtype == np.uint8
        np.testing.assert_array_equal(data["image"], np.stack([e["image"] for e in raw[:n]]))
        np.testing.assert_array_equal(data["label"], np.arange(n))
    assert sorted(f for f in os.listdir(tmp_path) if f.endswith(".npy")) == [
        "cifar10-test-4-32px.images.npy", "cifar10-test-4-32px.labels.npy",
        "cifar10-train-6-32px.images.npy", "cifar10-train-6-32px.labels.npy"]


def test_load_data_imagenet_is_the_centre_crop_of_pil(tmp_path):
    from tests.data.tfds_mock import indexed_mock
    config = _config(dataset="imagenet2012", images=5, heldout=3, size=16,
                     cache_dir=str(tmp_path / "cache"))
    with indexed_mock("imagenet2012", {"train": 5, "validation": 4}) as examples:
        train, held = common.selfsup_data(config, str(tmp_path / "run"), progress=lambda line: None)
    assert sorted(os.listdir(tmp_path / "cache"))[0] == "imagenet2012-train-5-16px.images.npy"
    for data, raw in ((train, examples["train"][:5]), (held, examples["validation"][:3])):
        assert data["image"].shape == (len(raw), 16, 16, 3) and data["image"].dtype == np.uint8
        reference = np.stack([_pil_centre_crop(e["image"], 16) for e in raw]).astype(int)
        diff = np.abs(data["image"].astype(int) - reference)
        assert diff.max() <= 1 and diff.mean() <= 0.5  # PIL rounds in fixed point
        np.testing.assert_array_equal(data["label"], np.arange(len(raw)))


@pytest.mark.parametrize("fields, argument", [
    ({"dataset": "mnist"}, "dataset"),
    ({"dataset": "imagenet", "data_dir": "x"}, "dataset"),
    ({"dataset": "cifar10", "data_dir": ""}, "data_dir"),
])
def test_load_data_bad_dataset_or_missing_data_dir(tmp_path, fields, argument):
    with pytest.raises(ValueError, match=f"^{argument}"):
        common.selfsup_data(_config(**fields), str(tmp_path))


def test_tfds_variants_on_the_command_line():
    _, config = common.parse(["--config", "cifar10", "--set", "data_dir=/d"], sela_config.get_config, "")
    assert (config.dataset, config.size, config.clusters, config.lam) == ("cifar10", 32, 128, 10.0)
    _, config = common.parse(["--config", "full", "--set", "dataset=imagenet2012"], sela_config.get_config, "")
    assert config.dataset == "imagenet2012" and config.clusters == sela_config.get_config("full").clusters
    _, config = common.parse(["--variant", "cifar10"], sela_config.get_config, "")   # --config's old name
    assert config.dataset == "cifar10"
    with pytest.raises(ValueError, match="^variant"):
        common.parse(["--config", "cifar"], sela_config.get_config, "")


def test_augmentation_of_each_config():
    """SeLa trains on SeLa's transform; SimCLR and GDT on SimCLR's, with their own crop scale and blur."""
    from jaxinterp.train.augment import AugmentConfig
    from experiments.configs import gdt as gdt_config
    from experiments.configs import simclr as simclr_config

    config = sela_config.get_config("local")
    assert common.selfsup_augmentation(config) == AugmentConfig.sela(size=(32, 32), scale=(0.2, 1.0))
    for get in (simclr_config.get_config, gdt_config.get_config):
        assert common.selfsup_augmentation(get("local")) == AugmentConfig.simclr(
            size=(32, 32), scale=(0.3, 1.0), blur_sigma=(0.1, 1.0))
    config.augmentation = "byol"
    with pytest.raises(ValueError, match="^augmentation"):
        common.selfsup_augmentation(config)
