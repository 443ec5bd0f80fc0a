from __future__ import annotations

import contextlib

import numpy as np
import pytest

from crypto.errors import EncodingError, MessageError
from protocols.he.layout import SlotLayout
from protocols.he.messages import (
    AggregateRelease,
    ContextOffer,
    ContributionReceipt,
    DecryptRequest,
    HEUpload,
)

FP = b"\x11" * 32
SAMPLES = [
    ContextOffer("he-setup", b"ctx" * 10, b"\x22" * 32, b"\x55" * 64),
    HEUpload("s", "p0", FP, 5, (b"a" * 7, b"b" * 3)),
    ContributionReceipt("s", "p0", FP, 5, 1, b"\x33" * 32, b"\x66" * 32, b"sealed", b"\x44" * 64),
    DecryptRequest("s", FP, 5, (b"r1", b"r2"), (b"c1",)),
]


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda m: type(m).__name__)
def test_messages_round_trip_and_refuse_malformed_bytes(msg) -> None:  # type: ignore[no-untyped-def]
    raw = msg.to_bytes()
    assert type(msg).from_bytes(raw) == msg
    with pytest.raises(MessageError, match=r"truncated|shorter"):
        type(msg).from_bytes(raw[:-1])
    with pytest.raises(MessageError, match="trailing"):
        type(msg).from_bytes(raw + b"\x00")
    with pytest.raises(MessageError, match="version"):
        type(msg).from_bytes(raw[:2] + b"\x09" + raw[3:])
    with pytest.raises(MessageError, match="bad magic"):
        type(msg).from_bytes(b"XX" + raw[2:])
    other = next(m for m in SAMPLES if type(m) is not type(msg))
    with pytest.raises(MessageError, match="kind"):
        type(msg).from_bytes(other.to_bytes())


def test_release_round_trip_and_checks() -> None:
    rel = AggregateRelease("s", ("a", "b", "c"), 12.5, np.array([1.0, -2.0]))
    back = AggregateRelease.from_bytes(rel.to_bytes())
    assert back.contributors == rel.contributors and back.total_weight == 12.5
    np.testing.assert_array_equal(back.weighted_sum, rel.weighted_sum)
    bad = AggregateRelease("s", ("a",), -1.0, np.zeros(2))
    with pytest.raises(MessageError, match="positive"):
        AggregateRelease.from_bytes(bad.to_bytes())


def test_receipt_signature_must_be_64_bytes() -> None:
    rec = ContributionReceipt("s", "p0", FP, 5, 1, b"\x33" * 32, FP, b"sealed", b"\x44" * 10)
    with pytest.raises(MessageError, match="expected 64"):
        ContributionReceipt.from_bytes(rec.to_bytes())


def test_layout_packs_weight_tags_and_padding() -> None:
    layout = SlotLayout(d=5, slots=4, tag_slots=1)  # 3 data slots per chunk
    assert layout.n_chunks == 2 and layout.padding == 0
    tags = np.array([[0.5], [0.25]])
    rows = layout.pack(np.arange(5, dtype=np.float64), 7.0, tags)
    np.testing.assert_array_equal(rows, [[0, 1, 2, 0.5], [3, 4, 7, 0.25]])
    weighted, weight, got_tags, padding = layout.unpack(rows)
    np.testing.assert_array_equal(weighted, np.arange(5))
    assert weight == 7.0 and padding.size == 0
    np.testing.assert_array_equal(got_tags, tags)
    with pytest.raises(EncodingError):
        layout.pack(np.zeros(4), 1.0, tags)
    with pytest.raises(EncodingError):
        SlotLayout(d=0, slots=4, tag_slots=1)


# --- fuzzing: every decoder raises only MessageError, in time bounded by the input ------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

FUZZ = [
    *SAMPLES,
    AggregateRelease("s", ("a", "b", "c"), 12.5, np.array([1.0, -2.0])),
]
DECODERS = [type(m).from_bytes for m in FUZZ] + [HEUpload.peek]
VALID = [m.to_bytes() for m in FUZZ] + [SAMPLES[1].to_bytes()]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(which=st.integers(0, len(DECODERS) - 1), data=st.binary(max_size=400))
def test_fuzz_random_bytes(which: int, data: bytes) -> None:
    with contextlib.suppress(MessageError):  # anything else fails the test
        DECODERS[which](data)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    which=st.integers(0, len(DECODERS) - 1),
    edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=4),
    cut=st.integers(0, 10**6),
    prefix=st.booleans(),
)
def test_fuzz_mutated_valid_messages(
    which: int, edits: list[tuple[int, int]], cut: int, prefix: bool
) -> None:
    raw = bytearray(VALID[which])
    for pos, byte in edits:
        # mutate the header/length region more often than the payload
        raw[(pos % 16 if prefix else pos) % len(raw)] = byte
    data = bytes(raw[: max(1, cut % (len(raw) + 1))]) if cut % 3 == 0 else bytes(raw)
    with contextlib.suppress(MessageError):
        DECODERS[which](data)


def test_huge_declared_lengths_and_counts_are_refused_without_allocating() -> None:
    # a u32 length of 4 GiB or a count of 2^32 - 1 items: refused at once, nothing read
    for raw in (
        b"HE\x01\x02" + b"\xff\xff\xff\xff",  # HEUpload: session length 4 GiB
        b"HE\x01\x04"
        + b"\x00\x00\x00\x01s"
        + b"\x00\x00\x00\x20"
        + b"\x00" * 32
        + b"\x00" * 8
        + b"\xff\xff\xff\xff",  # DecryptRequest: 2^32 - 1 receipts
    ):
        with pytest.raises(MessageError, match=r"exceeds|at most|truncated"):
            (HEUpload if raw[3] == 2 else DecryptRequest).from_bytes(raw)


def test_ids_are_validated_where_they_enter() -> None:
    for bad in ("a b", "p\x000", "", "x" * 200, "é"):
        with pytest.raises(MessageError):
            HEUpload.from_bytes(HEUpload("s", bad, FP, 5, (b"a",)).to_bytes())
        with pytest.raises(MessageError):
            ContributionReceipt.from_bytes(
                ContributionReceipt(bad, "p0", FP, 5, 1, FP, FP, b"x", b"\x44" * 64).to_bytes()
            )


def test_peek_counts_only_chunks_really_present() -> None:
    """A claimed chunk count (which the coordinator sizes its sums by) must be backed by
    real chunks of a plausible size: no allocation from a 40-byte message."""
    real = HEUpload("s", "p0", FP, 5, (b"a" * 2000, b"b" * 1500))
    assert HEUpload.peek(real.to_bytes())[4] == 2
    raw = real.to_bytes()
    head = raw[: raw.index(b"\x00\x00\x00\x02" + b"\x00\x00\x07\xd0")]
    with pytest.raises(MessageError, match="truncated"):
        HEUpload.peek(head + b"\x00\x10\x00\x00")  # claims 2^20 chunks, carries none
    with pytest.raises(MessageError, match="not a ciphertext"):
        HEUpload.peek(HEUpload("s", "p0", FP, 10**15, (b"",) * 3).to_bytes())


def test_a_participants_copy_of_the_offer_drops_the_galois_keys_but_keeps_the_signature() -> None:
    from crypto.errors import SecurityViolation
    from crypto.signing import IdentityKey
    from protocols.he.messages import OFFER_LABEL, verify_context_offer

    key = IdentityKey.generate()
    unsigned = ContextOffer("he-setup", b"ctx", b"\x22" * 32, b"", b"galois" * 1000)
    signature = key.sign(unsigned.signed_part(), label=OFFER_LABEL)
    full = ContextOffer("he-setup", b"ctx", b"\x22" * 32, signature, b"galois" * 1000)
    copy = full.without_galois().to_bytes()
    assert len(copy) < len(full.to_bytes()) - 5000
    got = verify_context_offer(copy, auditor_public=key.public_bytes(), session="he-setup")
    assert got.galois_keys == b"" and got.galois_digest == full.galois_digest
    # keys that are not the signed ones: refused as malformed; a changed digest: unsigned
    raw = full.to_bytes()
    with pytest.raises(MessageError, match="digest"):
        ContextOffer.from_bytes(raw.replace(b"galois" * 1000, b"GALOIS" * 1000))
    forged = ContextOffer("he-setup", b"ctx", b"\x22" * 32, signature, b"", b"\x01" * 32)
    with pytest.raises(SecurityViolation):
        verify_context_offer(
            forged.to_bytes(), auditor_public=key.public_bytes(), session="he-setup"
        )
