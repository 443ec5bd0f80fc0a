"""Mask expansion from a cryptographic PRG (AES-256-CTR), straight into numpy arrays."""

from __future__ import annotations

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from numpy.typing import NDArray

from crypto.errors import KeyMaterialError
from crypto.kdf import hkdf_sha256


def expand_mask(
    seed: bytes,
    *,
    label: bytes,
    length: int,
    dtype: type[np.uint32] | type[np.uint64] = np.uint32,
) -> NDArray[np.unsignedinteger]:
    """``length`` pseudo-random words from a 32-byte ``seed`` under ``label``.

    The AES-256 key and CTR nonce are HKDF(seed, label), and the keystream is read as
    little-endian words, so the output is the same on every platform.

    Security: output is computationally indistinguishable from uniform for anyone not
    holding ``seed`` (AES in counter mode). Never numpy's RNG: masks must be
    unpredictable, and the full 256-bit seed is used.
    """
    if not isinstance(seed, bytes) or len(seed) != 32:
        raise KeyMaterialError("a mask seed is exactly 32 bytes")
    if length < 0:
        raise ValueError(f"length must be >= 0, got {length}")
    dt = np.dtype(dtype).newbyteorder("<")
    if dt.kind != "u" or dt.itemsize not in (4, 8):
        raise TypeError("dtype must be uint32 or uint64")
    km = hkdf_sha256(seed, info=b"securepool/prg/v1|" + label, length=48)
    enc = Cipher(algorithms.AES(km[:32]), modes.CTR(km[32:])).encryptor()
    nbytes = length * dt.itemsize
    raw = np.empty(nbytes + 15, dtype=np.uint8)
    if nbytes:
        enc.update_into(_zeros(nbytes), memoryview(raw))  # type: ignore[arg-type]
    return raw[:nbytes].view(dt).astype(np.dtype(dtype), copy=False)


_ZEROS = memoryview(bytearray(0))


def _zeros(nbytes: int) -> memoryview:
    """A shared read-only run of zero bytes (the CTR plaintext), grown on demand."""
    global _ZEROS
    if len(_ZEROS) < nbytes:
        _ZEROS = memoryview(bytearray(max(nbytes, 2 * len(_ZEROS)))).toreadonly()
    return _ZEROS[:nbytes]
