"""Smoke test of ``securepool bench secagg``: it runs sessions with dropouts and prints
the documented JSON keys with an aggregate within its error bound (no timing assertions:
figures belong to the benchmark)."""

from __future__ import annotations

import json

import pytest

from securepool.bench import secagg


def test_bench_secagg_prints_one_json_object(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--n", "12", "--d", "300", "--dropout", "0.2", "--repeats", "2", "--seed", "3"]
    assert secagg.main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n"] == 12 and out["d"] == 300 and out["aborted"] < 2
    for key in ("client_s_median", "server_s", "plaintext_sum_s", "upload_bytes_per_client"):
        assert out[key] > 0, key
    assert out["max_abs_error"] <= out["error_bound_one_step_per_contributor"]
    # one masked input of d + 1 words of 4 bytes, plus the keys, shares and signatures
    assert out["upload_bytes_per_param"] > 4
