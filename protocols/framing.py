"""Binary framing shared by the HE messages and the beacon: ``magic | version | kind | fields``.

Other protocols reuse the framing under their own two-byte magic (the beacon: ``b"BC"``),
so a message of one protocol never parses as a message of another.

Fields are fixed-width big-endian integers and floats, and length-prefixed byte strings
(u32 length). The reader refuses a wrong magic, version or kind, any length that runs
past the end, and trailing bytes. Ciphertexts travel as raw bytes (no hex or JSON), so
framing adds a few bytes per chunk to the upload.
"""

from __future__ import annotations

import struct

import numpy as np
from numpy.typing import NDArray

from crypto.errors import MessageError

MAGIC = b"HE"
VERSION = 1
_PREFIX = struct.Struct(">2sBB")
_U8 = struct.Struct(">B")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_F64 = struct.Struct(">d")


class Writer:
    """Builds one message."""

    def __init__(self, kind: int, *, magic: bytes = MAGIC) -> None:
        self._parts: list[bytes] = [_PREFIX.pack(magic, VERSION, kind)]

    def u32(self, value: int) -> Writer:
        self._parts.append(_U32.pack(value))
        return self

    def u64(self, value: int) -> Writer:
        self._parts.append(_U64.pack(value))
        return self

    def f64(self, value: float) -> Writer:
        self._parts.append(_F64.pack(value))
        return self

    def blob(self, value: bytes) -> Writer:
        self._parts.append(_U32.pack(len(value)))
        self._parts.append(bytes(value))
        return self

    def text(self, value: str) -> Writer:
        return self.blob(value.encode("utf-8"))

    def blobs(self, values: list[bytes] | tuple[bytes, ...]) -> Writer:
        self.u32(len(values))
        for v in values:
            self.blob(v)
        return self

    def texts(self, values: list[str] | tuple[str, ...]) -> Writer:
        return self.blobs([v.encode("utf-8") for v in values])

    def floats(self, values: NDArray[np.float64]) -> Writer:
        data = np.ascontiguousarray(values, dtype="<f8").tobytes()
        return self.blob(data)

    def finish(self) -> bytes:
        return b"".join(self._parts)


class Reader:
    """Parses one message; every method raises :class:`MessageError` on malformed input."""

    def __init__(self, data: bytes, *, kind: int, name: str, magic: bytes = MAGIC) -> None:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise MessageError(f"{name} must be bytes, got {type(data).__name__}")
        self._data = memoryview(data if isinstance(data, bytes) else bytes(data))
        self._pos = 0
        self._name = name
        if len(self._data) < _PREFIX.size:
            raise MessageError(f"{name} shorter than its prefix")
        got_magic, version, got = _PREFIX.unpack_from(self._data)
        if got_magic != magic:
            raise MessageError(f"{name}: not a {magic.decode()} message (bad magic)")
        if version != VERSION:
            raise MessageError(f"{name}: version {version}, expected {VERSION}")
        if got != kind:
            raise MessageError(f"{name}: message kind {got}, expected {kind}")
        self._pos = _PREFIX.size

    def _take(self, n: int) -> memoryview:
        if n < 0 or self._pos + n > len(self._data):
            raise MessageError(f"{self._name} truncated (needs {n} more bytes)")
        out = self._data[self._pos : self._pos + n]
        self._pos += n
        return out

    def u32(self) -> int:
        return int(_U32.unpack(self._take(4))[0])

    def u64(self) -> int:
        return int(_U64.unpack(self._take(8))[0])

    def f64(self) -> float:
        return float(_F64.unpack(self._take(8))[0])

    def blob(self, *, exact: int | None = None, limit: int | None = None) -> bytes:
        n = self.u32()
        if exact is not None and n != exact:
            raise MessageError(f"{self._name}: field of {n} bytes, expected {exact}")
        if limit is not None and n > limit:
            raise MessageError(f"{self._name}: field of {n} bytes exceeds {limit}")
        return bytes(self._take(n))

    def text(self, *, limit: int = 256) -> str:
        raw = self.blob(limit=limit)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MessageError(f"{self._name}: text field is not UTF-8") from exc

    def blobs(self, *, max_count: int, limit: int | None = None) -> list[bytes]:
        count = self.u32()
        if count > max_count:
            raise MessageError(f"{self._name}: {count} items, at most {max_count} allowed")
        return [self.blob(limit=limit) for _ in range(count)]

    def skip_blobs(self, *, max_count: int, limit: int | None = None) -> tuple[int, int]:
        """Walk a list of blobs without copying them: ``(count, shortest length)``.

        The count is then backed by real bytes (each blob is present in full), in time
        linear in the count and constant memory.
        """
        count = self.u32()
        if count > max_count:
            raise MessageError(f"{self._name}: {count} items, at most {max_count} allowed")
        shortest = 0
        for i in range(count):
            n = self.u32()
            if limit is not None and n > limit:
                raise MessageError(f"{self._name}: field of {n} bytes exceeds {limit}")
            self._take(n)
            shortest = n if i == 0 else min(shortest, n)
        return count, shortest

    def texts(self, *, max_count: int, limit: int = 256) -> list[str]:
        count = self.u32()
        if count > max_count:
            raise MessageError(f"{self._name}: {count} items, at most {max_count} allowed")
        return [self.text(limit=limit) for _ in range(count)]

    def floats(self, *, count: int) -> NDArray[np.float64]:
        raw = self.blob(exact=8 * count)
        return np.frombuffer(raw, dtype="<f8").astype(np.float64)

    def end(self) -> None:
        if self._pos != len(self._data):
            raise MessageError(f"{self._name}: {len(self._data) - self._pos} trailing bytes")
