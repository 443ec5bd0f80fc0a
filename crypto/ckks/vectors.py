"""Encrypt, check and decrypt chunked CKKS vectors, as bytes in and bytes out.

A vector longer than one ciphertext's ``slots`` travels as one ciphertext per chunk; every
chunk is exactly ``slots`` values (the caller pads). Every ciphertext that arrives from
another party goes through :func:`load_chunk`, which checks the bytes against a fresh
chunk of the context first (:class:`crypto.ckks.coefficients.ChunkCodec`: the vector
length, the level, the polynomial count, the exact encoding scale, reduced
coefficients) and turns whatever TenSEAL or SEAL reports into a
:class:`CiphertextError`. Sums are computed on coefficients (crypto.ckks.coefficients).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import tenseal as ts
from numpy.typing import NDArray

from crypto.ckks.coefficients import ChunkCodec
from crypto.ckks.context import PublicCKKSContext, SecretCKKSContext
from crypto.ckks.params import CKKSParameters
from crypto.errors import CiphertextError, EncodingError

_CKKSVector: Any = ts._ts_cpp.CKKSVector  # what ts.ckks_vector wraps (see encrypt_chunks)


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
    ctx = public.tenseal.data
    # TenSEAL's C++ vector type directly: ts.ckks_vector would first build a PlainTensor
    # per row. Same ciphertext; the codec checks every chunk that arrives, so a format
    # change in TenSEAL cannot slip through.
    return [_CKKSVector(ctx, row.tolist(), params.scale).serialize() for row in chunks]



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


_CODECS: dict[bytes, ChunkCodec] = {}


def chunk_codec(ctx: PublicCKKSContext | SecretCKKSContext) -> ChunkCodec:
    """The :class:`ChunkCodec` of ``ctx``'s parameters and keys, learned once per context."""
    codec = _CODECS.get(ctx.fingerprint)
    if codec is None:
        public = ctx.public() if isinstance(ctx, SecretCKKSContext) else ctx
        codec = _CODECS[ctx.fingerprint] = ChunkCodec.of(public)
    return codec


def load_chunk(ctx: PublicCKKSContext | SecretCKKSContext, blob: bytes) -> Any:
    """Deserialise one chunk and check it is a fresh-shaped ciphertext of these parameters.

    Security: raises :class:`CiphertextError` for bytes that do not parse, a ciphertext
    under parameters other than ``ctx``'s, the wrong length, level, size, scale or NTT
    form, or an unreduced coefficient (:meth:`ChunkCodec.read`, before TenSEAL sees the
    bytes). It cannot tell a ciphertext under another *key* with the same parameters:
    that is caught by the key holder's contribution check (see protocols.he.keyholder).
    """
    params = ctx.params
    if not isinstance(blob, bytes | bytearray | memoryview):
        raise CiphertextError(f"ciphertext must be bytes, got {type(blob).__name__}")
    if not 0 < len(blob) <= max_chunk_bytes(params):
        raise CiphertextError(
            f"ciphertext has {len(blob)} bytes, outside 1..{max_chunk_bytes(params)}"
        )
    chunk_codec(ctx).read(blob)
    try:
        vec = ts.ckks_vector_from(ctx.tenseal, bytes(blob))
        size = vec.size()
    except (ValueError, RuntimeError, TypeError) as exc:
        raise CiphertextError(f"ciphertext does not load under this context: {exc}") from exc
    if size != params.slots:
        raise CiphertextError(f"ciphertext carries {size} values, expected {params.slots}")
    return vec


def load_chunks(ctx: PublicCKKSContext | SecretCKKSContext, blobs: Sequence[bytes]) -> list[Any]:
    """:func:`load_chunk` over a whole chunked vector."""
    return [load_chunk(ctx, b) for b in blobs]


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
