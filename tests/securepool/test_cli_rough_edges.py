"""The rough edges a new user met (issue 24, items 3-9), each met again as a user would:
the CLI entry function (bad input, a pipe: captured stdout is not a terminal) or
``python -m securepool.cli`` on a pseudo-terminal, checking the exit code, the message
and what is left on disk. SIGTERM and ``--out`` on a mount point: test_cli_signals.py."""

from __future__ import annotations

import json
import re
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import ROOT, config, in_a_terminal, one_line

from securepool.cli import main

# --- 3. absurd sizes: exit 2 naming the key, before anything is built ----------------------


@pytest.mark.parametrize(
    ("kw", "key"),
    [
        ({"hidden": 100_000_000}, "pool.models[1].hidden = 100000000"),
        ({"participants": 10**20}, "data.participants = 100000000000000000000"),
        ({"run": f"torch_threads = {10**12}"}, "run.torch_threads must be <= 1024"),
        ({"tail": f"[trust]\nenabled = true\nsketch_dim = {10**12}"}, "trust.sketch_dim = "),
        ({"seed16": 10**20}, "pool.models[1].seed must be in 0 .. 2**63 - 1"),
    ],
)
def test_absurd_sizes_are_bad_input_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kw: dict, key: str
) -> None:
    cfg = config(tmp_path, **kw)
    out = tmp_path / "out"
    started = time.perf_counter()
    assert main(["run", str(cfg), "--out", str(out), "--quiet"]) == 2
    assert time.perf_counter() - started < 10  # estimated, not allocated
    line = one_line(capsys.readouterr().err)
    assert line.startswith(f"error: {key}"), line
    if "hidden" in key:
        assert "3,300,000,002 parameters" in line and "memory" in line
    assert not out.exists()


def test_size_estimates_match_the_models_and_the_data() -> None:
    from securepool.architecture import Architecture
    from securepool.config import Dataset
    from securepool.data import load_arrays
    from securepool.models import build_model
    from securepool.sizes import BUILTIN_RECORDS, parameters

    for dataset in (Dataset.DIGITS, Dataset.BREAST_CANCER):
        x, _ = load_arrays(dataset)
        assert BUILTIN_RECORDS[dataset.value] == x.shape[0]
        f, c = dataset.shape
        for arch, hidden in [(Architecture.LOGREG, None), (Architecture.MLP, 7)] + (
            [(Architecture.CNN, None)] if dataset is Dataset.DIGITS else []
        ):
            model = build_model(arch, n_features=f, n_classes=c, seed=0, hidden=hidden)
            real = sum(p.numel() for p in model.parameters())
            assert parameters(arch, n_features=f, n_classes=c, hidden=hidden) == real


# --- 4. bench secagg ---------------------------------------------------------------------


def test_bench_secagg_refuses_a_group_below_three(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "secagg", "--n", "2"]) == 2
    line = one_line(capsys.readouterr().err)
    assert "--n must be >= 3" in line and "got 2" in line


def test_bench_secagg_where_every_session_aborts_is_an_error_saying_why(
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = ["--n", "5", "--d", "50", "--dropout", "0.9", "--repeats", "2", "--seed", "1"]
    assert main(["bench", "secagg", *args]) == 1
    out = capsys.readouterr()
    assert out.out == ""  # no JSON object of nulls
    line = one_line(out.err)
    assert "every one of the 2 session(s) aborted" in line and "dropped:" in line


def test_bench_secagg_reports_why_some_sessions_aborted(
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = ["--n", "5", "--d", "50", "--dropout", "0.3", "--repeats", "3", "--seed", "3"]
    assert main(["bench", "secagg", *args]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["aborted"] == len(out["abort_reasons"]) == 1  # of 3
    assert all("dropped:" in r for r in out["abort_reasons"])
    assert out["server_s"] is not None and out["max_abs_error"] is not None


# --- 5 and 6. data refusals: true hints, before any progress display, fast -----------------


def test_iid_and_minimum_min_records_get_true_hints(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = config(tmp_path, participants=300, data="min_records = 2")
    assert main(["run", str(cfg), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    line = one_line(capsys.readouterr().err)
    assert "at most 227 participants" in line
    assert "alpha" not in line and "smaller min_records" not in line
    # the split itself (what a node computes) says the same true things
    from crypto.errors import ConfigError
    from securepool.config import DataSection, Dataset, Partition
    from securepool.data import partition

    iid = DataSection(dataset=Dataset.BREAST_CANCER, participants=300, min_records=2)
    with pytest.raises(ConfigError) as info:
        partition(iid, seed=1)
    (msg,) = info.value.problems
    assert "at most 227 participants" in msg and "alpha" not in msg
    assert "smaller min_records" not in msg
    skew = DataSection(
        dataset=Dataset.BREAST_CANCER,
        participants=40,
        partition=Partition.DIRICHLET,
        alpha=0.05,
        min_records=2,
    )
    with pytest.raises(ConfigError) as info:
        partition(skew, seed=1)
    (msg,) = info.value.problems
    assert "a larger alpha than 0.05" in msg and "smaller min_records" not in msg


def test_a_data_refusal_comes_before_any_progress_display(tmp_path: Path) -> None:
    cfg = config(tmp_path, participants=30, data='partition = "dirichlet"\nalpha = 0.1')
    code, text = in_a_terminal(["run", str(cfg), "--out", str(tmp_path / "o")], tmp_path)
    assert code == 2, text
    assert "below min_records=10" in text and "a larger alpha than 0.1" in text
    assert "iteration" not in text and "━" not in text
    assert not (tmp_path / "o").exists()


def test_a_multiprocess_run_refuses_its_data_before_starting_a_node(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """It used to start every node and run all its iterations with every node refusing."""
    cfg = config(
        tmp_path,
        run='runtime = "multiprocess"',
        participants=30,
        data='partition = "dirichlet"\nalpha = 0.1',
    )
    started = time.perf_counter()
    assert main(["run", str(cfg), "--out", str(tmp_path / "o")]) == 2
    assert time.perf_counter() - started < 10
    assert "below min_records=10" in one_line(capsys.readouterr().err)
    assert not (tmp_path / "o").exists()


# --- 7. 80 columns, in a pipe and in a terminal --------------------------------------------

_ITERATION = re.compile(
    r"^(it +\d+ \| test error( \S+ \d\.\d{3})+( \| groups( \S+:\d+)+)?|       \S.*)"
)


def test_piped_at_80_columns_no_bar_and_iteration_lines_fit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "80")  # stdout is captured: not a terminal, as in a pipe
    cfg = config(tmp_path, cap=2, participants=9)
    assert main(["run", str(cfg), "--out", str(tmp_path / "o")]) == 1
    out = capsys.readouterr().out
    assert "━" not in out and "…" not in out and "iterat" not in out.split("not converged")[0]
    lines = out.splitlines()
    block = lines[: next(i for i, ln in enumerate(lines) if ln.startswith("not converged"))]
    assert len([ln for ln in block if ln.startswith("it ")]) == 2
    for ln in block:
        assert len(ln) <= 80 and _ITERATION.match(ln), ln


def test_in_an_80_column_terminal_the_bar_is_whole(tmp_path: Path) -> None:
    cfg = config(tmp_path, cap=2, participants=9)
    code, text = in_a_terminal(["run", str(cfg), "--out", str(tmp_path / "o")], tmp_path)
    assert code == 1, text
    assert "iteration" in text and "━" in text  # a live display on a terminal
    assert "iterat…" not in text
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)
    for ln in re.split(r"[\r\n]+", plain):
        assert len(ln) <= 80 or not ln.startswith(("it ", "iteration")), ln


# --- 8. predict ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pool_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("pool")
    cfg = config(d, participants=4)
    assert main(["run", str(cfg), "--out", str(d / "run"), "--quiet"]) == 1
    return d / "run"


def _rows(n: int = 3) -> np.ndarray:
    from sklearn.datasets import load_breast_cancer

    return np.asarray(load_breast_cancer().data[:n], dtype=np.float64)


def _csv(path: Path, rows: list[list[str]], header: bool = True) -> Path:
    head = [",".join(f"f{i}" for i in range(30))] if header else []
    path.write_text("\n".join(head + [",".join(r) for r in rows]) + "\n")
    return path


def test_predict_refuses_empty_and_bad_values_naming_row_and_column(
    pool_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = [[repr(float(v)) for v in r] for r in _rows()]
    huge = [row[:] for row in good]
    huge[1][4] = "1e300"
    inf = [row[:] for row in good]
    inf[2][0] = "inf"
    negative = [row[:] for row in good]
    negative[0][7] = "-3"
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    header_only = tmp_path / "header.csv"
    header_only.write_text(",".join(f"f{i}" for i in range(30)) + "\n")
    npz = tmp_path / "huge.npz"
    x = _rows()
    x[2, 3] = 1e300
    np.savez(npz, x=x)
    cases = {
        empty: "empty: no rows to predict",
        header_only: "a header line and no data rows",
        _csv(tmp_path / "huge.csv", huge): "line 3, column 5 (f4): 1e+300 is too large",
        _csv(tmp_path / "inf.csv", inf): "line 4, column 1 (f0): inf is not a finite number",
        _csv(tmp_path / "neg.csv", negative): "line 2, column 8 (f7): -3.0 is negative",
        npz: "x[2, 3]: 1e+300 is too large",
    }
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no numpy warning on the way to the refusal
        for path, expected in cases.items():
            assert main(["predict", str(pool_dir), str(path)]) == 2, path
            out = capsys.readouterr()
            assert out.out == ""
            assert one_line(out.err) == f"error: {path}: {expected}" or (
                expected in one_line(out.err)
            )


def test_predict_output_file_and_probabilities(
    pool_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = _csv(tmp_path / "rows.csv", [[repr(float(v)) for v in r] for r in _rows(4)])
    target = tmp_path / "pred.csv"
    argv = ["predict", str(pool_dir), str(rows)]
    assert main([*argv, "--proba", "--output", str(target)]) == 0
    out = capsys.readouterr().out
    assert "4 row(s) predicted" in out and str(target) in out
    table = target.read_text().splitlines()
    models = ["logreg", "mlp16", "mlp32"]
    probs = [f"{m}_p{k}" for m in models for k in (0, 1)] + ["pool_p0", "pool_p1"]
    assert table[0].split(",") == ["row", *models, "vote", *probs]
    assert len(table) == 5
    for line in table[1:]:
        cells = line.split(",")
        p = np.array([float(v) for v in cells[5:]]).reshape(4, 2)
        assert np.allclose(p.sum(axis=1), 1.0, atol=1e-5)
        assert [int(v) for v in cells[1:4]] == list(p[:3].argmax(axis=1))
        assert np.allclose(p[3], p[:3].mean(axis=0), atol=1e-5)
    assert main(argv) == 0
    plain = capsys.readouterr().out.splitlines()
    assert plain[0] == "row,logreg,mlp16,mlp32,vote"
    assert [ln.split(",")[:5] for ln in table] == [ln.split(",") for ln in plain]
    assert main([*argv, "--output", str(tmp_path)]) == 2
    assert "is a directory: name a file" in one_line(capsys.readouterr().err)


# --- 9. empty paths, keygen on a directory, run with no arguments --------------------------


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["run"], "error: a CONFIG file is required: `securepool run CONFIG.toml --out DIR`"),
        (["run", "examples/breast_cancer.toml", "--out", ""], "error: --out is empty"),
        (["run", "examples/breast_cancer.toml"], "error: --out DIR is required"),
        (["keygen", "--out", ""], "error: --out is empty"),
        (["audit", "", "--out", "x"], "error: RUN_DIR is empty"),
        (["predict", "p", ""], "error: INPUT is empty"),
    ],
)
def test_paths_and_missing_arguments(
    argv: list[str],
    expected: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.chdir(ROOT)
    assert main(argv) == 2
    assert one_line(capsys.readouterr().err).startswith(expected)


def test_keygen_on_an_existing_directory_or_key_says_what_to_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = tmp_path / "keys"
    keys.mkdir()
    assert main(["keygen", "--out", str(keys)]) == 2
    line = one_line(capsys.readouterr().err)
    assert f"--out {keys} is a directory" in line and f"--out {keys / 'node.key'}" in line
    assert list(keys.iterdir()) == []
    assert main(["keygen", "--out", str(keys / "node.key")]) == 0
    capsys.readouterr()
    (keys / "other.key.pub").write_text("stale\n")
    for target, what in (
        (keys / "node.key", "node.key already exists"),
        (
            keys / "other.key",
            "other.key.pub (where the public key would go) already exists",
        ),
    ):
        assert main(["keygen", "--out", str(target)]) == 2
        line = one_line(capsys.readouterr().err)
        assert what in line and "choose another --out" in line
    assert not (keys / "other.key").exists()
