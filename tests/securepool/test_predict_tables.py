"""A pool of agency tables predicts on rows as the agencies hold them (issue 24): a file
or rows with the feature columns by name and categories as their values, one-hot encoded
over the manifest's vocabulary and scaled by the federation's standardisation; the
model's own inputs still work; an unknown category is named by row and column."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from table_helpers import COLOURS, HEADER, rows

from crypto.errors import ConfigError
from securepool import load_pool
from securepool.cli import main


@pytest.fixture(scope="module")
def pool_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("tables")
    (tmp / "agencies").mkdir()
    for a in range(3):
        (tmp / "agencies" / f"agency{a + 1}.csv").write_text(HEADER + rows(12, a * 100))
    (tmp / "holdout.csv").write_text(HEADER + rows(6, 1000))
    (tmp / "run.toml").write_text(
        f"""
[data]
dataset = "csv"
path = "{tmp / "agencies"}"
label = "kind"
min_records = 4
categorical = {{ colour = ["red", "white", "rose"] }}
[evaluation]
holdout = "{tmp / "holdout.csv"}"
[[pool.models]]
id = "logreg"
arch = "logreg"
[acceptance]
max_error_bound = 1.0
[convergence]
max_iterations = 1
"""
    )
    assert main(["run", str(tmp / "run.toml"), "--out", str(tmp / "run")]) in (0, 1)
    return tmp / "run"


def _one_hot(rows: list[list[Any]]) -> np.ndarray:
    return np.array(
        [[r[0], *(1.0 if r[1] == c else 0.0 for c in COLOURS), r[2]] for r in rows], dtype=float
    )


class _Frame:
    """The two things the pool reads of a DataFrame (pandas is not a dependency)."""

    def __init__(self, columns: list[str], rows: list[list[Any]]) -> None:
        self.columns, self._rows = columns, rows

    def __getitem__(self, names: list[str]) -> _Frame:
        at = [self.columns.index(n) for n in names]
        return _Frame(names, [[r[i] for i in at] for r in self._rows])

    def to_numpy(self, dtype: Any = None) -> np.ndarray:
        return np.array(self._rows, dtype=dtype)


def test_rows_as_the_agencies_hold_them_predict_like_the_models_inputs(pool_dir: Path) -> None:
    pool = load_pool(pool_dir)
    manifest = pool.manifest
    assert manifest["preprocessing"].get("offset"), "the federation's scaling is recorded"
    rows = [[3.5, "white", 70.0], [1000.5, "rose", 1e4], [55.0, "red", 0.0]]
    want = pool.predict_proba(_one_hot(rows))  # the model's inputs, as before
    assert np.allclose(pool.predict_proba(rows), want)
    frame = _Frame(["weight", "kind", "colour", "size"], [[r[2], "?", r[1], r[0]] for r in rows])
    assert np.allclose(pool.predict_proba(frame), want)
    with pytest.raises(ConfigError, match=r"unknown category 'blue'.*colour"):
        pool.predict([[1.0, "blue", 2.0]])


def test_predict_reads_a_file_like_the_agencies(
    pool_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = tmp_path / "new.csv"
    raw.write_text("colour,size,weight\nwhite,3.5,70\nrose,1000.5,10000\n")
    assert main(["predict", str(pool_dir), str(raw)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and lines[0].startswith("row,")
    bad = tmp_path / "bad.csv"
    bad.write_text("colour,size,weight\nblue,3.5,70\n")
    assert main(["predict", str(pool_dir), str(bad)]) == 2
    err = capsys.readouterr().err
    assert "line 2" in err and "unknown category 'blue'" in err
