"""The command line as a user meets it: separate processes, bad input, Ctrl-C, tampering.

Every case runs ``python -m securepool.cli`` in a child process, with this repository
on PYTHONPATH, and checks the exit code and that stderr is one clear line per problem
with no traceback. Independent cases are started together to keep the suite fast.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_helpers import finish

ROOT = Path(__file__).resolve().parents[2]

SMALL = """
[run]
seed = 2
[data]
participants = 8
[[pool.models]]
id = "lr"
arch = "logreg"
seed = 1
[training]
epochs = 1
[convergence]
error_range = [0.0, 0.0001]   # never met: the run goes to its cap
max_iterations = {cap}
[acceptance]
max_error_bound = 1.0
"""


def _start(*args: str, cwd: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}
    return subprocess.Popen(
        [sys.executable, "-m", "securepool.cli", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # a user's terminal delivers SIGINT with its default action, whatever the test
        # runner's own disposition is
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def _finish(proc: subprocess.Popen[str], timeout: float = 180) -> tuple[int, str, str]:
    return finish(proc, timeout=timeout)


def _one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


# --- bad input, all cases at once -------------------------------------------------------


@pytest.fixture(scope="module")
def bad_input(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, tuple]]:
    d = tmp_path_factory.mktemp("bad")
    good = d / "good.toml"
    good.write_text(SMALL.format(cap=1))
    binary = d / "weights.bin"
    binary.write_bytes(bytes(range(256)) * 4)
    nan = d / "nan.toml"
    nan.write_text(SMALL.format(cap=1) + "[assignment]\nparticipation = nan\n")
    many = d / "many.toml"
    many.write_text(
        SMALL.format(cap=1).replace("epochs = 1", "epochs = 1\nlr = inf\nbogus = 1")
        + "[data.extra]\n"
    )
    no_models = d / "nomodels.toml"
    no_models.write_text("[data]\nparticipants = 8\n")
    a_file = d / "a_file"
    a_file.write_text("not a directory")
    cases = {
        "binary": ["run", str(binary), "--out", str(d / "o1")],
        "nan": ["run", str(nan), "--out", str(d / "o2")],
        "out_under_file": ["run", str(good), "--out", str(a_file / "run")],
        "out_is_file": ["run", str(good), "--out", str(a_file)],
        "out_uncreatable": ["run", str(good), "--out", "/proc/securepool-test/run"],
        "many": ["run", str(many), "--out", str(a_file / "run")],
        "markup": ["run", str(no_models), "--out", str(d / "o3")],
        "bench_help": ["bench", "--help"],
        "resume_missing": ["run", "--resume", str(d / "nowhere")],
    }
    procs = {name: _start(*args, cwd=d) for name, args in cases.items()}
    results = {name: _finish(p) for name, p in procs.items()}
    yield {**results, "dir": (d,)}  # type: ignore[dict-item]


def test_binary_config_file(bad_input: dict) -> None:
    code, _, err = bad_input["binary"]
    assert code == 2
    assert "not a text file" in _one_error_line(err)
    assert not (bad_input["dir"][0] / "o1").exists()


def test_nan_participation(bad_input: dict) -> None:
    code, _, err = bad_input["nan"]
    assert code == 2
    line = _one_error_line(err)
    assert "assignment.participation" in line and "finite" in line and "nan" in line
    assert not (bad_input["dir"][0] / "o2").exists()


def test_out_under_a_file(bad_input: dict) -> None:
    code, _, err = bad_input["out_under_file"]
    assert code == 2
    assert "is a file, not a directory" in _one_error_line(err)


def test_out_is_a_file(bad_input: dict) -> None:
    code, _, err = bad_input["out_is_file"]
    assert code == 2
    assert "exists and is a file" in _one_error_line(err)


def test_out_that_cannot_be_created(bad_input: dict) -> None:
    code, _, err = bad_input["out_uncreatable"]
    assert code == 2
    assert "cannot create --out /proc/securepool-test/run" in _one_error_line(err)


def test_every_problem_at_once_one_line_each(bad_input: dict) -> None:
    code, _, err = bad_input["many"]
    assert code == 2 and "Traceback" not in err
    lines = err.strip().splitlines()
    assert all(ln.startswith("error: ") for ln in lines), lines
    text = "\n".join(lines)
    assert "is a file" in text and "training.lr" in text and "finite" in text
    assert "training.bogus: unknown key" in text and "data.extra" in text
    assert len(lines) == 4


def test_markup_in_messages_prints_as_written(bad_input: dict) -> None:
    code, _, err = bad_input["markup"]
    assert code == 2
    assert "([[pool.models]])" in _one_error_line(err)


def test_bench_help_lists_every_benchmark(bad_input: dict) -> None:
    code, out, _ = bad_input["bench_help"]
    assert code == 0
    for name in ("run", "secagg", "he", "dp", "summary_leakage", "prg"):
        assert f"\n  {name} " in out


def test_resume_of_a_missing_directory(bad_input: dict) -> None:
    code, _, err = bad_input["resume_missing"]
    assert code == 2
    assert "no such directory" in _one_error_line(err)


# --- Ctrl-C, then tampering and using the result, on the real run directory ------------


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int, str]:
    d = tmp_path_factory.mktemp("sigint")
    cfg = d / "c.toml"
    cfg.write_text(SMALL.format(cap=3))
    out = d / "run"
    proc = _start("run", str(cfg), "--out", str(out), "--quiet", cwd=d)
    deadline = time.monotonic() + 120
    while not (out / "run.json").exists():  # the first committed iteration
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"no checkpoint appeared: {proc.communicate()[1][-2000:]}")
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    code, _, err = _finish(proc, timeout=60)
    return out, code, err


def test_ctrl_c_exits_130_with_one_line_and_a_resumable_checkpoint(
    interrupted: tuple[Path, int, str],
) -> None:
    from securepool.rundir import verify_run_dir

    out, code, err = interrupted
    assert code == 130
    assert _one_error_line(err) == f"interrupted; resume with `securepool run --resume {out}`"
    info = verify_run_dir(out)
    assert not info.finished and 1 <= info.iteration < 3


def test_after_ctrl_c_resume_show_predict_and_tampering(
    interrupted: tuple[Path, int, str], tmp_path: Path
) -> None:
    out = interrupted[0]
    deleted, corrupted = tmp_path / "deleted", tmp_path / "corrupted"
    shutil.copytree(out, deleted)
    shutil.copytree(out, corrupted)
    (deleted / "checkpoint" / "state.json").unlink()
    weights = corrupted / "checkpoint" / "globals.npz"
    data = bytearray(weights.read_bytes())
    data[100] ^= 0xFF
    weights.write_bytes(bytes(data))
    procs = {
        "resume": _start("run", "--resume", str(out), "--quiet", cwd=tmp_path),
        "deleted": _start("run", "--resume", str(deleted), "--quiet", cwd=tmp_path),
        "corrupted": _start("run", "--resume", str(corrupted), "--quiet", cwd=tmp_path),
    }
    res = {k: _finish(p) for k, p in procs.items()}
    code, _, err = res["deleted"]
    assert code == 2
    line = _one_error_line(err)
    assert str(deleted / "checkpoint" / "state.json") in line and "missing" in line
    code, _, err = res["corrupted"]
    assert code == 2
    assert str(weights) in _one_error_line(err)
    code, stdout, err = res["resume"]
    assert code == 1, err  # finished at the cap without converging
    assert "NOT CONVERGED" in stdout and "converged = false" in stdout

    from sklearn.datasets import load_digits

    rows = load_digits().data[:4]
    csv = tmp_path / "rows.csv"
    csv.write_text(
        ",".join(f"pixel{i}" for i in range(64))
        + "\n"
        + "\n".join(",".join(str(v) for v in r) for r in rows)
        + "\n"
    )
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("1,2,3\n")
    procs = {
        "show": _start("show", str(out), cwd=tmp_path),
        "predict": _start("predict", str(out), str(csv), cwd=tmp_path),
        "predict_wrong": _start("predict", str(out / "pool"), str(wrong), cwd=tmp_path),
    }
    res = {k: _finish(p) for k, p in procs.items()}
    code, stdout, err = res["show"]
    assert code == 0, err
    assert "verified" in stdout and "NOT CONVERGED" in stdout and "accuracy" in stdout
    code, stdout, err = res["predict"]
    assert code == 0, err
    lines = stdout.strip().splitlines()
    assert lines[0] == "row,lr,vote" and len(lines) == 5
    assert "did not converge" in _one_error_line(err)  # the warning
    code, _, err = res["predict_wrong"]
    assert code == 2
    assert "rows have 3 columns, the pool's models take 64" in _one_error_line(err)
