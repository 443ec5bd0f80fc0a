"""Smoke test of ``securepool bench he``: it runs and prints the documented JSON keys
with a correct aggregate (no timing assertions: figures belong to the benchmark)."""

from __future__ import annotations

import json

import pytest

from securepool.bench import he


def test_bench_he_prints_one_json_object(capsys: pytest.CaptureFixture[str]) -> None:
    assert he.main(["--n", "3", "--d", "5000", "--json"]) == 0
    text = capsys.readouterr().out
    # under pytest's capture TenSEAL's C++ warnings (stdout, flushed late) can precede it
    out = json.loads(text[text.index("{\n") :])
    for key in ("enc_s_per_party", "server_s", "decrypt_s"):
        assert out[key] > 0
    assert out["n"] == 3 and out["d"] == 5000
    # d = 5000 fills two ciphertexts of 4096 slots: ~28.9 bytes per slot (+ the receipt)
    assert 28.5 < out["bytes_per_param"] * 5000 / (2 * 4096) < 29.5
    assert out["rel_error"] < 1e-6
    assert out["raw_tenseal_same_params"]["rel_error"] < 1e-6
    ratios = out["overhead_vs_raw_same_params"]
    assert set(ratios) == {
        "enc_s_per_party", "server_s", "decrypt_s", "bytes_per_param", "enc_s_per_party_paired"
    }  # fmt: skip
    assert ratios["enc_s_per_party_paired"] > 0


def test_bench_he_profile_reports_every_step(capsys: pytest.CaptureFixture[str]) -> None:
    assert he.main(["--n", "3", "--d", "5000", "--no-raw", "--profile"]) == 0
    text = capsys.readouterr().out
    profile = json.loads(text[text.index("{\n") :])["profile_s"]
    assert set(profile["upload"]) == set(he.UPLOAD_STEPS)
    assert set(profile["decrypt"]) == set(he.DECRYPT_STEPS)
    for role, total in (("upload", "upload (total)"), ("decrypt", "decrypt_aggregate (total)")):
        steps = profile[role]
        assert all(v > 0 for v in steps.values()), steps  # every step was found and ran
        assert all(v <= steps[total] for v in steps.values())
