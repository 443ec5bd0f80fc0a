"""Run a bench's measurement from another source tree (``--against TREE``).

A child process with ``PYTHONPATH=TREE`` imports that tree's ``securepool`` (e.g. a ``git
worktree`` of an earlier commit) and runs ``code``, which prints one JSON object as its
last line of output: the before/after of a change measured in one run, on one load.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any


def run_in_tree(tree: Path, code: str, args: list[str], *, cwd: Path) -> dict[str, Any]:
    """``python -c code *args`` over source tree ``tree``; its last stdout line, parsed.
    RuntimeError (with the end of its stderr) if the child fails."""
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        env={**os.environ, "PYTHONPATH": str(tree.resolve())},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{tree}: {done.stderr.strip()[-400:]}")
    out: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return out
