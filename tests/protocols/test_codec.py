"""The codec's fast paths (issue 26): the id maps read straight from the bytes and the
memo of checked identifiers refuse every malformed field exactly as the plain reader
does, whether or not the same ids were seen (and remembered) before."""

from __future__ import annotations

import struct

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
