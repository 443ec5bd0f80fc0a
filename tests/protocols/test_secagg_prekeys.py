"""SecAgg+ with keys advertised in advance (protocols/secagg/prekeys.py), played from the
coordinator's side of the wire: an honest session, another model for one member caught
before any masked input leaves, a delivery whose digests are missing or forged, adverts
moved between rounds or sessions, and the single use of an advance key pair."""

from __future__ import annotations

import contextlib
import hashlib
import os

import numpy as np
import pytest

from crypto.errors import (
    InvalidSignature,
    MessageError,
    SecurePoolError,
    SecurityViolation,
    StageError,
)
from crypto.fixedpoint import decode
from crypto.signing import IdentityKey
from protocols.secagg.client import SecAggClient, SessionHistory
from protocols.secagg.labels import prekey_label
from protocols.secagg.messages import (
    AdvertiseKeys,
    ShareDelivery,
    ShareKeys,
    decode_message,
    encode_message,
)
from protocols.secagg.prekeys import PreKeys
from protocols.secagg.server import SecAggServer
from protocols.secagg.settings import MaskSettings

SETTINGS = MaskSettings(max_weight=128.0)
D = 5
ROUND = 7
SESSION = f"it{ROUND:04d}/lr"
DIGEST = hashlib.sha256(b"the global model").digest()


class Group:
    def __init__(self, n: int = 5, *, digests: dict[str, bytes] | None = None) -> None:
        rng = np.random.default_rng(1)
        self.pids = [f"p{i:02d}" for i in range(n)]
        self.ids = {p: IdentityKey.generate() for p in self.pids}
        self.pki = {p: k.public_bytes() for p, k in self.ids.items()}
        self.updates = {p: rng.uniform(-1, 1, D).astype(np.float32) for p in self.pids}
        self.keys = {p: PreKeys.generate(ROUND) for p in self.pids}
        self.adverts = {p: self.keys[p].advert(p, self.ids[p]) for p in self.pids}
        self.seed = os.urandom(32)
        self.server = SecAggServer(
            session=SESSION,
            settings=SETTINGS,
            directory=self.pki,
            length=D,
            min_contributors=3,
            joint_seed=self.seed,
            advert_session=prekey_label(ROUND),
        )
        self.clients = {
            p: SecAggClient(
                pid=p,
                session=SESSION,
                identity=self.ids[p],
                directory=self.pki,
                settings=SETTINGS,
                update=self.updates[p],
                weight=1.0,
                members=self.pids,
                joint_seed=self.seed,
                model_digest=(digests or {}).get(p, DIGEST),
                history=SessionHistory(),
                prekeys=self.keys[p],
            )
            for p in self.pids
        }

    def keys_and_shares(self) -> dict[str, bytes]:
        for p in self.pids:
            self.server.receive(self.adverts[p], sender=p)
        directory = self.server.close_keys()
        for p in self.pids:
            self.server.receive(self.clients[p].handle(directory), sender=p)
        return self.server.close_shares()

    def finish(self, deliveries: dict[str, bytes]) -> np.ndarray:
        s = self.server
        for p, msg in deliveries.items():
            s.receive(self.clients[p].handle(msg), sender=p)
        survivors = s.close_inputs()
        for p in sorted(s.survivors):
            s.receive(self.clients[p].handle(survivors), sender=p)
        unmask = s.close_signatures()
        for p in sorted(s.signers):
            s.receive(self.clients[p].handle(unmask), sender=p)
        total = s.close_unmask()
        assert s.spec is not None
        return decode(total, s.spec)


def test_an_honest_session_with_advance_keys_sums_exactly() -> None:
    g = Group()
    values = g.finish(g.keys_and_shares())
    expected = sum(g.updates[p].astype(np.float64) for p in g.pids)
    assert np.allclose(values[:-1], expected, atol=1e-4) and values[-1] == pytest.approx(5.0)


def test_another_model_for_one_member_is_caught_before_any_masked_input() -> None:
    """The coordinator sent p02 another global model: p02's signed digest differs, and
    every member refuses its delivery (nothing derived from its data has left)."""
    other = hashlib.sha256(b"a model for p02 alone").digest()
    g = Group(digests={"p02": other})
    deliveries = g.keys_and_shares()
    for p, msg in deliveries.items():
        with pytest.raises(SecurityViolation, match="model digest mismatch"):
            g.clients[p].handle(msg)


@pytest.mark.parametrize("lie", ["dropped", "forged", "swapped"])
def test_a_delivery_whose_digests_lie_is_refused(lie: str) -> None:
    g = Group()
    deliveries = g.keys_and_shares()
    msg = decode_message(deliveries["p00"], ShareDelivery)
    digests = dict(msg.digests)
    sharer = next(iter(msg.ciphertexts))
    if lie == "dropped":  # hide a sharer's digest (its model may differ)
        del digests[sharer]
    elif lie == "forged":
        digests[sharer] = (DIGEST, bytes(64))
    else:  # another member's signature under this sharer's name
        other = next(p for p in digests if p != sharer)
        digests[sharer] = digests[other]
    crafted = encode_message(ShareDelivery(msg.session, dict(msg.ciphertexts), digests))
    with pytest.raises((SecurityViolation, InvalidSignature)):
        g.clients["p00"].handle(crafted)


def test_an_advert_of_another_round_does_not_verify() -> None:
    """Keys a node advertised for round 6 offered as its round-7 keys."""
    g = Group()
    old = PreKeys.generate(ROUND - 1).advert("p01", g.ids["p01"])
    with pytest.raises(StageError):  # the server: another label
        g.server.receive(old, sender="p01")
    # a lying server that lists it anyway: every client verifies under its own label
    msg = decode_message(old, AdvertiseKeys)
    relabelled = encode_message(
        AdvertiseKeys(
            prekey_label(ROUND), "p01", msg.c_pk, msg.s_pk, msg.model_digest, msg.signature
        )
    )
    with pytest.raises(InvalidSignature):
        g.server.receive(relabelled, sender="p01")


def test_a_session_advert_and_an_advance_advert_with_a_digest_are_refused() -> None:
    g = Group()
    legacy = SecAggClient(
        pid="p01",
        session=SESSION,
        identity=g.ids["p01"],
        directory=g.pki,
        settings=SETTINGS,
        update=g.updates["p01"],
        weight=1.0,
        members=g.pids,
        joint_seed=g.seed,
        model_digest=DIGEST,
    ).start()
    with pytest.raises(StageError):  # signed under the session, not the round's label
        g.server.receive(legacy, sender="p01")
    label = prekey_label(ROUND)
    keys = PreKeys.generate(ROUND)
    from protocols.secagg.client import LABEL_ADVERTISE, advertise_payload

    c_pk, s_pk = keys.c.public_bytes(), keys.s.public_bytes()
    sig = g.ids["p01"].sign(
        advertise_payload(label, "p01", c_pk, s_pk, DIGEST), label=LABEL_ADVERTISE
    )
    with pytest.raises(SecurityViolation, match="names a model digest"):
        g.server.receive(
            encode_message(AdvertiseKeys(label, "p01", c_pk, s_pk, DIGEST, sig)), sender="p01"
        )


def test_share_keys_must_carry_a_signed_digest_exactly_when_keys_came_in_advance() -> None:
    g = Group()
    for p in g.pids:
        g.server.receive(g.adverts[p], sender=p)
    directory = g.server.close_keys()
    reply = decode_message(g.clients["p01"].handle(directory), ShareKeys)
    bare = encode_message(ShareKeys(reply.session, "p01", dict(reply.ciphertexts)))
    with pytest.raises(MessageError, match="signed model digest"):
        g.server.receive(bare, sender="p01")
    reply2 = decode_message(g.clients["p02"].handle(directory), ShareKeys)
    forged = encode_message(
        ShareKeys(reply2.session, "p02", dict(reply2.ciphertexts), DIGEST, bytes(64))
    )
    with pytest.raises(InvalidSignature):
        g.server.receive(forged, sender="p02")


def test_an_advance_key_pair_serves_one_session() -> None:
    g = Group()
    history = SessionHistory()
    kw = {
        "pid": "p00",
        "session": SESSION,
        "identity": g.ids["p00"],
        "directory": g.pki,
        "settings": SETTINGS,
        "update": g.updates["p00"],
        "weight": 1.0,
        "members": g.pids,
        "joint_seed": g.seed,
        "model_digest": DIGEST,
        "history": history,
        "prekeys": g.keys["p00"],
        "iteration": ROUND,
    }
    client = SecAggClient(**kw)  # type: ignore[arg-type]
    with pytest.raises(StageError, match="advertised"):
        client.start()
    with pytest.raises(StageError, match="replay"):
        SecAggClient(**kw)  # type: ignore[arg-type]


def test_a_member_without_its_advert_is_a_dropout_and_the_rest_sum() -> None:
    g = Group(6)
    for p in g.pids:
        if p != "p04":
            g.server.receive(g.adverts[p], sender=p)
    directory = g.server.close_keys()
    for p in g.pids:
        if p == "p04":
            with contextlib.suppress(SecurePoolError):
                g.clients[p].handle(directory)  # not in the directory: refused
            continue
        g.server.receive(g.clients[p].handle(directory), sender=p)
    deliveries = g.server.close_shares()
    assert "p04" not in deliveries
    values = g.finish(deliveries)
    expected = sum(g.updates[p].astype(np.float64) for p in g.pids if p != "p04")
    assert np.allclose(values[:-1], expected, atol=1e-4)
