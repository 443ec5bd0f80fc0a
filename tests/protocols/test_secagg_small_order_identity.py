"""A member enrolled with a small-order Ed25519 identity key cannot be spoken for.

Under a small-order public key A (here the identity point), (R = [S]B, S) satisfies
RFC 8032's cofactorless verification equation for every message: with OpenSSL's
verifier anybody, the coordinator included, could advertise keys in that member's name
(e.g. a colluding member enrols such a key so the coordinator can play it). With
libsodium (crypto/signing.py) every signature under such a key is refused, so the
forged advertisement is refused by the real server and, slipped into a directory, by
every real client; the session goes on without that member.
"""

from __future__ import annotations

import nacl.bindings as sodium
import numpy as np
import pytest
from secagg_session import DIGEST, Session, reference

from crypto.agreement import AgreementKey
from crypto.errors import InvalidSignature
from protocols.secagg.client import ClientStage
from protocols.secagg.messages import AdvertiseKeys, decode_message, encode_message
from protocols.secagg.server import SecAggServer

IDENTITY = (1).to_bytes(32, "little")  # the neutral element: order 1


def _forged_advert(session: str, sender: str) -> tuple[bytes, tuple[bytes, bytes, bytes, bytes]]:
    """The attacker's advertisement for ``sender`` (key IDENTITY): its own X25519 keys,
    signature (R = [S]B, S) that the verification equation accepts."""
    c_pk = AgreementKey.generate().public_bytes()
    s_pk = AgreementKey.generate().public_bytes()
    s = 4242
    r = sodium.crypto_scalarmult_ed25519_base_noclamp(s.to_bytes(32, "little"))
    sig = r + s.to_bytes(32, "little")
    # [k]A is the identity whatever k = H(R || A || signed bytes) is, so R + [k]A = R
    # = [S]B: the equation holds for this payload as for any other
    msg = AdvertiseKeys(session, sender, c_pk, s_pk, DIGEST, sig)
    return encode_message(msg), (c_pk, s_pk, DIGEST, sig)


def _session_with_small_order_member(victim: str) -> Session:
    s = Session()
    s.pki[victim] = IDENTITY  # what the PKI enrolled for the victim
    s.server = SecAggServer(
        session=s.session,
        settings=s.settings,
        directory=s.pki,
        length=4,
        min_contributors=3,
        joint_seed=s.joint_seed,
    )
    s.clients = {p: s.client(p) for p in s.inputs}
    return s


def test_the_server_refuses_a_forged_advert_under_a_small_order_key() -> None:
    s = _session_with_small_order_member("p01")
    forged, _ = _forged_advert(s.session, "p01")
    with pytest.raises(InvalidSignature):
        s.server.receive(forged, sender="p01")
    assert "p01" in s.server.excluded
    s.advertise()  # everybody else, honestly
    total, weight, contributors = s.finish()
    assert "p01" not in contributors and len(contributors) == 5
    want, want_weight = reference(s.inputs, contributors)
    assert weight == want_weight
    assert np.allclose(total, want, atol=1e-3)


def test_every_client_refuses_a_directory_with_a_forged_small_order_advert() -> None:
    s = _session_with_small_order_member("p01")
    s.advertise()  # p01's honest advert (signed with its real key) fails: excluded
    assert "p01" not in decode_message(s.directory).keys
    keys = dict(decode_message(s.directory).keys)
    keys["p01"] = _forged_advert(s.session, "p01")[1]  # the coordinator speaks for p01
    evil = s.crafted_directory(keys=keys)
    for p, c in s.clients.items():
        if p == "p01":
            continue
        with pytest.raises(InvalidSignature):
            c.handle(evil)
        assert c.stage is ClientStage.SHARE
