"""Everything a run writes into its output directory, each file written atomically.

Layout of ``DIR``::

    config.toml          the exact configuration the run used (for --resume)
    metrics.jsonl        one line per iteration
    checkpoint/          state.json + globals.npz after every iteration
    summary.json         written once, at the end
    pool/manifest.json   the shared pool (P5), one .npy weights file per kept model

Files are written to a temporary name and renamed, and the pool directory is built
beside its final place and renamed into it, so an interrupted run never leaves a
half-written file behind.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
from collections.abc import Mapping
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


def write_json(path: Path, obj: Any) -> None:
    write_atomic(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def npy_bytes(array: NDArray[np.float32]) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def save_checkpoint(
    out: Path, *, state: Mapping[str, Any], globals_: Mapping[str, NDArray[np.float32]]
) -> None:
    ckpt = out / "checkpoint"
    ckpt.mkdir(exist_ok=True)
    buf = io.BytesIO()
    np.savez(buf, **dict(globals_))  # type: ignore[arg-type]
    write_atomic(ckpt / "globals.npz", buf.getvalue())
    write_json(ckpt / "state.json", state)  # last: marks the checkpoint complete


def load_checkpoint(out: Path) -> tuple[dict[str, Any], dict[str, NDArray[np.float32]]]:
    ckpt = out / "checkpoint"
    state = json.loads((ckpt / "state.json").read_text(encoding="utf-8"))
    with np.load(ckpt / "globals.npz", allow_pickle=False) as npz:
        globals_ = {k: npz[k].astype(np.float32) for k in npz.files}
    return state, globals_


def append_metrics(out: Path, line: Mapping[str, Any]) -> None:
    with (out / "metrics.jsonl").open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(line, sort_keys=True) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def truncate_metrics(out: Path, iterations: int) -> None:
    """Keep only the lines of iterations <= ``iterations`` (after a crash mid-iteration)."""
    path = out / "metrics.jsonl"
    if not path.exists():
        return
    lines = [
        ln
        for ln in path.read_text(encoding="utf-8").splitlines()
        if ln.strip() and json.loads(ln)["iteration"] <= iterations
    ]
    write_atomic(path, "".join(ln + "\n" for ln in lines).encode())


def write_pool(
    out: Path, *, manifest: dict[str, Any], weights: Mapping[str, NDArray[np.float32]]
) -> None:
    """Write pool/ (manifest + one weights file per model with its sha256) atomically."""
    final = out / "pool"
    staging = out / ".pool.tmp"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    entries = []
    for mid, vec in weights.items():
        data = npy_bytes(vec)
        name = f"{mid}.npy"
        (staging / name).write_bytes(data)
        entries.append({"id": mid, "file": name, "sha256": hashlib.sha256(data).hexdigest()})
    manifest = {**manifest, "files": entries}
    (staging / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    if final.exists():
        shutil.rmtree(final)
    os.replace(staging, final)
