"""Read PyTorch ``.pth`` state dicts with NumPy alone: no torch, no code execution.

A pretrained checkpoint is a pickled dict of tensors, so loading one into a
JAX net should not need a PyTorch install.  :func:`read_state_dict` reads both
formats ``torch.save`` writes:

* zip (the default since torch 1.6): ``<folder>/data.pkl`` pickles the object,
  the raw bytes of storage ``key`` are the record ``<folder>/data/<key>``, and
  ``<folder>/byteorder`` (``little`` / ``big``, little when absent) their byte order.
* legacy (torch < 1.6, or ``_use_new_zipfile_serialization=False``): pickles
  one after another -- a magic number, the protocol version (1001), system info
  (``little_endian``), the object, the list of storage keys -- then, per key,
  its element count (int64, little-endian) and its raw bytes.

In both the object pickle names a storage by a persistent id ``('storage',
storage type, key, location, numel[, view metadata])`` and rebuilds a tensor
with ``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)``.
Like ``torch.load(..., weights_only=True)``, the unpickler resolves only the
few globals a state dict uses, to NumPy stand-ins: any other global
(``os.system``, a model class) is refused before it can run.
"""

from __future__ import annotations

import collections
import os
import pickle
import struct
import zipfile
from typing import Mapping, NamedTuple

import numpy as np
from numpy.lib.stride_tricks import as_strided

__all__ = ["read_state_dict"]

_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001
# torch dtype -> (its legacy storage type, NumPy element type);
# 'bf16' is bfloat16, read as its uint16 bits and widened to float32.
_TYPES = {"float64": ("DoubleStorage", "f8"), "float32": ("FloatStorage", "f4"),
          "float16": ("HalfStorage", "f2"), "bfloat16": ("BFloat16Storage", "bf16"),
          "int64": ("LongStorage", "i8"), "int32": ("IntStorage", "i4"),
          "int16": ("ShortStorage", "i2"), "int8": ("CharStorage", "i1"),
          "uint8": ("ByteStorage", "u1"), "bool": ("BoolStorage", "?"),
          "complex128": ("ComplexDoubleStorage", "c16"), "complex64": ("ComplexFloatStorage", "c8"),
          "uint16": (None, "u2"), "uint32": (None, "u4"), "uint64": (None, "u8")}
_CODES = {code for _, code in _TYPES.values()}
_WRAPPERS = ("state_dict", "model", "teacher")


class _Storage(NamedTuple):
    key: str   # record of the root storage
    code: str  # NumPy element type, one of _CODES
    base: int  # first element of this view of the root (legacy storage views), else 0


class _Tensor(NamedTuple):
    storage: _Storage
    offset: int    # in elements, from storage.base
    size: tuple
    stride: tuple  # in elements


def _rebuild_tensor(storage, offset, size, stride, *_):  # also stands in for _rebuild_tensor_v2
    return _Tensor(storage, offset, tuple(size), tuple(stride))


def _rebuild_tensor_v3(storage, offset, size, stride, requires_grad, hooks, dtype, *_):
    """Recent torch writes uint16 / uint32 / uint64 tensors as a dtype over untyped bytes."""
    if dtype not in _CODES:
        raise ValueError(f"unsupported dtype {str(dtype)[:40]}")
    return _Tensor(storage._replace(code=dtype), offset, tuple(size), tuple(stride))


def _rebuild_parameter(data, *_):
    return data


_GLOBALS = {("collections", "OrderedDict"): collections.OrderedDict,
            ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
            ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
            ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
            ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
            ("torch.storage", "UntypedStorage"): "u1",
            **{("torch", storage): code for storage, code in _TYPES.values() if storage},
            **{("torch", dtype): code for dtype, (_, code) in _TYPES.items()}}


class _Unpickler(pickle.Unpickler):
    """Resolves only :data:`_GLOBALS`; records the storage type of every key it meets."""

    def __init__(self, file):
        super().__init__(file)
        self.storages: dict[str, str] = {}

    def find_class(self, module, name):
        if (module, name) not in _GLOBALS:
            raise ValueError(f"forbidden global {module}.{name} (a state dict holds only tensors)")
        return _GLOBALS[module, name]

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"
                and pid[1] in _CODES and isinstance(pid[2], str)):
            raise ValueError(f"unsupported persistent id {str(pid)[:80]}")
        view = pid[5] if len(pid) == 6 else None  # legacy: (view key, offset, size) or None
        self.storages[pid[2]] = pid[1]
        return _Storage(pid[2], pid[1], int(view[1]) if view is not None else 0)


def _read_zip(zf: zipfile.ZipFile):
    names = set(zf.namelist())
    pkl = [n for n in names if n.split("/")[1:] == ["data.pkl"]]
    if len(pkl) != 1:
        raise ValueError("a zip archive without one <folder>/data.pkl")
    prefix = pkl[0][:-len("data.pkl")]
    order = zf.read(prefix + "byteorder") if prefix + "byteorder" in names else b"little"
    if order not in (b"little", b"big"):
        raise ValueError(f"unknown byte order {order[:16]!r}")
    with zf.open(pkl[0]) as f:
        obj = _Unpickler(f).load()
    return obj, lambda key: zf.read(f"{prefix}data/{key}"), "<" if order == b"little" else ">"


def _read_legacy(f):
    if _Unpickler(f).load() != _MAGIC:
        raise ValueError("neither a zip archive nor a legacy PyTorch file (bad magic number)")
    if _Unpickler(f).load() != _LEGACY_PROTOCOL:
        raise ValueError("unsupported legacy protocol version")
    info = _Unpickler(f).load()
    unpickler = _Unpickler(f)
    obj = unpickler.load()
    data, size = {}, os.fstat(f.fileno()).st_size
    for key in _Unpickler(f).load():
        (numel,) = struct.unpack("<q", f.read(8))
        nbytes = numel * _dtype(unpickler.storages[key], "<").itemsize
        if not 0 <= nbytes <= size - f.tell():
            raise ValueError(f"storage {key!r} is truncated")
        data[key] = f.read(nbytes)
    return obj, data.__getitem__, "<" if info.get("little_endian", True) else ">"


def _dtype(code: str, order: str) -> np.dtype:
    return np.dtype("u2" if code == "bf16" else code).newbyteorder(order)


def _array(t: _Tensor, storage: np.ndarray) -> np.ndarray:
    """One tensor as a fresh native-endian array, checked to lie inside its storage."""
    offset, size, stride = t.storage.base + t.offset, t.size, t.stride
    if len(size) != len(stride) or min((offset, *size, *stride)) < 0:
        raise ValueError(f"malformed tensor of size {size}, stride {stride}")
    if 0 in size:
        view = storage[:0].reshape(size)
    elif offset + sum((n - 1) * s for n, s in zip(size, stride)) >= storage.size:
        raise ValueError(f"tensor of size {size} lies outside its storage {t.storage.key!r}")
    else:
        view = as_strided(storage[offset:], size, [s * storage.itemsize for s in stride],
                          writeable=False)
    out = view.astype(view.dtype.newbyteorder("="), order="C")  # channels-last -> C order
    return (out.astype(np.uint32) << 16).view(np.float32) if t.storage.code == "bf16" else out


def _state_dict(obj, data, order: str) -> dict[str, np.ndarray]:
    for wrapper in _WRAPPERS:
        if isinstance(obj, Mapping) and isinstance(obj.get(wrapper), Mapping):
            obj = obj[wrapper]
    if not isinstance(obj, Mapping):
        raise ValueError(f"holds a {type(obj).__name__}, not a state dict")
    out, storages = {}, {}
    for k, v in obj.items():
        if not (isinstance(k, str) and isinstance(v, _Tensor) and isinstance(v.storage, _Storage)):
            raise ValueError(f"entry {k!r} is not a tensor ({type(v).__name__})")
        s = v.storage
        if (s.key, s.code) not in storages:
            storages[s.key, s.code] = np.frombuffer(data(s.key), _dtype(s.code, order))
        out[k] = _array(v, storages[s.key, s.code])
    return out


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a ``torch.save``'d state dict without torch and without running code.

    Args:
      path: a ``.pth`` / ``.pt`` file in the zip or the legacy format, holding
        a dict of tensors, possibly wrapped as ``{'state_dict' | 'model' |
        'teacher': {...}, ...}`` (other entries of the wrapper are ignored).

    Returns:
      {key: array}, each array of the tensor's shape and dtype (float32 /
      float64 / float16 / int64 / ... / bool, native byte order; bfloat16 is
      widened to float32), a writable C-contiguous copy (tensors that shared a
      storage share no memory here).

    Raises:
      ValueError: naming ``path``, when the file is not a PyTorch file, is
        truncated, pickles a global other than tensors and ``OrderedDict``
        (nothing is executed), or holds a value that is not a tensor.
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            if f.read(4) == b"PK\x03\x04":
                with zipfile.ZipFile(f) as zf:
                    return _state_dict(*_read_zip(zf))
            f.seek(0)
            return _state_dict(*_read_legacy(f))
    except Exception as e:  # malformed, truncated or malicious: always a ValueError naming path
        raise ValueError(f"path: cannot read {path!r} as a PyTorch state dict: {e}") from e
