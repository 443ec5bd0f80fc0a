"""Tamper and crash tests on a real run directory: every change is an error naming its file.

A run is interrupted after iteration 2 (as Ctrl-C or a crash would leave it); each test
copies that directory, changes it the way a user might by mistake, and resumes it
through the CLI as a user would.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from securepool.cli import main
from securepool.rundir import RunDirError, verify_run_dir
from securepool.runner import start_job

CONFIG = """
[run]
seed = 5
[data]
participants = 8
[[pool.models]]
id = "lr"
arch = "logreg"
seed = 1
[training]
epochs = 1
[convergence]
error_range = [0.0, 0.0001]
max_iterations = 3
[acceptance]
max_error_bound = 1.0
"""


class Stop(Exception):
    pass


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("rundir")
    cfg = root / "c.toml"
    cfg.write_text(CONFIG)

    def stop_after_2(record: object) -> None:
        if record.iteration == 2:  # type: ignore[attr-defined]
            raise Stop()

    out = root / "run"
    with pytest.raises(Stop):
        start_job(cfg, out, on_iteration=stop_after_2)
    return out


@pytest.fixture()
def run(interrupted: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(interrupted, copy)
    return copy


def resume_fails_naming(
    run: Path, file: Path, capsys: pytest.CaptureFixture[str], words: str
) -> None:
    assert main(["run", "--resume", str(run), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert str(file) in err[0] and words in err[0], err[0]
    assert "Traceback" not in err[0]


def test_an_untouched_interrupted_run_verifies(run: Path) -> None:
    info = verify_run_dir(run)
    assert (info.iteration, info.finished, info.has_checkpoint) == (2, False, True)
    assert [m["iteration"] for m in info.metrics()] == [1, 2]


def test_edited_iteration_number(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = run / "checkpoint" / "state.json"
    obj = json.loads(state.read_text())
    obj["iteration"] = 1
    state.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
    resume_fails_naming(run, state, capsys, "does not match run.json")


def test_edited_iteration_with_the_file_hash_updated_in_the_manifest(
    run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Editing the state and its recorded sha256 in run.json still breaks run.json's digest."""
    import hashlib

    state = run / "checkpoint" / "state.json"
    data = state.read_text().replace('"iteration": 2', '"iteration": 1').encode()
    state.write_bytes(data)
    manifest = json.loads((run / "run.json").read_text())
    manifest["files"]["checkpoint/state.json"] = {
        "sha256": hashlib.sha256(data).hexdigest(),
        "bytes": len(data),
    }
    (run / "run.json").write_text(json.dumps(manifest))
    resume_fails_naming(run, run / "run.json", capsys, "digest does not match")


def test_deleted_checkpoint_state(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (run / "checkpoint" / "state.json").unlink()
    resume_fails_naming(run, run / "checkpoint" / "state.json", capsys, "missing")


def test_deleted_checkpoint_directory(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shutil.rmtree(run / "checkpoint")
    resume_fails_naming(run, run / "checkpoint" / "globals.npz", capsys, "missing")


def test_corrupted_checkpoint_weights(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = run / "checkpoint" / "globals.npz"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    resume_fails_naming(run, path, capsys, "does not match run.json")


def test_edited_config(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = run / "config.toml"
    path.write_text(path.read_text().replace("max_iterations = 3", "max_iterations = 30"))
    resume_fails_naming(run, path, capsys, "does not match run.json")


def test_truncated_metrics(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = run / "metrics.jsonl"
    first = path.read_text().splitlines()[0]
    path.write_text(first + "\n")
    resume_fails_naming(run, path, capsys, "truncated")


def test_edited_metrics_line(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = run / "metrics.jsonl"
    path.write_text(path.read_text().replace('"iteration": 2', '"iteration": 7'))
    resume_fails_naming(run, path, capsys, "does not match run.json")


def test_deleted_manifest(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (run / "run.json").unlink()
    resume_fails_naming(run, run / "run.json", capsys, "missing")


def test_a_file_from_another_version_is_refused(run: Path) -> None:
    manifest = json.loads((run / "run.json").read_text())
    manifest["format"] = "securepool-run/0"
    (run / "run.json").write_text(json.dumps(manifest))
    with pytest.raises(RunDirError, match="is not 'securepool-run/1'") as info:
        verify_run_dir(run)
    assert info.value.file == run / "run.json"


def test_an_uncommitted_metrics_line_is_dropped_on_resume(run: Path) -> None:
    """A crash after the metrics line of iteration 3 but before its commit."""
    path = run / "metrics.jsonl"
    with path.open("a") as fh:
        fh.write(json.dumps({"iteration": 3, "half": "written"}) + "\n")
    assert verify_run_dir(run).metrics_tail > 0  # accepted: past the committed length
    assert main(["run", "--resume", str(run), "--quiet"]) == 1  # cap reached, not converged
    info = verify_run_dir(run)
    assert info.finished and [m["iteration"] for m in info.metrics()] == [1, 2, 3]
    assert "half" not in path.read_text()


def test_an_interrupted_checkpoint_commit_is_completed_by_resume(run: Path) -> None:
    """A crash after run.json named the new checkpoint but before the files moved in."""
    ckpt = run / "checkpoint"
    (ckpt / ".next").mkdir()
    shutil.move(ckpt / "globals.npz", ckpt / ".next" / "globals.npz")
    (ckpt / "globals.npz").write_bytes(b"the previous iteration's weights")
    with pytest.raises(RunDirError, match="interrupted while being committed"):
        verify_run_dir(run)
    assert main(["run", "--resume", str(run), "--quiet"]) == 1
    assert verify_run_dir(run).finished and not (ckpt / ".next").exists()


def test_files_staged_before_the_commit_point_are_ignored_and_dropped(run: Path) -> None:
    """A crash (Ctrl-C) after the next iteration's files reached checkpoint/.next but
    before run.json named them: they are not the committed checkpoint, so a deleted
    state.json is reported as missing (not as a mismatch of the staged file), and
    --resume drops them."""
    ckpt = run / "checkpoint"
    (ckpt / ".next").mkdir()
    (ckpt / ".next" / "state.json").write_text('{"iteration": 99}')
    (ckpt / ".next" / "globals.npz").write_bytes(b"weights never committed")
    assert verify_run_dir(run).pending == ()
    state = (ckpt / "state.json").read_bytes()
    (ckpt / "state.json").unlink()
    with pytest.raises(RunDirError, match="missing") as info:
        verify_run_dir(run)
    assert info.value.file == ckpt / "state.json"
    (ckpt / "state.json").write_bytes(state)
    assert main(["run", "--resume", str(run), "--quiet"]) == 1
    assert verify_run_dir(run).finished and not (ckpt / ".next").exists()


def test_a_finished_run_checks_summary_and_pool(run: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["run", "--resume", str(run), "--quiet"]) == 1
    capsys.readouterr()
    assert main(["run", "--resume", str(run), "--quiet"]) == 2  # finished: nothing to resume
    assert "nothing to resume" in capsys.readouterr().err
    summary = run / "summary.json"
    original = summary.read_bytes()
    summary.write_bytes(original.replace(b'"converged": false', b'"converged": true'))
    with pytest.raises(RunDirError) as info:
        verify_run_dir(run)
    assert info.value.file == summary
    summary.write_bytes(original)
    weights = run / "pool" / "lr.npy"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    with pytest.raises(RunDirError) as info:
        verify_run_dir(run)
    assert info.value.file == weights


def test_an_unfinished_run_has_no_pool_to_load(run: Path) -> None:
    import securepool

    with pytest.raises(RunDirError, match="not finished"):
        securepool.load_pool(run)


def test_a_manifest_naming_files_outside_its_directory_is_refused(run: Path) -> None:
    """Even with a recomputed digest, run.json cannot point the verifier elsewhere."""
    from securepool.rundir import _RUN_DOMAIN, _digest

    manifest = json.loads((run / "run.json").read_text())
    manifest["files"]["../outside.txt"] = {"sha256": "0" * 64, "bytes": 0}
    manifest["digest"] = _digest(_RUN_DOMAIN, manifest)
    (run / "run.json").write_text(json.dumps(manifest))
    with pytest.raises(RunDirError, match="outside its directory"):
        verify_run_dir(run)


def test_show_an_interrupted_run(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["show", str(run)]) == 0
    out = capsys.readouterr().out
    assert "verified" in out and "2 iteration(s) committed" in out
    assert f"securepool run --resume {run}" in out


def test_show_refuses_a_tampered_run(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (run / "config.toml").write_text("[data]\nparticipants = 9\n")
    assert main(["show", str(run)]) == 2
    assert "config.toml" in capsys.readouterr().err


def test_the_run_directory_is_the_coordinator_s_alone(interrupted: Path) -> None:
    """Issue 27 item 4: checkpoints, the pool and the trust check's flags are the
    coordinator's; its run directory is 0700 (the files inside are then unreachable)."""
    assert oct(interrupted.stat().st_mode & 0o777) == "0o700"


def test_a_signal_between_the_staging_mkdir_and_the_run_object_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A SIGTERM / Ctrl-C that lands right after the hidden staging folder is made,
    before the run object exists (seen in CI: a `.early.partial-*` folder left behind),
    removes that folder and the parents the run created."""
    from securepool.rundir import RunDir

    def interrupted(self: RunDir, *a: object, **kw: object) -> None:
        raise KeyboardInterrupt("SIGTERM")

    monkeypatch.setattr(RunDir, "__init__", interrupted)
    final = tmp_path / "new" / "deeper" / "run"
    with pytest.raises(KeyboardInterrupt):
        RunDir.create(final, "[run]\n")
    assert list(tmp_path.iterdir()) == []
