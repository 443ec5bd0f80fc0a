"""The DP audit of a DP-SGD run: the epsilon curve, the reproducible-noise warning, the
budget, and soundness: no empirical lower bound exceeds the accountant's epsilon."""

from __future__ import annotations

import json
from typing import Any

import pytest

from securepool.cli import main
from securepool.runner import start_job

DP_RUN = """
[run]
seed = 2
[data]
participants = 3
holdout_fraction = 0.5
[[pool.models]]
id = "lr"
arch = "logreg"
seed = 1
[assignment]
max_models = 1
[training]
epochs = 1
batch_size = 32
lr = 0.5
[convergence]
error_range = [0.0, 0.0001]
max_iterations = 4
[acceptance]
max_error_bound = 1.0
[privacy]
enabled = true
noise_multiplier = 1.0
secure_rng = false
epsilon_max = 5.0
[audit]
canaries = 50
"""


@pytest.fixture(scope="module")
def dp_audit(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("dp")
    (tmp / "dp.toml").write_text(DP_RUN)
    start_job(tmp / "dp.toml", tmp / "run")
    assert (
        main(["audit", str(tmp / "run"), "--out", str(tmp / "report"), "--quick", "--quiet"]) == 0
    )
    audit: dict[str, Any] = json.loads((tmp / "report" / "audit.json").read_text())
    audit["_summary"] = json.loads((tmp / "run" / "summary.json").read_text())
    return audit


def test_epsilon_curve_per_participant_ends_at_the_accountants_value(
    dp_audit: dict[str, Any],
) -> None:
    dp = dp_audit["dp"]
    curves = dp["epsilon_over_iterations"]
    final = dp_audit["_summary"]["privacy"]
    assert set(curves) == set(final)
    for pid, curve in curves.items():
        assert len(curve) == dp_audit["iterations"]
        assert curve == sorted(curve)  # composition only grows
        assert curve[-1] == pytest.approx(final[pid]["epsilon"], rel=1e-6)
    assert dp["delta"] == 1e-5


def test_reproducible_noise_is_a_warning_and_the_budget_is_reported(
    dp_audit: dict[str, Any],
) -> None:
    dp = dp_audit["dp"]
    assert dp["dp_noise_reproducible"] is True
    assert any("REPRODUCIBLE" in w for w in dp["warnings"])
    assert "Mersenne" in dp["noise_source"]
    assert dp["budget"] == 5.0
    assert dp["worst_epsilon"] <= 5.0
    exhausted = [p for p, v in dp["participants"].items() if v["budget_exhausted"]]
    assert exhausted, "epsilon_max = 5.0 is reached within four iterations"
    assert "reached by" in dp["budget_status"]


def test_no_empirical_lower_bound_exceeds_the_accountants_epsilon(
    dp_audit: dict[str, Any],
) -> None:
    ev = dp_audit["empirical_vs_accountant"]
    eps = ev["accountant_epsilon"]
    assert eps is not None and eps > 0
    assert ev["canary_epsilon_lower_bound"] <= eps
    bound = ev["membership_epsilon_lower_bound"]
    assert bound is None or bound <= eps
