"""Issue 10, failure 7: malformed SecAgg+ messages.

Every decoder raises MessageError and nothing else (no ValueError, TypeError,
RecursionError, OverflowError, MemoryError), in bounded time, for random bytes and for
mutations of valid messages; and one malformed message excludes its sender at the
server while the session goes on for the others.
"""

from __future__ import annotations

import struct
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from secagg_session import Session, reference

from crypto.encoding import bind
from crypto.errors import MessageError, SecurePoolError, StageError
from crypto.signing import IdentityKey
from protocols.secagg.binding import LABEL_VERDICT, BindingReport, MaskVerdict
from protocols.secagg.messages import (
    DECODERS,
    MAGIC,
    VERSION,
    AdvertiseKeys,
    ConsistencySignature,
    KeyDirectory,
    MaskedInput,
    ShareDelivery,
    ShareKeys,
    StepDigest,
    StepGo,
    StepInput,
    StepModel,
    SurvivorList,
    UnmaskRequest,
    UnmaskResponse,
    decode_message,
    encode_message,
)

K = bytes(range(32))
SIG = bytes(range(64))
EXAMPLES = [
    AdvertiseKeys("s", "p01", K, K[::-1], K, SIG),
    KeyDirectory("s", {"p01": (K, K, K, SIG), "p02": (K, K, K, SIG)}, K, 2.0**-20, 7),
    ShareKeys("s", "p01", {"p02": b"x" * 90, "p03": b"y" * 90}),
    ShareDelivery("s", {"p02": b"x" * 90}),
    MaskedInput("s", "p01", b"sealed", np.arange(9, dtype=np.uint32)),
    SurvivorList("s", ("p01", "p02", "p03"), {"p01": K, "p02": K, "p03": K, "p04": K}),
    ConsistencySignature("s", "p01", SIG, b"sealed report"),
    UnmaskRequest("s", ("p01", "p02"), ("p03",), {"p01": SIG, "p02": SIG}, b"verdict", SIG),
    UnmaskResponse("s", "p01", {"p02": b"share"}, {"p03": b"share2"}),
    StepModel("s", 2, np.arange(9, dtype=np.uint64)),
    StepDigest("s", "p01", 2, SIG),
    StepGo("s", 2, {"p01": SIG, "p02": SIG}),
    StepInput("s", "p01", 2, np.arange(9, dtype=np.uint64)),
]
WIRES = [encode_message(m) for m in EXAMPLES]


def _only_message_errors(data: bytes) -> None:
    """Decoding raises MessageError or gives a message whose encoding is ``data`` itself
    (the wire format is canonical: one message, one byte string)."""
    try:
        msg = decode_message(data)
    except MessageError:
        return
    assert type(msg) in DECODERS
    assert encode_message(msg) == data


def test_every_kind_has_an_example_and_round_trips() -> None:
    assert {type(m) for m in EXAMPLES} == set(DECODERS)
    for msg, wire in zip(EXAMPLES, WIRES, strict=True):
        back = decode_message(wire, type(msg))
        for name in msg.__dataclass_fields__:
            a, b = getattr(msg, name), getattr(back, name)
            if isinstance(a, np.ndarray):
                assert np.array_equal(a, b) and a.dtype == b.dtype
            else:
                assert a == b, name


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=400))
def test_random_bytes_raise_only_message_errors(data: bytes) -> None:
    _only_message_errors(data)


@settings(max_examples=300, deadline=None)
@given(kind=st.integers(0, 255), body=st.binary(max_size=400))
def test_random_bodies_behind_a_valid_prefix_raise_only_message_errors(
    kind: int, body: bytes
) -> None:
    _only_message_errors(MAGIC + bytes([VERSION, kind]) + body)


@settings(max_examples=400, deadline=None)
@given(
    which=st.integers(0, len(WIRES) - 1),
    edits=st.lists(
        st.tuples(st.sampled_from(["flip", "cut", "insert", "big"]), st.integers(0, 10_000)),
        min_size=1,
        max_size=4,
    ),
)
def test_mutated_valid_messages_raise_only_message_errors(
    which: int, edits: list[tuple[str, int]]
) -> None:
    _only_message_errors(_mutate(WIRES[which], edits))


def test_huge_claimed_lengths_fail_fast_without_allocating() -> None:
    """An infinite/huge length: a count of 2^32 - 1 map entries, a 2^64 - 1 word vector."""
    prefix = MAGIC + bytes([VERSION, ShareDelivery.KIND]) + struct.pack(">H", 1) + b"s"
    huge_map = prefix + struct.pack(">I", 0xFFFFFFFF)
    vec = encode_message(EXAMPLES[4])
    head = vec[: vec.index(b"sealed") + len(b"sealed")]
    huge_vec = head + bytes([4]) + struct.pack(">Q", 2**64 - 1)
    over_cap = head + bytes([4]) + struct.pack(">Q", 2**28) + bytes(64)
    start = time.perf_counter()
    for bad in (huge_map, huge_vec, over_cap, WIRES[0] + b"\x00", b"SA" + bytes([1, 1])):
        with pytest.raises(MessageError):
            decode_message(bad)
    assert time.perf_counter() - start < 1.0


def test_non_canonical_maps_and_lists_are_refused() -> None:
    """A map with a repeated or unsorted id would make two encodings of one message."""
    wire = encode_message(SurvivorList("s", ("p01", "p02")))
    swapped = wire.replace(b"p01", b"pXX").replace(b"p02", b"p01").replace(b"pXX", b"p02")
    dup = wire.replace(b"p02", b"p01")
    for bad in (swapped, dup):
        with pytest.raises(MessageError, match="strictly increasing"):
            decode_message(bad)


# --- the server: one malformed message excludes its sender, the session goes on -------


@pytest.mark.parametrize("garbage", [b"", b"SA\x02\x01" + b"\xff" * 40, b"{}"])
def test_malformed_advert_excludes_its_sender_only(garbage: bytes) -> None:
    s = Session(n=7)
    s.advertise(replace={"p02": garbage})
    assert set(s.server.excluded) == {"p02"}
    assert s.server.excluded["p02"].startswith("malformed message")
    total, _w, who = s.finish()
    assert who == frozenset(s.inputs) - {"p02"}
    ref, _ = reference(s.inputs, who)
    assert np.abs(total - ref).max() < 1e-3


def test_malformed_share_message_excludes_its_sender_only() -> None:
    s = Session(n=7)
    s.advertise()
    total, _w, who = s.finish(mutate_shares={"p04": lambda wire: wire[:-7]})
    assert "p04" in s.server.excluded and "p04" not in who
    ref, _ = reference(s.inputs, who)
    assert np.abs(total - ref).max() < 1e-3


def test_message_in_another_senders_name_is_refused_and_excludes_the_transport_sender() -> None:
    s = Session(n=6)
    for p, c in s.clients.items():
        s.adverts[p] = c.start()
    with pytest.raises(SecurePoolError, match="in the name of"):
        s.server.receive(s.adverts["p01"], sender="p03")
    assert set(s.server.excluded) == {"p03"}


# --- the binding's messages (issue 13): the report and the verdict -----------------

BINDING_EXAMPLES = [
    BindingReport(
        "s",
        "p01",
        np.arange(5, dtype=np.uint32),
        bytes(range(32, 64)),
        {"p02": bytes(32), "p03": bytes(range(32))},
    ).encode(),
    MaskVerdict("s", {"p02": "report does not match"}, {"p03": "dispute", "p04": "x"}).encode(),
]


def _binding_only_message_errors(data: bytes) -> None:
    try:
        report = BindingReport.decode(data)
    except MessageError:
        pass
    else:
        assert report.encode() == data
    if not data:
        return  # no verdict at all: InvalidSignature (tested in test_secagg_binding.py)
    key = IdentityKey.generate()  # a verdict parses only after its signature verifies:
    signed_data, sig = _sign_raw(key, data)  # sign the mutant itself
    try:
        verdict = MaskVerdict.verified(signed_data, sig, auditor=key.public_bytes(), session="s")
    except (MessageError, StageError):
        return
    assert verdict.encode() == data


def _sign_raw(key: IdentityKey, data: bytes) -> tuple[bytes, bytes]:
    """The auditor's signature over arbitrary bytes (as a buggy auditor might give)."""
    return data, key.sign(bind(b"securepool/secagg/binding/v1/verdict", data), label=LABEL_VERDICT)


def test_binding_messages_round_trip() -> None:
    back = BindingReport.decode(BINDING_EXAMPLES[0])
    assert back.sender == "p01" and back.seeds["p03"] == bytes(range(32))
    key = IdentityKey.generate()
    data, sig = MaskVerdict("s", {"p02": "why"}, {"p03": "dispute"}).sign(key)
    verdict = MaskVerdict.verified(data, sig, auditor=key.public_bytes(), session="s")
    assert verdict.flagged == {"p02": "why"} and verdict.left_out == {"p02", "p03"}


@settings(max_examples=300, deadline=None)
@given(
    which=st.integers(0, len(BINDING_EXAMPLES) - 1),
    edits=st.lists(
        st.tuples(st.sampled_from(["flip", "cut", "insert", "big"]), st.integers(0, 10_000)),
        min_size=1,
        max_size=4,
    ),
)
def test_mutated_binding_messages_raise_only_message_errors(
    which: int, edits: list[tuple[str, int]]
) -> None:
    _binding_only_message_errors(_mutate(BINDING_EXAMPLES[which], edits))


def _mutate(message: bytes, edits: list[tuple[str, int]]) -> bytes:
    """``message`` with each edit applied in turn: flip a bit, cut the tail, insert a
    byte, or overwrite 4 bytes with a length or count claiming ~4 GiB."""
    data = bytearray(message)
    for op, pos in edits:
        i = pos % max(len(data), 1)
        if op == "flip" and data:
            data[i] ^= 1 << (pos % 8)
        elif op == "cut":
            del data[i:]
        elif op == "insert":
            data[i:i] = bytes([pos % 256])
        elif op == "big" and len(data) >= i + 4:
            data[i : i + 4] = b"\xff\xff\xff\xff"
    return bytes(data)
