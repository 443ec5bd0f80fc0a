"""MaskedAggregator: the pool loop's GroupAggregator for ``mode = "mask"``.

It runs one SecAgg+ session per model group in-process: one :class:`SecAggClient` per
participant (each with its own keys), one :class:`SecAggServer`, and every message
moving as bytes through the :class:`~protocols.aggregation.Router`, so each role's view
is recordable. Participants' identity keys are generated on first sight and their
public halves kept in a directory: this simulates the PKI a deployment must provide.

A client that fails (drops, sends garbage, refuses) is handled like a dropout; the
session still completes if enough remain, else ThresholdNotMet.

``aggregate`` takes a :class:`protocols.aggregation.SessionContext` (the pool loop
passes the beacon's group seed and the digest of the model sent) or, for tests,
``model_digest`` and ``joint_seed``. Callers that pass none get values derived from the
session string: a
placeholder that keeps the API stable, NOT a security measure: the coordinator names
the session, so such a "joint" seed is the coordinator's choice, and such a digest says
nothing about the model. Pass the commit-reveal joint seed and the hash of the global
model sent to the group to get the protections of :mod:`protocols.secagg.client`.
Each participant's :class:`SessionHistory` lives in the aggregator across sessions, so
a session string is never run twice with the same participants.

Trust check: a ``vet`` that is also a :class:`~protocols.secagg.binding.MaskAudit` (the
pool loop's, :class:`securepool.trust.check.SessionVet`) runs the binding of
:mod:`protocols.secagg.binding`: clients report to the auditor after the survivor list,
the auditor's signed verdict gates unmasking (flagged and excluded members are unmasked
as dropouts), and a post-check after unmasking either confirms the aggregate or
discards it (:class:`AggregateDiscarded`: the caller keeps the model's last state).
Sealed summaries are then neither needed nor sent. A plain ``vet`` keeps the summary
check of earlier versions (the summary is unbound: threat_model.md).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np

from crypto.encoding import bind
from crypto.errors import AggregateDiscarded, SecurePoolError, ThresholdNotMet
from crypto.fixedpoint import decode
from crypto.signing import IdentityKey
from protocols.aggregation import (
    AggregationMode,
    ClientInput,
    DropoutPlan,
    GroupResult,
    Router,
    SessionContext,
    Stage,
    Vet,
    group_length,
)
from protocols.secagg.binding import MaskAudit, discarded
from protocols.secagg.client import SecAggClient, SessionHistory, default_model_digest
from protocols.secagg.server import SecAggServer
from protocols.secagg.settings import MaskSettings

COORDINATOR = "coordinator"
T = TypeVar("T")


@dataclass
class SessionTimer:
    """Wall time spent by each role (for benchmarks): client id -> s, and the server."""

    clients: dict[str, float] = field(default_factory=dict)
    server: float = 0.0

    def client(self, pid: str, fn: Callable[[], T]) -> T:
        start = time.perf_counter()
        try:
            return fn()
        finally:
            self.clients[pid] = self.clients.get(pid, 0.0) + time.perf_counter() - start

    def on_server(self, fn: Callable[[], T]) -> T:
        start = time.perf_counter()
        try:
            return fn()
        finally:
            self.server += time.perf_counter() - start


@dataclass
class MaskedAggregator:
    settings: MaskSettings = field(default_factory=MaskSettings)
    min_contributors: int = 3
    router: Router = field(default_factory=Router)
    mode: AggregationMode = AggregationMode.MASK
    timer: SessionTimer | None = None
    # the participants' implementation: a simulation may substitute a misbehaving one
    # (attack tests build lying participants through it); called with SecAggClient's
    # keyword arguments
    client_type: Callable[..., SecAggClient] = SecAggClient
    _identities: dict[str, IdentityKey] = field(default_factory=dict, repr=False)
    _histories: dict[str, SessionHistory] = field(default_factory=dict, repr=False)

    def identity_public(self, pid: str) -> bytes:
        if pid not in self._identities:
            self._identities[pid] = IdentityKey.generate()
        return self._identities[pid].public_bytes()

    def aggregate(
        self,
        *,
        session: str,
        inputs: Mapping[str, ClientInput],
        vet: Vet | MaskAudit | None = None,
        dropouts: DropoutPlan | None = None,
        model_digest: bytes | None = None,
        joint_seed: bytes | None = None,
        context: SessionContext | None = None,
    ) -> GroupResult:
        if context is not None:
            model_digest, joint_seed = context.model_digest, context.joint_seed
        digest = default_model_digest(session) if model_digest is None else model_digest
        seed = default_joint_seed(session) if joint_seed is None else joint_seed
        plan = dropouts or DropoutPlan()
        timer = self.timer or SessionTimer()
        if len(inputs) < self.min_contributors:  # e.g. every member's DP budget is spent
            raise ThresholdNotMet(
                f"{len(inputs)} of the group have an update, below the threshold "
                f"{self.min_contributors}",
                survivors=len(inputs),
                threshold=self.min_contributors,
            )
        # participants of another length abort at the key directory (it fixes the length)
        length, _wrong = group_length({pid: inp.update.size for pid, inp in inputs.items()})
        directory = {pid: self.identity_public(pid) for pid in inputs}
        audit: MaskAudit | None
        plain: Vet | None
        if isinstance(vet, MaskAudit):  # the binding (a SessionVet is both)
            audit, plain = vet, None
        else:
            audit, plain = None, vet
        keys = audit.binding_keys() if audit is not None else None
        server = SecAggServer(
            session=session,
            settings=self.settings,
            directory=directory,
            length=length,
            min_contributors=self.min_contributors,
            joint_seed=seed,
            members=inputs,
            binding=keys,
        )
        clients: dict[str, SecAggClient] = {}
        excluded: dict[str, str] = {}
        for pid, inp in inputs.items():
            try:  # a participant that refuses the session (e.g. a group too small) stays out
                clients[pid] = self.client_type(
                    pid=pid,
                    session=session,
                    identity=self._identities[pid],
                    directory=directory,
                    settings=self.settings,
                    update=inp.update,
                    weight=inp.weight,
                    sealed_summary=b"" if audit is not None else inp.sealed_summary or b"",
                    members=inputs,
                    joint_seed=seed,
                    model_digest=digest,
                    min_group_size=self.min_contributors,
                    history=self._histories.setdefault(pid, SessionHistory()),
                    binding=keys,
                )
            except SecurePoolError as exc:
                excluded[pid] = f"client refused the session: {type(exc).__name__}: {exc}"
        upload: dict[str, int] = {pid: 0 for pid in inputs}
        live = set(clients)

        def send_up(pid: str, kind: str, payload: bytes) -> None:
            data = self.router.send(
                session=session, sender=pid, receiver=COORDINATOR, kind=kind, payload=payload
            )
            upload[pid] += len(data)
            try:
                timer.on_server(lambda: server.receive(data, sender=pid))
            except SecurePoolError as exc:
                excluded[pid] = f"refused by the coordinator: {exc}"
                live.discard(pid)

        def step(pid: str, stage: Stage, kind: str, message: bytes | None) -> None:
            if pid not in live:
                return
            if plan.drops_before(pid, stage):
                excluded.setdefault(pid, f"dropped out before {stage.value}")
                live.discard(pid)
                return
            client = clients[pid]
            try:
                if message is None:
                    reply = timer.client(pid, client.start)
                else:
                    down = self.router.send(
                        session=session,
                        sender=COORDINATOR,
                        receiver=pid,
                        kind=kind,
                        payload=message,
                    )
                    reply = timer.client(pid, lambda: client.handle(down))
            except SecurePoolError as exc:
                excluded[pid] = f"client aborted: {type(exc).__name__}: {exc}"
                live.discard(pid)
                return
            send_up(pid, f"reply_to_{kind}", reply)

        for pid in sorted(clients):
            step(pid, Stage.ADVERTISE, "start", None)
        directory_msg = timer.on_server(lambda: server.close_keys())
        for pid in sorted(server.advertised):
            step(pid, Stage.SHARE, "key_directory", directory_msg)
        deliveries = timer.on_server(lambda: server.close_shares())
        for pid, reason in server.excluded.items():
            excluded.setdefault(pid, reason)
            live.discard(pid)
        for pid, msg in deliveries.items():
            step(pid, Stage.INPUT, "share_delivery", msg)
        survivors_msg = timer.on_server(lambda: server.close_inputs(plain))
        for pid, reason in server.excluded.items():
            excluded.setdefault(pid, reason)
            live.discard(pid)
        for pid in sorted(server.survivors):
            step(pid, Stage.UNMASK, "survivor_list", survivors_msg)
        verdict = None
        if audit is not None:
            request = timer.on_server(server.judge_request)
            verdict = audit.judge(request)  # the auditor's time: not the coordinator's
        unmask_msg = timer.on_server(lambda: server.close_signatures(verdict))
        for pid in sorted(server.signers):
            step(pid, Stage.UNMASK, "unmask_request", unmask_msg)
        total = timer.on_server(lambda: server.close_unmask())
        if audit is not None:
            check = audit.post_check(server.post_check_request())
            if check.discard:
                raise AggregateDiscarded(discarded(check), flagged=dict(check.flagged))
            if server.verdict is not None:
                for pid, why in server.verdict.flagged.items():
                    excluded[pid] = f"untrusted: {why}"
                for pid, why in server.verdict.excluded.items():
                    excluded.setdefault(pid, why)
            for pid, why in check.flagged.items():
                excluded[pid] = (
                    f"untrusted: {why}"
                    if why
                    else (server.verdict.excluded[pid] if server.verdict else "left out")
                )
            for pid, why in check.flagged.items():
                excluded[pid] = f"untrusted: {why}"
        if server.spec is None:
            raise ThresholdNotMet("session never fixed its encoding", survivors=0, threshold=1)
        values = decode(total, server.spec)
        # a survivor that vanished during unmasking still counts: its input is in the sum
        contributors = server.contributors
        excluded = {p: r for p, r in excluded.items() if p not in contributors}
        for pid in inputs:
            if pid not in contributors:
                excluded.setdefault(pid, "not in the aggregate")
        return GroupResult(
            weighted_sum=values[:-1].astype(np.float64),
            total_weight=float(values[-1]),
            contributors=frozenset(contributors),
            excluded=excluded,
            upload_bytes=upload,
        )


def default_joint_seed(session: str) -> bytes:
    """The placeholder joint seed of a caller that passes none (see the module docstring):
    derived from the session string alone, so chosen by whoever names the session."""
    return hashlib.sha256(bind(b"securepool/secagg/v2/default-joint-seed", session)).digest()
