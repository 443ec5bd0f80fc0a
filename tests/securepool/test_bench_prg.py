"""Smoke test of ``securepool bench prg``: it runs and prints the documented JSON keys
(no timing assertions: figures belong to the benchmark, not to tests)."""

from __future__ import annotations

import json

import pytest

from securepool.bench import prg


def test_bench_prg_prints_one_json_object(capsys: pytest.CaptureFixture[str]) -> None:
    assert prg.main(["--mib", "1", "--repeats", "1", "--dtype", "uint64", "--primitives"]) == 0
    out = json.loads(capsys.readouterr().out)
    result = out["results"]["uint64"]
    for key in ("expand_mask_gbps", "numpy_default_rng_gbps", "aes_ctr_raw_gbps",
                "speedup_vs_numpy", "paired_speedup_vs_numpy_median"):  # fmt: skip
        assert result[key] > 0
    assert out["bytes_per_call"] == 2**20 and "uint32" not in out["results"]
    assert out["primitives_ms"]["shamir_combine_all_k100_ms"] > 0
