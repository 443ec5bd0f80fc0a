"""Load and verify a finished run directory before any audit reads it.

Everything an audit uses comes through :func:`load_run`. It first runs
:func:`securepool.rundir.verify_run_dir` (format version, manifest digest, the sha256
and size of every recorded file, the pool manifest and its weight files, checkpoint and
metrics agreeing with ``run.json``), then the checks the audit itself depends on: the
run is finished, its config parses, summary.json's iteration count is the committed
history's, and the checkpoint's models are the released pool's (a pool replaced and
re-hashed consistently is still caught there). Every refusal is a
:class:`securepool.rundir.RunDirError` naming the file.
"""

from __future__ import annotations

import importlib
import importlib.util
import io
import json
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from crypto.errors import ConfigError
from securepool.config import RunConfig, parse_config
from securepool.rundir import POOL_FORMAT, RunDirError, verify_run_dir

__all__ = ["POOL_FORMAT", "AuditInputs", "RunDirError", "load_run", "own_module"]


@dataclass(frozen=True)
class AuditInputs:
    """A verified run directory, parsed: what every audit check reads."""

    run_dir: Path
    config: RunConfig
    summary: dict[str, Any]
    manifest: dict[str, Any]  # pool/manifest.json (securepool-pool/2), verified
    metrics: list[dict[str, Any]]
    pool: dict[str, NDArray[np.float32]]  # released weights, by model id
    transcripts: dict[str, list[dict[str, Any]]] | None  # role -> entries, if recorded

    def pool_specs(self) -> dict[str, dict[str, Any]]:
        return {m["id"]: m for m in self.manifest["models"]}


def _npy(path: Path) -> NDArray[np.float32]:
    try:
        arr = np.load(io.BytesIO(path.read_bytes()), allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise RunDirError(path, f"not a numpy array ({exc})") from None
    return np.asarray(arr, dtype=np.float32)


def own_module(name: str) -> Any | None:
    """``securepool.<name>`` if this source tree has it, else None (never a module that an
    editable install of another checkout would supply under the same name)."""
    if name in sys.modules:
        mod = sys.modules[name]
        origin = getattr(mod, "__file__", None)
        return mod if origin is None or _in_tree(Path(origin)) else None
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or spec.origin is None or not _in_tree(Path(spec.origin)):
        return None
    return importlib.import_module(name)


def _in_tree(path: Path) -> bool:
    root = Path(__file__).resolve().parents[1]  # this tree's securepool/
    return root in path.resolve().parents


def load_run(run_dir: Path) -> AuditInputs:
    """Verify ``run_dir`` and parse it; raise :class:`RunDirError` naming what is wrong."""
    run_dir = Path(run_dir)
    info = verify_run_dir(run_dir)
    if not info.finished or info.pool_manifest is None:
        raise RunDirError(
            run_dir / "run.json",
            f"the run is not finished ({info.iteration} iteration(s) committed, no released "
            "pool): there is nothing to audit yet",
        )
    manifest = dict(info.pool_manifest)
    cfg_path = info.config_path
    if manifest.get("config_sha256") != info.config_sha256:
        raise RunDirError(
            run_dir / "pool" / "manifest.json",
            "its config_sha256 is not the config.toml run.json records (a pool of another run)",
        )
    try:
        cfg = parse_config(tomllib.loads(cfg_path.read_bytes().decode("utf-8")))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise RunDirError(cfg_path, f"not valid TOML ({exc})") from None
    except ConfigError as exc:
        raise RunDirError(cfg_path, f"not a valid run config ({exc})") from None
    pool: dict[str, NDArray[np.float32]] = {}
    for entry in manifest["models"]:  # verify_pool_dir checked each file's name and hash
        mid = entry.get("id")
        if not isinstance(mid, str) or entry.get("file") != f"{mid}.npy" or mid in pool:
            raise RunDirError(
                run_dir / "pool" / "manifest.json",
                f"a model entry whose file is not its own id's: {str(entry)[:120]}",
            )
        pool[mid] = _npy(run_dir / "pool" / entry["file"])
    summary = info.summary() or {}  # finished: verified, a JSON object
    metrics = info.metrics()
    if summary.get("iterations") != info.iteration or len(metrics) != info.iteration:
        raise RunDirError(
            run_dir / "summary.json",
            f"iterations {summary.get('iterations')!r}, but run.json commits "
            f"{info.iteration} and metrics.jsonl holds {len(metrics)}",
        )
    _, ckpt = info.checkpoint()
    for mid, weights in pool.items():
        if mid not in ckpt or not np.array_equal(ckpt[mid], weights):
            raise RunDirError(
                run_dir / "checkpoint" / "globals.npz",
                f"model {mid!r} differs from the released pool/{mid}.npy",
            )
    return AuditInputs(
        run_dir=run_dir,
        config=cfg,
        summary=summary,
        manifest=manifest,
        metrics=metrics,
        pool=pool,
        transcripts=_transcripts(run_dir, recorded=set(info.files)),
    )


def _transcripts(run_dir: Path, *, recorded: set[str]) -> dict[str, list[dict[str, Any]]] | None:
    """Each role's transcript; only files run.json records (and so verified)."""
    tdir = run_dir / "transcripts"
    if not tdir.is_dir():
        return None
    out: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(tdir.glob("*.jsonl")):
        if f"transcripts/{path.name}" not in recorded:
            raise RunDirError(path, "not recorded in run.json: added after the run finished")
        rows = []
        for i, line in enumerate(path.read_text("utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                raise RunDirError(path, f"line {i} is not JSON") from None
        out[path.stem] = rows
    return out
