"""Files written atomically: results, reports and progress records that a kill never leaves half written.

The bottom of the package (``jaxinterp.data`` writes resumable caches with it,
``jaxinterp.report`` its pages, the experiments their results), so it imports
nothing of jaxinterp.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

__all__ = ["atomic_write", "write_json"]


def atomic_write(path: str | os.PathLike, data: str | bytes) -> str:
    """Write a file atomically: a temporary file in the same directory, then ``os.replace``.

    Readers see either the old file or the complete new one, never a partial
    write; on error the temporary file is removed and the old file is kept.

    Returns:
      ``path`` as a string.
    """
    path = os.fspath(path)
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def write_json(path: str | os.PathLike, obj: Any) -> str:
    """Write ``obj`` as indented JSON, atomically; NaN / Inf are refused (ValueError)."""
    try:
        text = json.dumps(obj, indent=2, sort_keys=True, allow_nan=False)
    except ValueError as e:
        raise ValueError(f"obj: not finite JSON ({e})") from None
    return atomic_write(path, text + "\n")
