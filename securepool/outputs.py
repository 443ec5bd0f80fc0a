"""Low-level writers for a run directory: every file written atomically.

A file is written to a temporary name beside it, flushed, fsynced and renamed over its
final name, so a reader never sees half of it. The layout of a run directory, its
manifest and how an iteration is committed live in :mod:`securepool.rundir`.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray


def write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def private_dir(path: Path) -> Path:
    """``path`` as a directory only its owner can enter (0700), made with its parents if
    missing; an existing one of ours is tightened to 0700 (a node's or a run's state
    holds keys and records' derivatives, and its file names are nobody else's business).
    """
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    if path.stat().st_uid == os.geteuid():
        os.chmod(path, 0o700)
    return path


def write_private(path: Path, data: bytes) -> None:
    """:func:`write_atomic` for a secret: the file is owner-only (0600) from its creation."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        os.fchmod(fh.fileno(), 0o600)  # whatever the umask
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def write_json(path: Path, obj: Any) -> None:
    write_atomic(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def npy_bytes(array: NDArray[np.float32]) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()
