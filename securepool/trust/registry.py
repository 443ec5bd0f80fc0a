"""Untrusted marks (P6) and how long they keep a participant out.

A *flag* leaves one update out of one aggregate. A *mark* (untrusted) keeps the
participant out of later iterations by the exclusion policy; it is set once a participant
has been flagged in ``strikes`` distinct iterations within the last ``strike_window``
iterations. ``strikes = 1`` marks on the first flag (the patent's P6 as written); more
strikes spare honest participants whose data is unusual enough to be flagged once in a
while (non-IID), at the price of an attacker's first flagged update costing it nothing
beyond that update.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from protocols.verdict import is_proven
from securepool.trust.config import ExclusionPolicy


@dataclass
class UntrustedRegistry:
    policy: ExclusionPolicy
    rounds: int
    strikes: int = 2
    strike_window: int = 5
    flags: list[dict[str, Any]] = field(default_factory=list)  # every flag, with its reason
    marks: list[dict[str, Any]] = field(default_factory=list)  # the audit trail of marks

    def flag(self, pid: str, *, iteration: int, model_id: str, reason: str) -> bool:
        """Record one flagged update; mark ``pid`` untrusted once it reaches its strikes,
        or at once for a proven lie (:func:`protocols.verdict.is_proven`: something an
        honest participant cannot send, so no strike is needed to spare it), which
        excludes it for good under any policy but ``none``.

        Returns whether this flag marked the participant.
        """
        entry = {"participant": pid, "iteration": iteration, "model": model_id, "reason": reason}
        self.flags.append(entry)
        if is_proven(reason):
            self.marks.append({**entry, "strikes": 1, "proven": True})
            return True
        recent = {
            f["iteration"]
            for f in self.flags
            if f["participant"] == pid and iteration - f["iteration"] < self.strike_window
        }
        if len(recent) < self.strikes:
            return False
        self.marks.append({**entry, "strikes": len(recent)})
        return True

    def is_excluded(self, pid: str, iteration: int) -> bool:
        if self.policy is ExclusionPolicy.NONE:
            return False
        for m in self.marks:
            if m["participant"] != pid or m["iteration"] >= iteration:
                continue
            # a proven liar is not let back in: nothing it says can be taken at its word
            if self.policy is ExclusionPolicy.PERMANENT or m.get("proven") is True:
                return True
            if iteration - m["iteration"] <= self.rounds:
                return True
        return False

    def untrusted(self) -> list[str]:
        return sorted({m["participant"] for m in self.marks})

    def flagged(self) -> list[str]:
        return sorted({f["participant"] for f in self.flags})
