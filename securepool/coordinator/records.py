"""What one pool iteration produced, as the coordinator records it (metrics.jsonl) and
the state a checkpoint restores (LoopState)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from securepool.evaluation import TestResult


@dataclass
class GroupOutcome:
    model_id: str
    members: tuple[str, ...]
    status: str  # "aggregated" | "aborted: ..." | "skipped: ..."
    contributors: tuple[str, ...] = ()
    excluded: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    note: str = ""  # e.g. where a distributed-DP group's steps stopped


@dataclass
class IterationRecord:
    iteration: int
    selected: tuple[str, ...]
    groups: list[GroupOutcome]
    test_errors: dict[str, float]
    converged: bool
    seconds: float
    epsilon: dict[str, float] | None = None  # each participant's own ledger, when DP is on
    joint_seed: str = ""  # hex: the beacon's seed this iteration's assignment came from
    withheld: dict[str, str] = field(default_factory=dict)  # invited, not in the seed

    def to_json(self) -> dict[str, Any]:
        return {
            "iteration": self.iteration,
            "selected": list(self.selected),
            "joint_seed": self.joint_seed,
            "withheld": self.withheld,
            "group_sizes": {g.model_id: len(g.members) for g in self.groups},
            "groups": [
                {
                    "model": g.model_id,
                    "members": list(g.members),
                    "status": g.status,
                    "contributors": len(g.contributors),
                    "excluded": g.excluded,
                    "seconds": round(g.seconds, 4),
                    **({"note": g.note} if g.note else {}),
                }
                for g in self.groups
            ],
            "test_errors": {k: round(v, 6) for k, v in self.test_errors.items()},
            "converged": self.converged,
            "seconds": round(self.seconds, 4),
            "privacy": None if self.epsilon is None else {"epsilon": self.epsilon},
        }


@dataclass
class LoopState:
    """Everything a checkpoint holds besides the component states."""

    iteration: int
    globals: dict[str, NDArray[np.float32]]
    test: dict[str, TestResult]
    converged: bool
    stop_reason: str | None = None


__all__ = ["GroupOutcome", "IterationRecord", "LoopState"]
