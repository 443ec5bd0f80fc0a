"""Smoke test of ``securepool bench he_binding``: it runs and prints the documented keys
(no timing assertions: figures belong to the benchmark, benchmarks/RESULTS.md)."""

from __future__ import annotations

import json

import pytest

from securepool.bench import he_binding


def test_bench_he_binding_prints_one_json_object(capsys: pytest.CaptureFixture[str]) -> None:
    assert he_binding.main(["--n", "3", "--d", "650", "--repeats", "1", "--json"]) == 0
    text = capsys.readouterr().out
    out = json.loads(text[text.index("{\n") :])
    row = out["d"]["650"]
    for key in (
        "base.participant_s", "bound.participant_s", "coordinator_fold_s",
        "coordinator_fold_group_s", "auditor_open_s", "auditor_judge_s",
    ):  # fmt: skip
        assert row[key] > 0, key
    # the offer grows by exactly the Galois keys of the fold's steps
    assert row["bound.offer_bytes"] - row["base.offer_bytes"] == pytest.approx(
        row["galois_bytes"],
        rel=0.01,  # zstd sizes vary a little from key to key
    )
    assert out["tenseal_all_steps_galois_bytes"] > row["galois_bytes"]
