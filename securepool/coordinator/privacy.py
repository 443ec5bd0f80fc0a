"""What the participants report about their own privacy spend (summary.json, metrics).

The ledgers and budgets live in the nodes (:class:`securepool.privacy.trainer.
ParticipantDP`, persisted in each node's state directory); the coordinator only keeps
the last report each node chose to send with its training reply. These numbers are the
nodes' word, shown for the record: no decision of the coordinator depends on them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any


class ReportedPrivacy:
    """Same reporting surface as the in-process DP trainer (privacy_spent, report,
    worst_epsilon, state_dict), fed by the nodes' replies."""

    def __init__(self, *, enabled: bool) -> None:
        self.enabled = enabled
        self.reports: dict[str, dict[str, Any]] = {}

    def record(self, pid: str, report: object) -> None:
        """Keep a node's report if it is a JSON object with a finite epsilon >= 0."""
        if not self.enabled or not isinstance(report, Mapping):
            return
        eps = report.get("epsilon")
        if isinstance(eps, (int, float)) and math.isfinite(eps) and eps >= 0:
            self.reports[pid] = dict(report)

    def privacy_spent(self) -> dict[str, float] | None:
        if not self.enabled:
            return None
        return {pid: round(float(r["epsilon"]), 6) for pid, r in sorted(self.reports.items())}

    def worst_epsilon(self) -> float | None:
        if not self.enabled:
            return None
        return max((float(r["epsilon"]) for r in self.reports.values()), default=0.0)

    def report(self) -> dict[str, dict[str, Any]] | None:
        return dict(sorted(self.reports.items())) if self.enabled else None

    def state_dict(self) -> dict[str, Any]:
        return {"reports": self.reports}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.reports = {str(k): dict(v) for k, v in (state.get("reports") or {}).items()}
