"""A SecAgg+ session driven by hand, so that tests can play a lying coordinator.

Honest :class:`SecAggClient` objects and, where wanted, the honest
:class:`SecAggServer`; the test decides which messages reach which client, and can
replace any message with one it crafts. Colluding participants are clients whose
identity keys the attacker also holds (``ids``).

:func:`run_session` runs one whole honest session instead, stage by stage as the
coordinator loop runs it (securepool/coordinator/loop.py), with dropouts.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from crypto.errors import SecurePoolError
from crypto.fixedpoint import decode
from crypto.signing import IdentityKey
from protocols.aggregation import ClientInput, group_length
from protocols.secagg.client import ClientStage, SecAggClient, SessionHistory
from protocols.secagg.messages import KeyDirectory, decode_message, encode_message
from protocols.secagg.server import SecAggServer
from protocols.secagg.settings import MaskSettings

SETTINGS = MaskSettings(max_weight=128.0)
DIGEST = hashlib.sha256(b"global model of session s").digest()


def make_inputs(n: int, d: int, seed: int = 0) -> dict[str, ClientInput]:
    rng = np.random.default_rng(seed)
    return {
        f"p{i:02d}": ClientInput(
            rng.uniform(-1, 1, d).astype(np.float32), weight=float(rng.integers(1, 100))
        )
        for i in range(n)
    }


def reference(inputs: dict[str, ClientInput], who: frozenset[str]) -> tuple[np.ndarray, float]:
    total = sum(inputs[p].weight * inputs[p].update.astype(np.float64) for p in who)
    return np.asarray(total), sum(inputs[p].weight for p in who)


class Session:
    """n honest clients and an honest server, stage by stage."""

    def __init__(
        self,
        n: int = 6,
        d: int = 4,
        *,
        session: str = "s",
        settings: MaskSettings = SETTINGS,
        digests: dict[str, bytes] | None = None,
    ) -> None:
        self.session = session
        self.settings = settings
        self.inputs = make_inputs(n, d)
        self.ids = {p: IdentityKey.generate() for p in self.inputs}
        self.pki = {p: k.public_bytes() for p, k in self.ids.items()}
        self.joint_seed = os.urandom(32)
        self.digests = {p: (digests or {}).get(p, DIGEST) for p in self.inputs}
        self.server = SecAggServer(
            session=session,
            settings=settings,
            directory=self.pki,
            length=d,
            min_contributors=3,
            joint_seed=self.joint_seed,
        )
        self.clients = {p: self.client(p) for p in self.inputs}
        self.adverts: dict[str, bytes] = {}

    def client(self, p: str, **overrides: object) -> SecAggClient:
        kwargs: dict[str, object] = {
            "pid": p,
            "session": self.session,
            "identity": self.ids[p],
            "directory": self.pki,
            "settings": self.settings,
            "update": self.inputs[p].update,
            "weight": self.inputs[p].weight,
            "members": sorted(self.inputs),
            "joint_seed": self.joint_seed,
            "model_digest": self.digests[p],
            "history": SessionHistory(),
        }
        kwargs.update(overrides)
        return SecAggClient(**kwargs)  # type: ignore[arg-type]

    # --- stages through the honest server ----------------------------------------------

    def advertise(self, replace: dict[str, bytes] | None = None) -> bytes:
        """Every client advertises (``replace`` swaps a sender's bytes); the server closes."""
        for p, c in self.clients.items():
            if p not in self.adverts:
                self.adverts[p] = c.start()
            data = (replace or {}).get(p, self.adverts[p])
            with contextlib.suppress(SecurePoolError):  # the server excluded p
                self.server.receive(data, sender=p)
        self.directory = self.server.close_keys()
        return self.directory

    def finish(
        self,
        *,
        directory: bytes | None = None,
        mutate_shares: dict[str, Callable[[bytes], bytes]] | None = None,
    ) -> tuple[np.ndarray, float, frozenset[str]]:
        """Run the rest honestly for every client the server kept; the decoded sum."""
        directory = directory or self.directory
        for p in sorted(self.server.advertised):
            reply = self.clients[p].handle(directory)
            with contextlib.suppress(SecurePoolError):  # the server excluded p
                mutate = (mutate_shares or {}).get(p)
                self.server.receive(reply if mutate is None else mutate(reply), sender=p)
        for p, msg in self.server.close_shares().items():
            self.server.receive(self.clients[p].handle(msg), sender=p)
        survivors = self.server.close_inputs()
        for p in sorted(self.server.survivors):
            self.server.receive(self.clients[p].handle(survivors), sender=p)
        unmask = self.server.close_signatures()
        for p in sorted(self.server.signers):
            self.server.receive(self.clients[p].handle(unmask), sender=p)
        total = self.server.close_unmask()
        assert self.server.spec is not None
        values = decode(total, self.server.spec)
        return values[:-1], float(values[-1]), self.server.survivors

    def to_masked(self, drop_before_input: tuple[str, ...] = ()) -> None:
        """Advertise .. consistency honestly; leaves ``self.unmask`` for the test to play."""
        if not self.adverts:
            self.advertise()
        for c in self.clients.values():
            self.server.receive(c.handle(self.directory))
        for p, msg in self.server.close_shares().items():
            if p not in drop_before_input:
                self.server.receive(self.clients[p].handle(msg))
        survivors = self.server.close_inputs()
        for p in sorted(self.server.survivors):
            self.server.receive(self.clients[p].handle(survivors))
        self.unmask = self.server.close_signatures()

    # --- crafting --------------------------------------------------------------------

    def crafted_directory(self, **changes: object) -> bytes:
        """The honest directory with some fields replaced (the coordinator lying)."""
        d = decode_message(self.directory, KeyDirectory)
        fields = {
            "session": d.session,
            "keys": dict(d.keys),
            "graph_seed": d.graph_seed,
            "scale": d.scale,
            "length": d.length,
        }
        fields.update(changes)
        return encode_message(KeyDirectory(**fields))  # type: ignore[arg-type]


# --- one whole session, as the coordinator loop runs it ---------------------------------

#: the stages a participant can vanish in: it never answers the message that reaches it
#: there (ADVERTISE: it never advertises; CONSISTENCY: its masked input is in, it signs
#: no survivor list)
DROP_STAGES = (
    ClientStage.ADVERTISE,
    ClientStage.SHARE,
    ClientStage.INPUT,
    ClientStage.CONSISTENCY,
)


@dataclass
class Outcome:
    """A session's decoded aggregate, who is in it, who is not and why, and every
    (sender, bytes) the coordinator received, in order."""

    weighted_sum: np.ndarray
    total_weight: float
    contributors: frozenset[str]
    excluded: dict[str, str]
    received: list[tuple[str, bytes]] = field(default_factory=list)


def run_session(
    inputs: Mapping[str, ClientInput],
    *,
    session: str = "s",
    settings: MaskSettings = SETTINGS,
    drops: Mapping[str, ClientStage] | None = None,
    vet: Callable[[Mapping[str, bytes]], Mapping[str, str]] | None = None,
    ids: dict[str, IdentityKey] | None = None,
    histories: dict[str, SessionHistory] | None = None,
    joint_seed: bytes | None = None,
    min_group_size: int = 3,
) -> Outcome:
    """One session of honest clients (one per input) and the honest server.

    The group's length is the one most inputs share (:func:`group_length`); a client
    that refuses the session, aborts, or is refused by the server leaves like a dropout,
    as in the coordinator loop. ``drops`` maps a participant to the stage it vanishes
    in; ``vet`` sees the relayed sealed summaries (``ClientInput.sealed_summary``) and
    returns who to leave out; ``ids`` and ``histories`` (filled in when missing) are the
    participants' identity keys and session histories, kept across sessions by a caller
    that passes them. Raises :class:`ThresholdNotMet` where the server does.
    """
    drops = drops or {}
    ids = ids if ids is not None else {}
    histories = histories if histories is not None else {}
    for pid in inputs:
        ids.setdefault(pid, IdentityKey.generate())
        histories.setdefault(pid, SessionHistory())
    directory = {pid: ids[pid].public_bytes() for pid in inputs}
    seed = os.urandom(32) if joint_seed is None else joint_seed
    length, _wrong = group_length({pid: inp.update.size for pid, inp in inputs.items()})
    server = SecAggServer(
        session=session,
        settings=settings,
        directory=directory,
        length=length,
        min_contributors=min_group_size,
        joint_seed=seed,
        members=sorted(inputs),
    )
    excluded: dict[str, str] = {}
    received: list[tuple[str, bytes]] = []
    live: dict[str, SecAggClient] = {}
    for pid, inp in sorted(inputs.items()):
        try:
            live[pid] = SecAggClient(
                pid=pid,
                session=session,
                identity=ids[pid],
                directory=directory,
                settings=settings,
                update=inp.update,
                weight=inp.weight,
                members=sorted(inputs),
                joint_seed=seed,
                model_digest=DIGEST,
                min_group_size=min_group_size,
                sealed_summary=inp.sealed_summary or b"",
                history=histories[pid],
            )
        except SecurePoolError as exc:
            excluded[pid] = f"client refused the session: {type(exc).__name__}: {exc}"

    def answer(pid: str, message: bytes | None) -> None:
        client = live.get(pid)
        if client is None:
            return
        if drops.get(pid) is client.stage:
            excluded.setdefault(pid, f"dropped out in {client.stage.name.lower()}")
            del live[pid]
            return
        try:
            reply = client.start() if message is None else client.handle(message)
        except SecurePoolError as exc:
            excluded[pid] = f"client aborted: {type(exc).__name__}: {exc}"
            del live[pid]
            return
        received.append((pid, reply))
        try:
            server.receive(reply, sender=pid)
        except SecurePoolError as exc:
            excluded[pid] = f"refused by the coordinator: {exc}"
            del live[pid]

    def left_out() -> None:
        for pid, reason in server.excluded.items():
            excluded.setdefault(pid, reason)
            live.pop(pid, None)

    for pid in sorted(live):
        answer(pid, None)
    directory_msg = server.close_keys()
    for pid in sorted(server.advertised):
        answer(pid, directory_msg)
    deliveries = server.close_shares()
    left_out()
    for pid, msg in sorted(deliveries.items()):
        answer(pid, msg)
    survivors = server.close_inputs(vet)
    left_out()
    for pid in sorted(server.survivors):
        answer(pid, survivors)
    unmask = server.close_signatures()
    for pid in sorted(server.signers):
        answer(pid, unmask)
    total = server.close_unmask()
    assert server.spec is not None
    values = decode(total, server.spec)
    contributors = server.contributors
    excluded = {p: r for p, r in excluded.items() if p not in contributors}
    for pid in inputs:
        if pid not in contributors:
            excluded.setdefault(pid, "not in the aggregate")
    return Outcome(
        weighted_sum=values[:-1].astype(np.float64),
        total_weight=float(values[-1]),
        contributors=frozenset(contributors),
        excluded=excluded,
        received=received,
    )
