"""Whole runs through the CLI and the runner: outputs, manifests, resume, clean failure.

Every run goes through :func:`securepool.runner.start_job` / :func:`resume_job` with the
default runtime (PoolCoordinator over InProcessDriver with one ParticipantNode per
participant), small enough to stay fast: 8 participants, a logreg and a small MLP, at
most 3 iterations."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from securepool.cli import main
from securepool.coordinator.loop import PoolCoordinator
from securepool.rundir import verify_run_dir
from securepool.runner import resume_job, start_job

CONFIG = """
[run]
seed = 3
[data]
participants = 8
[[pool.models]]
id = "lr"
arch = "logreg"
seed = 1
[[pool.models]]
id = "mlp"
arch = "mlp"
seed = 2
hidden = 16
[training]
epochs = 2
lr = 0.3
momentum = 0.9
[convergence]
error_range = [0.0, 0.0001]
max_iterations = 3
[acceptance]
max_error_bound = 0.3
"""

PLAINTEXT = CONFIG + '[aggregation]\nmode = "plaintext"\n'


@pytest.fixture()
def config(tmp_path: Path) -> Path:
    path = tmp_path / "small.toml"
    path.write_text(CONFIG)
    return path


@pytest.fixture()
def plaintext(tmp_path: Path) -> Path:
    path = tmp_path / "plain.toml"
    path.write_text(PLAINTEXT)
    return path


def test_cli_run_writes_everything_and_is_secure_by_default(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    code = main(["run", str(config), "--out", str(out), "--quiet"])
    summary = json.loads((out / "summary.json").read_text())
    assert code == (0 if summary["converged"] else 1)
    # no [aggregation] section: SecAgg+ masking, no banner
    assert summary["aggregation"] == {"mode": "mask", "insecure_baseline": False}
    printed = capsys.readouterr().out
    assert "INSECURE" not in printed
    assert "accuracy" in printed and "privacy: DP off" in printed
    assert "trust check: off" in printed and "aborted groups" in printed
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == summary["iterations"] > 0
    first = json.loads(lines[0])
    assert {"iteration", "selected", "group_sizes", "test_errors"} <= set(first)
    assert all(size >= 3 for size in first["group_sizes"].values())
    manifest = json.loads((out / "pool" / "manifest.json").read_text())
    assert manifest["aggregation"]["insecure_baseline"] is False
    assert manifest["format"] == "securepool-pool/2"
    assert (manifest["n_features"], manifest["n_classes"]) == (64, 10)
    assert manifest["preprocessing"] == {"transform": "identity", "divisor": [16.0] * 64}
    assert {m["id"] for m in manifest["models"]} == set(summary["pool"])
    for m in manifest["models"]:
        assert ("hidden" in m) == (m["arch"] == "mlp")  # logreg has no width
        data = (out / "pool" / m["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == m["sha256"]
        assert np.load(out / "pool" / m["file"]).dtype == np.float32
    assert summary["best_accuracy"] is not None and summary["best_accuracy"] > 0.8
    info = verify_run_dir(out)
    assert info.finished and info.iteration == summary["iterations"]
    assert not list(out.glob(".*tmp*")) and not list(tmp_path.glob(".run.partial-*"))


def test_plaintext_runs_only_when_asked_with_the_banner(
    plaintext: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = plaintext.read_text().replace("max_iterations = 3", "max_iterations = 1")
    plaintext.write_text(text)
    main(["run", str(plaintext), "--out", str(tmp_path / "p"), "--quiet"])
    assert "INSECURE BASELINE" in capsys.readouterr().out


class Crash(Exception):
    pass


def test_resume_after_a_crash_continues_exactly(plaintext: Path, tmp_path: Path) -> None:
    """Plaintext mode with the seeded (labelled insecure) beacon is bit-reproducible, so
    a resumed run equals an uninterrupted one exactly (mask mode only within
    quantisation: README, Reproducibility)."""
    plaintext.write_text(plaintext.read_text() + '[assignment]\nbeacon = "seeded-insecure"\n')
    straight = start_job(plaintext, tmp_path / "straight")

    def crash_after_2(record: object) -> None:
        if record.iteration == 2:  # type: ignore[attr-defined]
            raise Crash()

    out = tmp_path / "crashed"
    with pytest.raises(Crash):
        start_job(plaintext, out, on_iteration=crash_after_2)
    assert not (out / "summary.json").exists()
    info = verify_run_dir(out)
    assert info.iteration == 2 and not info.finished
    resumed = resume_job(out)
    assert resumed["iterations"] == straight["iterations"]
    assert resumed["models"] == straight["models"]
    a = np.load(tmp_path / "straight" / "checkpoint" / "globals.npz")
    b = np.load(out / "checkpoint" / "globals.npz")
    for k in a.files:
        np.testing.assert_array_equal(a[k], b[k])
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["iteration"] for x in lines] == list(range(1, resumed["iterations"] + 1))
    pool_a = json.loads((tmp_path / "straight" / "pool" / "manifest.json").read_text())
    pool_b = json.loads((out / "pool" / "manifest.json").read_text())
    assert [m["sha256"] for m in pool_a["models"]] == [m["sha256"] for m in pool_b["models"]]


def test_a_run_failing_before_its_first_checkpoint_leaves_nothing(
    config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "deep" / "er" / "run"

    def boom(self: PoolCoordinator) -> None:
        raise RuntimeError("simulated failure in iteration 1")

    with monkeypatch.context() as m:
        m.setattr(PoolCoordinator, "step", boom)
        with pytest.raises(RuntimeError):
            start_job(config, out)
    assert not (tmp_path / "deep").exists()  # the parents this run made are gone too
    assert list(tmp_path.iterdir()) == [config]
    # interrupted the same way: nothing kept either
    with monkeypatch.context() as m:

        def interrupted(self: PoolCoordinator) -> None:
            raise KeyboardInterrupt

        m.setattr(PoolCoordinator, "step", interrupted)
        with pytest.raises(KeyboardInterrupt):
            start_job(config, out)
    assert list(tmp_path.iterdir()) == [config]
    # and the same --out is usable again
    text = config.read_text().replace("max_iterations = 3", "max_iterations = 1")
    config.write_text(text)
    start_job(config, out)
    assert verify_run_dir(out).finished


def test_cli_ctrl_c_before_the_first_checkpoint(
    config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    def interrupted(self: PoolCoordinator) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(PoolCoordinator, "step", interrupted)
    out = tmp_path / "run"
    assert main(["run", str(config), "--out", str(out), "--quiet"]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("interrupted before the first checkpoint")
    assert not out.exists()


def test_resume_with_the_joint_beacon_keeps_the_recorded_seeds(
    config: Path, tmp_path: Path
) -> None:
    def crash_after_2(record: object) -> None:
        if record.iteration == 2:
            raise Crash()

    out = tmp_path / "crashed"
    with pytest.raises(Crash):
        start_job(config, out, on_iteration=crash_after_2)
    state = json.loads((out / "checkpoint" / "state.json").read_text())
    seeds = {it: rec["joint_seed"] for it, rec in state["components"]["beacon"].items()}
    assert set(seeds) == {"1", "2"} and len(set(seeds.values())) == 2
    resumed = resume_job(out)
    assert resumed["iterations"] == 3
    final = json.loads((out / "checkpoint" / "state.json").read_text())["components"]["beacon"]
    assert {it: final[it]["joint_seed"] for it in ("1", "2")} == seeds
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [x["joint_seed"] for x in lines[:2]] == [seeds["1"], seeds["2"]]
    assert len({x["joint_seed"] for x in lines}) == 3


def test_resume_rejects_a_non_run_directory(tmp_path: Path) -> None:
    assert main(["run", "--resume", str(tmp_path), "--quiet"]) == 2


@pytest.mark.parametrize("runtime", ["inprocess", "multiprocess"])
def test_transcripts_record_every_role_view(plaintext: Path, tmp_path: Path, runtime: str) -> None:
    """Recorded at the coordinator's Driver, the same in every runtime: each message under
    its stage (a reply as ``<stage>:reply``), once in the coordinator's transcript and
    once in its node's; multiprocess runs record them too."""
    text = plaintext.read_text().replace(
        "seed = 3", f'seed = 3\nrecord_transcripts = true\nruntime = "{runtime}"', 1
    )
    text = text.replace("max_iterations = 3", "max_iterations = 2")
    text = text.replace("participants = 8", "participants = 4")
    text = text.replace('[[pool.models]]\nid = "mlp"\narch = "mlp"\nseed = 2\nhidden = 16\n', "")
    cfg = tmp_path / "t.toml"
    cfg.write_text(text)
    out = tmp_path / "run"
    start_job(cfg, out)

    def rows(role: str) -> list[dict[str, object]]:
        lines = (out / "transcripts" / f"{role}.jsonl").read_text().splitlines()
        return [json.loads(x) for x in lines]

    stages = {"hello", "beacon/start", "beacon/commits", "train"}  # plaintext, holdout
    coord = rows("coordinator")
    assert {e["kind"] for e in coord if e["direction"] == "sent"} == stages
    assert {e["kind"] for e in coord if e["direction"] == "received"} == {
        f"{s}:reply" for s in stages
    }
    # every participant uploaded its update in each of the 2 iterations
    uploads = [e for e in coord if e["kind"] == "train:reply"]
    assert sorted(str(e["peer"]) for e in uploads) == sorted([f"p{i:02d}" for i in range(4)] * 2)
    assert {p.name for p in (out / "transcripts").iterdir()} == {
        "coordinator.jsonl",
        *(f"p{i:02d}.jsonl" for i in range(4)),
    }
    p00 = rows("p00")
    assert all(e["peer"] == "coordinator" for e in p00)
    # what p00 sent is exactly what the coordinator received from it, and back
    for mine, theirs in (("sent", "received"), ("received", "sent")):
        at_coord = [
            (e["kind"], e["sha256"])
            for e in coord
            if e["peer"] == "p00" and e["direction"] == theirs
        ]
        assert at_coord == [(e["kind"], e["sha256"]) for e in p00 if e["direction"] == mine]
    # the transcripts are covered by the run manifest
    assert "transcripts/p00.jsonl" in verify_run_dir(out).files


def _logreg_only(config: Path, iterations: int) -> None:
    text = config.read_text().replace("max_iterations = 3", f"max_iterations = {iterations}")
    text = text.replace('[[pool.models]]\nid = "mlp"\narch = "mlp"\nseed = 2\nhidden = 16\n', "")
    assert '"mlp"' not in text  # logreg only, to stay fast
    config.write_text(text)


def _assert_within_ulps(a_dir: Path, b_dir: Path) -> None:
    a = np.load(a_dir / "checkpoint" / "globals.npz")
    b = np.load(b_dir / "checkpoint" / "globals.npz")
    for k in a.files:
        np.testing.assert_allclose(a[k], b[k], rtol=0, atol=1e-6)


def test_mask_mode_is_reproducible_to_the_last_float32_bits_only(
    config: Path, tmp_path: Path
) -> None:
    """What the README's Reproducibility section states: stochastic rounding from the
    CSPRNG makes two same-seed mask runs agree only to ~1 ulp."""
    _logreg_only(config, 2)
    start_job(config, tmp_path / "a")
    start_job(config, tmp_path / "b")
    _assert_within_ulps(tmp_path / "a", tmp_path / "b")


def test_a_resumed_mask_run_equals_an_uninterrupted_one_to_the_last_bits(
    config: Path, tmp_path: Path
) -> None:
    """README, Reproducibility: a resumed mask run equals an uninterrupted one only to
    the last bits of the float32 weights."""
    _logreg_only(config, 2)
    start_job(config, tmp_path / "a")

    def crash_after_1(record: object) -> None:
        if record.iteration == 1:  # type: ignore[attr-defined]
            raise Crash()

    with pytest.raises(Crash):
        start_job(config, tmp_path / "b", on_iteration=crash_after_1)
    resume_job(tmp_path / "b")
    _assert_within_ulps(tmp_path / "a", tmp_path / "b")


def test_an_existing_empty_out_directory_is_used(config: Path, tmp_path: Path) -> None:
    out = tmp_path / "empty"
    out.mkdir()
    config.write_text(config.read_text().replace("max_iterations = 3", "max_iterations = 1"))
    start_job(config, out)
    assert verify_run_dir(out).finished
    assert not list(tmp_path.glob(".empty.partial-*"))
