"""threat_model.md's claims index: every named test and audit check exists."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from securepool.audit.command import CHECKS

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "threat_model.md"
TEST_REF = re.compile(r"\[test: (tests/[\w/]+\.py)::(test_\w+)\]")
AUDIT_REF = re.compile(r"\[audit: (\w+)\]")
BARE = re.compile(r"`(?:tests/[\w/]+\.py::)?(test_\w+)`")


def _functions(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {
        n.name
        for n in ast.walk(tree)
        if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n.name.startswith("test_")
    }


def missing_references(text: str, root: Path) -> list[str]:
    """Every annotation of ``text`` that names no existing test or audit check."""
    problems = []
    for file, name in TEST_REF.findall(text):
        path = root / file
        if not path.is_file():
            problems.append(f"[test: {file}::{name}]: no such file")
        elif name not in _functions(path):
            problems.append(f"[test: {file}::{name}]: no such test in {file}")
    problems += [
        f"[audit: {c}]: no such audit check" for c in AUDIT_REF.findall(text) if c not in CHECKS
    ]
    everywhere = set().union(*(_functions(p) for p in (root / "tests").rglob("test_*.py")))
    problems += [
        f"`{name}`: no test of that name under tests/"
        for name in sorted(set(BARE.findall(text)))
        if name not in everywhere
    ]
    return problems


def test_every_named_test_and_audit_check_exists() -> None:
    text = DOC.read_text(encoding="utf-8")
    assert TEST_REF.search(text) and AUDIT_REF.search(text), "the claims index is missing"
    assert missing_references(text, ROOT) == []


@pytest.mark.parametrize(
    "line",
    [
        "[test: tests/test_layering.py::test_no_such_thing]",
        "[test: tests/nowhere.py::test_x]",
        "[audit: telepathy]",
        "a claim (`test_that_was_renamed_long_ago`)",
    ],
)
def test_the_checker_catches_a_dangling_reference(line: str) -> None:
    assert len(missing_references(line, ROOT)) == 1
