"""What the coordinator keeps of the trust check: flags, marks, the auditor's verdicts.

The auditor (its own process, securepool/node/auditor.py) judges; the coordinator only
acts on verdicts that verify under the auditor's PKI key (mask: the signed
:class:`~protocols.secagg.binding.MaskVerdict`, which the clients check again; HE: the
signed fold verdict) and on the post-check's liars. It keeps every flag with its reason
and the marks of :class:`~securepool.trust.registry.UntrustedRegistry`, checkpointed
with the pool, so a ``--resume`` keeps who is untrusted.

Security: a coordinator that lies here hurts only what it controls anyway (it can drop
any participant); it cannot make a client unmask for a flagged member without a verdict
the auditor signed, nor make the auditor decrypt an aggregate with an uncleared member.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from securepool.trust.config import TrustConfig
from securepool.trust.registry import UntrustedRegistry


class TrustLedger:
    """Flags, marks and the verdicts seen, for ``summary.json`` and checkpoints."""

    def __init__(self, config: TrustConfig) -> None:
        self.config = config
        self.registry = UntrustedRegistry(
            config.policy,
            config.exclude_rounds,
            strikes=config.strikes,
            strike_window=config.strike_window,
        )
        self.verdicts: list[dict[str, Any]] = []

    def record(
        self,
        *,
        session: str,
        iteration: int,
        model_id: str,
        flagged: Mapping[str, str],
        trusted: str | None = None,
        threshold: float | None = None,
    ) -> None:
        """One verdict (or post-check) of the auditor: every flagged member gets a flag."""
        self.verdicts.append(
            {
                "session": session,
                "trusted": trusted,
                "flagged": dict(sorted(flagged.items())),
                "threshold": threshold,
            }
        )
        for pid, reason in sorted(flagged.items()):
            self.registry.flag(pid, iteration=iteration, model_id=model_id, reason=reason)

    def is_excluded(self, participant: str, iteration: int) -> bool:
        return self.registry.is_excluded(participant, iteration)

    def report(self) -> dict[str, Any]:
        """Who is untrusted, every mark and flag, the strike rule and the verdicts acted on
        (``summary.json``'s ``trust`` section)."""
        return {
            "untrusted": self.registry.untrusted(),
            "marks": list(self.registry.marks),
            "flagged": self.registry.flagged(),
            "flags": list(self.registry.flags),
            "strikes": self.config.strikes,
            "policy": self.config.policy.value,
            "verdicts": list(self.verdicts),
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            "marks": list(self.registry.marks),
            "flags": list(self.registry.flags),
            "verdicts": list(self.verdicts),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.registry.marks = list(state.get("marks", []))
        self.registry.flags = list(state.get("flags", []))
        self.verdicts = list(state.get("verdicts", []))
