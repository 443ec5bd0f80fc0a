"""`securepool bench audit` smoke test: a tiny run, one quick audit, the JSON it prints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from securepool.bench.audit import main

TINY = """
[run]
seed = 1
[data]
participants = 3
[[pool.models]]
id = "lr"
arch = "logreg"
seed = 1
[convergence]
error_range = [0.0, 0.01]
max_iterations = 1
[acceptance]
max_error_bound = 1.0
"""


def test_bench_audit_prints_timings_ratio_and_results(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(TINY)
    args = ["--config", str(cfg), "--repeats", "1", "--quick", "--workers", "1"]
    assert main([*args, "--set", "audit.canaries=20"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["overrides"] == {"audit.canaries": 20}
    assert len(out["audit_wall_s_all"]) == 1 and out["audit_wall_s_median"] > 0
    assert out["audit_over_run"] == pytest.approx(
        out["audit_wall_s_median"] / out["run_wall_s"], rel=0.05
    )
    assert out["shadow_models"] == 4  # --quick: 4 per released model
    assert set(out["results"]["membership"]) == {"lr"}
    assert out["results"]["empirical_vs_accountant"]["canary_epsilon_lower_bound"] is not None
