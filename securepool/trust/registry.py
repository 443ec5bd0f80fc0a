"""Untrusted marks (P6) and how long they keep a participant out."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from securepool.trust.config import ExclusionPolicy


@dataclass
class UntrustedRegistry:
    policy: ExclusionPolicy
    rounds: int
    marks: list[dict[str, Any]] = field(default_factory=list)  # the audit trail

    def mark(self, pid: str, *, iteration: int, model_id: str, reason: str) -> None:
        self.marks.append(
            {"participant": pid, "iteration": iteration, "model": model_id, "reason": reason}
        )

    def is_excluded(self, pid: str, iteration: int) -> bool:
        if self.policy is ExclusionPolicy.NONE:
            return False
        for m in self.marks:
            if m["participant"] != pid or m["iteration"] >= iteration:
                continue
            if self.policy is ExclusionPolicy.PERMANENT:
                return True
            if iteration - m["iteration"] <= self.rounds:
                return True
        return False

    def untrusted(self) -> list[str]:
        return sorted({m["participant"] for m in self.marks})
