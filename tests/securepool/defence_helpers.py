"""The small run both defence test files train: 8 participants, one logreg model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from securepool.bench.run import _dump_toml
from securepool.runner import start_job

#: two of the eight train on triggered records and send their updates as trained
UNBOOSTED_BACKDOOR: dict[str, Any] = {
    "enabled": True,
    "kind": "backdoor",
    "strength": 1.0,
    "participants": ["p00", "p01"],
}


def table(
    *, defence: dict[str, Any], mode: str = "plaintext", iterations: int = 8, **extra: Any
) -> dict[str, Any]:
    """8 participants, one logreg model, every participant in its one group each
    iteration (seeded beacon: the same groups with and without the defence)."""
    return {
        "run": {"seed": 3},
        "data": {"participants": 8, "min_records": 5},
        "assignment": {"beacon": "seeded-insecure", "max_models": 1},
        "pool": {"models": [{"id": "lr", "arch": "logreg"}]},
        "training": {"epochs": 3, "lr": 0.1, "batch_size": 16, "momentum": 0.9},
        "convergence": {"max_iterations": iterations, "error_range": [0.0, 0.001]},
        "acceptance": {"max_error_bound": 1.0},
        "aggregation": {"mode": mode},
        "defence": defence,
        **extra,
    }


def run_table(tmp: Path, **kw: Any) -> dict[str, Any]:
    """:func:`table` written to ``tmp/c.toml`` and run into ``tmp/run``."""
    cfg = tmp / "c.toml"
    cfg.write_text(_dump_toml(table(**kw)))
    return start_job(cfg, tmp / "run")


def record_applies(tuning: Any) -> list[tuple[np.ndarray, np.ndarray]]:
    """Make ``tuning.apply`` (a CleanTuning's) keep each (aggregate, result) it makes."""
    seen: list[tuple[np.ndarray, np.ndarray]] = []
    apply = tuning.apply

    def spy(*a: Any, **kw: Any) -> np.ndarray:
        out = apply(*a, **kw)
        seen.append((np.array(a[2]), out))
        return out

    tuning.apply = spy
    return seen
