"""An HE group session driven by hand: an HEParticipant per id, the HECoordinator and
the auditor's HEKeyHolder, so that tests can play a lying coordinator or participant.

The roles are set up as the nodes, the coordinator and the auditor node set themselves
up (securepool/node/app.py, securepool/coordinator/loop.py, securepool/node/auditor.py):
the auditor's context offer is signed for the setup session, the coordinator checks it
against the auditor's identity key (the PKI) and relays it to every participant without
the fold's Galois keys, and each participant checks it again. Every message crosses
``wire`` as bytes; a test's wire can rewrite any of them, and :attr:`HESession.log`
holds what arrived, so a role's view is what it received there.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass

import numpy as np

from crypto.errors import SecurePoolError
from protocols.aggregation import ClientInput
from protocols.he import HECoordinator, HEKeyHolder, HEParticipant, HESettings
from protocols.he.coordinator import Contribution
from protocols.he.messages import AggregateRelease, ContextOffer

SETTINGS = HESettings(
    poly_modulus_degree=4096, coeff_mod_bit_sizes=(50, 59), scale_bits=39, weight_unit=50.0
)
SETUP = "he-setup"
#: the model every participant of these sessions names in its receipt (one for all)
MODEL = hashlib.sha256(b"tests/protocols/he_session: the global model").digest()
COORDINATOR = "coordinator"
AUDITOR = "auditor"


@dataclass(frozen=True)
class Message:
    """One message on the wire."""

    sender: str
    receiver: str
    kind: str
    payload: bytes


#: what arrives of a message sent (the honest wire: its payload)
Wire = Callable[[Message], bytes]


def honest(msg: Message) -> bytes:
    """The wire that changes nothing."""
    return msg.payload


def tamper(sender: str, kind: str, change: Callable[[bytes], bytes]) -> Wire:
    """A wire that rewrites what ``sender`` sends of ``kind`` with ``change``."""

    def wire(msg: Message) -> bytes:
        return change(msg.payload) if (msg.sender, msg.kind) == (sender, kind) else msg.payload

    return wire


def make_inputs(n: int, d: int, *, seed: int = 0) -> dict[str, ClientInput]:
    """``n`` small random updates of length ``d`` with sample counts 10..199."""
    rng = np.random.default_rng(seed)
    return {
        f"p{i}": ClientInput(
            (rng.standard_normal(d) * 0.1).astype(np.float32), weight=float(rng.integers(10, 200))
        )
        for i in range(n)
    }


@dataclass(frozen=True)
class Outcome:
    """What the auditor released for a session, and who is not in it and why."""

    weighted_sum: np.ndarray
    total_weight: float
    contributors: frozenset[str]
    excluded: dict[str, str]


class HESession:
    """The roles of HE mode for a run of sessions (participants are created on first use,
    each with its own identity key, registered with the coordinator and the auditor)."""

    def __init__(
        self, settings: HESettings, *, keyholder: HEKeyHolder | None = None, wire: Wire = honest
    ) -> None:
        self.settings = settings
        self.keyholder = keyholder if keyholder is not None else HEKeyHolder(settings)
        self.wire = wire
        self.log: list[Message] = []
        self.registry: dict[str, bytes] = {}
        self.participants: dict[str, HEParticipant] = {}
        self.offer = self.keyholder.context_offer(session=SETUP)
        self.coordinator = HECoordinator(settings, registry=self.registry)
        self.coordinator.accept_context(
            self.send(AUDITOR, COORDINATOR, "he_context", self.offer),
            auditor_public=self.keyholder.identity_public,
            session=SETUP,
        )

    def send(self, sender: str, receiver: str, kind: str, payload: bytes) -> bytes:
        """Move one message over the wire; what arrives (also kept in :attr:`log`)."""
        msg = Message(sender, receiver, kind, payload)
        arrived = self.wire(msg)
        self.log.append(Message(sender, receiver, kind, arrived))
        return arrived

    def received(self, role: str, kind: str | None = None) -> list[Message]:
        """Every message ``role`` received (of ``kind``), in order."""
        return [m for m in self.log if m.receiver == role and kind in (None, m.kind)]

    def participant(self, pid: str) -> HEParticipant:
        """``pid``'s role, enrolled in the PKI and given the relayed offer on first use
        (raises what the participant raises if it refuses the offer)."""
        p = self.participants.get(pid)
        if p is None:
            p = HEParticipant(pid, self.settings)
            self.registry[pid] = p.identity.public_bytes()
            self.keyholder.register(pid, p.identity.public_bytes())
            relayed = ContextOffer.from_bytes(self.offer).without_galois().to_bytes()
            p.accept_context(
                self.send(COORDINATOR, pid, "he_context", relayed),
                auditor_public=self.keyholder.identity_public,
                session=SETUP,
            )
            self.participants[pid] = p
        return p

    def contribute(
        self, session: str, inputs: Mapping[str, ClientInput]
    ) -> dict[str, Contribution]:
        """Every participant uploads honestly; the coordinator's checked contributions."""
        out = {}
        for pid, inp in inputs.items():
            upload, receipt = self.participant(pid).upload(
                session=session, update=inp.update, weight=inp.weight, model_digest=MODEL
            )
            out[pid] = self.coordinator.check_upload(
                session=session, sender=pid, upload=upload, receipt=receipt
            )
        return out

    def run(
        self,
        session: str,
        inputs: Mapping[str, ClientInput],
        *,
        drops: Collection[str] = (),
        flagged: Mapping[str, str] | None = None,
    ) -> Outcome:
        """One session as the coordinator loop runs it: uploads (``drops`` vanish before
        theirs), the coordinator's checks, ``flagged`` left out (a trust verdict), the sum,
        the auditor's decryption. A participant that refuses, or whose upload fails the
        checks, is excluded with the reason. Raises what the coordinator raises for too
        few contributions and what the key holder raises for a request it refuses."""
        excluded: dict[str, str] = {}
        contributions: dict[str, Contribution] = {}
        for pid, inp in inputs.items():
            if pid in drops:
                excluded[pid] = "dropped out"
                continue
            try:
                upload, receipt = self.participant(pid).upload(
                    session=session, update=inp.update, weight=inp.weight, model_digest=MODEL
                )
            except SecurePoolError as exc:  # the node's refusal
                excluded[pid] = f"refused: {type(exc).__name__}: {exc}"
                continue
            upload = self.send(pid, COORDINATOR, "he_upload", upload)
            receipt = self.send(pid, COORDINATOR, "he_receipt", receipt)
            try:
                contributions[pid] = self.coordinator.check_upload(
                    session=session, sender=pid, upload=upload, receipt=receipt
                )
            except SecurePoolError as exc:
                excluded[pid] = f"bad upload: {type(exc).__name__}: {exc}"
        for pid, why in (flagged or {}).items():
            if contributions.pop(pid, None) is not None:
                excluded[pid] = f"untrusted: {why}"
        request, more = self.coordinator.build_request(
            session=session, contributions=contributions, threads=self.settings.threads()
        )
        excluded.update(more)
        request = self.send(COORDINATOR, AUDITOR, "he_decrypt", request)
        answer = self.send(
            AUDITOR, COORDINATOR, "he_aggregate", self.keyholder.decrypt_aggregate(request)
        )
        release = AggregateRelease.from_bytes(answer)
        return Outcome(
            weighted_sum=release.weighted_sum,
            total_weight=release.total_weight,
            contributors=frozenset(release.contributors),
            excluded=excluded,
        )
