"""Smoke test of ``securepool bench mask_binding``: it runs both paths and prints the
documented JSON keys (no timing assertions: figures belong to the benchmark)."""

from __future__ import annotations

import json

import pytest

from securepool.bench import mask_binding


def test_bench_mask_binding_prints_both_paths(capsys: pytest.CaptureFixture[str]) -> None:
    assert mask_binding.main(["--n", "6", "--d", "300", "--repeats", "1"]) == 0
    (row,) = json.loads(capsys.readouterr().out)["rows"]
    assert row["d"] == 300 and row["contributors_today"] == row["contributors_bound"] == 6
    for key in ("client_s", "upload_bytes", "server_s", "auditor_s", "coordinator_auditor_bytes"):
        assert row[f"{key}_today"] > 0 and row[f"{key}_bound"] > 0
    assert row["report_bytes_today"] == 0 and row["report_bytes_bound"] > 0
    assert row["client_ratio_bound_over_today"] > 0 and row["client_ratio_paired_median"] > 0
