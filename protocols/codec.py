"""One versioned, schema-checked binary codec for protocol messages.

Generalises the length-checked framing of :mod:`protocols.framing` (which stays as it
is): ``magic (2) | version (1) | kind (1) | fields``. Each message type declares a
*schema*, a tuple of :class:`Field` (name, kind, exact size or limit); :func:`encode`
writes the fields in schema order and :func:`decode` reads them back, checking every
length against both the schema and the bytes that remain.

Field encodings (all big-endian):

* ``ID``      u16 length | ASCII identifier, checked by ``require_identifier``
* ``IDS``     u32 count | ``ID``* (strictly increasing: canonical and duplicate-free)
* ``BYTES``   u32 length | bytes (exactly ``size`` if set, else at most ``limit``)
* ``U32``     u32; ``F64`` IEEE-754 double, finite
* ``ID_BYTES`` u32 count | (``ID`` | ``BYTES``)* with strictly increasing ids: a map
* ``RECORDS`` u32 count | (``ID`` | fixed-width blobs of ``widths``)*: a map to tuples
* ``VECTOR``  u8 word size (4 or 8) | u64 count | count little-endian words, decoded
  as a read-only numpy view into the message's bytes (no copy) on a little-endian host

Security: decoding is a single pass with no recursion; every count or length is checked
against the schema's limit and against the bytes left *before* anything is allocated,
so time and memory are linear in the input. Anything malformed, including trailing
bytes, an unknown kind or version, a non-canonical map, or an invalid identifier,
raises :class:`crypto.errors.MessageError` and nothing else.
"""

from __future__ import annotations

import itertools
import math
import struct
from dataclasses import dataclass
from enum import Enum
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from crypto.encoding import MAX_IDENTIFIER, require_identifier
from crypto.errors import MessageError, SecurePoolError

_PREFIX: Final = struct.Struct(">2sBB")
_U8: Final = struct.Struct(">B")
_U16: Final = struct.Struct(">H")
_U32: Final = struct.Struct(">I")
_U64: Final = struct.Struct(">Q")
_F64: Final = struct.Struct(">d")
_DTYPES: Final[dict[int, np.dtype[Any]]] = {4: np.dtype("<u4"), 8: np.dtype("<u8")}
# identifiers already checked by require_identifier, both ways (raw ASCII <-> str): a
# group's ids recur in every message, and the check is deterministic. Bounded: cleared
# when full, so a flood of fresh ids costs only the check each would cost anyway.
_CHECKED_RAW: Final[dict[bytes, str]] = {}
_CHECKED_STR: Final[dict[str, bytes]] = {}  # str -> its encoding, u16 length | ASCII
_MAX_CHECKED: Final = 1 << 16


class Kind(Enum):
    ID = "id"
    IDS = "ids"
    BYTES = "bytes"
    U32 = "u32"
    F64 = "f64"
    ID_BYTES = "id->bytes"
    RECORDS = "id->records"
    VECTOR = "vector"


@dataclass(frozen=True)
class Field:
    """One field of a schema. ``size``: exact byte length (BYTES, ID_BYTES values);
    ``limit``: maximum byte length or item count; ``widths``: RECORDS' blob sizes."""

    name: str
    kind: Kind
    size: int = 0
    limit: int = 0
    widths: tuple[int, ...] = ()


Schema = tuple[Field, ...]


class Writer:
    """Builds one message. Raises MessageError for a value the schema cannot carry."""

    def __init__(self, magic: bytes, version: int, kind: int) -> None:
        self._parts: list[bytes | memoryview] = [_PREFIX.pack(magic, version, kind)]

    def u32(self, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**32:
            raise MessageError(f"{value!r} is not a u32")
        self._parts.append(_U32.pack(value))

    def f64(self, value: float) -> None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise MessageError(f"{value!r} is not a float")
        if not math.isfinite(value):
            raise MessageError("float field is not finite")
        self._parts.append(_F64.pack(float(value)))

    def ident(self, value: str) -> None:
        framed = _CHECKED_STR.get(value) if type(value) is str else None
        if framed is None:
            try:
                raw = require_identifier("identifier", value).encode("ascii")
            except SecurePoolError as exc:
                raise MessageError(str(exc)) from None
            framed = _U16.pack(len(raw)) + raw
            _remember(_CHECKED_STR, value, framed)
        self._parts.append(framed)

    def blob(self, value: bytes, *, size: int = 0, limit: int = 0) -> None:
        if not isinstance(value, bytes):
            raise MessageError(f"expected bytes, got {type(value).__name__}")
        _check_len(len(value), size=size, limit=limit)
        self._parts += [_U32.pack(len(value)), value]

    def ids(self, values: tuple[str, ...], *, limit: int) -> None:
        items = sorted(values)
        if len(set(items)) != len(items):
            raise MessageError("a list of ids holds a duplicate")
        _check_count(len(items), limit)
        self._parts.append(_U32.pack(len(items)))
        for v in items:
            self.ident(v)

    def id_bytes(self, value: dict[str, bytes], *, size: int, limit: int) -> None:
        if not isinstance(value, dict):
            raise MessageError("expected a map of ids to bytes")
        _check_count(len(value), limit)
        # the hot loop of SecAgg+ share messages: the same checks as ident() then blob()
        # per entry, with the identifiers' encodings looked up in place
        parts, known = self._parts, _CHECKED_STR
        parts.append(_U32.pack(len(value)))
        blob_limit = 0 if size else 1 << 16
        for k in sorted(value):
            framed = known.get(k) if type(k) is str else None
            if framed is None:
                self.ident(k)
            else:
                parts.append(framed)
            blob = value[k]
            if not isinstance(blob, bytes):
                raise MessageError(f"expected bytes, got {type(blob).__name__}")
            n = len(blob)
            if (size and n != size) or (blob_limit and n > blob_limit):
                _check_len(n, size=size, limit=blob_limit)
            parts += (_U32.pack(n), blob)

    def records(
        self, value: dict[str, tuple[bytes, ...]], *, widths: tuple[int, ...], limit: int
    ) -> None:
        if not isinstance(value, dict):
            raise MessageError("expected a map of ids to records")
        _check_count(len(value), limit)
        self._parts.append(_U32.pack(len(value)))
        for k in sorted(value):
            rec = value[k]
            if not isinstance(rec, tuple) or len(rec) != len(widths):
                raise MessageError(f"record of {k!r} must hold {len(widths)} blobs")
            self.ident(k)
            for blob, width in zip(rec, widths, strict=True):
                if not isinstance(blob, bytes) or len(blob) != width:
                    raise MessageError(f"record of {k!r}: a blob is not {width} bytes")
                self._parts.append(blob)

    def vector(self, value: NDArray[np.unsignedinteger], *, limit: int) -> None:
        if not isinstance(value, np.ndarray) or value.ndim != 1:
            raise MessageError("vector must be a flat numpy array")
        width = value.dtype.itemsize
        if value.dtype.kind != "u" or width not in _DTYPES:
            raise MessageError(f"vector dtype {value.dtype} is not uint32/uint64")
        _check_count(value.size, limit)
        words = np.ascontiguousarray(value, dtype=_DTYPES[width])
        # the words' own memory goes into finish()'s one join: no intermediate copy
        self._parts += [_U8.pack(width), _U64.pack(value.size), words.data.cast("B")]

    def finish(self) -> bytes:
        return b"".join(self._parts)


class Reader:
    """Parses one message; every method raises MessageError on malformed input."""

    def __init__(self, data: object, *, magic: bytes, version: int, name: str) -> None:
        if not isinstance(data, bytes):
            raise MessageError(f"{name} message must be bytes, got {type(data).__name__}")
        self._raw = data
        self._data = memoryview(data)
        self._name = name
        if len(data) < _PREFIX.size:
            raise MessageError(f"{name} message shorter than its prefix")
        got_magic, got_version, self.kind = _PREFIX.unpack_from(data)
        if got_magic != magic:
            raise MessageError(f"not a {name} message (bad magic)")
        if got_version != version:
            raise MessageError(f"{name} message version {got_version}, expected {version}")
        self._pos = _PREFIX.size

    def _take(self, n: int) -> memoryview:
        if n < 0 or n > len(self._data) - self._pos:
            raise MessageError(f"{self._name} message truncated (needs {n} more bytes)")
        out = self._data[self._pos : self._pos + n]
        self._pos += n
        return out

    def _count(self, limit: int, min_item: int) -> int:
        (n,) = _U32.unpack(self._take(4))
        if n > limit:
            raise MessageError(f"{self._name}: {n} items, at most {limit} allowed")
        if n * min_item > len(self._data) - self._pos:
            raise MessageError(f"{self._name}: {n} items cannot fit in the bytes left")
        return int(n)

    def u32(self) -> int:
        return int(_U32.unpack(self._take(4))[0])

    def f64(self) -> float:
        value = float(_F64.unpack(self._take(8))[0])
        if not math.isfinite(value):
            raise MessageError(f"{self._name}: float field is not finite")
        return value

    def ident(self) -> str:
        (n,) = _U16.unpack(self._take(2))
        if not 0 < n <= MAX_IDENTIFIER:
            raise MessageError(f"{self._name}: identifier of {n} bytes")
        return self._checked_ident(bytes(self._take(n)))

    def _checked_ident(self, raw: bytes) -> str:
        known = _CHECKED_RAW.get(raw)
        if known is not None:
            return known
        try:
            value = require_identifier("identifier", raw.decode("ascii"))
        except (UnicodeDecodeError, SecurePoolError):
            raise MessageError(f"{self._name}: invalid identifier {raw[:40]!r}") from None
        _remember(_CHECKED_RAW, raw, value)
        return value

    def blob(self, *, size: int = 0, limit: int = 0) -> bytes:
        n = self.u32()
        _check_len(n, size=size, limit=limit)
        return bytes(self._take(n))

    def ids(self, *, limit: int) -> tuple[str, ...]:
        out = [self.ident() for _ in range(self._count(limit, 3))]
        _check_increasing(out, self._name)
        return tuple(out)

    def id_bytes(self, *, size: int, limit: int) -> dict[str, bytes]:
        # the hot loop of SecAgg+ share and unmask messages: the same checks as
        # ident() then blob() per entry, read straight from the bytes
        count = self._count(limit, 7 + size)
        raw, pos, end = self._raw, self._pos, len(self._raw)
        blob_limit = 0 if size else 1 << 16
        known, u32 = _CHECKED_RAW, _U32.unpack_from
        out: dict[str, bytes] = {}
        last = ""  # below every identifier: they are never empty
        for _ in range(count):
            if end - pos < 2:
                raise MessageError(f"{self._name} message truncated (needs 2 more bytes)")
            n = raw[pos] << 8 | raw[pos + 1]
            if not 0 < n <= MAX_IDENTIFIER:
                raise MessageError(f"{self._name}: identifier of {n} bytes")
            if end - pos - 2 < n + 4:
                raise MessageError(f"{self._name} message truncated (needs {n + 4} more bytes)")
            pos += 2
            key = raw[pos : pos + n]
            k = known.get(key)
            if k is None:
                k = self._checked_ident(key)
            if not last < k:
                raise MessageError(
                    f"{self._name}: ids not strictly increasing (duplicate or unsorted)"
                )
            pos += n
            (m,) = u32(raw, pos)
            if (size and m != size) or (blob_limit and m > blob_limit):
                _check_len(m, size=size, limit=blob_limit)
            pos += 4
            if end - pos < m:
                raise MessageError(f"{self._name} message truncated (needs {m} more bytes)")
            out[k] = raw[pos : pos + m]
            pos += m
            last = k
        self._pos = pos
        return out

    def records(self, *, widths: tuple[int, ...], limit: int) -> dict[str, tuple[bytes, ...]]:
        # the SecAgg+ key directory's loop: ident() and a fixed-width record per entry,
        # read straight from the bytes
        count = self._count(limit, 3 + sum(widths))
        raw, pos, end = self._raw, self._pos, len(self._raw)
        out: dict[str, tuple[bytes, ...]] = {}
        known = _CHECKED_RAW
        last = ""  # below every identifier: they are never empty
        width = sum(widths)
        spans = list(itertools.pairwise(itertools.accumulate(widths, initial=0)))
        for _ in range(count):
            if end - pos < 2:
                raise MessageError(f"{self._name} message truncated (needs 2 more bytes)")
            n = raw[pos] << 8 | raw[pos + 1]
            if not 0 < n <= MAX_IDENTIFIER:
                raise MessageError(f"{self._name}: identifier of {n} bytes")
            if end - pos - 2 < n + width:
                raise MessageError(f"{self._name} message truncated (needs {n + width} more bytes)")
            base = pos + 2 + n
            key = raw[pos + 2 : base]
            k = known.get(key)
            if k is None:
                k = self._checked_ident(key)
            if not last < k:
                raise MessageError(
                    f"{self._name}: ids not strictly increasing (duplicate or unsorted)"
                )
            out[k] = tuple([raw[base + a : base + b] for a, b in spans])
            pos = base + width
            last = k
        self._pos = pos
        return out

    def vector(self, *, limit: int) -> NDArray[np.unsignedinteger]:
        (width,) = _U8.unpack(self._take(1))
        if width not in _DTYPES:
            raise MessageError(f"{self._name}: vector word size {width}")
        (count,) = _U64.unpack(self._take(8))
        if count > limit:
            raise MessageError(f"{self._name}: vector of {count} words exceeds {limit}")
        raw = self._take(int(count) * width)
        dtype = _DTYPES[width]
        # a read-only view of the message's own bytes (immutable: the reader takes only
        # ``bytes``), not a copy of what is 400 kB for a SecAgg+ input of 100k words;
        # a big-endian host gets a native copy
        out: NDArray[np.unsignedinteger] = np.frombuffer(raw, dtype=dtype)
        if not dtype.isnative:
            out = out.astype(dtype.newbyteorder("="))
        return out

    def end(self) -> None:
        if self._pos != len(self._data):
            raise MessageError(f"{self._name}: {len(self._data) - self._pos} trailing bytes")


def _remember(memo: dict[Any, Any], key: Any, value: Any) -> None:
    if len(memo) >= _MAX_CHECKED:
        memo.clear()
    memo[key] = value


def _check_len(n: int, *, size: int, limit: int) -> None:
    if size and n != size:
        raise MessageError(f"field of {n} bytes, expected {size}")
    if limit and n > limit:
        raise MessageError(f"field of {n} bytes exceeds {limit}")


def _check_count(n: int, limit: int) -> None:
    if n > limit:
        raise MessageError(f"{n} items, at most {limit} allowed")


def _check_increasing(keys: list[str], name: str) -> None:
    if any(a >= b for a, b in itertools.pairwise(keys)):
        raise MessageError(f"{name}: ids not strictly increasing (duplicate or unsorted)")


def encode(magic: bytes, version: int, kind: int, schema: Schema, values: dict[str, Any]) -> bytes:
    """Write ``values`` (field name -> value) in ``schema`` order under the given prefix."""
    w = Writer(magic, version, kind)
    for f in schema:
        v = values[f.name]
        if f.kind is Kind.ID:
            w.ident(v)
        elif f.kind is Kind.IDS:
            w.ids(v, limit=f.limit)
        elif f.kind is Kind.BYTES:
            w.blob(v, size=f.size, limit=f.limit)
        elif f.kind is Kind.U32:
            w.u32(v)
        elif f.kind is Kind.F64:
            w.f64(v)
        elif f.kind is Kind.ID_BYTES:
            w.id_bytes(v, size=f.size, limit=f.limit)
        elif f.kind is Kind.RECORDS:
            w.records(v, widths=f.widths, limit=f.limit)
        else:
            w.vector(v, limit=f.limit)
    return w.finish()


def decode_fields(reader: Reader, schema: Schema) -> dict[str, Any]:
    """Read every field of ``schema`` from ``reader`` and refuse trailing bytes."""
    out: dict[str, Any] = {}
    for f in schema:
        if f.kind is Kind.ID:
            out[f.name] = reader.ident()
        elif f.kind is Kind.IDS:
            out[f.name] = reader.ids(limit=f.limit)
        elif f.kind is Kind.BYTES:
            out[f.name] = reader.blob(size=f.size, limit=f.limit)
        elif f.kind is Kind.U32:
            out[f.name] = reader.u32()
        elif f.kind is Kind.F64:
            out[f.name] = reader.f64()
        elif f.kind is Kind.ID_BYTES:
            out[f.name] = reader.id_bytes(size=f.size, limit=f.limit)
        elif f.kind is Kind.RECORDS:
            out[f.name] = reader.records(widths=f.widths, limit=f.limit)
        else:
            out[f.name] = reader.vector(limit=f.limit)
    reader.end()
    return out


__all__ = ["Field", "Kind", "Reader", "Schema", "Writer", "decode_fields", "encode"]
