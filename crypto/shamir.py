"""Shamir secret sharing over GF(p), p = 2^31 - 1, vectorised with numpy.

A secret of any length is cut into 3-byte chunks (each < 2^24 < p); one call shares
many secrets for many evaluation points at once. All products of two field elements
are < 2^62, so uint64 arithmetic never overflows.

Share format: version (1) | secret length (2, big-endian) | x (4) | elements (4 each).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Mapping, Sequence

import numpy as np
from numpy.typing import NDArray

from crypto.errors import CryptoError

PRIME = 2**31 - 1
_VERSION = 1
_HEADER = struct.Struct(">BHI")
_CHUNK = 3


class ShareError(CryptoError):
    """Shares are too few, malformed or inconsistent."""


def _to_elements(secret: bytes) -> NDArray[np.uint64]:
    padded = secret + b"\x00" * (-len(secret) % _CHUNK)
    raw = np.frombuffer(padded, dtype=np.uint8).reshape(-1, _CHUNK).astype(np.uint64)
    return (raw[:, 0] << np.uint64(16)) | (raw[:, 1] << np.uint64(8)) | raw[:, 2]


def _from_elements(elements: NDArray[np.uint64], length: int) -> bytes:
    if np.any(elements >= 2**24):
        raise ShareError("shares are inconsistent: reconstruction left the secret's range")
    b = np.stack([(elements >> 16) & 0xFF, (elements >> 8) & 0xFF, elements & 0xFF], axis=1)
    return b.astype(np.uint8).tobytes()[:length]


def _random_field(shape: tuple[int, ...]) -> NDArray[np.uint64]:
    """Uniform field elements from os.urandom (rejection sampling of 31-bit words)."""
    count = int(np.prod(shape))
    out = np.empty(0, dtype=np.uint64)
    while out.size < count:
        words = np.frombuffer(os.urandom(4 * (count - out.size + 8)), dtype="<u4")
        words = (words & 0x7FFFFFFF).astype(np.uint64)
        out = np.concatenate([out, words[words < PRIME]])
    return out[:count].reshape(shape)


def shamir_split(
    secrets: Sequence[bytes], *, threshold: int, xs: Sequence[int]
) -> list[list[bytes]]:
    """Share every secret among the points ``xs``; ``shares[j][s]`` is for ``xs[j]``.

    Security: any ``threshold`` shares of a secret reconstruct it; fewer reveal nothing
    about it (information-theoretically): coefficients come from os.urandom.
    """
    n = len(xs)
    if not 1 <= threshold <= n:
        raise ShareError(f"threshold must be in 1..{n}, got {threshold}")
    if len(set(xs)) != n or any(not 0 < x < PRIME for x in xs):
        raise ShareError("evaluation points must be distinct and in 1..p-1")
    if len({len(s) for s in secrets}) > 1 or any(not isinstance(s, bytes) for s in secrets):
        raise ShareError("all secrets of one call must be bytes of the same length")
    if not secrets:
        return [[] for _ in xs]
    length = len(secrets[0])
    if length >= 2**16:
        raise ShareError("a secret is at most 65535 bytes")
    elems = np.stack([_to_elements(s) for s in secrets])  # (S, m)
    coeffs = _random_field((threshold - 1, *elems.shape))  # (t-1, S, m)
    p = np.uint64(PRIME)
    xv = np.asarray(xs, dtype=np.uint64).reshape(-1, 1, 1)  # (n, 1, 1)
    acc = np.zeros((n, *elems.shape), dtype=np.uint64)
    for c in coeffs[::-1]:  # Horner at every point at once: acc = (acc + c) * x
        acc = (acc + c) % p * xv % p
    acc = (acc + elems) % p
    words = acc.astype("<u4")
    return [
        [_HEADER.pack(_VERSION, length, x) + words[j, s].tobytes() for s in range(len(secrets))]
        for j, x in enumerate(xs)
    ]


def _parse(share: bytes) -> tuple[int, int, NDArray[np.uint64]]:
    if not isinstance(share, bytes) or len(share) < _HEADER.size:
        raise ShareError("share too short")
    version, length, x = _HEADER.unpack_from(share)
    if version != _VERSION:
        raise ShareError(f"share version {version}, expected {_VERSION}")
    body = share[_HEADER.size :]
    m = -(-length // _CHUNK)
    if len(body) != 4 * m:
        raise ShareError(f"share body has {len(body)} bytes, expected {4 * m}")
    vals = np.frombuffer(body, dtype="<u4").astype(np.uint64)
    if np.any(vals >= PRIME):
        raise ShareError("share element outside the field")
    return length, x, vals


def shamir_combine(shares: Mapping[int, bytes], *, threshold: int) -> bytes:
    """Reconstruct one secret from ``x -> share``; uses the first ``threshold`` shares.

    Security: raises ShareError for fewer than ``threshold`` shares, a share whose
    embedded x differs from its key, or malformed shares; never guesses.
    """
    if threshold < 1 or len(shares) < threshold:
        raise ShareError(f"{len(shares)} share(s) given, {threshold} needed")
    parsed = []
    for x, share in list(shares.items())[:threshold]:
        length, sx, vals = _parse(share)
        if sx != x:
            raise ShareError(f"share for x={x} claims x={sx}")
        parsed.append((length, x, vals))
    if len({(length, v.size) for length, _, v in parsed}) != 1:
        raise ShareError("shares of different secrets mixed")
    xs = [x for _, x, _ in parsed]
    acc = np.zeros_like(parsed[0][2])
    p = np.uint64(PRIME)
    for j, (_, xj, vals) in enumerate(parsed):
        num, den = 1, 1
        for k, xk in enumerate(xs):
            if k != j:
                num = num * xk % PRIME
                den = den * (xk - xj) % PRIME
        lam = np.uint64(num * pow(den, PRIME - 2, PRIME) % PRIME)
        acc = (acc + vals * lam % p) % p
    return _from_elements(acc, parsed[0][0])
