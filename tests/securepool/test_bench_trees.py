"""The benches' ``--against TREE``: a child process imports that tree's securepool."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from securepool.bench.trees import run_in_tree

ROOT = Path(__file__).resolve().parents[2]
WHERE = "import json, securepool; print('noise'); print(json.dumps({'file': securepool.__file__}))"


def test_the_child_imports_the_named_tree_and_its_last_line_is_the_result(tmp_path: Path) -> None:
    other = tmp_path / "other"
    shutil.copytree(
        ROOT / "securepool", other / "securepool", ignore=shutil.ignore_patterns("*.pyc")
    )
    got = run_in_tree(other, WHERE, [], cwd=tmp_path)
    assert Path(got["file"]).resolve() == (other / "securepool" / "__init__.py").resolve()


def test_a_failing_child_is_a_runtime_error_with_its_stderr(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="boom"):
        run_in_tree(ROOT, "raise SystemExit('boom')", [], cwd=tmp_path)
