"""TrustRelay: the coordinator's side of the trust check, for every aggregation mode.

The auditor node judges (securepool/node/auditor.py); the coordinator relays what it
is to judge, checks that each verdict is the auditor's (signed under its PKI key, for
that session), applies it to the group and keeps flags and marks in a
:class:`~securepool.trust.ledger.TrustLedger`. The modes call this layer; they never
read a verdict themselves:

* connect: the auditor's signed opening key (:mod:`protocols.trust_offer`), relayed to
  the participants in every TrainRequest (mask mode, and plaintext mode under the
  validation vote) and, in mask mode, the binding keys of every SecAgg+ server;
* ``mask/judge`` (:meth:`TrustRelay.judge_masks`): the signed
  :class:`~protocols.secagg.binding.MaskVerdict` each group's clients require before
  unmasking; :meth:`TrustRelay.post_check` after unmasking, against its commitments;
* ``plain/judge`` (:meth:`TrustRelay.judge_plain`): the summary of each update received,
  under a projection drawn after every update of the group is fixed, and, under the
  validation vote, the sealed ballots;
* ``he/fold`` (:meth:`TrustRelay.judge_folds`): the fold requests of HE mode.

A group without a valid verdict is not aggregated (mask: its clients would not unmask
anyway); a flagged member leaves the group's inputs and is recorded in the ledger.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping, Sequence
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import NDArray

from crypto.errors import SecurePoolError
from protocols.secagg.binding import (
    BindingKeys,
    JudgeRequest,
    MaskVerdict,
    PostCheckRequest,
    discarded,
    post_check,
)
from protocols.secagg.binding_wire import encode_judge_request
from protocols.summaries import encode_summary, summarize
from protocols.trust_offer import TRUST_SETUP_SESSION, verify_trust_offer
from securepool.config import RunConfig
from securepool.coordinator.modes.base import Group, Link
from securepool.node.auditor import AUDITOR_ID as AUDITOR
from securepool.node.wire import NodeStage, PlainJudgeRequest, unpack_list
from securepool.trust.check import plain_projection_seed
from securepool.trust.config import VotingRule
from securepool.trust.he_binding import read_fold_verdict
from securepool.trust.ledger import TrustLedger


class PlainCase(NamedTuple):
    """What the auditor judges one plaintext group on: the updates received (flagged
    members are removed from it) and the sealed ballots."""

    group: Group
    updates: MutableMapping[str, tuple[NDArray[np.float32], float]]
    ballots: Mapping[str, bytes]


class FoldCase(NamedTuple):
    """One HE group's fold request and its contributions (flagged ones are removed)."""

    group: Group
    request: bytes
    contributions: MutableMapping[str, Any]


class TrustRelay:
    """The trust check as the coordinator runs it (see the module docstring)."""

    def __init__(self, cfg: RunConfig, link: Link, *, model_sizes: Mapping[str, int]) -> None:
        self.cfg = cfg
        self.ledger = TrustLedger(cfg.trust)
        self._link = link
        self._sizes = dict(model_sizes)
        #: the auditor's signed opening key, relayed as is (participants verify it)
        self.offer = b""
        #: mask mode: where clients seal binding reports, whose verdict they require
        self.binding: BindingKeys | None = None

    @property
    def wants_ballots(self) -> bool:
        """The validation vote: group members score their peers' updates (plaintext)."""
        return self.cfg.trust.voting is VotingRule.VALIDATION

    def accept_offer(self, raw: bytes | None) -> None:
        """The auditor's opening key, checked against its PKI key here (every
        participant checks it again before sealing to it)."""
        offer, auditor = self._link.auditor_offer(raw, "trust check's opening key")
        opening = verify_trust_offer(offer, auditor_public=auditor, session=TRUST_SETUP_SESSION)
        self.offer = offer
        self.binding = BindingKeys(
            auditor_public=opening, auditor_identity=auditor, dim=self.cfg.trust.sketch_dim
        )

    def is_excluded(self, participant: str, iteration: int) -> bool:
        """Whether the ledger's marks keep ``participant`` out of ``iteration``."""
        return self.ledger.is_excluded(participant, iteration)

    def _record(
        self,
        group: Group,
        flagged: Mapping[str, str],
        *,
        trusted: str | None = None,
        threshold: float | None = None,
    ) -> None:
        self.ledger.record(
            session=group.session,
            iteration=group.iteration,
            model_id=group.model_id,
            flagged=flagged,
            trusted=trusted,
            threshold=threshold,
        )

    def record_lies(self, group: Group, flagged: Mapping[str, str]) -> None:
        """Lies the coordinator itself sees (plaintext mode: a claimed weight), into the
        ledger like the auditor's flags (a proven lie marks its liar at once)."""
        self._record(group, flagged)

    def _auditor_key(self) -> bytes:
        key = self._link.registry.get(AUDITOR)
        if key is None:
            raise SecurePoolError("the PKI holds no key for the auditor")
        return key

    # --- mask ------------------------------------------------------------------------

    def judge_masks(
        self, asked: Sequence[tuple[Group, JudgeRequest]]
    ) -> dict[str, tuple[bytes, bytes]]:
        """Every group's judge request to the auditor in one message; each group's
        signed verdict (by session), checked here. A group without one aborts (its
        clients unmask for no one without it); flagged and excluded members leave it."""
        sent: list[Group] = []
        requests: list[bytes] = []
        for g, request in asked:
            try:
                requests.append(encode_judge_request(request))
            except SecurePoolError as exc:
                g.aborted = f"aborted: no judge request: {exc}"
                continue
            sent.append(g)
        answers = self._link.ask_auditor(NodeStage.MASK_JUDGE, requests)
        out: dict[str, tuple[bytes, bytes]] = {}
        for g, answer in zip(sent, answers, strict=True):
            try:
                data, signature = unpack_list(answer, what="verdict", expected=2)
                verdict = MaskVerdict.verified(
                    data, signature, auditor=self._auditor_key(), session=g.session
                )
            except SecurePoolError as exc:
                g.aborted = f"aborted: no valid verdict of the auditor: {exc}"
                continue
            out[g.session] = (data, signature)
            for pid, why in verdict.flagged.items():
                g.excluded[pid] = f"untrusted: {why}"
            for pid, why in verdict.excluded.items():
                g.excluded.setdefault(pid, why)
            self._record(
                g, verdict.flagged, trusted=verdict.trusted or None, threshold=verdict.threshold
            )
        return out

    def post_check(self, group: Group, request: PostCheckRequest) -> None:
        """After unmasking: the group's post-check against the commitments of the
        auditor's verdict (no message: the coordinator holds what unmasking rebuilt).
        Liars are flagged; a group whose aggregate holds a liar's input is discarded.
        Raises what :func:`~protocols.secagg.binding.post_check` raises, before any
        change."""
        check = post_check(request)
        if check.flagged:
            self._record(group, check.flagged)
        for pid, why in check.flagged.items():
            group.excluded[pid] = f"untrusted: {why}"
        if check.discard:
            group.aborted = discarded(check)

    # --- plaintext and HE: signed P6 verdicts ------------------------------------------

    def judge_plain(self, cases: Sequence[PlainCase]) -> None:
        """Plaintext mode: every group's summaries of the updates received and the
        sealed ballots of the validation vote, to the auditor in one message; its signed
        verdict leaves the flagged out (no verdict: the group is not aggregated).

        The coordinator sees every update in this mode, so it summarises them itself,
        under the projection of :func:`~securepool.trust.check.plain_projection_seed`:
        drawn from every update the group received, so no participant knew it while
        choosing its update (a perturbation in its kernel cannot be planned)."""
        dim = self.cfg.trust.sketch_dim
        asked: list[tuple[Group, MutableMapping[str, Any]]] = []
        requests: list[bytes] = []
        for case in cases:
            g = case.group
            if not case.updates:
                continue
            seed = plain_projection_seed(
                run_seed=self.cfg.run.seed, session=g.session, updates=case.updates
            )
            summaries = {
                pid: encode_summary(summarize(vec, dim=dim, seed=seed))
                for pid, (vec, _w) in case.updates.items()
            }
            size = dim or self._sizes[g.model_id]
            requests.append(PlainJudgeRequest(g.session, size, summaries, case.ballots).to_bytes())
            asked.append((g, case.updates))
        self._apply_verdicts(
            NodeStage.PLAIN_JUDGE, asked, requests, refused="no valid verdict of the auditor"
        )

    def judge_folds(self, cases: Sequence[FoldCase]) -> None:
        """HE mode: every group's fold request to the auditor in one message; the signed
        verdict clears the members whose ciphertexts may enter that group's aggregate
        (the auditor enforces it at decryption)."""
        self._apply_verdicts(
            NodeStage.HE_FOLD,
            [(c.group, c.contributions) for c in cases],
            [c.request for c in cases],
            refused="the auditor refused the folds",
        )

    def _apply_verdicts(
        self,
        stage: NodeStage,
        asked: Sequence[tuple[Group, MutableMapping[str, Any]]],
        requests: Sequence[bytes],
        *,
        refused: str,
    ) -> None:
        """Each asked group's request to the auditor (one message) and its signed P6
        verdict: flagged members leave the group's inputs, flags are recorded; a group
        without a valid verdict is not aggregated (``refused`` says why)."""
        answers = self._link.ask_auditor(stage, requests) if asked else []
        for (g, inputs), answer in zip(asked, answers, strict=True):
            try:
                verdict = read_fold_verdict(
                    answer, auditor_public=self._auditor_key(), session=g.session
                )
            except SecurePoolError as exc:
                g.aborted = f"aborted: {refused}: {exc}"
                continue
            for pid, why in verdict.flagged.items():
                if inputs.pop(pid, None) is not None:
                    g.excluded[pid] = f"untrusted: {why}"
            self._record(g, verdict.flagged, trusted=verdict.trusted, threshold=verdict.threshold)
