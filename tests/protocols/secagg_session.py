"""A SecAgg+ session driven by hand, so that tests can play a lying coordinator.

Honest :class:`SecAggClient` objects and, where wanted, the honest
:class:`SecAggServer`; the test decides which messages reach which client, and can
replace any message with one it crafts. Colluding participants are clients whose
identity keys the attacker also holds (``ids``).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Callable

import numpy as np

from crypto.errors import SecurePoolError
from crypto.fixedpoint import decode
from crypto.signing import IdentityKey
from protocols.aggregation import ClientInput
from protocols.secagg.client import SecAggClient, SessionHistory
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
