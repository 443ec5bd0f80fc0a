"""`securepool bench agencies` at its smallest: one mask run per scaling, the central
baseline and the statistics round at n = 4; the JSON's keys and figures."""

from __future__ import annotations

import json
import math

import pytest

from securepool.bench.agencies import main


def _is_fraction(v: object) -> bool:
    return isinstance(v, float) and math.isfinite(v) and 0.0 <= v <= 1.0


def test_bench_agencies_smallest(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--modes", "mask", "--repeats", "1", "--sizes", "4"]
    assert main([*args, "--iterations", "1", "--max-iterations", "2"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["bench"] == "agencies" and out["modes"] == ["mask"]
    for key in ("summary", "central", "statistics_round", "runs", "loadavg_before"):
        assert key in out
    assert {(r["mode"], r["scaling"]) for r in out["runs"]} == {
        ("mask", "federated"),
        ("mask", "fixed"),
    }
    for run in out["runs"]:
        assert "error" not in run, run
        # the released pool on raw rows gives what the coordinator measured on its
        # own (scaled) holdout: predict applies the manifest's preprocessing
        for mid, acc in run["model_accuracy_raw"].items():
            assert acc == pytest.approx(run["coordinator_model_accuracy"][mid])
    fed = out["summary"]["mask"]["federated"]
    assert fed["runs"] == 1 and fed["iterations"] == [2]
    assert all(_is_fraction(v) for v in fed["best_accuracy_raw"])
    assert all(_is_fraction(v) for v in fed["pool_vote_accuracy_raw"])
    assert _is_fraction(fed["median_best_accuracy_raw"])
    fixed = out["summary"]["mask"]["fixed"]
    assert all(v is None or _is_fraction(v) for v in fixed["best_accuracy_raw"])
    central = out["central"]
    assert central["train_records"] > 0 and central["holdout_records"] == 36
    assert set(central["models"]) == {"logreg", "mlp"}
    for model in central["models"].values():
        assert model["epochs"] >= 1
        assert _is_fraction(model["accuracy_raw_holdout"])
    (stats,) = out["statistics_round"]
    assert stats["n"] == 4 and stats["participants"] == 4
    assert stats["agree_scaling_s"] > 0 and stats["round_trips"] == 11  # 2 x 5 + 1
    assert stats["bytes_per_participant_min"] > 0
    assert len(stats["training_iterations"]) == 1
    assert stats["ratio_vs_steady_iteration"] > 0


def test_bench_agencies_refuses_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    for bad in (["--modes", "nope"], ["--sizes", "2"], ["--repeats", "0"], ["--sizes", "x"]):
        with pytest.raises(SystemExit) as exc:
            main(bad)
        assert exc.value.code == 2
    assert "--modes" in capsys.readouterr().err
