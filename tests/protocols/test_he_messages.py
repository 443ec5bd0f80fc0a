from __future__ import annotations

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
    ContextOffer(b"ctx" * 10, b"\x22" * 32),
    HEUpload("s", "p0", FP, 5, (b"a" * 7, b"b" * 3)),
    ContributionReceipt("s", "p0", FP, 5, 1, b"\x33" * 32, b"sealed", b"\x44" * 64),
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
    rec = ContributionReceipt("s", "p0", FP, 5, 1, b"\x33" * 32, b"sealed", b"\x44" * 10)
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
