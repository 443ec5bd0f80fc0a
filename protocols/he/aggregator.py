"""HE-mode group aggregation: participants encrypt, the coordinator adds, the auditor decrypts.

One :class:`HEAggregator` per run. It owns the in-process role objects of HE mode: an
:class:`HEParticipant` per participant id (created on first sight, its identity key
registered with the coordinator and the key holder: the simulated PKI), an
:class:`HECoordinator`, and the caller's :class:`HEKeyHolder` (the auditor). Every
message crosses the :class:`Router` as bytes, so each role's transcript is its exact view:

====================  =============  ==============  ==========================
kind                  from           to              payload
====================  =============  ==============  ==========================
``he_context``        auditor        each role       public context + sealbox key,
                                                     signed by the auditor
``he_upload``         participant    coordinator     ciphertext chunks
``he_receipt``        participant    coordinator     signed receipt
``sealed_summary``    participant    coordinator     summary sealed to the auditor
                                                     (only without the binding)
``he_fold``           coordinator    auditor         one fold per participant +
                                                     receipts + fold seed (binding)
``he_decrypt``        coordinator    auditor         aggregate + receipts
``he_aggregate``      auditor        coordinator     weighted sum, total weight
====================  =============  ==============  ==========================

Participants are done once they have uploaded: a dropout at ``Stage.UNMASK`` (or later)
changes nothing in HE mode; one before ``Stage.INPUT`` means no upload.
"""

from __future__ import annotations

from collections.abc import Mapping

from crypto.ckks.context import PublicCKKSContext
from crypto.ckks.parallel import CKKSWorkerPool
from crypto.errors import SecurePoolError, ThresholdNotMet
from protocols.aggregation import (
    AggregationMode,
    ClientInput,
    DropoutPlan,
    GroupResult,
    Router,
    SessionContext,
    Stage,
    Vet,
)
from protocols.he.coordinator import Contribution, HECoordinator
from protocols.he.keyholder import HEKeyHolder
from protocols.he.messages import AggregateRelease
from protocols.he.participant import HEParticipant
from protocols.he.settings import HESettings


class HEAggregator:
    """The :class:`~protocols.aggregation.GroupAggregator` of HE mode.

    Security: the coordinator sees ciphertexts, signed receipts and sealed summaries per
    participant, and the per-group aggregate; the auditor sees aggregates only. Bad input
    from one participant (corrupted, truncated, wrong size, another context, bad
    signature) excludes that participant for the round with the reason; fewer than
    ``min_group_size`` left, or an aggregate the auditor refuses, raises
    :class:`ThresholdNotMet` (the model keeps its last state).
    """

    mode = AggregationMode.HE

    def __init__(
        self,
        settings: HESettings,
        *,
        keyholder: HEKeyHolder,
        router: Router | None = None,
        coordinator: str = "coordinator",
        auditor: str = "auditor",
        setup_session: str = "he-setup",
    ) -> None:
        settings.check()
        self.settings = settings
        self.keyholder = keyholder
        self.router = router if router is not None else Router()
        self.coordinator_name = coordinator
        self.auditor_name = auditor
        self._registry: dict[str, bytes] = {}
        self._participants: dict[str, HEParticipant] = {}
        self.coordinator = HECoordinator(settings, registry=self._registry)
        #: the session the auditor's signed context offer is bound to
        self.setup_session = setup_session
        #: the auditor's identity key as the PKI gives it (not taken from the offer)
        self.auditor_public = keyholder.identity_public
        self._offer = keyholder.context_offer(session=setup_session)
        self.coordinator.accept_context(
            self._deliver_offer(coordinator, session=setup_session),
            auditor_public=self.auditor_public,
            session=setup_session,
        )
        self._pool: CKKSWorkerPool | None = None
        #: Encrypt participants' chunks in worker processes too. Off: measured no faster
        #: on 2 cores (shipping rows out and ciphertexts back costs what it saves).
        self.encrypt_in_workers = False

    def _deliver_offer(self, receiver: str, *, session: str) -> bytes:
        return self.router.send(
            session=session,
            sender=self.auditor_name,
            receiver=receiver,
            kind="he_context",
            payload=self._offer,
        )

    def participant(self, pid: str) -> HEParticipant:
        """The role object of ``pid``, created (and enrolled) on first use."""
        p = self._participants.get(pid)
        if p is None:
            p = HEParticipant(pid, self.settings)
            self._registry[pid] = p.identity.public_bytes()
            self.keyholder.register(pid, p.identity.public_bytes())
            p.accept_context(
                self._deliver_offer(pid, session=self.setup_session),
                auditor_public=self.auditor_public,
                session=self.setup_session,
            )
            self._participants[pid] = p
        return p

    @property
    def public(self) -> PublicCKKSContext:
        return self.coordinator.public

    def pool(self) -> CKKSWorkerPool:
        """Worker processes for participants' encryption (one per summing thread)."""
        if self._pool is None:
            self._pool = CKKSWorkerPool(self.public, workers=self.settings.threads())
        return self._pool

    def close(self) -> None:
        """Stop the encryption worker processes, if any were started."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def aggregate(
        self,
        *,
        session: str,
        inputs: Mapping[str, ClientInput],
        vet: Vet | None = None,
        dropouts: DropoutPlan | None = None,
        context: SessionContext | None = None,  # its joint seed enters the fold seed
    ) -> GroupResult:
        plan = dropouts or DropoutPlan()
        pool = self.pool() if self.encrypt_in_workers else None
        excluded: dict[str, str] = {}
        upload_bytes: dict[str, int] = {}
        summaries: dict[str, bytes] = {}
        contributions: dict[str, Contribution] = {}
        for pid, inp in inputs.items():
            if plan.drops_before(pid, Stage.INPUT):
                excluded[pid] = "dropped out"
                continue
            try:
                participant = self.participant(pid)
            except SecurePoolError as exc:  # e.g. it was handed a context it refuses
                excluded[pid] = f"no context: {type(exc).__name__}: {exc}"
                continue
            try:
                upload, receipt = participant.upload(
                    session=session, update=inp.update, weight=inp.weight, pool=pool
                )
            except SecurePoolError as exc:
                excluded[pid] = f"could not encrypt: {exc}"
                continue
            upload = self._send(session, pid, "he_upload", upload)
            receipt = self._send(session, pid, "he_receipt", receipt)
            upload_bytes[pid] = len(upload) + len(receipt)
            if inp.sealed_summary is not None and not self.settings.fold_dim:
                summaries[pid] = self._send(session, pid, "sealed_summary", inp.sealed_summary)
            try:
                contributions[pid] = self.coordinator.check_upload(
                    session=session, sender=pid, upload=upload, receipt=receipt
                )
            except SecurePoolError as exc:
                excluded[pid] = f"bad upload: {type(exc).__name__}: {exc}"
        if vet is not None and self.settings.fold_dim:
            flagged = self._vet_folds(session, contributions, excluded, vet, context)
        elif vet is not None:
            flagged = vet(summaries)
        else:
            flagged = {}
        for pid, reason in flagged.items():
            if pid in contributions:
                del contributions[pid]
                excluded[pid] = f"untrusted: {reason}"
        request, more = self.coordinator.build_request(
            session=session, contributions=contributions, threads=self.settings.threads()
        )
        excluded.update(more)
        request = self._to_auditor(session, "he_decrypt", request)
        try:
            answer = self.keyholder.decrypt_aggregate(request)
        except ThresholdNotMet:
            raise
        except SecurePoolError as exc:
            raise ThresholdNotMet(
                f"session {session}: the auditor refused the aggregate: {exc}",
                survivors=0,
                threshold=self.settings.min_group_size,
            ) from exc
        answer = self.router.send(
            session=session,
            sender=self.auditor_name,
            receiver=self.coordinator_name,
            kind="he_aggregate",
            payload=answer,
        )
        release = AggregateRelease.from_bytes(answer)
        return GroupResult(
            weighted_sum=release.weighted_sum,
            total_weight=release.total_weight,
            contributors=frozenset(release.contributors),
            excluded=excluded,
            upload_bytes=upload_bytes,
        )

    def _vet_folds(
        self,
        session: str,
        contributions: dict[str, Contribution],
        excluded: dict[str, str],
        vet: Vet,
        context: SessionContext | None,
    ) -> Mapping[str, str]:
        """The HE binding: fold every valid upload, let the auditor judge the folds."""
        joint_seed = context.joint_seed if context is not None else b""
        request, more = self.coordinator.build_fold_request(
            session=session, contributions=contributions, joint_seed=joint_seed
        )
        for pid, reason in more.items():
            contributions.pop(pid, None)
            excluded[pid] = reason
        request = self._to_auditor(session, "he_fold", request)
        try:
            return vet({}, fold_request=request)
        except ThresholdNotMet:
            raise
        except SecurePoolError as exc:
            raise ThresholdNotMet(
                f"session {session}: the auditor refused the folds: {exc}",
                survivors=0,
                threshold=self.settings.min_group_size,
            ) from exc

    def _to_auditor(self, session: str, kind: str, payload: bytes) -> bytes:
        return self.router.send(
            session=session,
            sender=self.coordinator_name,
            receiver=self.auditor_name,
            kind=kind,
            payload=payload,
        )

    def _send(self, session: str, sender: str, kind: str, payload: bytes) -> bytes:
        return self.router.send(
            session=session,
            sender=sender,
            receiver=self.coordinator_name,
            kind=kind,
            payload=payload,
        )
