"""The run directory as a checked artifact: a format version and a manifest over its files.

Layout of a run directory ``DIR`` (format ``securepool-run/1``)::

    run.json             the manifest: format, iteration, state, sha256 + size of every
                         file below, and a digest over all of that (the commit point)
    config.toml          the exact configuration the run used
    metrics.jsonl        one line per finished iteration
    checkpoint/          state.json + globals.npz of the last finished iteration
    summary.json         written once, at the end           (state "finished")
    pool/manifest.json   the shared pool, one .npy per kept model (state "finished")
    transcripts/         every role's view, when the config records it (finished)

Every command that reads a run (``--resume``, ``show``, ``predict``, pool loading, the
audit) calls :func:`verify_run_dir` first; a file that is missing, edited, truncated or
replaced is a :class:`RunDirError` naming that file.

Crash safety. ``run.json`` is replaced atomically and is the only commit point of an
iteration: the metrics line is appended first (``run.json`` records the committed
length, so a line beyond it is an uncommitted iteration that ``--resume`` drops), the
checkpoint files are written under ``checkpoint/.next/`` and only moved into place
after ``run.json`` names their hashes (``--resume`` completes an interrupted move). A
fresh run is built in a hidden directory beside ``DIR`` and renamed to ``DIR`` at its
first committed checkpoint, so a run that fails or is interrupted (Ctrl-C, SIGTERM)
before that leaves nothing behind and the same ``--out`` can be used again. An
``--out`` that already exists as an empty directory (a mount point, say, which cannot
be renamed over) is written in place instead, and emptied again if the run stops
before its first checkpoint (killed outright, it holds a run at iteration 0 that
``--resume`` starts).

What the manifest proves. It detects accidental and careless changes: an edited
iteration number, a deleted checkpoint, an edited config, a truncated history, a file
from another run. It carries no key, so someone who edits a file *and* recomputes the
manifest (the code is public) is not detected; the run directory is as trustworthy as
the machine and the people that hold it. The released pool can be checked on its own
(``pool/manifest.json`` covers its weight files and itself the same way).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import secrets
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from crypto.encoding import bind
from crypto.errors import ConfigError
from securepool.outputs import npy_bytes, write_atomic, write_json

RUN_FORMAT = "securepool-run/1"
POOL_FORMAT = "securepool-pool/2"
MANIFEST = "run.json"
CONFIG = "config.toml"
METRICS = "metrics.jsonl"
STATE = "checkpoint/state.json"
GLOBALS = "checkpoint/globals.npz"
SUMMARY = "summary.json"
POOL_MANIFEST = "pool/manifest.json"
NEXT = "checkpoint/.next"

_RUN_DOMAIN = b"securepool/run-manifest/v1"
_POOL_DOMAIN = b"securepool/pool-manifest/v2"


class RunDirError(ConfigError):
    """A run (or pool) directory is not what its manifest says; names the file."""

    def __init__(self, file: Path, problem: str) -> None:
        self.file = file
        self.problem = problem
        super().__init__([f"{file}: {problem}"])

    def __str__(self) -> str:
        return f"{self.file}: {self.problem}"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _digest(domain: bytes, body: Mapping[str, Any]) -> str:
    """sha256 over the bound canonical JSON of ``body`` (every key but ``digest``)."""
    canon = json.dumps({k: v for k, v in body.items() if k != "digest"}, sort_keys=True)
    return _sha256(bind(domain, canon))


def seal_pool_manifest(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """The pool manifest with its format and the digest that covers it."""
    body = {**manifest, "format": POOL_FORMAT}
    return {**body, "digest": _digest(_POOL_DOMAIN, body)}


@dataclass(frozen=True)
class RunDirInfo:
    """What :func:`verify_run_dir` found: a run directory whose files match its manifest."""

    path: Path
    format: str
    iteration: int
    finished: bool
    files: Mapping[str, Mapping[str, Any]]
    config_sha256: str
    #: bytes of metrics.jsonl past the committed length (an iteration in flight at a crash)
    metrics_tail: int = 0
    #: checkpoint files whose move out of checkpoint/.next was interrupted
    pending: tuple[str, ...] = ()
    #: finished run only: the verified pool manifest
    pool_manifest: Mapping[str, Any] | None = field(default=None)

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG

    @property
    def has_checkpoint(self) -> bool:
        return STATE in self.files

    def summary(self) -> dict[str, Any] | None:
        if not self.finished:
            return None
        return _read_json(self.path / SUMMARY)

    def metrics(self) -> list[dict[str, Any]]:
        """The committed metrics lines (verified)."""
        path = self.path / METRICS
        if not path.exists():
            return []
        size = int(self.files.get(METRICS, {}).get("bytes", 0))
        data = path.read_bytes()[:size]
        return [json.loads(ln) for ln in data.decode("utf-8").splitlines() if ln.strip()]

    def checkpoint(self) -> tuple[dict[str, Any], dict[str, NDArray[np.float32]]]:
        """The verified checkpoint: state.json and the global models."""
        state = _read_json(self.path / STATE)
        try:
            with np.load(self.path / GLOBALS, allow_pickle=False) as npz:
                globals_ = {k: npz[k].astype(np.float32) for k in npz.files}
        except (OSError, ValueError) as exc:
            raise RunDirError(self.path / GLOBALS, f"not a readable weights file: {exc}") from None
        return state, globals_


def _read_json(path: Path) -> dict[str, Any]:
    try:
        obj = json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise RunDirError(path, "missing") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunDirError(path, f"not valid JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise RunDirError(path, "not a JSON object")
    return obj


def _safe_rel(root: Path, rel: str, *, manifest: str) -> None:
    """A manifest names files inside its directory only (no absolute paths, no ``..``)."""
    parts = Path(rel).parts
    if not parts or Path(rel).is_absolute() or ".." in parts:
        raise RunDirError(root / manifest, f"names a file outside its directory: {rel!r}")


def _check_file(root: Path, rel: str, entry: Mapping[str, Any], *, manifest: str) -> None:
    _safe_rel(root, rel, manifest=manifest)
    path = root / rel
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise RunDirError(path, f"missing (recorded in {manifest})") from None
    except OSError as exc:
        raise RunDirError(path, f"cannot be read: {exc.strerror or exc}") from None
    if len(data) != entry.get("bytes") or _sha256(data) != entry.get("sha256"):
        raise RunDirError(
            path,
            f"does not match {manifest} ({len(data)} bytes, recorded {entry.get('bytes')}): "
            "edited, truncated or replaced since the run wrote it",
        )


def verify_pool_dir(pool_dir: Path) -> dict[str, Any]:
    """Check a pool directory against its manifest; return the manifest.

    Works on a pool copied out of its run directory (what an observer receives).
    Raises :class:`RunDirError` naming the bad file.
    """
    mpath = pool_dir / "manifest.json"
    if not pool_dir.is_dir():
        raise RunDirError(pool_dir, "not a directory")
    manifest = _read_json(mpath)
    if manifest.get("format") != POOL_FORMAT:
        raise RunDirError(
            mpath, f"format {manifest.get('format')!r} is not {POOL_FORMAT!r} (not a pool)"
        )
    if manifest.get("digest") != _digest(_POOL_DOMAIN, manifest):
        raise RunDirError(mpath, "edited: its digest does not match its content")
    models = manifest.get("models")
    if not isinstance(models, list):
        raise RunDirError(mpath, "has no list of models")
    for m in models:
        if not isinstance(m, dict) or "/" in str(m.get("file", "/")):
            raise RunDirError(mpath, f"a model entry without a plain file name: {m!r:.80}")
        _check_file(pool_dir, str(m["file"]), m, manifest="manifest.json")
    return manifest


def verify_run_dir(path: Path, *, repair: bool = False) -> RunDirInfo:
    """Check a run directory against its manifest and return what it holds.

    Verifies the format version, the manifest's digest, the sha256 and size of every
    recorded file (config, checkpoint, metrics, summary, pool and its weight files),
    that the checkpoint's iteration and the metrics history agree with the manifest,
    and that no result file is present that the manifest does not cover.

    ``repair`` (used by ``--resume`` only) accepts the two states a crash can leave:
    metrics lines past the committed length, and checkpoint files still waiting in
    ``checkpoint/.next``; without it the latter is an error that says how to finish it.
    Raises :class:`RunDirError` (a :class:`ConfigError`) naming the file.

    Security: detects any change to a recorded file (sha256) and to the manifest itself
    (its digest over the bound canonical content), and never reads outside ``path``. It
    assumes nobody recomputes the manifest on purpose: there is no key, so it is an
    integrity check against accidents, not an authenticity check against whoever
    controls the directory.
    """
    path = Path(path)
    if not path.is_dir():
        raise RunDirError(path, "not a directory" if path.exists() else "no such directory")
    mpath = path / MANIFEST
    if not mpath.exists():
        what = (
            "missing: deleted, or written by a version without run manifests"
            if (path / CONFIG).exists()
            else "missing: not a SecurePool run directory"
        )
        raise RunDirError(mpath, what)
    manifest = _read_json(mpath)
    if manifest.get("format") != RUN_FORMAT:
        raise RunDirError(
            mpath, f"format {manifest.get('format')!r} is not {RUN_FORMAT!r} (another version?)"
        )
    if manifest.get("digest") != _digest(_RUN_DOMAIN, manifest):
        raise RunDirError(mpath, "edited: its digest does not match its content")
    files: dict[str, dict[str, Any]] = manifest.get("files", {})
    iteration = int(manifest.get("iteration", -1))
    finished = manifest.get("state") == "finished"
    if CONFIG not in files:
        raise RunDirError(mpath, "does not record config.toml")
    if iteration > 0 and not {STATE, GLOBALS} <= set(files):
        raise RunDirError(mpath, f"records iteration {iteration} but no checkpoint")
    pending: list[str] = []
    metrics_tail = 0
    for rel, entry in sorted(files.items()):
        if rel == METRICS:
            metrics_tail = _check_metrics(path, entry, iteration)
            continue
        if rel in (STATE, GLOBALS):
            # A staged file that matches run.json is a commit a crash interrupted; one
            # that does not is an iteration that never reached its commit point, which
            # says nothing about the committed file and is dropped by ``--resume``.
            staged = path / NEXT / Path(rel).name
            if _matches(staged, entry) and not _matches(path / rel, entry):
                if not repair:
                    raise RunDirError(
                        path / rel,
                        "the last checkpoint was interrupted while being committed; "
                        f"`securepool run --resume {path}` completes it",
                    )
                pending.append(rel)
                continue
        _check_file(path, rel, entry, manifest=MANIFEST)
    if iteration > 0 and not pending:
        state = _read_json(path / STATE)
        if state.get("iteration") != iteration:
            raise RunDirError(
                path / STATE,
                f"iteration {state.get('iteration')!r} but run.json records {iteration}",
            )
    if iteration > 0 and METRICS not in files:
        raise RunDirError(mpath, "records a checkpoint but no metrics.jsonl")
    pool_manifest = None
    if finished:
        for rel in (SUMMARY, POOL_MANIFEST):
            if rel not in files:
                raise RunDirError(mpath, f"a finished run must record {rel}")
        pool_manifest = verify_pool_dir(path / "pool")
    elif not repair:
        for rel in (SUMMARY, POOL_MANIFEST):
            if (path / rel).exists():
                raise RunDirError(
                    path / rel,
                    "not recorded in run.json: the run was interrupted while finishing "
                    f"(`securepool run --resume {path}` finishes it) or the file was added",
                )
    return RunDirInfo(
        path=path,
        format=RUN_FORMAT,
        iteration=iteration,
        finished=finished,
        files=files,
        config_sha256=str(files[CONFIG]["sha256"]),
        metrics_tail=metrics_tail,
        pending=tuple(pending),
        pool_manifest=pool_manifest,
    )


def _matches(path: Path, entry: Mapping[str, Any]) -> bool:
    try:
        data = path.read_bytes()
    except OSError:
        return False
    return len(data) == entry.get("bytes") and _sha256(data) == entry.get("sha256")


def _check_metrics(root: Path, entry: Mapping[str, Any], iteration: int) -> int:
    """Verify the committed prefix of metrics.jsonl; return the uncommitted tail length."""
    path = root / METRICS
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise RunDirError(path, f"missing (recorded in {MANIFEST})") from None
    size = int(entry.get("bytes", -1))
    if len(data) < size:
        raise RunDirError(
            path, f"truncated: {len(data)} bytes, run.json records {size} (history lost)"
        )
    if _sha256(data[:size]) != entry.get("sha256"):
        raise RunDirError(path, "does not match run.json: edited since the run wrote it")
    try:
        lines = [json.loads(ln) for ln in data[:size].decode("utf-8").splitlines() if ln.strip()]
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunDirError(path, f"not valid JSON lines ({exc})") from None
    seen = [ln.get("iteration") for ln in lines]
    if seen != list(range(1, iteration + 1)):
        raise RunDirError(path, f"holds iterations {seen}, run.json records 1..{iteration}")
    return len(data) - size


class RunDir:
    """Writes a run directory, one committed iteration at a time (see the module doc)."""

    def __init__(self, final: Path, work: Path, manifest: dict[str, Any]) -> None:
        self.final = final
        self.work = work  # == final once the first checkpoint is committed (or in place)
        self._manifest = manifest
        self._created: list[Path] = []  # parents of final made by this run
        #: a checkpoint is committed in ``final``: abandon() leaves the directory alone
        self._kept = work == final

    @property
    def staging(self) -> bool:
        return self.work != self.final

    @property
    def iteration(self) -> int:
        return int(self._manifest["iteration"])

    # --- creating and opening ------------------------------------------------------------

    @staticmethod
    def out_problems(final: Path) -> list[str]:
        """Why ``final`` cannot become a new run directory (checked before any write)."""
        if final.exists():
            if not final.is_dir():
                return [f"--out {final} exists and is a file, not a directory"]
            if any(final.iterdir()):
                return [
                    f"output directory {final} already exists and is not empty; use "
                    f"--resume {final} to continue it, or choose a new --out"
                ]
            if not os.access(final, os.W_OK | os.X_OK):
                return [f"cannot write in --out {final}: no permission"]
            return []
        anc = final.parent
        while not anc.exists():
            if anc == anc.parent:
                break
            anc = anc.parent
        if not anc.is_dir():
            return [f"cannot create --out {final}: {anc} is a file, not a directory"]
        if not os.access(anc, os.W_OK | os.X_OK):
            return [f"cannot create --out {final}: no permission to write in {anc}"]
        return []

    @classmethod
    def create(cls, final: Path, config_text: str) -> RunDir:
        """Start a run with config.toml: in a hidden staging directory beside ``final``,
        or inside ``final`` itself when it exists (empty: checked), which is then never
        renamed over (a mount point cannot be)."""
        problems = cls.out_problems(final)
        if problems:
            raise ConfigError(problems)
        in_place = final.is_dir()
        created: list[Path] = []
        work = final
        rd: RunDir | None = None
        try:
            if not in_place:
                missing = [p for p in [final.parent, *final.parent.parents] if not p.exists()]
                for p in reversed(missing):
                    p.mkdir()
                    created.append(p)
                work = final.parent / f".{final.name}.partial-{secrets.token_hex(4)}"
                work.mkdir(mode=0o700)
                created.append(work)  # removed below if the run object is never made
            # the coordinator's run directory is its own: checkpoints, the pool, the
            # trust check's flags (issue 27); an existing empty --out of ours is tightened
            if work.stat().st_uid == os.geteuid():
                os.chmod(work, 0o700)
            rd = cls(final, work, {"format": RUN_FORMAT, "iteration": 0, "state": "running"})
            rd._created = [p for p in created if p != work]
            rd._kept = False
            data = config_text.encode("utf-8")
            write_atomic(work / CONFIG, data)
            rd._manifest["files"] = {CONFIG: _entry(data)}
            rd._commit()
        except BaseException as exc:  # a write that fails, or Ctrl-C / SIGTERM right here
            if rd is not None:
                rd.abandon()
            else:  # a SIGTERM between the staging folder's mkdir and the run object
                for p in reversed(created):
                    if p == work:
                        shutil.rmtree(p, ignore_errors=True)
                    else:
                        p.rmdir()
            if isinstance(exc, OSError):
                raise ConfigError([f"cannot create --out {final}: {exc.strerror or exc}"]) from None
            raise
        return rd

    @classmethod
    def open(cls, path: Path) -> tuple[RunDir, RunDirInfo]:
        """Reopen a verified, unfinished run directory for ``--resume``."""
        info = verify_run_dir(path, repair=True)
        if info.finished:
            raise RunDirError(
                path / MANIFEST, "this run is finished (summary.json, pool/): nothing to resume"
            )
        for rel in info.pending:  # finish a checkpoint commit a crash interrupted
            os.replace(path / NEXT / Path(rel).name, path / rel)
        shutil.rmtree(path / NEXT, ignore_errors=True)
        if info.metrics_tail:  # an iteration that never committed
            size = int(info.files[METRICS]["bytes"])
            write_atomic(path / METRICS, (path / METRICS).read_bytes()[:size])
        manifest = _read_json(path / MANIFEST)
        return cls(path, path, manifest), verify_run_dir(path)

    def abandon(self) -> None:
        """Remove what this run created, if it never committed a checkpoint to ``final``
        (written in place: empty ``final`` again, which was empty when the run began)."""
        if self._kept:
            return
        if not self.staging:
            for child in self.work.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    child.unlink(missing_ok=True)
            return
        shutil.rmtree(self.work, ignore_errors=True)
        for p in reversed(self._created):
            try:
                p.rmdir()
            except OSError:
                break

    # --- writing ---------------------------------------------------------------------------

    def commit_iteration(
        self,
        *,
        metrics_line: Mapping[str, Any],
        state: Mapping[str, Any],
        globals_: Mapping[str, NDArray[np.float32]],
    ) -> None:
        """Append one metrics line and replace the checkpoint, as one commit."""
        w = self.work
        with (w / METRICS).open("ab") as fh:
            fh.write((json.dumps(metrics_line, sort_keys=True) + "\n").encode())
            fh.flush()
            os.fsync(fh.fileno())
        nxt = w / NEXT
        nxt.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        np.savez(buf, **dict(globals_))  # type: ignore[arg-type]
        blobs = {
            GLOBALS: buf.getvalue(),
            STATE: (json.dumps(state, indent=2, sort_keys=True) + "\n").encode(),
        }
        for rel, data in blobs.items():
            write_atomic(nxt / Path(rel).name, data)
        metrics = (w / METRICS).read_bytes()
        files = dict(self._manifest["files"])
        files[METRICS] = _entry(metrics)
        for rel, data in blobs.items():
            files[rel] = _entry(data)
        self._manifest["files"] = files
        self._manifest["iteration"] = int(state["iteration"])
        self._commit()  # the commit point
        for rel in blobs:
            os.replace(nxt / Path(rel).name, w / rel)
        nxt.rmdir()
        self._publish()

    def write_pool(
        self, *, manifest: Mapping[str, Any], weights: Mapping[str, NDArray[np.float32]]
    ) -> dict[str, Any]:
        """Write pool/ (one .npy per model, the manifest covering them) atomically."""
        final = self.work / "pool"
        staging = self.work / ".pool.tmp"
        if staging.exists():
            shutil.rmtree(staging)
        staging.mkdir()
        models = []
        for entry in manifest["models"]:
            data = npy_bytes(weights[entry["id"]])
            name = f"{entry['id']}.npy"
            write_atomic(staging / name, data)
            models.append({**entry, "file": name, **_entry(data)})
        sealed = seal_pool_manifest({**manifest, "models": models})
        write_json(staging / "manifest.json", sealed)
        if final.exists():
            shutil.rmtree(final)
        os.replace(staging, final)
        return sealed

    def finish(self, summary: Mapping[str, Any]) -> None:
        """Write summary.json and mark the run finished (pool/ is written before)."""
        write_json(self.work / SUMMARY, summary)
        files = dict(self._manifest["files"])
        for rel in (SUMMARY, POOL_MANIFEST):
            files[rel] = _entry((self.work / rel).read_bytes())
        tdir = self.work / "transcripts"
        if tdir.is_dir():
            for t in sorted(tdir.glob("*.jsonl")):
                files[f"transcripts/{t.name}"] = _entry(t.read_bytes())
        self._manifest["files"] = files
        self._manifest["state"] = "finished"
        self._commit()
        self._publish()

    def _commit(self) -> None:
        body = {k: v for k, v in self._manifest.items() if k != "digest"}
        self._manifest = {**body, "digest": _digest(_RUN_DOMAIN, body)}
        write_json(self.work / MANIFEST, self._manifest)

    def _publish(self) -> None:
        """Move the staging directory to its final name (the first commit only)."""
        if self.staging:
            os.replace(self.work, self.final)  # ``final`` does not exist (or it is in place)
            self.work = self.final
        self._kept = True


def _entry(data: bytes) -> dict[str, Any]:
    return {"sha256": _sha256(data), "bytes": len(data)}


__all__ = [
    "POOL_FORMAT",
    "RUN_FORMAT",
    "RunDir",
    "RunDirError",
    "RunDirInfo",
    "seal_pool_manifest",
    "verify_pool_dir",
    "verify_run_dir",
]
