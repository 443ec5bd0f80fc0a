"""Encrypt, check, add and decrypt chunked CKKS vectors, as bytes in and bytes out.

A vector longer than one ciphertext's ``slots`` travels as one ciphertext per chunk; every
chunk is exactly ``slots`` values (the caller pads). Every ciphertext that arrives from
another party goes through :func:`load_chunk`, which turns whatever TenSEAL or SEAL
reports into a :class:`CiphertextError` and checks what SEAL does not: the vector length,
the level (number of primes), the polynomial count and the exact encoding scale.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import tenseal as ts
from numpy.typing import NDArray

from crypto.ckks.context import PublicCKKSContext, SecretCKKSContext
from crypto.ckks.params import CKKSParameters
from crypto.errors import CiphertextError, EncodingError


def max_chunk_bytes(params: CKKSParameters) -> int:
    """Upper bound on one serialised chunk: two uncompressed polynomials plus framing."""
    return 2 * params.poly_modulus_degree * (len(params.coeff_mod_bit_sizes) - 1) * 8 + 4096


def encrypt_chunks(public: PublicCKKSContext, chunks: NDArray[np.float64]) -> list[bytes]:
    """Encrypt each row of ``chunks`` (shape ``(k, slots)``) under the public key.

    Security: public-key encryption (IND-CPA under RLWE); the result reveals only the
    chunk count. Raises :class:`EncodingError` if a value is not finite or exceeds the
    parameters' headroom.
    """
    params = public.params
    _check_rows(chunks, params)
    ctx = public.tenseal
    return [
        ts.ckks_vector(ctx, row, scale=params.scale).serialize() for row in chunks
    ]


def _check_rows(chunks: NDArray[np.float64], params: CKKSParameters) -> None:
    if chunks.ndim != 2 or chunks.shape[1] != params.slots:
        raise EncodingError(f"chunks must have shape (k, {params.slots}), got {chunks.shape}")
    if chunks.dtype != np.float64:
        raise EncodingError(f"chunks must be float64, got {chunks.dtype}")
    if not np.all(np.isfinite(chunks)):
        raise EncodingError("chunk contains NaN or infinity")
    peak = float(np.max(np.abs(chunks))) if chunks.size else 0.0
    if peak > params.headroom():
        raise EncodingError(f"value {peak:.3g} exceeds the CKKS headroom {params.headroom():.3g}")


def load_chunk(ctx: PublicCKKSContext | SecretCKKSContext, blob: bytes) -> Any:
    """Deserialise one chunk and check it is a fresh-shaped ciphertext of these parameters.

    Security: raises :class:`CiphertextError` for bytes that do not parse, a ciphertext
    under parameters other than ``ctx``'s, the wrong length, level, size or scale. It
    cannot tell a ciphertext under another *key* with the same parameters: that is
    caught by the key holder's contribution check (see protocols.he.keyholder).
    """
    params = ctx.params
    if not isinstance(blob, bytes | bytearray | memoryview):
        raise CiphertextError(f"ciphertext must be bytes, got {type(blob).__name__}")
    if not 0 < len(blob) <= max_chunk_bytes(params):
        raise CiphertextError(
            f"ciphertext has {len(blob)} bytes, outside 1..{max_chunk_bytes(params)}"
        )
    try:
        vec = ts.ckks_vector_from(ctx.tenseal, bytes(blob))
        size = vec.size()
        cts = vec.ciphertext()
    except (ValueError, RuntimeError, TypeError) as exc:
        raise CiphertextError(f"ciphertext does not load under this context: {exc}") from exc
    if size != params.slots:
        raise CiphertextError(f"ciphertext carries {size} values, expected {params.slots}")
    if len(cts) != 1:
        raise CiphertextError(f"chunk spans {len(cts)} ciphertexts, expected 1")
    ct = cts[0]
    if ct.size() != 2:
        raise CiphertextError(f"ciphertext has {ct.size()} polynomials, expected 2")
    if ct.poly_modulus_degree() != params.poly_modulus_degree:
        raise CiphertextError("ciphertext ring degree differs from the context's")
    if ct.coeff_modulus_size() != len(params.coeff_mod_bit_sizes) - 1:
        raise CiphertextError(
            f"ciphertext is at a level with {ct.coeff_modulus_size()} primes, "
            f"expected {len(params.coeff_mod_bit_sizes) - 1}"
        )
    if not ct.is_ntt_form():
        raise CiphertextError("ciphertext is not in NTT form")
    if ct.scale != params.scale:
        raise CiphertextError(f"ciphertext scale {ct.scale!r}, expected 2^{params.scale_bits}")
    return vec


def load_chunks(ctx: PublicCKKSContext | SecretCKKSContext, blobs: Sequence[bytes]) -> list[Any]:
    """:func:`load_chunk` over a whole chunked vector."""
    return [load_chunk(ctx, b) for b in blobs]


class CiphertextSum:
    """Running sum of chunked ciphertext vectors under one public context (no key needed).

    Security: additions only; the sum is a ciphertext under the same key and reveals
    nothing to whoever computes it.
    """

    def __init__(self, public: PublicCKKSContext, *, n_chunks: int) -> None:
        if n_chunks < 1:
            raise EncodingError(f"n_chunks must be >= 1, got {n_chunks}")
        self._public = public
        self._n_chunks = n_chunks
        self._acc: list[Any] | None = None
        self.count = 0

    def add_loaded(self, vectors: Sequence[Any]) -> None:
        """Add chunks already checked by :func:`load_chunks`."""
        if len(vectors) != self._n_chunks:
            raise CiphertextError(f"{len(vectors)} chunks, expected {self._n_chunks}")
        if self._acc is None:
            self._acc = list(vectors)
        else:
            for acc, vec in zip(self._acc, vectors, strict=True):
                acc.add_(vec)
        self.count += 1

    def add(self, blobs: Sequence[bytes]) -> None:
        """Check and add one serialised chunked vector (raises CiphertextError, adds nothing)."""
        self.add_loaded(load_chunks(self._public, blobs))

    def to_bytes(self) -> list[bytes]:
        if self._acc is None:
            raise EncodingError("empty ciphertext sum")
        return [vec.serialize() for vec in self._acc]


def decrypt_chunks(secret: SecretCKKSContext, blobs: Sequence[bytes]) -> NDArray[np.float64]:
    """Decrypt a chunked vector to shape ``(k, slots)``.

    Security: the caller (the key holder) must decide *before* calling this what it is
    willing to decrypt; this function decrypts whatever it is given.
    """
    vectors = load_chunks(secret, blobs)
    out = np.empty((len(vectors), secret.params.slots), dtype=np.float64)
    for i, vec in enumerate(vectors):
        out[i] = vec.decrypt()
    return out
