"""Atomic file writes: a reader sees the old file or the new one, never half of either.

Session state and logs, adapters, calibration results, reports and datasets are all written
through here (a temporary file in the same folder, fsync, rename), so a crash or a full disk in
the middle of a write never loses what was stored before.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["atomic_write_bytes", "atomic_write_text", "fsync_dir"]


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file, fsync and rename (folders created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike[str], text: str, *, encoding: str = "utf-8") -> None:
    """`atomic_write_bytes` for text."""
    atomic_write_bytes(path, text.encode(encoding))


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Make renames and unlinks in ``path`` durable (best effort: not every OS allows it)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
