"""Mask expansion from a cryptographic PRG (AES-256-CTR), straight into numpy arrays.

The keystream of AES-256-CTR over zero bytes is written by OpenSSL directly into the
array's own memory (``update_into`` chunk by chunk from one shared 64 KiB block of
zeros, so the plaintext stays in cache) and then viewed as little-endian words: no
copy, no Python loop per word, no numpy RNG anywhere.
"""

from __future__ import annotations

from typing import Final

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from numpy.typing import NDArray

from crypto._validate import require_bytes, require_int, require_key
from crypto.errors import CryptoError, CryptoTypeError
from crypto.kdf import hkdf_sha256

SEED_SIZE: Final = 32
_INFO_PREFIX: Final = b"securepool/prg/v1|"
_CHUNK: Final = 1 << 16
_ZEROS: Final = memoryview(bytes(_CHUNK))  # the CTR plaintext; read-only, never grows
_SLACK: Final = 15  # pyca's update_into wants room for one block minus one byte extra


def prg_key_and_nonce(seed: bytes, *, label: bytes) -> tuple[bytes, bytes]:
    """The AES-256 key (32 bytes) and initial counter block (16 bytes) of one stream:
    HKDF-SHA256(seed, info=b"securepool/prg/v1|" + label), 48 bytes, split 32 | 16.

    Security: one (seed, label) pair gives one stream, independent of every other
    label's stream under the same seed. Exposed for tests and for checking the
    construction against a plain AES-CTR implementation.
    """
    require_key("mask seed", seed, size=SEED_SIZE)
    require_bytes("label", label)
    okm = hkdf_sha256(seed, info=_INFO_PREFIX + label, length=48)
    return okm[:32], okm[32:]


def expand_mask(
    seed: bytes,
    *,
    label: bytes,
    length: int,
    dtype: type[np.uint32] | type[np.uint64] = np.uint32,
) -> NDArray[np.unsignedinteger]:
    """``length`` pseudo-random words of ``dtype`` from a 32-byte ``seed`` under ``label``.

    Deterministic: the same (seed, label, length, dtype) gives the same array on every
    platform (the keystream is read as little-endian words), and a shorter request is a
    prefix of a longer one. uint32 and uint64 requests of one stream share its bytes
    (one uint64 word = two consecutive uint32 words, low word first). The result is a
    fresh, writable, native-endian array the caller owns.

    Security: for anyone without ``seed`` the output is computationally
    indistinguishable from uniform words (AES-256 in counter mode as a PRF; the
    PRP/PRF switching term q^2 / 2^129 for q blocks is negligible for any mask length
    used here). The whole 256-bit seed is used: anything but exactly 32 bytes raises
    KeyMaterialError, so a seed folded to 32 bits (as Flower feeds numpy's RandomState)
    cannot be passed in. Never reuse one (seed, label) to mask two different vectors:
    the difference of the two masked vectors would reveal the difference of the inputs.
    Put session, round and purpose into ``label``. A negative ``length`` raises
    CryptoError, a dtype other than uint32/uint64 CryptoTypeError.
    """
    key, nonce = prg_key_and_nonce(seed, label=label)
    length = require_int("length", length)
    if length < 0:
        raise CryptoError(f"mask length must be >= 0, got {length}")
    native = _word_dtype(dtype)
    little = native.newbyteorder("<")
    nbytes = length * native.itemsize
    raw = np.empty(nbytes + _SLACK, dtype=np.uint8)
    out = memoryview(raw)  # type: ignore[arg-type]
    encryptor = Cipher(algorithms.AES(key), modes.CTR(nonce)).encryptor()
    for start in range(0, nbytes, _CHUNK):
        size = min(_CHUNK, nbytes - start)
        encryptor.update_into(_ZEROS[:size], out[start : start + size + _SLACK])
    words: NDArray[np.unsignedinteger] = raw[:nbytes].view(little).astype(native, copy=False)
    return words


def _word_dtype(dtype: object) -> np.dtype[np.unsignedinteger]:
    """np.dtype(uint32) or np.dtype(uint64) from those types (or their native dtypes);
    CryptoTypeError for anything else, strings and signed types included."""
    for word in (np.uint32, np.uint64):
        if dtype is word or (isinstance(dtype, np.dtype) and dtype == np.dtype(word)):
            return np.dtype(word)
    raise CryptoTypeError(f"dtype must be numpy.uint32 or numpy.uint64, got {dtype!r}")
