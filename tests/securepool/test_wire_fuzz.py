"""The node wire decoders (securepool/node/wire.py), fuzzed: whatever the coordinator
(or a node) sends, a decoder raises MessageError and nothing else, in time bounded by
the input. TrainRequest in particular, with the round's model hashes it now carries
(what every endorser's statement binds): decoded canonically, unsorted or repeated
entries refused.
"""

from __future__ import annotations

import contextlib
import hashlib
import struct
import time
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crypto.errors import MessageError
from securepool.node.wire import (
    MAGIC,
    VERSION,
    BallotRequest,
    PlainJudgeRequest,
    Reply,
    TrainRequest,
    decode_bundle,
    decode_globals,
    encode_bundle,
    encode_globals,
    pack_list,
    unpack_list,
)
from tests.mutations import mutated

H0, H1 = hashlib.sha256(b"m0").digest(), hashlib.sha256(b"m1").digest()
VEC = np.arange(5, dtype=np.float32) - 2.5
TRAINS = [
    TrainRequest(b"BC\x01\x03outcome", "m0", VEC, b"offer", b"trust", 7, (("m0", H0), ("m1", H1))),
    TrainRequest(b"", "", np.zeros(0, dtype=np.float32)),
    TrainRequest(b"o", "m1", VEC[:1], iteration=2**32 - 1, model_hashes=(("m1", H1),)),
]


def _train_only_message_errors(data: bytes) -> None:
    """MessageError, or a request whose encoding is ``data`` itself."""
    try:
        req = TrainRequest.from_bytes(data)
    except MessageError:
        return
    assert req.to_bytes() == data
    assert [m for m, _ in req.model_hashes] == sorted({m for m, _ in req.model_hashes})
    assert all(len(h) == 32 for _, h in req.model_hashes)


def test_train_requests_round_trip() -> None:
    for req in TRAINS:
        back = TrainRequest.from_bytes(req.to_bytes())
        assert back.to_bytes() == req.to_bytes()
        assert back.model_hashes == req.model_hashes and back.iteration == req.iteration
        assert np.array_equal(back.params, req.params) and back.params.dtype == np.float32
        assert (back.outcome, back.model_id, back.he_offer, back.trust_offer) == (
            req.outcome,
            req.model_id,
            req.he_offer,
            req.trust_offer,
        )


def test_model_hashes_unsorted_repeated_or_short_are_refused() -> None:
    base = TRAINS[0]
    for hashes in ((("m1", H1), ("m0", H0)), (("m0", H0), ("m0", H1))):
        raw = TrainRequest(base.outcome, "m0", VEC, model_hashes=hashes).to_bytes()
        with pytest.raises(MessageError, match="not sorted or repeated"):
            TrainRequest.from_bytes(raw)
    short = TrainRequest(base.outcome, "m0", VEC, model_hashes=(("m0", H0[:31]),)).to_bytes()
    with pytest.raises(MessageError):
        TrainRequest.from_bytes(short)
    spaced = TrainRequest(base.outcome, "m0", VEC, model_hashes=(("m 0", H0),)).to_bytes()
    with pytest.raises(MessageError, match="bad identifier"):
        TrainRequest.from_bytes(spaced)
    empty_id = TrainRequest(base.outcome, "m0", VEC, model_hashes=(("", H0),)).to_bytes()
    with pytest.raises(MessageError, match="bad identifier"):
        TrainRequest.from_bytes(empty_id)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=400))
def test_train_request_random_bytes_raise_only_message_errors(data: bytes) -> None:
    _train_only_message_errors(data)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), which=st.integers(0, len(TRAINS) - 1))
def test_train_request_mutations_raise_only_message_errors(data: st.DataObject, which: int) -> None:
    _train_only_message_errors(data.draw(mutated(TRAINS[which].to_bytes())))


def test_train_request_huge_lengths_fail_fast() -> None:
    req = TRAINS[0]
    raw = req.to_bytes()
    tail = 2 + 2 * (2 + 2 + 32)  # the hash list: u16 count, two (u16 | id | hash)
    assert raw[-tail : -tail + 2] == b"\x00\x02"
    vec_at = 4 + len(req.outcome) + 2 + len(req.model_id)  # the vector's u64 length
    assert raw[vec_at : vec_at + 8] == struct.pack(">Q", VEC.size)
    start = time.perf_counter()
    for bad in (
        b"\xff\xff\xff\xff" + raw[4:],  # an outcome of 4 GiB
        raw[:-tail] + b"\xff\xff",  # 65535 model hashes, none present
        raw[:vec_at] + struct.pack(">Q", 2**62) + raw[vec_at + 8 :],  # 2^62 floats
    ):
        with pytest.raises(MessageError):
            TrainRequest.from_bytes(bad)
    assert time.perf_counter() - start < 0.5


# --- the other node wire decoders, in the same style ---------------------------------------

OTHERS: list[tuple[Callable[[bytes], object], bytes]] = [
    (Reply.from_bytes, Reply(True, b"body", {"n": 3, "reason": "x"}).to_bytes()),
    (decode_bundle, encode_bundle([("train", b"abc"), ("beacon/quorum", b"")])),
    (lambda d: unpack_list(d, what="list"), pack_list([b"a", b"", b"ccc"])),
    (decode_globals, encode_globals({"m0": VEC, "m1": VEC[:2]})),
    (
        PlainJudgeRequest.from_bytes,
        PlainJudgeRequest("s", 5, {"p1": b"e", "p2": b"f"}, {"p2": b"b", "p3": b"c"}).to_bytes(),
    ),
    (BallotRequest.from_bytes, BallotRequest("s", "m0", VEC, {"p1": VEC, "p2": VEC}).to_bytes()),
]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), which=st.integers(0, len(OTHERS) - 1), random=st.booleans())
def test_other_wire_decoders_raise_only_message_errors(
    data: st.DataObject, which: int, random: bool
) -> None:
    decoder, valid = OTHERS[which]
    decoder(valid)  # the example itself decodes
    raw = data.draw(st.binary(max_size=300) if random else mutated(valid))
    with contextlib.suppress(MessageError):  # anything else fails the test
        decoder(raw)


def test_a_deeply_nested_reply_meta_is_a_message_error() -> None:
    """A node's reply whose metadata is 60000 nested arrays (under the 64 KiB cap): one
    malicious node must not crash the coordinator (it catches SecurePoolError only)."""
    meta = b"[" * 60_000
    data = struct.pack(">2sBBI", MAGIC, VERSION, 0, len(meta)) + meta
    with pytest.raises(MessageError):
        Reply.from_bytes(data)
