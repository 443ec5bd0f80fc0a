"""The ``[audit]`` section of a run configuration.

``canaries = m`` makes the run insert m canaries (random inputs with random labels, a
pool of their own, not dataset records), each included with probability 1/2 at a random
participant, for the one-run audit of Steinke, Nasr and Jagielski (NeurIPS 2023); see
:mod:`securepool.audit.canaries`.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_CANARIES = 10_000


@dataclass(frozen=True)
class AuditConfig:
    canaries: int = 0  # 0: no canaries (the run's data is untouched)

    def problems(self) -> list[str]:
        if not 0 <= self.canaries <= MAX_CANARIES:
            return [f"canaries must be in [0, {MAX_CANARIES}], got {self.canaries}"]
        return []
