"""README "Train on your own data" runs as written (issue 24).

The section's shell block is run line by line, verbatim, in a copy of
examples/agencies/ (so ``runs/agencies`` lands in a temporary directory): the generator
rewrites the committed tables byte for byte, the run finishes, and its pool records the
federation's standardisation (computed by the statistics round under secure aggregation),
which is the agencies' pooled training records' mean and spread. The section's TOML
lines are the example config's."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "agencies"


def _section(text: str) -> str:
    start = text.index("## Train on your own data")
    end = text.find("\n## ", start + 3)
    return text[start : end if end >= 0 else len(text)]


def commands(section: str) -> list[str]:
    """The section's first ``sh`` block, one command a line (comments dropped)."""
    block = re.findall(r"```sh\n(.*?)```", section, flags=re.S)[0]
    return [ln.strip() for ln in block.splitlines() if ln.strip() and not ln.startswith("#")]


def run_section(section: str, tmp: Path) -> None:
    shutil.copytree(EXAMPLE, tmp / "examples" / "agencies")
    (tmp / ".venv").symlink_to(sys.prefix)  # the commands name the repository's .venv/bin
    env = dict(os.environ)
    for command in commands(section):
        done = subprocess.run(
            command, shell=True, cwd=tmp, env=env, capture_output=True, text=True, timeout=180
        )
        # `securepool run` exits 1 when it finished without converging (README, exit codes)
        ok = (0, 1) if command.startswith(".venv/bin/securepool run ") else (0,)
        assert done.returncode in ok, (command, done.stdout[-2000:], done.stderr[-2000:])
    for f in sorted(EXAMPLE.rglob("*.csv")):  # the generator is seeded: the same bytes
        assert (tmp / f.relative_to(ROOT)).read_bytes() == f.read_bytes(), f
    config = (EXAMPLE / "config.toml").read_text(encoding="utf-8")
    toml = re.findall(r"```toml\n(.*?)```", section, flags=re.S)[0]
    for line in toml.splitlines():
        assert line in config.splitlines(), line
    run = tmp / "runs" / "agencies"
    summary = json.loads((run / "summary.json").read_text(encoding="utf-8"))
    assert summary["iterations"] >= 1
    manifest = json.loads((run / "pool" / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["dataset"] == "csv"
    assert manifest["table"]["label"] == "cultivar"
    assert manifest["table"]["classes"] == ["class_0", "class_1", "class_2"]
    from securepool.preprocessing import Preprocessing

    pre = Preprocessing.from_json(manifest["preprocessing"])  # what load_pool applies
    pooled = np.concatenate(
        [
            np.loadtxt(f, delimiter=",", skiprows=1, usecols=range(13))
            for f in sorted((EXAMPLE / "data").glob("*.csv"))
        ]
    )
    # the statistics are of the training splits (a fifth of each file is its local
    # test): close to the pooled files' mean and spread, not equal
    assert np.allclose(pre.offset, pooled.mean(axis=0), rtol=0.1, atol=0.05 * pooled.std(axis=0))
    assert np.allclose(pre.divisor, pooled.std(axis=0), rtol=0.15)


def test_readme_train_on_your_own_data(tmp_path: Path) -> None:
    run_section(_section((ROOT / "README.md").read_text(encoding="utf-8")), tmp_path)
