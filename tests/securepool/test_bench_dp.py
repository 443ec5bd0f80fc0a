"""Smoke test of ``securepool bench dp``: it runs the three trainers and prints the
documented keys (no timing assertions: figures belong to the benchmark)."""

from __future__ import annotations

import json

import pytest

from securepool.bench import dp


def test_bench_dp_prints_one_json_object(capsys: pytest.CaptureFixture[str]) -> None:
    assert dp.main(["--model", "logreg", "--repeats", "1"]) == 0
    out = json.loads(capsys.readouterr().out)
    for key in ("epoch_s_nonprivate", "epoch_s_opacus_default_noise", "epoch_s_private",
                "overhead_ratio", "opacus_overhead_ratio", "securepool_vs_opacus"):  # fmt: skip
        assert out[key] > 0
    assert out["parameters"] == 650
    assert out["noise_draw_us_per_step"]["discrete_gaussian_csprng"] > 0
