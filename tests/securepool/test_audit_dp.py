"""The DP audit of a DP-SGD run: the epsilon curve, the reproducible-noise warning, the
budget, and soundness: no empirical lower bound exceeds the accountant's epsilon."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
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
    audit["_run"] = str(tmp / "run")
    audit["_report"] = str(tmp / "report")
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
    # what the epsilon bounds, stated in the audit (and its report)
    assert dp["neighbouring_relation"].startswith("add or remove one record")
    assert "record counts hidden" in dp["neighbouring_relation"]
    report = (Path(dp_audit["_report"]) / "report.md").read_text("utf-8")
    assert "Epsilon bounds: add or remove one record" in report


def test_reproducible_noise_is_a_warning_and_the_budget_is_reported(
    dp_audit: dict[str, Any],
) -> None:
    dp = dp_audit["dp"]
    assert dp["dp_noise_reproducible"] is True
    assert any("REPRODUCIBLE" in w for w in dp["warnings"])
    # the source each participant's trainer reported (summary.json privacy[pid])
    sources = {v["noise_source"] for v in dp_audit["_summary"]["privacy"].values()}
    assert dp["noise_source"] == "; ".join(sorted(sources))
    assert "REPRODUCIBLE" in dp["noise_source"] and "run seed" in dp["noise_source"]
    assert dp["sampler_delta"] == max(
        v["sampler_delta"] for v in dp_audit["_summary"]["privacy"].values()
    )
    assert 0 < dp["sampler_delta"] < dp["delta"]
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


def test_without_per_iteration_epsilon_the_curve_is_rebuilt_from_the_ledgers(
    dp_audit: dict[str, Any], tmp_path: Path
) -> None:
    """A run whose metrics lines carry no epsilon: the participants' checkpointed
    ledgers give the same curve."""
    from securepool.audit.dp import dp_audit as audit_dp
    from securepool.audit.inputs import load_run
    from securepool.rundir import _RUN_DOMAIN, _digest

    run = tmp_path / "run"
    shutil.copytree(dp_audit["_run"], run)
    rows = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    data = "".join(json.dumps({**r, "privacy": None}, sort_keys=True) + "\n" for r in rows)
    (run / "metrics.jsonl").write_text(data)
    rj = json.loads((run / "run.json").read_text())
    rj["files"]["metrics.jsonl"] = {
        "sha256": hashlib.sha256(data.encode()).hexdigest(),
        "bytes": len(data.encode()),
    }
    rj["digest"] = _digest(_RUN_DOMAIN, rj)
    (run / "run.json").write_text(json.dumps(rj))
    dp = audit_dp(load_run(run))
    assert dp["curve_source"].startswith("rebuilt from the checkpoint's privacy ledger")
    want = dp_audit["dp"]["epsilon_over_iterations"]
    assert set(dp["epsilon_over_iterations"]) == set(want)
    for pid, curve in dp["epsilon_over_iterations"].items():
        assert curve == pytest.approx([0.0 if e is None else e for e in want[pid]], rel=1e-4)


def test_a_design_without_power_says_so(dp_audit: dict[str, Any]) -> None:
    """50 canaries against one model cannot certify more than about 2.4, below this run's
    epsilon: the canary section and the DP section say a run with no DP would pass too,
    and how many canaries would be needed. The membership design (about 900 members and
    as many non-members) could certify more than the accountant's epsilon with a perfect
    attack, so its line reads "consistent": it had the power and found no violation."""
    from securepool.audit.canaries import canaries_needed, canary_power

    can = dp_audit["canaries"]
    eps = dp_audit["empirical_vs_accountant"]["accountant_epsilon"]
    assert can["power"] == pytest.approx(canary_power(50, 1)) and can["power"] < eps
    assert can["verdict"] == "no power"
    assert "cannot certify epsilon above 2.39" in can["statement"]
    assert "a run with no DP would also pass" in can["statement"]
    needed = canaries_needed(eps, 1)
    assert needed is not None and canary_power(needed, 1) > eps >= canary_power(needed - 1, 1)
    assert can["canaries_needed_for_accountant_epsilon"] == needed
    hl = dp_audit["membership"]["headline"]
    assert hl["power"] > eps and hl["verdict"] == "consistent"
    assert hl["epsilon_lower_bound"] is None or hl["epsilon_lower_bound"] <= eps
    power = dp_audit["empirical_vs_accountant"]["power"]
    assert power["canaries"]["verdict"] == "no power"
    assert power["membership"]["verdict"] == "consistent"
    page = (Path(dp_audit["_report"]) / "report.html").read_text()
    dp_part = page.split("<h2>Membership inference")[0]
    assert dp_part.count("Power (") == 2  # one line per empirical check in the DP section
    assert dp_part.count("a run with no DP would also pass") == 1  # the canaries' line
