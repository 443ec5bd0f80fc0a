"""``aggregation.mode = "he"``: CKKS encryption under the auditor's key.

At connect the coordinator fetches the auditor's signed context offer (``he/offer``)
and relays it, without the fold's Galois keys, in every TrainRequest; each member's
train reply is its upload and signed receipt, checked on arrival. After train:

* ``he/fold`` (the trust check): the auditor judges folds of the ciphertexts
  (:meth:`~securepool.coordinator.trust.TrustRelay.judge_folds`) and clears who may be
  in each group's aggregate;
* ``he/decrypt``: every group's sum of ciphertexts to the auditor in one message, which
  releases each aggregate (with the next ``beacon/commits`` to the participants; the
  next ``beacon/start`` rode on ``train``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from crypto.errors import SecurePoolError, ThresholdNotMet
from protocols.he.coordinator import Contribution, HECoordinator
from protocols.he.messages import AggregateRelease, ContextOffer
from securepool.config import RunConfig
from securepool.coordinator.modes.base import Aggregate, Group, Link, NoTrainParts
from securepool.coordinator.trust import FoldCase, TrustRelay
from securepool.node.auditor import AUDITOR_ID as AUDITOR
from securepool.node.auditor import HE_SETUP_SESSION
from securepool.node.wire import NodeStage, unpack_list


@dataclass
class _Encrypted:
    """An HE group's checked uploads and the auditor's release of their sum."""

    uploads: dict[str, Contribution] = field(default_factory=dict)
    release: AggregateRelease | None = None


def _encrypted(group: Group) -> _Encrypted:
    if not isinstance(group.state, _Encrypted):
        raise SecurePoolError(f"group {group.session} is not an HE group")
    return group.state


class HEMode(NoTrainParts):
    """The HE mode's part of an iteration (see the module docstring)."""

    offer_stage: NodeStage | None = NodeStage.HE_OFFER
    #: the next beacon rides on train and on the auditor's he/decrypt round trip
    beacon_stages: tuple[NodeStage, NodeStage] | None = (NodeStage.TRAIN, NodeStage.HE_DECRYPT)
    #: the key holder checks the certificate before it folds or decrypts any group
    quorum_stages: frozenset[NodeStage] = frozenset({NodeStage.HE_FOLD, NodeStage.HE_DECRYPT})

    def __init__(self, cfg: RunConfig, link: Link, *, trust: TrustRelay | None) -> None:
        self.cfg = cfg
        self._link = link
        self._trust = trust
        self._he: HECoordinator | None = None  # checks uploads, adds ciphertexts
        self.offer = b""  # the auditor's signed context offer
        self.relayed = b""  # the same, signed, without the fold's Galois keys

    def accept_offer(self, raw: bytes | None) -> None:
        """The auditor's context offer, checked against its PKI key."""
        offer, auditor = self._link.auditor_offer(raw, "HE context offer")
        he = HECoordinator(
            self.cfg.he_settings(),
            registry={p: k for p, k in self._link.registry.items() if p != AUDITOR},
        )
        he.accept_context(offer, auditor_public=auditor, session=HE_SETUP_SESSION)
        self._he, self.offer = he, offer
        # participants only encrypt: their copy leaves out the fold's Galois keys (MBs)
        self.relayed = ContextOffer.from_bytes(offer).without_galois().to_bytes()

    def _coordinator(self) -> HECoordinator:
        if self._he is None:
            raise SecurePoolError("HE mode without the auditor's context")
        return self._he

    def train_offers(self) -> tuple[bytes, bytes]:
        """The auditor's context offer (without Galois keys); no opening key."""
        return self.relayed, b""

    def begin(self, groups: Sequence[Group]) -> None:
        """Fresh uploads for every group of the iteration."""
        for g in groups:
            g.state = _Encrypted()

    def file_train(self, group: Group, pid: str, body: bytes) -> None:
        """A member's (upload, receipt), checked against its receipt."""
        he = self._coordinator()
        try:
            upload, receipt = unpack_list(body, what="HE upload", expected=2)
            _encrypted(group).uploads[pid] = he.check_upload(
                session=group.session, sender=pid, upload=upload, receipt=receipt
            )
        except SecurePoolError as exc:
            group.excluded[pid] = f"bad upload: {type(exc).__name__}: {exc}"

    def after_train(self, groups: Sequence[Group]) -> None:
        """The auditor's fold verdicts (trust check), then its releases."""
        if self._trust is not None:
            self._fold(groups, self._trust)
        self._decrypt(groups)

    def _fold(self, groups: Sequence[Group], trust: TrustRelay) -> None:
        """Every group's fold request; the trust layer relays them and applies the
        verdicts (the auditor enforces the cleared sets at decryption)."""
        he = self._coordinator()
        cases: list[FoldCase] = []
        for g in groups:
            if g.aborted is not None:
                continue
            uploads = _encrypted(g).uploads
            try:
                request, more = he.build_fold_request(
                    session=g.session, contributions=uploads, joint_seed=g.joint_seed
                )
            except ThresholdNotMet as exc:
                g.aborted = f"aborted: {exc}"
                continue
            for pid, reason in more.items():
                uploads.pop(pid, None)
                g.excluded[pid] = reason
            cases.append(FoldCase(g, request, uploads))
        trust.judge_folds(cases)

    def _decrypt(self, groups: Sequence[Group]) -> None:
        """``he/decrypt``: every group's sum of ciphertexts to the auditor in one
        message; each group gets the auditor's release or aborts."""
        he = self._coordinator()
        asked: list[Group] = []
        requests: list[bytes] = []
        for g in groups:
            if g.aborted is not None:
                continue
            try:
                request, more = he.build_request(
                    session=g.session,
                    contributions=_encrypted(g).uploads,
                    threads=self.cfg.he_settings().threads(),
                )
            except ThresholdNotMet as exc:
                g.aborted = f"aborted: {exc}"
                continue
            g.excluded.update(more)
            asked.append(g)
            requests.append(request)
        answers = self._link.ask_auditor(NodeStage.HE_DECRYPT, requests)
        for g, answer in zip(asked, answers, strict=True):
            mine = _encrypted(g)
            try:
                if not answer:
                    raise SecurePoolError("no release")
                release = AggregateRelease.from_bytes(answer)
                if release.session != g.session or not set(release.contributors) <= set(
                    mine.uploads
                ):
                    raise SecurePoolError("a release for another session or contributors")
                mine.release = release
            except SecurePoolError as exc:
                g.aborted = f"aborted: the auditor refused the aggregate: {exc}"

    def finish(self, group: Group) -> Aggregate:
        """The auditor's release: the weighted sum and weight of who is in it."""
        release = _encrypted(group).release
        if release is None:
            need = self.cfg.assignment.min_group_size
            raise ThresholdNotMet(
                f"session {group.session}: no aggregate released", survivors=0, threshold=need
            )
        contributors = tuple(sorted(release.contributors))
        for pid in group.members:
            if pid not in contributors:
                group.excluded.setdefault(pid, "not in the aggregate")
        return release.weighted_sum.astype(np.float64), float(release.total_weight), contributors
