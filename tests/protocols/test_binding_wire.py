"""The auditor's bytes in the split runtimes: the judge request, the verdict with its
commitments and disputes, the signed trust offer and the stored opening key. Each
round-trips exactly, and anything else is refused with a typed error, never a crash."""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import replace

import numpy as np
import pytest

from crypto.errors import InvalidSignature, MessageError, SecurityViolation, StageError
from crypto.fixedpoint import FixedPointSpec
from crypto.hpke import Kem, SummaryOpeningKey, hpke_seal
from crypto.signing import IdentityKey
from protocols.secagg.binding import JudgeRequest, MaskVerdict, decode_commitments
from protocols.secagg.binding_wire import decode_judge_request, encode_judge_request
from protocols.trust_offer import TRUST_SETUP_SESSION, TrustOffer, verify_trust_offer

SESSION = "it0001/lr"


def _request() -> JudgeRequest:
    rng = np.random.default_rng(0)
    return JudgeRequest(
        session="it0003/mlp",
        members=frozenset({"p00", "p01", "p02", "p03"}),  # p03 sent no masked input
        joint_seed=hashlib.sha256(b"j").digest(),
        spec=FixedPointSpec(32, 2.0**18, 1024.0),
        length=1001,
        digests={p: hashlib.sha256(p.encode()).digest() for p in ("p01", "p00", "p02")},
        survivors=frozenset({"p00", "p01", "p02"}),
        projected={p: rng.integers(0, 2**32, 257, dtype=np.uint32) for p in ("p02", "p00")},
        reports={"p00": b"\x01" * 900, "p02": b"\x02" * 70_000},  # over 64 KiB too
        neighbours={
            "p00": frozenset({"p01", "p02"}),
            "p01": frozenset({"p00"}),
            "p02": frozenset({"p00"}),
        },
    )


def test_a_judge_request_round_trips_exactly() -> None:
    req = _request()
    got = decode_judge_request(encode_judge_request(req))
    assert (got.session, got.joint_seed, got.spec, got.length) == (
        req.session,
        req.joint_seed,
        req.spec,
        req.length,
    )
    assert got.members == req.members
    assert got.digests == req.digests and got.survivors == req.survivors
    assert got.reports == req.reports and got.neighbours == req.neighbours
    assert set(got.projected) == set(req.projected)
    for pid, vec in req.projected.items():
        assert got.projected[pid].dtype == vec.dtype
        np.testing.assert_array_equal(got.projected[pid], vec)


def test_malformed_judge_requests_are_message_errors() -> None:
    data = encode_judge_request(_request())
    for bad in (b"", data[:-1], data + b"\x00", b"XX" + data[2:], data[:3] + b"\x09" + data[4:]):
        with pytest.raises(MessageError):
            decode_judge_request(bad)
    rng = np.random.default_rng(1)
    for _ in range(300):  # random corruption: a typed error or a valid request, no crash
        raw = bytearray(data)
        for i in rng.integers(0, len(raw), 4):
            raw[int(i)] = int(rng.integers(0, 256))
        with contextlib.suppress(MessageError):
            decode_judge_request(bytes(raw))


def test_a_verdict_carries_its_commitments_and_disputes_under_the_signature() -> None:
    key = IdentityKey.generate()
    verdict = MaskVerdict(
        "it0001/lr",
        {"p03": "report does not match its masked input"},
        {"p01": "disputed", "p02": "disputed"},
        {"p00": b"c0", "p01": b"c1"},
        (("p01", "p02"),),
        "p00",
        0.25,
    )
    data, sig = verdict.sign(key)
    got = MaskVerdict.verified(data, sig, auditor=key.public_bytes(), session=SESSION)
    assert got == verdict
    stripped = MaskVerdict("it0001/lr", {}, dict(verdict.excluded), dict(verdict.commitments))
    with pytest.raises(InvalidSignature):
        MaskVerdict.verified(
            stripped.encode(), sig, auditor=key.public_bytes(), session="it0001/lr"
        )
    with pytest.raises(MessageError):
        decode_commitments(b"c0")


def test_a_verdict_names_its_group_instance_under_the_signature() -> None:
    """Members, survivors and input digests are signed; :meth:`require_instance` refuses
    each one that is not the caller's view, naming only which part differs."""
    key = IdentityKey.generate()
    members = frozenset({"p00", "p01", "p02", "p03"})
    survivors = frozenset({"p00", "p01", "p02"})
    digests = {p: hashlib.sha256(p.encode()).digest() for p in survivors}
    verdict = MaskVerdict(SESSION, {}, {}, members=members, survivors=survivors, digests=digests)
    data, sig = verdict.sign(key)
    got = MaskVerdict.verified(data, sig, auditor=key.public_bytes(), session=SESSION)
    assert got == verdict
    got.require_instance(members=sorted(members), survivors=survivors, digests=dict(digests))
    other = {**digests, "p02": bytes(32)}
    for kw, part in (
        ({"members": members - {"p03"}}, "members"),
        ({"survivors": survivors | {"p03"}}, "survivors"),
        ({"digests": other}, "masked-input digests"),
        ({"digests": {}}, "masked-input digests"),
    ):
        view = {"members": members, "survivors": survivors, "digests": digests, **kw}
        with pytest.raises(SecurityViolation, match=f"its {part} are not this group's"):
            got.require_instance(**view)  # type: ignore[arg-type]
    # the instance is under the signature: re-encoded with other members, it is refused
    moved = MaskVerdict(
        SESSION, {}, {}, members=members | {"p09"}, survivors=survivors, digests=digests
    )
    with pytest.raises(InvalidSignature):
        MaskVerdict.verified(moved.encode(), sig, auditor=key.public_bytes(), session=SESSION)
    # a verdict of the old form (no instance) names none, and matches no group's view
    bare = MaskVerdict.verified(
        *MaskVerdict(SESSION, {}, {}).sign(key), auditor=key.public_bytes(), session=SESSION
    )
    with pytest.raises(SecurityViolation):
        bare.require_instance(members=members, survivors=survivors, digests=digests)


def test_a_judge_request_of_no_consistent_instance_is_refused() -> None:
    req = _request()
    for bad in (
        replace(req, members=frozenset()),
        replace(req, members=req.members - {"p01"}),  # a survivor that is no member
        replace(req, digests={**req.digests, "p07": bytes(32)}),  # a non-member's input
        replace(req, digests={k: v for k, v in req.digests.items() if k != "p01"}),
        replace(req, survivors=req.survivors - {"p00"}),  # p00's report, not a survivor
        replace(req, neighbours={**req.neighbours, "p01": frozenset({"p08"})}),
    ):
        with pytest.raises(MessageError, match="judge request"):
            bad.check_instance()
        with pytest.raises(MessageError, match="judge request"):
            decode_judge_request(encode_judge_request(bad))
    req.check_instance()


def test_a_trust_offer_verifies_only_under_the_auditors_key_and_session() -> None:
    auditor, other = IdentityKey.generate(), IdentityKey.generate()
    setup, mine = TRUST_SETUP_SESSION, auditor.public_bytes()
    opening = SummaryOpeningKey().public_bytes()
    offer = TrustOffer.signed(auditor, opening_public=opening, session=setup)
    assert verify_trust_offer(offer, auditor_public=mine, session=setup) == opening
    with pytest.raises(InvalidSignature):
        verify_trust_offer(offer, auditor_public=other.public_bytes(), session=setup)
    with pytest.raises(StageError):
        verify_trust_offer(offer, auditor_public=mine, session="another")
    swapped = offer.replace(opening, SummaryOpeningKey().public_bytes())
    with pytest.raises(InvalidSignature):
        verify_trust_offer(swapped, auditor_public=mine, session=setup)
    for bad in (b"", offer[:-1], offer + b"\x00"):
        with pytest.raises((MessageError, InvalidSignature)):
            verify_trust_offer(bad, auditor_public=mine, session=setup)


@pytest.mark.parametrize("kem", list(Kem))
def test_a_stored_opening_key_opens_what_was_sealed_to_the_original(kem: Kem) -> None:
    key = SummaryOpeningKey(kem)
    stored = key.private_bytes()
    again = SummaryOpeningKey.from_private_bytes(stored, kem)
    assert again.public_bytes() == key.public_bytes()
    assert again.open(hpke_seal(key.public_bytes(), b"report", info=b"i"), info=b"i") == b"report"
    assert "hidden" in repr(again) and stored.hex() not in repr(again)
    with pytest.raises(Exception, match="bytes"):
        SummaryOpeningKey.from_private_bytes(stored[:-1], kem)
