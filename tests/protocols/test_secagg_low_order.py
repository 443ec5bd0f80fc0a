"""The coordinator's low-order key check without a key agreement per key (issue 26).

``valid_x25519`` used to run one X25519 agreement per advertised public key (two per
participant, a tenth of the coordinator's session time at n = 100). It now decides from
the key's u-coordinate whenever that is not one of the five of low order, and runs the
agreement only for the rest. These tests show that the answer is the agreement's for
every key an attacker could pick that matters (all 14 low-order encodings, their
neighbours, non-canonical encodings, random keys), and perform the attack: a
participant advertising any low-order encoding, as either key, is excluded by the real
server and the session goes on for the others with their exact sum.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from secagg_session import DIGEST, Session, reference

from crypto.agreement import AgreementKey
from crypto.errors import KeyMaterialError, SecurityViolation
from protocols.secagg.client import LABEL_ADVERTISE, advertise_payload, valid_x25519
from protocols.secagg.messages import AdvertiseKeys, decode_message, encode_message

P = 2**255 - 19
# u-coordinates of the points of order dividing 8 (RFC 7748 section 7)
LOW_U = (
    0,
    1,
    P - 1,
    325606250916557431795983626356110631294008115727848805560023387167927233504,
    39382357235489614581723060781553021112529911719440698176882885853963445705823,
)
# every 32-byte encoding of them: u, or u + p where that is below 2^255, bit 255 clear/set
LOW_ORDER = sorted(
    (v | high).to_bytes(32, "little")
    for u in LOW_U
    for v in {u, u + P}
    if v < 2**255
    for high in (0, 1 << 255)
)


def _agreement_says(probe: AgreementKey, public: bytes) -> bool:
    """The old check, by an X25519 agreement (refused: all-zero shared secret)."""
    try:
        probe.derive(public, label=b"test/probe", length=16)
    except KeyMaterialError:
        return False
    return True


def test_there_are_exactly_fourteen_low_order_encodings_and_all_are_refused() -> None:
    probe = AgreementKey.generate()
    assert len(LOW_ORDER) == 14
    for public in LOW_ORDER:
        assert not _agreement_says(probe, public)
        assert not valid_x25519(public, probe)


def test_the_fast_answer_is_the_agreements_answer() -> None:
    """Near every low-order u (a forger's first tries), at the ends of the encoding
    range, the non-canonical encodings u + p, and random keys: same answer."""
    probe = AgreementKey.generate()
    values: set[int] = set(range(64)) | set(range(2**255 - 64, 2**255))
    for u in LOW_U:
        for v in (u, u + P):
            values |= {v + d for d in range(-20, 21) if 0 <= v + d < 2**255}
    keys = [(v | high).to_bytes(32, "little") for v in values for high in (0, 1 << 255)]
    keys += [os.urandom(32) for _ in range(500)]
    keys += [AgreementKey.generate().public_bytes() for _ in range(100)]
    refused = 0
    for public in keys:
        expected = _agreement_says(probe, public)
        assert valid_x25519(public, probe) == expected, public.hex()
        refused += not expected
    assert refused == 14  # the low-order encodings among them, and nothing else


@pytest.mark.parametrize("which", ["c_pk", "s_pk"])
@pytest.mark.parametrize("public", LOW_ORDER, ids=lambda b: b.hex()[:8] + ".." + b.hex()[-2:])
def test_each_low_order_encoding_excludes_its_advertiser(public: bytes, which: str) -> None:
    """Attack: p03 advertises a low-order key (validly signed, so only the key is
    wrong). The server excludes p03 alone, before any directory is sent."""
    s = Session(n=5)
    for p, c in s.clients.items():
        s.adverts[p] = c.start()
    v = decode_message(s.adverts["p03"], AdvertiseKeys)
    keys = {"c_pk": v.c_pk, "s_pk": v.s_pk, which: public}
    payload = advertise_payload("s", "p03", keys["c_pk"], keys["s_pk"], DIGEST)
    sig = s.ids["p03"].sign(payload, label=LABEL_ADVERTISE)
    bad = encode_message(AdvertiseKeys("s", "p03", keys["c_pk"], keys["s_pk"], DIGEST, sig))
    with pytest.raises(SecurityViolation, match="low order"):
        s.server.receive(bad, sender="p03")
    assert set(s.server.excluded) == {"p03"}
    assert "low order" in s.server.excluded["p03"]


def test_a_non_canonical_low_order_key_leaves_the_others_exact_sum() -> None:
    """The encoding p + 1 with bit 255 set (neither canonical nor in the usual form of
    the list): excluded all the same, and the session completes without p03."""
    public = ((P + 1) | (1 << 255)).to_bytes(32, "little")
    s = Session(n=7)
    for p, c in s.clients.items():
        s.adverts[p] = c.start()
    v = decode_message(s.adverts["p03"], AdvertiseKeys)
    sig = s.ids["p03"].sign(
        advertise_payload("s", "p03", v.c_pk, public, DIGEST), label=LABEL_ADVERTISE
    )
    s.advertise(
        replace={"p03": encode_message(AdvertiseKeys("s", "p03", v.c_pk, public, DIGEST, sig))}
    )
    assert set(s.server.excluded) == {"p03"}
    total, _w, who = s.finish()
    assert who == frozenset(s.inputs) - {"p03"}
    ref, _ = reference(s.inputs, who)
    assert np.abs(total - ref).max() < 1e-3
