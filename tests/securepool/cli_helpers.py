"""Helpers for the command-line tests that meet the CLI as a user does: a config of
three breast_cancer models, a child process, a pseudo-terminal."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: a logreg and an mlp16 on ``{dataset}``, one iteration, every model accepted
SMALL_POOL = """
[run]
seed = 4
[data]
dataset = "{dataset}"
participants = 6
[[pool.models]]
id = "lr"
arch = "logreg"
seed = 1
[[pool.models]]
id = "mlp"
arch = "mlp"
seed = 2
hidden = 16
[training]
epochs = 2
lr = 0.3
momentum = 0.9
[convergence]
max_iterations = 1
[acceptance]
max_error_bound = 1.0
"""

#: breast_cancer, three models, the run goes to its cap
BC = """
[run]
seed = 2
{run}
[data]
dataset = "breast_cancer"
participants = {participants}
{data}
[[pool.models]]
id = "logreg"
arch = "logreg"
seed = 1
[[pool.models]]
id = "mlp16"
arch = "mlp"
seed = {seed16}
hidden = {hidden}
[[pool.models]]
id = "mlp32"
arch = "mlp"
seed = 3
hidden = 32
[training]
epochs = {epochs}
[convergence]
error_range = [0.0, 0.0001]
max_iterations = {cap}
[acceptance]
max_error_bound = 1.0
{tail}
"""


def config(tmp: Path, name: str = "c.toml", **kw: object) -> Path:
    values: dict[str, object] = {
        "run": "",
        "participants": 6,
        "data": "",
        "hidden": 16,
        "seed16": 2,
        "epochs": 1,
        "cap": 1,
        "tail": "",
    }
    values.update(kw)
    path = tmp / name
    path.write_text(BC.format(**values))
    return path


def env(columns: int = 200) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": str(columns)}


def start(*args: str, cwd: Path, columns: int = 200) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "securepool.cli", *args],
        cwd=cwd,
        env=env(columns),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen[str], timeout: float = 120) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"timed out; stderr: {err[-2000:]}")
    return proc.returncode, out, err


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err and "Warning" not in err
    return lines[0]


def in_a_terminal(args: list[str], cwd: Path, *, columns: int = 80) -> tuple[int, str]:
    """Run the CLI with stdout and stderr on a pseudo-terminal; its exit code and output."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "securepool.cli", *args],
        cwd=cwd,
        env={**env(columns), "LINES": "24", "TERM": "xterm"},
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=slave,
    )
    os.close(slave)
    chunks = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.5)
        if ready:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
    os.close(master)
    try:
        code = proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("the CLI did not finish in a terminal")
    return code, b"".join(chunks).decode("utf-8", "replace")
