"""The codec's fast paths (issue 26): the id maps read straight from the bytes and the
memo of checked identifiers refuse every malformed field exactly as the plain reader
does, whether or not the same ids were seen (and remembered) before; vectors decode as
read-only views of the message bytes."""

from __future__ import annotations

import struct

import numpy as np
import pytest

import protocols.codec as codec
from crypto.errors import MessageError
from protocols.codec import Field, Kind, Reader, Writer, decode_fields, encode

MAGIC, VERSION = b"TC", 1
SCHEMA = (Field("m", Kind.ID_BYTES, limit=10), Field("fixed", Kind.ID_BYTES, size=4, limit=10))


def _entry(pid: bytes, blob: bytes) -> bytes:
    return struct.pack(">H", len(pid)) + pid + struct.pack(">I", len(blob)) + blob


def _message(entries: list[bytes], fixed: list[bytes] | None = None) -> bytes:
    fixed = [_entry(b"p1", b"abcd")] if fixed is None else fixed
    body = struct.pack(">I", len(entries)) + b"".join(entries)
    body += struct.pack(">I", len(fixed)) + b"".join(fixed)
    return struct.pack(">2sBB", MAGIC, VERSION, 0) + body


def _decode(data: bytes) -> dict[str, object]:
    return decode_fields(Reader(data, magic=MAGIC, version=VERSION, name="test"), SCHEMA)


GOOD = [_entry(b"p1", b"x"), _entry(b"p2", b""), _entry(b"p3", b"yz")]

BAD = {
    "unsorted": [_entry(b"p2", b"x"), _entry(b"p1", b"x")],
    "duplicate": [_entry(b"p1", b"x"), _entry(b"p1", b"y")],
    "empty id": [_entry(b"", b"x")],
    "id too long": [_entry(b"p" * 129, b"x")],
    "non-ascii id": [_entry("p\u00e9".encode(), b"x")],
    "id with a space": [_entry(b"p 1", b"x")],
    "look-alike id": [_entry(b" p1", b"x")],
    "blob over its limit": [_entry(b"p1", b"x" * ((1 << 16) + 1))],
}


def test_a_valid_map_round_trips_and_values_are_bytes() -> None:
    got = _decode(_message(GOOD))
    assert got["m"] == {"p1": b"x", "p2": b"", "p3": b"yz"}
    assert all(type(v) is bytes for v in got["m"].values())  # type: ignore[attr-defined]
    again = encode(MAGIC, VERSION, 0, SCHEMA, got)
    assert again == _message(GOOD)


@pytest.mark.parametrize("kind", sorted(BAD))
def test_every_malformed_entry_is_refused_even_after_its_ids_were_remembered(
    kind: str,
) -> None:
    """Attack: a peer's map that differs from valid ones in one field, sent after the
    valid ids are in the memo: refused with MessageError only."""
    _decode(_message(GOOD))  # p1, p2, p3 now remembered
    with pytest.raises(MessageError):
        _decode(_message(BAD[kind]))


@pytest.mark.parametrize("cut", range(1, 24))
def test_a_truncated_map_is_refused_at_every_cut(cut: int) -> None:
    data = _message(GOOD)
    with pytest.raises(MessageError):
        _decode(data[:-cut])


def test_a_fixed_size_value_of_another_size_is_refused() -> None:
    for blob in (b"abc", b"abcde"):
        with pytest.raises(MessageError):
            _decode(_message(GOOD, fixed=[_entry(b"p1", blob)]))


def test_the_writer_refuses_what_is_not_an_identifier_memo_or_not() -> None:
    """Unhashable and non-str values give MessageError, never TypeError."""
    for value in (["p1"], b"p1", 1, " p1", "p\u00e9", ""):
        w = Writer(MAGIC, VERSION, 0)
        w.ident("p1")  # remembered
        with pytest.raises(MessageError):
            w.ident(value)  # type: ignore[arg-type]


def test_the_memo_of_checked_ids_stays_bounded() -> None:
    """A flood of fresh ids never grows the memo past its bound."""
    for i in range(codec._MAX_CHECKED + 10):
        _decode(_message([_entry(f"q{i}".encode(), b"")]))
        if i % 8192 == 0:
            assert len(codec._CHECKED_RAW) <= codec._MAX_CHECKED
    assert len(codec._CHECKED_RAW) <= codec._MAX_CHECKED


RECORDS = (Field("keys", Kind.RECORDS, widths=(2, 3), limit=10),)


def _records(entries: list[tuple[bytes, bytes]]) -> bytes:
    body = struct.pack(">I", len(entries))
    body += b"".join(struct.pack(">H", len(p)) + p + rec for p, rec in entries)
    return struct.pack(">2sBB", MAGIC, VERSION, 0) + body


def _decode_records(data: bytes) -> dict[str, object]:
    return decode_fields(Reader(data, magic=MAGIC, version=VERSION, name="test"), RECORDS)


def test_records_round_trip_and_refuse_every_malformed_entry() -> None:
    """The key directory's map: split into its fixed widths; unsorted, duplicate,
    invalid or truncated entries refused with MessageError, remembered ids or not."""
    good = [(b"p1", b"abcde"), (b"p2", b"fghij")]
    got = _decode_records(_records(good))
    assert got["keys"] == {"p1": (b"ab", b"cde"), "p2": (b"fg", b"hij")}
    assert encode(MAGIC, VERSION, 0, RECORDS, got) == _records(good)
    for bad in (
        [(b"p2", b"abcde"), (b"p1", b"abcde")],
        [(b"p1", b"abcde"), (b"p1", b"abcde")],
        [(b"", b"abcde")],
        [(b"p\xc3\xa9", b"abcde")],
    ):
        with pytest.raises(MessageError):
            _decode_records(_records(bad))
    data = _records(good)
    for cut in range(1, 12):
        with pytest.raises(MessageError):
            _decode_records(data[:-cut])
    with pytest.raises(MessageError):  # a trailing byte
        _decode_records(data + b"\x00")


VECTORS = (Field("v", Kind.VECTOR, limit=1 << 20),)


@pytest.mark.parametrize("dtype", ["uint32", "uint64"])
def test_vectors_round_trip_as_read_only_views_of_the_message(dtype: str) -> None:
    """A decoded vector is a view into the (immutable) message bytes, not a copy: equal
    to what was sent, native-endian, and read-only, so no holder of the decoded message
    can change the words another holder reads (writing raises)."""
    for sent in (
        np.arange(5, dtype=dtype) * (2**31 + 3),
        np.arange(12, dtype=dtype)[::3],  # not contiguous: encoded from a copy
        np.zeros(0, dtype=dtype),
    ):
        data = encode(MAGIC, VERSION, 0, VECTORS, {"v": sent})
        got = decode_fields(Reader(data, magic=MAGIC, version=VERSION, name="t"), VECTORS)["v"]
        assert got.dtype == np.dtype(dtype) and got.dtype.isnative
        assert np.array_equal(got, sent)
        assert not got.flags.writeable
        if got.size:
            with pytest.raises(ValueError):
                got[0] = 1
        assert encode(MAGIC, VERSION, 0, VECTORS, {"v": got}) == data


def test_a_malformed_vector_is_refused() -> None:
    data = encode(MAGIC, VERSION, 0, VECTORS, {"v": np.arange(4, dtype="u4")})

    def dec(raw: bytes) -> object:
        return decode_fields(Reader(raw, magic=MAGIC, version=VERSION, name="t"), VECTORS)

    for cut in range(1, len(data) - 4):
        with pytest.raises(MessageError):
            dec(data[:-cut])
    with pytest.raises(MessageError):  # a word size other than 4 or 8
        dec(data[:4] + b"\x02" + data[5:])
    with pytest.raises(MessageError):  # a count over the schema's limit
        dec(data[:5] + struct.pack(">Q", (1 << 20) + 1) + data[13:])
    with pytest.raises(MessageError):  # a trailing byte
        dec(data + b"\x00")


def test_the_writer_refuses_every_malformed_map_entry_memo_or_not() -> None:
    """The writer's id-map loop: a non-bytes value, a value of the wrong size or over
    the limit, or a key that is not an identifier gives MessageError, whether the
    valid keys were remembered before or not."""
    encode(MAGIC, VERSION, 0, SCHEMA, {"m": {"p1": b"x"}, "fixed": {"p1": b"abcd"}})
    for m, fixed in (
        ({"p1": "x"}, {"p1": b"abcd"}),
        ({"p1": bytearray(b"x")}, {"p1": b"abcd"}),
        ({"p1": b"x" * ((1 << 16) + 1)}, {"p1": b"abcd"}),
        ({"p1": b"x"}, {"p1": b"abc"}),
        ({"p1": b"x"}, {"p1": b"abcde"}),
        ({" p1": b"x"}, {"p1": b"abcd"}),
        ({"p1": b"x"}, {"p\u00e9": b"abcd"}),
        ({"p1": b"x"}, {"": b"abcd"}),
    ):
        with pytest.raises(MessageError):
            encode(MAGIC, VERSION, 0, SCHEMA, {"m": m, "fixed": fixed})
