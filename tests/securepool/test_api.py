"""The Python API: ``securepool.run`` (a path, a TOML string or a dict), the pool
estimator-style (``predict`` / ``predict_proba`` on raw numpy or DataFrame rows,
``classes_``, ``n_features_in_``, per model), its refusals, logging, ``--version``."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from enum import Enum
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cli_helpers import ROOT, SMALL_POOL
from sklearn.datasets import load_breast_cancer

import securepool
from crypto.errors import ConfigError
from securepool.api import _dict_to_toml
from securepool.cli import main
from securepool.config import parse_config
from securepool.runner import INSECURE_BANNER

TEXT = SMALL_POOL.format(dataset="breast_cancer")


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, Any], list]]:
    """One short real run from a TOML string, with the library's log records."""
    out = tmp_path_factory.mktemp("api") / "run"
    handler = _Records()
    logger = logging.getLogger("securepool")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        summary = securepool.run(TEXT, out=out)
        securepool.load_pool(out)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    yield out, summary, handler.records


def test_run_returns_the_summary_and_stores_the_toml_text(ran: tuple) -> None:
    out, summary, _ = ran
    assert summary == json.loads((out / "summary.json").read_text())
    assert (out / "config.toml").read_text() == TEXT
    assert summary["iterations"] == 1 and summary["pool"] == ["lr", "mlp"]


def test_the_library_logs_under_securepool(ran: tuple) -> None:
    _, _, records = ran
    said = [(r.name, r.levelno, r.getMessage()) for r in records]
    assert any(n == "securepool.runner" and m.startswith("run into ") for n, _, m in said)
    assert any(
        n == "securepool.runner" and m.startswith("iteration 1/1: test error lr ")
        for n, _, m in said
    )
    finished = [(lv, m) for n, lv, m in said if m.startswith("finished after 1 iterations")]
    assert finished == [(logging.WARNING, finished[0][1])]  # not converged: a warning
    assert any(n == "securepool.pool" and m.startswith("loaded pool ") for n, _, m in said)


def test_the_pool_follows_scikit_learn_conventions_on_raw_rows(ran: tuple) -> None:
    out, _, _ = ran
    pool = securepool.load_pool(out)
    x, _ = load_breast_cancer(return_X_y=True)
    assert pool.n_features_in_ == 30 and pool.classes_.tolist() == [0, 1]
    predicted = pool.predict(x)
    assert predicted.shape == (569,) and set(np.unique(predicted)) <= {0, 1}
    proba = pool.predict_proba(x)
    assert proba.shape == (569, 2) and proba.dtype == np.float64
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_array_equal(pool.predict(x.tolist()), predicted)  # a list of rows
    for m in pool.models.values():
        assert m.n_features_in_ == 30
        np.testing.assert_array_equal(m.predict(x), m.predict_proba(x).argmax(axis=1))


class FakeFrame:
    """What the pool reads of a pandas DataFrame (pandas is not a dependency)."""

    def __init__(self, x: np.ndarray, columns: list[str] | None = None) -> None:
        self.columns = columns or [f"c{i}" for i in range(x.shape[1])]
        self._x = x

    def __getitem__(self, names: list[str]) -> FakeFrame:
        return FakeFrame(self._x[:, [self.columns.index(n) for n in names]], list(names))

    def to_numpy(self) -> np.ndarray:
        return self._x


def test_a_dataframe_is_read_like_its_values_and_its_column_names_bad_cells(ran: tuple) -> None:
    out, _, _ = ran
    pool = securepool.load_pool(out)
    x, _ = load_breast_cancer(return_X_y=True)
    np.testing.assert_array_equal(pool.predict(FakeFrame(x[:20])), pool.predict(x[:20]))
    bad = x[:3].copy()
    bad[1, 2] = np.nan
    with pytest.raises(ConfigError, match=r"X\[1, 2\] \(c2\): nan is not a finite number"):
        pool.predict(FakeFrame(bad))


@pytest.mark.parametrize(
    ("rows", "words"),
    [
        (np.ones(30), "1-D array of shape (30,); one row is X.reshape(1, -1)"),
        (np.ones((2, 5)), "rows have 5 columns, the pool's models take 30"),
        (np.full((1, 30), np.inf), "X[0, 0]: inf is not a finite number"),
        (np.full((1, 30), -1.0), "X[0, 0]: -1.0 is negative; the pool's log1p preprocessing"),
        (np.full((1, 30), 1e300), "X[0, 0]: 1e+300 is too large"),
        ([["a"] * 30], "X: not a table of numbers"),
        (np.ones((0, 30)), "expected a table of rows"),
    ],
)
def test_bad_rows_are_refused_naming_the_cell(ran: tuple, rows: object, words: str) -> None:
    pool = securepool.load_pool(ran[0])
    for use in (pool.predict, pool.predict_proba, pool.models["lr"].predict):
        with pytest.raises(ConfigError) as info:
            use(rows)
        assert any(words in p for p in info.value.problems), info.value.problems


class Mode(Enum):
    MASK = "mask"


def test_a_dict_config_becomes_the_same_toml_config() -> None:
    table = {
        "data": {"dataset": "breast_cancer", "participants": np.int64(6)},
        "pool": {"models": [{"id": "lr", "arch": "logreg"}, {"id": "m", "arch": "mlp"}]},
        "convergence": {"error_range": (0.0, np.float64(0.2))},
        "aggregation": {"mode": Mode.MASK},
    }
    cfg = parse_config(__import__("tomllib").loads(_dict_to_toml(table)))
    assert cfg.data.participants == 6 and cfg.convergence.error_range == (0.0, 0.2)
    assert [m.id for m in cfg.pool.models] == ["lr", "m"]
    assert cfg.aggregation.mode.value == "mask"


@pytest.mark.parametrize(
    ("config", "out", "words"),
    [
        ({"data": {"participants": 1}}, "run", "participants must be >= 3, got 1"),
        ({"data": {"alpha": None}}, "run", "config.data.alpha: None (TOML has no null"),
        ({"data": {1: 2}}, "run", "config.data: key 1 is not a string"),
        ({"pool": {"models": [{"id": "a"}, 3]}}, "run", "a list mixing tables and values"),
        ("[data\n", "run", "<config string>: not valid TOML"),
        ("missing.toml", "run", "config file not found: missing.toml"),
        (3, "run", "config must be a path, a TOML string or a dict, not int"),
        (TEXT, "", "out is empty"),
        (TEXT, None, "out must be a path, not NoneType"),
    ],
)
def test_bad_input_is_a_config_error_and_nothing_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, config: Any, out: Any, words: str
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        securepool.run(config, out=out)
    assert any(words in p for p in info.value.problems), info.value.problems
    assert list(tmp_path.iterdir()) == []


def test_version_prints_the_installed_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out == f"securepool {version('securepool')}\n"
    assert securepool.__version__ == version("securepool")


def test_the_package_is_typed() -> None:
    from importlib.resources import files

    assert files("securepool").joinpath("py.typed").is_file()
    assert 'securepool = ["py.typed"]' in (ROOT / "pyproject.toml").read_text()


def test_the_command_line_says_the_banner_once_not_again_through_logging(
    tmp_path: Path,
) -> None:
    cfg = tmp_path / "c.toml"
    plain = TEXT.replace("participants = 6", "participants = 3").replace(
        "[convergence]", '[aggregation]\nmode = "plaintext"\n[convergence]'
    )
    cfg.write_text(plain)
    proc = subprocess.run(
        [sys.executable, "-m", "securepool.cli", "run", str(cfg), "--out", str(tmp_path / "r")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stderr  # the cap of one iteration: not converged
    both = " ".join((proc.stdout + proc.stderr).split())
    assert both.count("INSECURE BASELINE") == 1, both
    assert INSECURE_BANNER.split(":")[0] in both
    assert "securepool.runner" not in both and "iteration 1/1: test error" not in both


def test_a_pool_with_named_columns_and_classes_reads_a_dataframe_by_name(
    ran: tuple, tmp_path: Path
) -> None:
    """dataset = "csv" pools carry ``table`` (the classes' names, the input columns)."""
    import shutil

    from securepool.rundir import seal_pool_manifest

    shared = tmp_path / "shared"
    shutil.copytree(ran[0] / "pool", shared)
    m = json.loads((shared / "manifest.json").read_text())
    names = [f"f{i}" for i in range(30)]
    m["table"] = {"classes": ["benign", "malignant"], "columns": names}
    body = {k: v for k, v in m.items() if k not in ("format", "digest")}
    (shared / "manifest.json").write_text(json.dumps(seal_pool_manifest(body)))
    pool = securepool.load_pool(shared)
    assert pool.classes_.tolist() == ["benign", "malignant"]
    x, _ = load_breast_cancer(return_X_y=True)
    by_position = pool.predict(x[:40])
    assert set(by_position) <= {"benign", "malignant"}
    order = [*reversed(names), "extra"]
    shuffled = np.column_stack([x[:40, ::-1], np.zeros(40)])
    np.testing.assert_array_equal(pool.predict(FakeFrame(shuffled, order)), by_position)
    np.testing.assert_array_equal(
        pool.models["lr"].predict(FakeFrame(shuffled, order)), pool.models["lr"].predict(x[:40])
    )
    with pytest.raises(ConfigError, match="the DataFrame has no column"):
        pool.predict(FakeFrame(x[:2, :29], names[:29]))
