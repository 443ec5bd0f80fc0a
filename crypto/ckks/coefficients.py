"""CKKS ciphertext chunks as coefficient arrays: the coordinator's sum without TenSEAL.

Adding two CKKS ciphertexts is adding their polynomials' coefficients modulo each data
prime (both are in NTT form at the same level and scale). TenSEAL does that after a
full deserialisation of every chunk; this module reads the serialised chunk itself:

    TenSEAL frame (protobuf): field 1 = vector shape, field 2 = SEAL ciphertext bytes,
                              field 3 = scale (double)
    SEAL ciphertext:          16-byte SEAL header (magic 0xA15E, version, compression,
                              size) + body, zstd- or zlib-compressed or raw
    body:                     parms_id, NTT flag, size, N, prime count, scale,
                              correction factor, then a 16-byte header, a word count
                              and 2 x L x N little-endian uint64 coefficients

:class:`ChunkCodec` learns the exact prefix of a valid body from a fresh encryption
under the public context (so it never guesses SEAL's layout), then checks every
incoming chunk against it byte for byte: same frame, same parameters, same level, same
scale, same NTT form, the exact decompressed length, every coefficient below its prime.
:class:`CoefficientSum` adds the checked arrays in uint64 and reduces modulo the primes
only when another addition could overflow, and writes the sum back as an uncompressed
TenSEAL chunk the key holder loads with TenSEAL's own checks.

Security: additions only, on public data; nothing here can decrypt. A chunk that fails
any check raises :class:`CiphertextError`. What it cannot tell (as TenSEAL cannot) is a
well-formed ciphertext under another key with the same parameters: the key holder's
contribution tags catch that (protocols.he.keyholder).
"""

from __future__ import annotations

import struct
import sys
import threading
import zlib
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import tenseal as ts
import zstandard
from numpy.typing import NDArray
from tenseal import sealapi

from crypto.ckks.context import PublicCKKSContext
from crypto.ckks.params import CKKSParameters
from crypto.errors import CiphertextError, EncodingError

_SEAL_MAGIC: Final = 0xA15E
_SEAL_HEADER = struct.Struct("<HBBBBHQ")  # magic, header size, major, minor, compr, 0, size
_COMPR_NONE, _COMPR_ZLIB, _COMPR_ZSTD = 0, 1, 2
_SHAPE_TAG: Final = 0x0A  # protobuf field 1, length-delimited
_BYTES_TAG: Final = 0x12  # protobuf field 2, length-delimited
_SCALE_TAG: Final = 0x19  # protobuf field 3, fixed64


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _read_varint(data: memoryview, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise CiphertextError("truncated or overlong length in the ciphertext frame")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, pos


def data_primes(params: CKKSParameters) -> tuple[int, ...]:
    """The data primes SEAL generates for ``params`` (all but the special prime)."""
    moduli = sealapi.CoeffModulus.Create(
        params.poly_modulus_degree, list(params.coeff_mod_bit_sizes)
    )
    return tuple(int(m.value()) for m in moduli)[:-1]


@dataclass(frozen=True)
class ChunkCodec:
    """The wire layout of one context's fresh chunk ciphertexts, learned from a template.

    ``shape_field`` is the TenSEAL frame up to the SEAL bytes, ``body_prefix`` the body up
    to the coefficients (parms_id, NTT flag, size, N, level, scale, correction factor and
    the array header), ``version`` SEAL's two version bytes.
    """

    params: CKKSParameters
    primes: tuple[int, ...]
    shape_field: bytes
    body_prefix: bytes
    version: tuple[int, int]

    @classmethod
    def of(cls, public: PublicCKKSContext) -> ChunkCodec:
        """Learn the layout from an encryption of zeros under ``public``."""
        if sys.byteorder != "little":  # SEAL writes native words; we read little-endian
            raise CiphertextError("coefficient access needs a little-endian machine")
        params = public.params
        blob = ts.ckks_vector(public.tenseal, np.zeros(params.slots), scale=params.scale)
        data = memoryview(blob.serialize())
        if not len(data) or data[0] != _SHAPE_TAG:
            raise CiphertextError("unexpected TenSEAL frame: no shape field first")
        length, pos = _read_varint(data, 1)
        shape_field = bytes(data[: pos + length])
        seal, _end = _frame_seal_bytes(data, len(shape_field), params)
        _magic, _hs, major, minor, compr, _r, _size = _SEAL_HEADER.unpack_from(seal)
        body = _decompress(seal, compr, limit=1 << 24)
        primes = data_primes(params)
        words = 2 * len(primes) * params.poly_modulus_degree
        prefix = body[: len(body) - 8 * words]
        if struct.unpack_from("<Q", prefix, len(prefix) - 8)[0] != words:
            raise CiphertextError("unexpected SEAL layout: coefficient count not where expected")
        return cls(params, primes, shape_field, bytes(prefix), (major, minor))

    @property
    def n_words(self) -> int:
        return 2 * len(self.primes) * self.params.poly_modulus_degree

    @property
    def body_size(self) -> int:
        return len(self.body_prefix) + 8 * self.n_words

    def read(self, blob: bytes | memoryview) -> NDArray[np.uint64]:
        """The coefficients of one chunk, shape ``(2, L, N)``; CiphertextError if anything
        differs from a fresh chunk of this context or a coefficient is not reduced."""
        out = np.empty((2, len(self.primes), self.params.poly_modulus_degree), dtype=np.uint64)
        self.read_into(blob, out)
        return out

    def read_into(self, blob: bytes | memoryview, out: NDArray[np.uint64]) -> None:
        """:meth:`read` into ``out`` (C-contiguous, shape ``(2, L, N)``): a zstd body is
        decompressed straight into it, with no intermediate copy. On error ``out`` holds
        garbage and must not be used."""
        if out.shape != (2, len(self.primes), self.params.poly_modulus_degree):
            raise EncodingError(f"output of shape {out.shape} for a chunk")
        if out.dtype != np.uint64 or not out.flags.c_contiguous:
            raise EncodingError("output must be a C-contiguous uint64 array")
        data = memoryview(blob)
        n = len(self.shape_field)
        if data[:n] != self.shape_field:
            raise CiphertextError("ciphertext frame differs (another vector size or format)")
        seal, end = _frame_seal_bytes(data, n, self.params)
        if end != len(data):
            raise CiphertextError(f"{len(data) - end} trailing bytes after the ciphertext")
        magic, hsize, major, minor, compr, reserved, size = _SEAL_HEADER.unpack_from(seal)
        if (magic, hsize, reserved) != (_SEAL_MAGIC, _SEAL_HEADER.size, 0) or size != len(seal):
            raise CiphertextError("bad SEAL header (magic, header size or length)")
        if (major, minor) != self.version:
            raise CiphertextError(f"SEAL version {major}.{minor}, expected {self.version}")
        target = memoryview(out.reshape(-1).view(np.uint8).data)
        if compr == _COMPR_ZSTD:
            prefix = _zstd_into(seal[_SEAL_HEADER.size :], len(self.body_prefix), target)
        else:
            body = _decompress(seal, compr, limit=self.body_size)
            if len(body) != self.body_size:
                raise CiphertextError(
                    f"ciphertext body has {len(body)} bytes, not {self.body_size}"
                )
            prefix = body[: len(self.body_prefix)]
            target[:] = memoryview(body)[len(self.body_prefix) :]
        if prefix != self.body_prefix:
            raise CiphertextError(
                "ciphertext parameters differ from a fresh chunk of this context "
                "(another context, level, scale, size or not in NTT form)"
            )
        for j, q in enumerate(self.primes):
            if int(out[:, j].max()) >= q:
                raise CiphertextError(f"coefficient not reduced modulo data prime {j}")

    def write(self, coeffs: NDArray[np.uint64]) -> bytes:
        """An uncompressed TenSEAL chunk holding ``coeffs`` (reduced, shape (2, L, N))."""
        expected = (2, len(self.primes), self.params.poly_modulus_degree)
        if coeffs.shape != expected or coeffs.dtype != np.uint64:
            raise EncodingError(f"coefficients must be uint64 of shape {expected}")
        body = self.body_prefix + coeffs.astype("<u8", copy=False).tobytes()
        size = _SEAL_HEADER.size + len(body)
        header = _SEAL_HEADER.pack(_SEAL_MAGIC, _SEAL_HEADER.size, *self.version, 0, 0, size)
        seal = header + body
        return b"".join(
            [
                self.shape_field,
                bytes([_BYTES_TAG]),
                _varint(len(seal)),
                seal,
                bytes([_SCALE_TAG]),
                struct.pack("<d", self.params.scale),
            ]
        )


def _frame_seal_bytes(data: memoryview, pos: int, params: CKKSParameters) -> tuple[memoryview, int]:
    """The SEAL bytes of field 2 and the frame's end, after checking field 3 (scale)."""
    if pos >= len(data) or data[pos] != _BYTES_TAG:
        raise CiphertextError("ciphertext frame: no SEAL ciphertext field")
    length, start = _read_varint(data, pos + 1)
    stop = start + length
    if length < _SEAL_HEADER.size or stop + 9 > len(data):
        raise CiphertextError("ciphertext frame: SEAL ciphertext truncated")
    if data[stop] != _SCALE_TAG:
        raise CiphertextError("ciphertext frame: no scale field")
    (scale,) = struct.unpack_from("<d", data, stop + 1)
    if scale != params.scale:
        raise CiphertextError(f"ciphertext scale {scale!r}, expected 2^{params.scale_bits}")
    return data[start:stop], stop + 9


_LOCAL = threading.local()


def _zstd_into(payload: memoryview, prefix_size: int, target: memoryview) -> bytes:
    """Decompress one zstd frame of exactly ``prefix_size + len(target)`` bytes: the
    prefix is returned, the rest lands in ``target``. A frame that does not declare
    exactly that size is refused before anything is decompressed."""
    expected = prefix_size + len(target)
    try:
        declared = zstandard.frame_content_size(payload)
    except zstandard.ZstdError as exc:
        raise CiphertextError(f"compressed ciphertext has no valid zstd header: {exc}") from exc
    if declared != expected:
        raise CiphertextError(f"compressed body declares {declared} bytes, expected {expected}")
    dctx = getattr(_LOCAL, "dctx", None)
    if dctx is None:
        dctx = _LOCAL.dctx = zstandard.ZstdDecompressor()  # one per thread: not thread-safe
    try:
        with dctx.stream_reader(payload, read_across_frames=False) as reader:
            prefix = _read_exactly(reader, bytearray(prefix_size))
            _read_exactly(reader, target)
            if reader.read(1):
                raise CiphertextError("compressed body longer than declared")
    except zstandard.ZstdError as exc:
        raise CiphertextError(f"compressed ciphertext does not decompress: {exc}") from exc
    return bytes(prefix)


def _read_exactly(reader: zstandard.ZstdDecompressionReader, buf: bytearray | memoryview) -> Any:
    view = memoryview(buf)
    got = 0
    while got < len(view):
        n = reader.readinto(view[got:])
        if not n:
            raise CiphertextError("compressed body shorter than declared")
        got += n
    return buf


def _decompress(seal: memoryview, compr: int, *, limit: int) -> bytes:
    payload = seal[_SEAL_HEADER.size :]
    try:
        if compr == _COMPR_NONE:
            return bytes(payload)
        if compr == _COMPR_ZSTD:
            declared = zstandard.frame_content_size(payload)
            if not 0 <= declared <= limit:
                raise CiphertextError(f"compressed body declares {declared} bytes (limit {limit})")
            return zstandard.ZstdDecompressor().decompress(payload, max_output_size=limit)
        if compr == _COMPR_ZLIB:
            d = zlib.decompressobj()
            out = d.decompress(payload, limit + 1)
            if len(out) > limit or d.unconsumed_tail:
                raise CiphertextError(f"compressed body exceeds {limit} bytes")
            return out
    except (zstandard.ZstdError, zlib.error) as exc:
        raise CiphertextError(f"compressed ciphertext does not decompress: {exc}") from exc
    raise CiphertextError(f"unknown SEAL compression mode {compr}")


class CoefficientSum:
    """Running sum of chunked ciphertexts as uint64 coefficient arrays.

    Coefficients are below their prime q < 2^61, so up to ``2^64 // max(q)`` reduced
    arrays add in uint64 without overflow; the sum is reduced modulo each prime before
    that, and when written out.
    """

    def __init__(self, codec: ChunkCodec, *, n_chunks: int) -> None:
        if n_chunks < 1:
            raise EncodingError(f"n_chunks must be >= 1, got {n_chunks}")
        self.codec = codec
        q = np.array(codec.primes, dtype=np.uint64).reshape(1, -1, 1)
        self._q = q
        self._room = (2**64 - 1) // max(codec.primes) - 1
        self._acc = np.zeros(
            (n_chunks, 2, len(codec.primes), codec.params.poly_modulus_degree), dtype=np.uint64
        )
        self._pending = 0
        self.count = 0

    @property
    def n_chunks(self) -> int:
        return int(self._acc.shape[0])

    def read_all(self, blobs: list[bytes] | tuple[bytes, ...], out: NDArray[np.uint64]) -> None:
        """Check every chunk of one upload into ``out`` (shape of the sum); adds nothing."""
        if len(blobs) != self.n_chunks:
            raise CiphertextError(f"{len(blobs)} chunks, expected {self.n_chunks}")
        for i, blob in enumerate(blobs):
            self.codec.read_into(blob, out[i])

    def scratch(self) -> NDArray[np.uint64]:
        """A buffer shaped like the sum, for :meth:`read_all`."""
        return np.empty_like(self._acc)

    def add_checked(self, coeffs: NDArray[np.uint64]) -> None:
        """Add one upload's coefficients, already checked by :meth:`read_all`."""
        if self._pending >= self._room:
            self._reduce()
        self._acc += coeffs
        self._pending += 1
        self.count += 1

    def merge(self, other: CoefficientSum) -> None:
        """Add another partial sum of the same shape (e.g. from another thread)."""
        if other._acc.shape != self._acc.shape or other.codec != self.codec:
            raise EncodingError("partial sums of different shapes or contexts")
        self._reduce()
        other._reduce()
        self._acc += other._acc
        self._pending = 2
        self.count += other.count

    def _reduce(self) -> None:
        if self._pending > 1:
            np.remainder(self._acc, self._q, out=self._acc)
            self._pending = 1

    def to_bytes(self) -> list[bytes]:
        if self.count == 0:
            raise EncodingError("empty ciphertext sum")
        self._reduce()
        return [self.codec.write(chunk) for chunk in self._acc]
