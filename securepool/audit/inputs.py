"""Load and verify a finished run directory before any audit reads it.

Everything an audit uses comes through :func:`load_run`, which refuses a directory that
is incomplete, of another format version, or tampered with (a pool file whose SHA-256
differs from the manifest, a config that is not the one the manifest names, a
checkpoint whose models differ from the released pool, metrics that disagree with the
summary), raising :class:`RunDirError` naming the file. When the user-side helper
``securepool.rundir.verify_run_dir`` exists it runs first; the checks here are the
ones the audit itself depends on.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import io
import json
import sys
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from crypto.errors import ConfigError
from securepool.config import RunConfig, parse_config

POOL_FORMAT = "securepool-pool/1"
# v2 (the user-side run directory): each model entry names its own file and sha256
POOL_FORMATS = (POOL_FORMAT, "securepool-pool/2")
REQUIRED = (
    "config.toml",
    "summary.json",
    "metrics.jsonl",
    "pool/manifest.json",
    "checkpoint/state.json",
    "checkpoint/globals.npz",
)


class RunDirError(ConfigError):
    """The run directory cannot be audited; the message names the file and the problem."""

    def __init__(self, problems: Iterable[str], *, path: Path) -> None:
        self.path = path
        super().__init__(problems)


@dataclass(frozen=True)
class AuditInputs:
    """A verified run directory, parsed: what every audit check reads."""

    run_dir: Path
    config: RunConfig
    summary: dict[str, Any]
    manifest: dict[str, Any]
    metrics: list[dict[str, Any]]
    pool: dict[str, NDArray[np.float32]]  # released weights, by model id
    transcripts: dict[str, list[dict[str, Any]]] | None  # role -> entries, if recorded

    def pool_specs(self) -> dict[str, dict[str, Any]]:
        return {m["id"]: m for m in self.manifest["models"]}


def _fail(run_dir: Path, name: str, problem: str) -> RunDirError:
    return RunDirError([f"{run_dir / name}: {problem}"], path=run_dir / name)


def _json(run_dir: Path, name: str) -> Any:
    try:
        return json.loads((run_dir / name).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _fail(run_dir, name, f"not readable JSON ({exc})") from None


def _npy(run_dir: Path, name: str, data: bytes) -> NDArray[np.float32]:
    try:
        arr = np.load(io.BytesIO(data), allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise _fail(run_dir, name, f"not a numpy array ({exc})") from None
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


def _external_verify(run_dir: Path) -> None:
    module = own_module("securepool.rundir")
    if module is not None:
        module.verify_run_dir(run_dir)


def load_run(run_dir: Path) -> AuditInputs:
    """Verify ``run_dir`` and parse it; raise :class:`RunDirError` naming what is wrong."""
    if not run_dir.is_dir():
        raise RunDirError([f"{run_dir}: not a directory"], path=run_dir)
    _external_verify(run_dir)
    missing = [n for n in REQUIRED if not (run_dir / n).is_file()]
    if missing:
        raise RunDirError(
            [f"{run_dir}: incomplete run directory, missing {', '.join(missing)}"],
            path=run_dir / missing[0],
        )
    manifest = _json(run_dir, "pool/manifest.json")
    if not isinstance(manifest, dict) or manifest.get("format") not in POOL_FORMATS:
        got = manifest.get("format") if isinstance(manifest, dict) else None
        raise _fail(
            run_dir,
            "pool/manifest.json",
            f"format {got!r} is not one this audit reads ({', '.join(POOL_FORMATS)})",
        )
    config_bytes = (run_dir / "config.toml").read_bytes()
    if hashlib.sha256(config_bytes).hexdigest() != manifest.get("config_sha256"):
        raise _fail(run_dir, "config.toml", "SHA-256 differs from pool/manifest.json's")
    try:
        cfg = parse_config(tomllib.loads(config_bytes.decode("utf-8")))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise _fail(run_dir, "config.toml", f"not valid TOML ({exc})") from None
    except ConfigError as exc:
        raise _fail(run_dir, "config.toml", f"not a valid run config ({exc})") from None
    pool: dict[str, NDArray[np.float32]] = {}
    files = manifest.get("files")
    if manifest["format"] != POOL_FORMAT and isinstance(manifest.get("models"), list):
        files = [
            {k: m.get(k) for k in ("id", "file", "sha256")} if isinstance(m, dict) else m
            for m in manifest["models"]
        ]
    if not isinstance(files, list) or not isinstance(manifest.get("models"), list):
        raise _fail(run_dir, "pool/manifest.json", "no list of files and models")
    for entry in files:
        if (
            not isinstance(entry, dict)
            or not all(isinstance(entry.get(k), str) for k in ("id", "file", "sha256"))
            or entry["file"] != f"{entry['id']}.npy"
            or Path(entry["file"]).name != entry["file"]
        ):
            raise _fail(run_dir, "pool/manifest.json", f"malformed file entry {str(entry)[:120]}")
        name = f"pool/{entry['file']}"
        try:
            data = (run_dir / name).read_bytes()
        except OSError:
            raise _fail(run_dir, name, "listed in the manifest but missing") from None
        if hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise _fail(run_dir, name, "SHA-256 differs from pool/manifest.json (tampered)")
        pool[entry["id"]] = _npy(run_dir, name, data)
    specs = {m["id"] for m in manifest.get("models", [])}
    if specs != set(pool):
        raise _fail(run_dir, "pool/manifest.json", "models and files list different ids")
    summary = _json(run_dir, "summary.json")
    if not isinstance(summary, dict):
        raise _fail(run_dir, "summary.json", "not a JSON object")
    metrics: list[dict[str, Any]] = []
    for i, line in enumerate((run_dir / "metrics.jsonl").read_text("utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise _fail(run_dir, "metrics.jsonl", f"line {i} is not JSON") from None
        if not isinstance(row, dict) or not isinstance(row.get("iteration"), int):
            raise _fail(run_dir, "metrics.jsonl", f"line {i} has no iteration number")
        metrics.append(row)
    its = [int(m["iteration"]) for m in metrics]
    if its != list(range(1, len(its) + 1)) or len(its) != summary.get("iterations"):
        raise _fail(
            run_dir,
            "metrics.jsonl",
            f"iterations {its[:3]}...{its[-1:]} do not run 1..{summary.get('iterations')} "
            "as summary.json says",
        )
    state = _json(run_dir, "checkpoint/state.json")
    if not isinstance(state, dict) or state.get("iteration") != summary.get("iterations"):
        raise _fail(run_dir, "checkpoint/state.json", "iteration differs from summary.json's")
    try:
        with np.load(run_dir / "checkpoint" / "globals.npz", allow_pickle=False) as npz:
            ckpt = {k: npz[k].astype(np.float32) for k in npz.files}
    except (OSError, ValueError) as exc:
        raise _fail(run_dir, "checkpoint/globals.npz", f"not readable ({exc})") from None
    for mid, weights in pool.items():
        if mid not in ckpt or not np.array_equal(ckpt[mid], weights):
            raise _fail(
                run_dir,
                "checkpoint/globals.npz",
                f"model {mid!r} differs from the released pool/{mid}.npy",
            )
    return AuditInputs(
        run_dir=run_dir,
        config=cfg,
        summary=summary,
        manifest=manifest,
        metrics=metrics,
        pool=pool,
        transcripts=_transcripts(run_dir),
    )


def _transcripts(run_dir: Path) -> dict[str, list[dict[str, Any]]] | None:
    tdir = run_dir / "transcripts"
    if not tdir.is_dir():
        return None
    out: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(tdir.glob("*.jsonl")):
        name = f"transcripts/{path.name}"
        rows = []
        for i, line in enumerate(path.read_text("utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                raise _fail(run_dir, name, f"line {i} is not JSON") from None
        out[path.stem] = rows
    return out
