"""TrustCheck: the loop's TrustHooks — participants seal, the auditor vets, marks persist.

The coordinator relays sealed summaries to the auditor and receives a signed verdict; it
verifies the signature before leaving anyone out. In HE mode (the binding) it relays a
fold request instead and the auditor judges the folds (securepool.trust.he_binding).
Flagged participants leave the aggregate through the mode's dropout path (mask), by
omission (HE, plaintext).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from crypto.errors import StageError
from protocols.aggregation import Vet
from protocols.ballots import seal_ballot
from protocols.summaries import seal_summary, summarize
from securepool.trust.auditor import Auditor
from securepool.trust.config import TrustConfig, VotingRule
from securepool.trust.registry import UntrustedRegistry

if TYPE_CHECKING:
    from protocols.he.keyholder import HEKeyHolder


class TrustCheck:
    def __init__(self, config: TrustConfig, *, seed: int, model_sizes: Mapping[str, int]) -> None:
        self.config = config
        self.model_sizes = dict(model_sizes)  # raw summaries (sketch_dim = 0) have these sizes
        self.auditor = Auditor(config)
        self.registry = UntrustedRegistry(
            config.policy,
            config.exclude_rounds,
            strikes=config.strikes,
            strike_window=config.strike_window,
        )
        self._seed = seed
        self.auditor_identity = self.auditor.identity_public()  # the coordinator's copy
        self._keyholder: HEKeyHolder | None = None

    def _projection_seed(self, session: str) -> bytes:
        """Public: every participant of a session sketches with the same projection."""
        return hashlib.sha256(f"securepool/sketch/{self._seed}/{session}".encode()).digest()

    def seal(self, *, participant: str, update: NDArray[np.float32], session: str) -> bytes:
        summary = summarize(update, dim=self.config.sketch_dim, seed=self._projection_seed(session))
        return seal_summary(
            summary,
            auditor_public=self.auditor.public_key(),
            session=session,
            participant=participant,
        )

    def seal_ballot(self, *, voter: str, scores: Mapping[str, float], session: str) -> bytes:
        """The voter's validation ballot, sealed to the auditor (protocols.ballots)."""
        return seal_ballot(
            scores, auditor_public=self.auditor.public_key(), session=session, voter=voter
        )

    @property
    def wants_ballots(self) -> bool:
        """The validation vote: participants score their peers' models (plaintext only)."""
        return self.config.voting is VotingRule.VALIDATION

    def vet_for(
        self,
        *,
        session: str,
        iteration: int,
        model_id: str,
        ballots: Mapping[str, bytes] | None = None,
    ) -> Vet:
        def vet(
            sealed: Mapping[str, bytes],
            /,
            *,
            observed: Mapping[str, NDArray[np.float32]] | None = None,
            fold_request: bytes | None = None,
        ) -> Mapping[str, str]:
            if fold_request is not None:  # HE binding: the auditor judges the folds
                return self._vet_folds(session, iteration, model_id, fold_request)
            dim = self.config.sketch_dim or self.model_sizes[model_id]
            # plaintext mode: the summary of what was received, for the auditor to bind
            # each sealed summary to (the sketch only: the auditor sees no more than before)
            expected = (
                None
                if observed is None
                else {
                    pid: summarize(
                        update, dim=self.config.sketch_dim, seed=self._projection_seed(session)
                    )
                    for pid, update in observed.items()
                }
            )
            verdict, signature = self.auditor.vet(
                session, sealed, dim=dim, ballots=ballots, expected=expected
            )
            verdict.verify(self.auditor_identity, signature)  # coordinator side: raises if forged
            for pid, reason in verdict.flagged.items():
                self.registry.flag(pid, iteration=iteration, model_id=model_id, reason=reason)
            return dict(verdict.flagged)

        return vet

    def attach_keyholder(self, keyholder: HEKeyHolder) -> None:
        """HE mode: the key holder is the auditor's other half (it opens the folds)."""
        self._keyholder = keyholder

    def _vet_folds(
        self, session: str, iteration: int, model_id: str, request: bytes
    ) -> Mapping[str, str]:
        if self._keyholder is None:
            raise StageError("a fold request needs the HE key holder (attach_keyholder)")
        from securepool.trust.he_binding import answer_fold_request, read_fold_verdict

        reply = answer_fold_request(self._keyholder, self.auditor, request)
        verdict = read_fold_verdict(reply, auditor_public=self.auditor_identity, session=session)
        for pid, reason in verdict.flagged.items():
            self.registry.flag(pid, iteration=iteration, model_id=model_id, reason=reason)
        return dict(verdict.flagged)

    def is_excluded(self, participant: str, iteration: int) -> bool:
        return self.registry.is_excluded(participant, iteration)

    def report(self) -> dict[str, Any]:
        return {
            "untrusted": self.registry.untrusted(),
            "marks": list(self.registry.marks),
            "flagged": self.registry.flagged(),
            "flags": list(self.registry.flags),
            "strikes": self.config.strikes,
            "policy": self.config.policy.value,
            "verdicts": [
                {
                    "session": v.session,
                    "trusted": v.trusted,
                    "flagged": dict(v.flagged),
                    "threshold": v.threshold,
                }
                for v, _ in self.auditor.verdicts
            ],
        }

    def state_dict(self) -> dict[str, Any]:
        return {"marks": list(self.registry.marks), "flags": list(self.registry.flags)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.registry.marks = list(state.get("marks", []))
        self.registry.flags = list(state.get("flags", []))
