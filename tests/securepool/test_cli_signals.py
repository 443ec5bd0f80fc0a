"""SIGTERM (``kill``, ``timeout``, ``docker stop``) is handled as Ctrl-C, and ``--out`` on
an existing empty directory (a mount point) is written in place (issue 24, items 1 and 2):
runs in child processes sent SIGTERM by PID, and the CLI entry function with renaming
over a directory failing as it does on a mount point."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_helpers import config, finish, one_line, start

from securepool.cli import main

# --- 1. SIGTERM is handled as Ctrl-C -------------------------------------------------------


def _partials(parent: Path, name: str) -> list[Path]:
    return list(parent.glob(f".{name}.partial-*"))


def _wait_for(cond: object, proc: subprocess.Popen[str], what: str, limit: float = 90) -> None:
    deadline = time.monotonic() + limit
    while not cond():  # type: ignore[operator]
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"{what} never appeared: {proc.communicate()[1][-2000:]}")
        time.sleep(0.01)


@pytest.fixture(scope="module")
def sigterm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, tuple]]:
    """Three runs sent SIGTERM by PID: before the first checkpoint (new --out, and an
    existing empty --out written in place), and after it."""
    d = tmp_path_factory.mktemp("sigterm")
    slow = config(d, "slow.toml", participants=8, epochs=60, cap=3)  # a first iteration of s
    fast = config(d, "fast.toml", participants=6, epochs=1, cap=200)
    (d / "empty").mkdir()
    procs = {
        "early": start("run", str(slow), "--out", str(d / "early"), "--quiet", cwd=d),
        "in_place": start("run", str(slow), "--out", str(d / "empty"), "--quiet", cwd=d),
        "late": start("run", str(fast), "--out", str(d / "late"), "--quiet", cwd=d),
    }
    ready = {
        "early": lambda: bool(_partials(d, "early")),
        "in_place": lambda: (d / "empty" / "run.json").exists(),
        "late": lambda: (d / "late" / "run.json").exists(),
    }
    for name, proc in procs.items():
        _wait_for(ready[name], proc, name)
        os.kill(proc.pid, signal.SIGTERM)
    yield {name: (*finish(p, timeout=60), d) for name, p in procs.items()}


def test_sigterm_before_the_first_checkpoint_leaves_nothing(sigterm: dict) -> None:
    code, _, err, d = sigterm["early"]
    assert code == 143
    assert one_line(err).startswith("terminated (SIGTERM) before the first checkpoint; ")
    assert not (d / "early").exists()
    assert _partials(d, "early") == []  # no hidden .early.partial-* left behind


def test_sigterm_on_an_empty_existing_out_empties_it_again(sigterm: dict) -> None:
    code, _, err, d = sigterm["in_place"]
    assert code == 143
    assert "nothing was kept" in one_line(err)
    assert (d / "empty").is_dir() and list((d / "empty").iterdir()) == []
    assert _partials(d, "empty") == []


def test_sigterm_after_a_checkpoint_leaves_a_resumable_run(sigterm: dict) -> None:
    from securepool.rundir import verify_run_dir

    code, _, err, d = sigterm["late"]
    assert code == 143
    out = d / "late"
    assert one_line(err) == f"terminated (SIGTERM); resume with `securepool run --resume {out}`"
    info = verify_run_dir(out)
    assert not info.finished and info.iteration >= 1


# --- 2. --out on an existing empty directory (a mount point) -------------------------------


def test_an_empty_existing_out_is_written_in_place_never_renamed_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A mount point cannot be renamed over (EBUSY): the run must not need to."""
    from securepool.rundir import verify_run_dir

    real_replace, real_rename = os.replace, os.rename

    def busy(real: object) -> object:
        def call(src: object, dst: object, *a: object, **k: object) -> None:
            if Path(str(dst)).is_dir():
                raise OSError(errno.EBUSY, "Device or resource busy", str(dst))
            real(src, dst, *a, **k)  # type: ignore[operator]

        return call

    monkeypatch.setattr(os, "replace", busy(real_replace))
    monkeypatch.setattr(os, "rename", busy(real_rename))
    mount = tmp_path / "mnt"
    mount.mkdir()
    cfg = config(tmp_path, participants=4)
    assert main(["run", str(cfg), "--out", str(mount), "--quiet"]) == 1  # at its cap of 1
    info = verify_run_dir(mount)
    assert info.finished and info.iteration == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.toml", "mnt"]
