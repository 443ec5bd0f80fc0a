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

    def lines(self, width: int = 80) -> list[str]:
        """The iteration as lines of at most ``width`` columns (80 at least): the test
        errors, then the groups (and aborted / converged); a part that does not fit
        starts a new, indented line, and a line is never cut inside a model's figures.
        What ``securepool run`` shows and a deployed coordinator logs."""
        aborted = [g.model_id for g in self.groups if g.status.startswith("aborted")]
        parts = [
            [f"it {self.iteration:3d} | test error"]
            + [f"{m} {e:.3f}" for m, e in self.test_errors.items()],
            ["| groups", *(f"{g.model_id}:{len(g.members)}" for g in self.groups)],
            [f"aborted {','.join(aborted)}"] if aborted else [],
            ["converged"] if self.converged else [],
        ]
        width, indent = max(width, 80), " " * 7
        lines: list[str] = []
        for words in (p for p in parts if p):
            whole = " ".join(words)
            if lines and len(lines[-1]) + 1 + len(whole) <= width:
                lines[-1] += " " + whole
                continue
            lines.append(words[0] if not lines else indent + words[0])
            for w in words[1:]:
                if len(lines[-1]) + 1 + len(w) <= width:
                    lines[-1] += " " + w
                else:
                    lines.append(indent + w)
        return lines

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
