"""README "Python API": the example it shows is examples/api_example.py, verbatim, and
that file runs as a user runs it (a fresh interpreter, a new output directory), saying
what the pool it trained does on raw rows."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
from sklearn.datasets import load_breast_cancer

import securepool

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "api_example.py"


def test_the_readme_shows_the_example_file_verbatim() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    start = readme.index("### Python API")
    blocks = re.findall(r"```python\n(.*?)```", readme[start:], flags=re.S)
    assert blocks and blocks[0] == EXAMPLE.read_text(encoding="utf-8")


def test_the_example_runs_and_reports_what_its_pool_does(tmp_path: Path) -> None:
    out = tmp_path / "api-demo"
    proc = subprocess.run(
        [sys.executable, str(EXAMPLE), str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    # logging.basicConfig in the example: the library's records on stderr
    assert "securepool.runner: iteration 1/6: test error lr " in proc.stderr
    assert f"securepool.pool: loaded pool {out / 'pool'}" in proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    pool = securepool.load_pool(out)
    x, y = load_breast_cancer(return_X_y=True)
    vote = round(float(np.mean(pool.predict(x) == y)), 3)
    expected = [
        f"iterations {summary['iterations']} converged {summary['converged']}",
        f"pool {summary['pool']} best held-out accuracy {summary['best_accuracy']}",
        "classes [0 1] features 30",
        f"first rows' class probabilities {pool.predict_proba(x[:3]).round(3).tolist()}",
        f"pool vote accuracy on all 569 rows {vote}",
        *(
            f"{mid} accuracy {round(float(np.mean(m.predict(x) == y)), 3)}"
            for mid, m in pool.models.items()
        ),
    ]
    assert proc.stdout.splitlines() == expected
    assert summary["pool"] == list(pool.models)
    assert vote > 0.8  # a real classifier (always the majority class: 0.627)
