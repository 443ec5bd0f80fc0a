"""Injective bindings of sealed summaries, ballots and verdicts; their decoders fuzzed.

The v1 HPKE ``info`` was ``domain NUL session NUL participant``: the pairs
("a\\x00b", "c") and ("a", "b\\x00c") gave the same bytes, so a summary sealed for one
(session, sender) opened for the other. v2 is :func:`crypto.encoding.bind` of validated
identifiers.
"""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crypto.errors import CryptoError, DecryptionError, InvalidSignature, MessageError
from crypto.hpke import SummaryOpeningKey, hpke_seal
from crypto.signing import IdentityKey
from protocols.ballots import ballot_info, decode_ballot, encode_ballot, open_ballot, seal_ballot
from protocols.summaries import (
    Summary,
    decode_summary,
    encode_summary,
    open_summary,
    seal_summary,
    summary_info,
)
from protocols.verdict import Verdict


def v1_info(session: str, participant: str) -> bytes:
    """The old, non-injective encoding (for the collision it allowed)."""
    return b"securepool/summary/v1\x00" + session.encode() + b"\x00" + participant.encode()


COLLIDING = [("a\x00b", "c"), ("a", "b\x00c")]
SUMMARY = Summary(1.5, np.array([0.25, -1.0, 2.0]))


def test_pairs_that_collided_under_v1_no_longer_collide() -> None:
    (s1, p1), (s2, p2) = COLLIDING
    assert v1_info(s1, p1) == v1_info(s2, p2)  # the old bug
    # v2: such ids are refused where they enter ...
    for s, p in COLLIDING:
        with pytest.raises(CryptoError, match="not a valid identifier"):
            summary_info(s, p)
        with pytest.raises(CryptoError, match="not a valid identifier"):
            ballot_info(s, p)
    # ... and valid pairs that concatenate alike stay distinct
    assert summary_info("it1/m", "p1") != summary_info("it1", "m/p1")
    assert summary_info("s:1", "p") != summary_info("s", "1:p")
    assert summary_info("s", "p") != ballot_info("s", "p")  # domains differ too


def test_a_summary_sealed_under_v1_for_one_pair_opened_for_the_other() -> None:
    """What the old binding allowed, performed with raw HPKE, and v2 refusing it."""
    key = SummaryOpeningKey()
    (s1, p1), (s2, p2) = COLLIDING
    sealed = hpke_seal(key.public_bytes(), encode_summary(SUMMARY), info=v1_info(s1, p1))
    assert key.open(sealed, info=v1_info(s2, p2)) == encode_summary(SUMMARY)  # re-attributed
    with pytest.raises(CryptoError):
        open_summary(key, sealed, session=s2, participant=p2, expected_dim=3)


@pytest.mark.parametrize(
    ("session", "participant"),
    [("it0002/lr", "p01"), ("it0001/lr", "p02"), ("it0001/lr/p01", "p01"), ("it0001", "lr/p01")],
)
def test_a_summary_sealed_for_one_session_and_sender_does_not_open_for_another(
    session: str, participant: str
) -> None:
    key = SummaryOpeningKey()
    sealed = seal_summary(
        SUMMARY, auditor_public=key.public_bytes(), session="it0001/lr", participant="p01"
    )
    back = open_summary(key, sealed, session="it0001/lr", participant="p01", expected_dim=3)
    np.testing.assert_array_equal(back.sketch, SUMMARY.sketch)
    with pytest.raises(DecryptionError):
        open_summary(key, sealed, session=session, participant=participant, expected_dim=3)


def test_a_ballot_sealed_for_one_session_and_voter_does_not_open_for_another() -> None:
    key = SummaryOpeningKey()
    sealed = seal_ballot({"p2": 0.5}, auditor_public=key.public_bytes(), session="s1", voter="p1")
    assert open_ballot(key, sealed, session="s1", voter="p1") == {"p2": 0.5}
    for session, voter in (("s1", "p2"), ("s2", "p1"), ("s1p", "1")):
        with pytest.raises(DecryptionError):
            open_ballot(key, sealed, session=session, voter=voter)


def test_verdict_payload_is_injective_and_ids_are_checked() -> None:
    key = IdentityKey.generate()
    a = Verdict("s", "p1", {"p2": "dup"}, {"p1": 0.5, "p2": 2.0}, 1.0)
    signature = a.sign(key)
    a.verify(key.public_bytes(), signature)
    # fields the old JSON rounding merged, and moved or re-attributed flags, all differ
    for other in (
        Verdict("s", "p1", {"p2": "dup"}, {"p1": 0.5 + 1e-15, "p2": 2.0}, 1.0),
        Verdict("s", "p1", {"p1": "dup"}, {"p1": 0.5, "p2": 2.0}, 1.0),
        Verdict("s", None, {"p2": "dup"}, {"p1": 0.5, "p2": 2.0}, 1.0),
        Verdict("s2", "p1", {"p2": "dup"}, {"p1": 0.5, "p2": 2.0}, 1.0),
    ):
        assert other.payload() != a.payload()
        with pytest.raises(InvalidSignature):
            other.verify(key.public_bytes(), signature)
    with pytest.raises(CryptoError, match="not a valid identifier"):
        Verdict("s", "p 1", {}).payload()


# --- decoders: only MessageError ----------------------------------------------------

VALID = [encode_summary(SUMMARY), encode_ballot({"p1": 0.5, "p2": 1.0})]


def _decode(which: int, data: bytes) -> None:
    if which == 0:
        decode_summary(data, expected_dim=3)
    else:
        decode_ballot(data)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(which=st.integers(0, 1), data=st.binary(max_size=300))
def test_fuzz_random_bytes(which: int, data: bytes) -> None:
    with contextlib.suppress(MessageError):  # anything else fails the test
        _decode(which, data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    which=st.integers(0, 1),
    edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=4),
    cut=st.integers(0, 10**6),
)
def test_fuzz_mutated_valid_messages(which: int, edits: list[tuple[int, int]], cut: int) -> None:
    raw = bytearray(VALID[which])
    for pos, byte in edits:
        raw[pos % len(raw)] = byte
    data = bytes(raw[: max(1, cut % (len(raw) + 1))]) if cut % 2 else bytes(raw)
    with contextlib.suppress(MessageError):
        _decode(which, data)


def test_a_ballot_claiming_many_entries_is_refused_at_once() -> None:
    with pytest.raises(MessageError, match="at most"):
        decode_ballot(b"\x01\xff\xff")
