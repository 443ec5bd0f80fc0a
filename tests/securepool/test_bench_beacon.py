"""Smoke test of the beacon benchmark: it runs and prints the documented JSON keys
(no timing assertions: figures belong to the benchmark, not to tests)."""

from __future__ import annotations

import json

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
