"""The benches' session driver: one SecAgg+ or HE group session, role by role, timed.

The roles are the state machines the nodes and the coordinator run (securepool/node/,
securepool/coordinator/loop.py): :class:`SecAggClient` per participant and one
:class:`SecAggServer` (:func:`masked_session`); :class:`HEParticipant` per participant,
the :class:`HECoordinator` and the auditor's :class:`HEKeyHolder` (:class:`HEGroup`).
They are called in one process, in the loop's order, every message as bytes and no
transport, so what :class:`RoleClock` times is each role's own work: every client's
steps, the coordinator's (receiving, closing stages, checking, adding, unmasking) and
the auditor's. Identity keys, the PKI and the auditor's context offer exist before a
session (as in a deployment) and are not timed.

Used by ``securepool bench secagg``, ``mask_binding``, ``he`` and ``he_binding``.
"""

from __future__ import annotations

import contextlib
import cProfile
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import TypeVar

import numpy as np
from numpy.typing import NDArray

from crypto.errors import AggregateDiscarded, ConfigError, SecurePoolError
from crypto.fixedpoint import decode
from crypto.signing import IdentityKey
from protocols.aggregation import ClientInput, group_length
from protocols.he import HECoordinator, HEKeyHolder, HEParticipant, HESettings
from protocols.he.coordinator import Contribution
from protocols.he.keyholder import FoldOpening
from protocols.he.messages import AggregateRelease, ContextOffer
from protocols.secagg.binding import BindingKeys, JudgeRequest, discarded, post_check
from protocols.secagg.client import (
    ClientStage,
    SecAggClient,
    SessionHistory,
    default_model_digest,
)
from protocols.secagg.server import SecAggServer
from protocols.secagg.settings import MaskSettings

#: the session the auditor's HE context offer is signed for (securepool/node/auditor.py)
HE_SETUP_SESSION = "he-setup"

#: the stages a SecAgg+ participant can drop out in: it never answers the message that
#: reaches it there (CONSISTENCY: its masked input is in, it signs no survivor list)
DROP_STAGES = (
    ClientStage.ADVERTISE,
    ClientStage.SHARE,
    ClientStage.INPUT,
    ClientStage.CONSISTENCY,
)

T = TypeVar("T")


@dataclass
class RoleClock:
    """Wall seconds of work per role: each client's total (``clients``), the
    coordinator's (``server``), the auditor's (``auditor``), and the named steps they
    are made of (``steps``, e.g. ``"sum"`` or ``"decrypt"``)."""

    clients: dict[str, float] = field(default_factory=dict)
    server: float = 0.0
    auditor: float = 0.0
    steps: dict[str, float] = field(default_factory=dict)

    def client(self, pid: str, fn: Callable[[], T]) -> T:
        """``fn()``, its time added to client ``pid``'s."""
        start = time.perf_counter()
        try:
            return fn()
        finally:
            self.clients[pid] = self.clients.get(pid, 0.0) + time.perf_counter() - start

    def on_server(self, fn: Callable[[], T], *, step: str = "") -> T:
        """``fn()``, its time added to the coordinator's (and to ``step``'s)."""
        start = time.perf_counter()
        try:
            return fn()
        finally:
            spent = time.perf_counter() - start
            self.server += spent
            if step:
                self.steps[step] = self.steps.get(step, 0.0) + spent

    def on_auditor(self, fn: Callable[[], T], *, step: str) -> T:
        """``fn()``, its time added to the auditor's and to ``step``'s."""
        start = time.perf_counter()
        try:
            return fn()
        finally:
            spent = time.perf_counter() - start
            self.auditor += spent
            self.steps[step] = self.steps.get(step, 0.0) + spent


# --- SecAgg+ -------------------------------------------------------------------------


@dataclass(frozen=True)
class MaskedRun:
    """One SecAgg+ session's decoded aggregate, who is in it and who is not (and why),
    every participant's upload bytes (all its replies), and the clock."""

    weighted_sum: NDArray[np.float64]
    total_weight: float
    contributors: frozenset[str]
    excluded: Mapping[str, str]
    upload_bytes: Mapping[str, int]
    clock: RoleClock


def masked_session(
    inputs: Mapping[str, ClientInput],
    *,
    session: str,
    settings: MaskSettings,
    identities: Mapping[str, IdentityKey],
    min_contributors: int = 3,
    drops: Mapping[str, ClientStage] | None = None,
    vet: Callable[[Mapping[str, bytes]], Mapping[str, str]] | None = None,
    binding: BindingKeys | None = None,
    judge: Callable[[JudgeRequest], tuple[bytes, bytes]] | None = None,
    observe: Callable[[ClientStage, str, bytes], None] | None = None,
    clock: RoleClock | None = None,
) -> MaskedRun:
    """One SecAgg+ session of a client per input (each with its identity key from
    ``identities``, the PKI) and one server, as the coordinator loop runs it.

    The group's length is the one most inputs share. A client that refuses the session,
    aborts, or is refused by the server leaves like a dropout; ``drops`` maps a
    participant to the stage it drops out in. ``vet`` (no binding) is the trust check on
    the relayed sealed summaries (``ClientInput.sealed_summary``), inside the server's
    close of the input stage. ``binding`` with ``judge`` (the auditor: judge request ->
    signed verdict) runs the binding: verdict before unmasking, then the post-check
    (step ``"post_check"``; the auditor's judgement is step ``"judge"``). ``observe``
    sees every reply a client sends (the stage it answered in, its id, the bytes);
    ``clock`` (a fresh one if None) is filled in as the session goes, so a caller keeps
    the times of a session that raises.

    Raises :class:`ThresholdNotMet` where the server does (too few left) and
    :class:`AggregateDiscarded` when the post-check discards the aggregate.
    """
    if (binding is None) != (judge is None):
        raise ConfigError(["the binding needs both the auditor's keys and its judge"])
    drops = drops or {}
    clock = clock if clock is not None else RoleClock()
    members = sorted(inputs)
    directory = {pid: identities[pid].public_bytes() for pid in members}
    joint_seed = os.urandom(32)
    digest = default_model_digest(session)
    length, _wrong = group_length({pid: inp.update.size for pid, inp in inputs.items()})
    server = SecAggServer(
        session=session,
        settings=settings,
        directory=directory,
        length=length,
        min_contributors=min_contributors,
        joint_seed=joint_seed,
        members=members,
        binding=binding,
    )
    excluded: dict[str, str] = {}
    live: dict[str, SecAggClient] = {}
    for pid in members:
        inp = inputs[pid]
        try:  # a participant that refuses the session (e.g. a group too small) stays out
            live[pid] = SecAggClient(
                pid=pid,
                session=session,
                identity=identities[pid],
                directory=directory,
                settings=settings,
                update=inp.update,
                weight=inp.weight,
                members=members,
                joint_seed=joint_seed,
                model_digest=digest,
                min_group_size=min_contributors,
                sealed_summary=b"" if binding is not None else inp.sealed_summary or b"",
                history=SessionHistory(),
                binding=binding,
            )
        except SecurePoolError as exc:
            excluded[pid] = f"client refused the session: {type(exc).__name__}: {exc}"
    upload = dict.fromkeys(members, 0)

    def answer(pid: str, message: bytes | None) -> None:
        client = live.get(pid)
        if client is None:
            return
        stage = client.stage
        if drops.get(pid) is stage:
            excluded.setdefault(pid, f"dropped out in {stage.name.lower()}")
            del live[pid]
            return
        try:
            if message is None:
                reply = clock.client(pid, client.start)
            else:
                reply = clock.client(pid, lambda: client.handle(message))
        except SecurePoolError as exc:
            excluded[pid] = f"client aborted: {type(exc).__name__}: {exc}"
            del live[pid]
            return
        upload[pid] += len(reply)
        if observe is not None:
            observe(stage, pid, reply)
        try:
            clock.on_server(lambda: server.receive(reply, sender=pid))
        except SecurePoolError as exc:
            excluded[pid] = f"refused by the coordinator: {exc}"
            del live[pid]

    def left_out() -> None:
        for pid, reason in server.excluded.items():
            excluded.setdefault(pid, reason)
            live.pop(pid, None)

    for pid in members:
        answer(pid, None)
    directory_msg = clock.on_server(server.close_keys)
    for pid in sorted(server.advertised):
        answer(pid, directory_msg)
    deliveries = clock.on_server(server.close_shares)
    left_out()
    for pid, msg in deliveries.items():
        answer(pid, msg)
    survivors = clock.on_server(lambda: server.close_inputs(vet))
    left_out()
    for pid in sorted(server.survivors):
        answer(pid, survivors)
    verdict = None
    if judge is not None:
        request = clock.on_server(server.judge_request)
        verdict = clock.on_auditor(partial(judge, request), step="judge")
    unmask = clock.on_server(lambda: server.close_signatures(verdict))
    for pid in sorted(server.signers):
        answer(pid, unmask)
    total = clock.on_server(server.close_unmask)
    if binding is not None:
        check = clock.on_server(lambda: post_check(server.post_check_request()), step="post_check")
        if check.discard:
            raise AggregateDiscarded(discarded(check), flagged=dict(check.flagged))
        if server.verdict is not None:
            for pid, why in server.verdict.flagged.items():
                excluded[pid] = f"untrusted: {why}"
            for pid, why in server.verdict.excluded.items():
                excluded.setdefault(pid, why)
        for pid, why in check.flagged.items():
            excluded[pid] = f"untrusted: {why}"
    if server.spec is None:
        raise SecurePoolError("the session never fixed its encoding")
    values = decode(total, server.spec)
    contributors = server.contributors
    excluded = {p: r for p, r in excluded.items() if p not in contributors}
    for pid in members:
        if pid not in contributors:
            excluded.setdefault(pid, "not in the aggregate")
    return MaskedRun(
        weighted_sum=values[:-1].astype(np.float64),
        total_weight=float(values[-1]),
        contributors=frozenset(contributors),
        excluded=excluded,
        upload_bytes=upload,
        clock=clock,
    )


# --- HE ------------------------------------------------------------------------------


@dataclass(frozen=True)
class HERun:
    """One HE session: the auditor's release, who is not in it (and why), each
    participant's upload bytes (upload + receipt), the checked contributions, the fold
    request sent to the auditor (binding only, else empty), and the clock. Steps:
    ``check`` (the coordinator checks every upload), ``fold`` (it folds each ciphertext),
    ``open`` (the auditor opens the folds), ``judge`` (the trust check on them), ``sum``
    (the coordinator adds the ciphertexts), ``decrypt`` (the auditor decrypts)."""

    release: AggregateRelease
    excluded: Mapping[str, str]
    upload_bytes: Mapping[str, int]
    contributions: Mapping[str, Contribution]
    fold_request: bytes
    clock: RoleClock


@contextlib.contextmanager
def _profiling(prof: cProfile.Profile | None) -> Iterator[None]:
    if prof is None:
        yield
        return
    prof.enable()
    try:
        yield
    finally:
        prof.disable()


class HEGroup:
    """HE mode's roles for a run of sessions, set up as the nodes set themselves up: the
    auditor's key holder signs its context offer, the coordinator checks it against the
    auditor's identity key, and each participant (created and enrolled in the PKI on
    first use) checks the coordinator's copy without the fold's Galois keys."""

    def __init__(self, settings: HESettings, *, keyholder: HEKeyHolder | None = None) -> None:
        settings.check()
        self.settings = settings
        self.keyholder = keyholder if keyholder is not None else HEKeyHolder(settings)
        self.registry: dict[str, bytes] = {}
        self.participants: dict[str, HEParticipant] = {}
        self.offer = self.keyholder.context_offer(session=HE_SETUP_SESSION)
        self._relayed = ContextOffer.from_bytes(self.offer).without_galois().to_bytes()
        self.coordinator = HECoordinator(settings, registry=self.registry)
        self.coordinator.accept_context(
            self.offer, auditor_public=self.keyholder.identity_public, session=HE_SETUP_SESSION
        )

    def participant(self, pid: str) -> HEParticipant:
        """``pid``'s role (created, enrolled and given the relayed offer on first use)."""
        p = self.participants.get(pid)
        if p is None:
            p = HEParticipant(pid, self.settings)
            self.registry[pid] = p.identity.public_bytes()
            self.keyholder.register(pid, p.identity.public_bytes())
            p.accept_context(
                self._relayed,
                auditor_public=self.keyholder.identity_public,
                session=HE_SETUP_SESSION,
            )
            self.participants[pid] = p
        return p

    def run(
        self,
        session: str,
        inputs: Mapping[str, ClientInput],
        *,
        judge: Callable[[FoldOpening], Mapping[str, str]] | None = None,
        joint_seed: bytes = b"",
        threads: int | None = None,
        upload_profile: cProfile.Profile | None = None,
        decrypt_profile: cProfile.Profile | None = None,
    ) -> HERun:
        """One session as the coordinator loop runs it: every participant uploads, the
        coordinator checks the uploads; with the binding (``fold_dim > 0``, ``judge``
        required: the key holder decrypts nothing unjudged) it folds them for the auditor,
        which opens the folds, judges them (``judge``: the flagged, with reasons) and
        clears the rest; the coordinator adds the cleared ciphertexts in ``threads``
        threads (None: the settings'), the auditor decrypts. ``upload_profile`` runs
        around the first participant's upload, ``decrypt_profile`` around decryption.

        Raises :class:`ThresholdNotMet` when too few contributions remain and what the key
        holder raises for a request it refuses."""
        if self.settings.fold_dim and judge is None:
            raise ConfigError(["with fold_dim > 0 the session needs the auditor's judge"])
        clock = RoleClock()
        excluded: dict[str, str] = {}
        sent: dict[str, tuple[bytes, bytes]] = {}
        for k, (pid, inp) in enumerate(inputs.items()):
            participant = self.participant(pid)
            try:
                with _profiling(upload_profile if k == 0 else None):
                    encrypt = partial(
                        participant.upload,
                        session=session,
                        update=inp.update,
                        weight=inp.weight,
                        model_digest=default_model_digest(session),
                    )
                    sent[pid] = clock.client(pid, encrypt)
            except SecurePoolError as exc:  # the node's refusal
                excluded[pid] = f"refused: {type(exc).__name__}: {exc}"
        contributions: dict[str, Contribution] = {}

        def check_all() -> None:
            for pid, (upload, receipt) in sent.items():
                try:
                    contributions[pid] = self.coordinator.check_upload(
                        session=session, sender=pid, upload=upload, receipt=receipt
                    )
                except SecurePoolError as exc:
                    excluded[pid] = f"bad upload: {type(exc).__name__}: {exc}"

        clock.on_server(check_all, step="check")
        fold_request = b""
        if judge is not None and self.settings.fold_dim:
            fold_request, more = clock.on_server(
                lambda: self.coordinator.build_fold_request(
                    session=session, contributions=contributions, joint_seed=joint_seed
                ),
                step="fold",
            )
            for pid, reason in more.items():
                contributions.pop(pid, None)
                excluded[pid] = reason
            opening = clock.on_auditor(lambda: self.keyholder.open_folds(fold_request), step="open")
            flagged = dict(clock.on_auditor(partial(judge, opening), step="judge"))
            flagged.update({p: why for p, why in opening.flagged.items() if p not in flagged})
            self.keyholder.restrict(session, frozenset(opening.summaries) - frozenset(flagged))
            for pid, why in flagged.items():
                if contributions.pop(pid, None) is not None:
                    excluded[pid] = f"untrusted: {why}"
        request, more = clock.on_server(
            lambda: self.coordinator.build_request(
                session=session,
                contributions=contributions,
                threads=self.settings.threads() if threads is None else threads,
            ),
            step="sum",
        )
        excluded.update(more)
        with _profiling(decrypt_profile):
            answer = clock.on_auditor(
                lambda: self.keyholder.decrypt_aggregate(request), step="decrypt"
            )
        return HERun(
            release=AggregateRelease.from_bytes(answer),
            excluded=excluded,
            upload_bytes={pid: len(u) + len(r) for pid, (u, r) in sent.items()},
            contributions=contributions,
            fold_request=fold_request,
            clock=clock,
        )
