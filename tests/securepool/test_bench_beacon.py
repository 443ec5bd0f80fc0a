"""Smoke test of the beacon benchmark: it runs and prints the documented JSON keys
(no timing assertions: figures belong to the benchmark, not to tests)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from securepool.bench import beacon


def test_bench_beacon_prints_one_json_object(capsys: pytest.CaptureFixture[str]) -> None:
    assert beacon.main(["--n", "6", "--repeats", "1"]) == 0
    out = json.loads(capsys.readouterr().out)
    row = out["results"]["6"]
    for key in ("round_s", "participant_ms", "coordinator_ms", "baseline_assign_ms"):
        assert row[key] > 0
    # one commit (iteration, digest, id, commitment, signature) and one reveal each
    assert 100 < row["bytes_sent_per_participant"] < 300
    assert row["coordinator_bytes_out"] == 6 * row["bytes_received_per_participant"]


DEMO = """
[run]
seed = 5
[data]
participants = 6
[[pool.models]]
id = "lr"
arch = "logreg"
seed = 1
[training]
epochs = 1
[convergence]
error_range = [0.0, 0.01]
max_iterations = 2
[acceptance]
max_error_bound = 1.0
[aggregation]
mode = "mask"
"""


def test_bench_beacon_demo_times_the_beacon_inside_whole_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Whole runs of the coordinator loop over in-process nodes: the time in the
    beacon's state machines is a small, non-zero share; the methods are restored."""
    steps = [cls.__dict__[name] for cls, name in beacon.BEACON_STEPS]
    config = tmp_path / "demo.toml"
    config.write_text(DEMO)
    assert beacon.main(["--demo", str(config), "--repeats", "1"]) == 0
    (run,) = json.loads(capsys.readouterr().out)["runs"]
    assert run["iterations"] == 2
    assert 0 < run["beacon_s"] < run["wall_s"] and 0 < run["beacon_share"] < 1
    assert [cls.__dict__[name] for cls, name in beacon.BEACON_STEPS] == steps
