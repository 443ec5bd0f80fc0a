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
from protocols.ballots import seal_ballot
from protocols.secagg.binding import (
    BindingKeys,
    JudgeRequest,
    MaskVerdict,
    PostCheck,
    PostCheckRequest,
    post_check,
)
from protocols.summaries import seal_summary, summarize
from securepool.trust.auditor import Auditor
from securepool.trust.config import TrustConfig, VotingRule
from securepool.trust.ledger import TrustLedger

if TYPE_CHECKING:
    from protocols.he.keyholder import HEKeyHolder


def public_projection_seed(run_seed: int, session: str) -> bytes:
    """The session's count-sketch seed: public, known to every participant before it
    trains (so also to an attacker, see the ``kernel`` attack in securepool.attacks)."""
    return hashlib.sha256(f"securepool/sketch/{run_seed}/{session}".encode()).digest()


class TrustCheck:
    def __init__(self, config: TrustConfig, *, seed: int, model_sizes: Mapping[str, int]) -> None:
        self.config = config
        self.model_sizes = dict(model_sizes)  # raw summaries (sketch_dim = 0) have these sizes
        self.auditor = Auditor(config)
        self.ledger = TrustLedger(config)
        self.registry = self.ledger.registry
        self._seed = seed
        self.auditor_identity = self.auditor.identity_public()  # the coordinator's copy
        self._keyholder: HEKeyHolder | None = None

    def _projection_seed(self, session: str) -> bytes:
        """Public: every participant of a session sketches with the same projection."""
        return public_projection_seed(self._seed, session)

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
    ) -> SessionVet:
        """The trust hook of one group session: a :class:`~protocols.aggregation.Vet`
        (plaintext; HE, where it judges folds of the ciphertexts) that is also a
        :class:`~protocols.secagg.binding.MaskAudit` (mask mode binds the sketch to the
        masked input through it)."""
        return SessionVet(
            self, session=session, iteration=iteration, model_id=model_id, ballots=ballots
        )

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
        """The ledger's report, with the verdicts the in-process auditor signed."""
        out = self.ledger.report()
        out["verdicts"] = [
            {
                "session": v.session,
                "trusted": v.trusted,
                "flagged": dict(v.flagged),
                "threshold": v.threshold,
            }
            for v, _ in self.auditor.verdicts
        ]
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"marks": list(self.registry.marks), "flags": list(self.registry.flags)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.ledger.load_state_dict(state)


class SessionVet:
    """One session's trust hook (see :meth:`TrustCheck.vet_for`)."""

    def __init__(
        self,
        check: TrustCheck,
        *,
        session: str,
        iteration: int,
        model_id: str,
        ballots: Mapping[str, bytes] | None,
    ) -> None:
        self._check = check
        self.session = session
        self.iteration = iteration
        self.model_id = model_id
        self._ballots = ballots

    def _flag(self, flagged: Mapping[str, str]) -> None:
        for pid, reason in flagged.items():
            self._check.registry.flag(
                pid, iteration=self.iteration, model_id=self.model_id, reason=reason
            )

    def __call__(
        self,
        sealed: Mapping[str, bytes],
        /,
        *,
        observed: Mapping[str, NDArray[np.float32]] | None = None,
        fold_request: bytes | None = None,
    ) -> Mapping[str, str]:
        check = self._check
        if fold_request is not None:  # HE binding: the auditor judges the folds
            return check._vet_folds(self.session, self.iteration, self.model_id, fold_request)
        dim = check.config.sketch_dim or check.model_sizes[self.model_id]
        # plaintext mode: the summary of what was received, for the auditor to bind
        # each sealed summary to (the sketch only: the auditor sees no more than before)
        seed = check._projection_seed(self.session)
        expected = (
            None
            if observed is None
            else {
                pid: summarize(update, dim=check.config.sketch_dim, seed=seed)
                for pid, update in observed.items()
            }
        )
        verdict, signature = check.auditor.vet(
            self.session, sealed, dim=dim, ballots=self._ballots, expected=expected
        )
        verdict.verify(check.auditor_identity, signature)  # coordinator side: raises if forged
        self._flag(verdict.flagged)
        return dict(verdict.flagged)

    # --- MaskAudit: mask mode's binding ------------------------------------------------

    def binding_keys(self) -> BindingKeys:
        return BindingKeys(
            auditor_public=self._check.auditor.public_key(),
            auditor_identity=self._check.auditor_identity,
            dim=self._check.config.sketch_dim,
        )

    def judge(self, request: JudgeRequest) -> tuple[bytes, bytes]:
        """The auditor's signed verdict; flagged members get a strike, excluded do not."""
        verdict, data, signature = self._check.auditor.judge_mask(
            request, dim=self._check.config.sketch_dim
        )
        # coordinator side: raises unless the auditor signed exactly this verdict
        MaskVerdict.verified(
            data, signature, auditor=self._check.auditor_identity, session=self.session
        )
        self._flag(verdict.flagged)
        return data, signature

    def post_check(self, request: PostCheckRequest) -> PostCheck:
        """The post-check against the auditor's committed projections; liars flagged."""
        result = post_check(request)
        self._flag(result.flagged)
        return result
