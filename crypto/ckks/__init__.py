"""CKKS (TenSEAL) primitives for HE-mode aggregation: parameters, typed public/secret
contexts, chunked encrypt/decrypt, sums on coefficient arrays, worker processes, and
the small pieces the contribution check needs (a sealed box, contribution tags)."""

from crypto.ckks.coefficients import ChunkCodec, CoefficientSum
from crypto.ckks.context import PublicCKKSContext, SecretCKKSContext, context_fingerprint
from crypto.ckks.params import MAX_LOG_Q_128, CKKSParameters
from crypto.ckks.vectors import (
    chunk_codec,
    decrypt_chunks,
    encrypt_chunks,
    load_chunk,
    load_chunks,
    max_chunk_bytes,
)

__all__ = [
    "MAX_LOG_Q_128",
    "CKKSParameters",
    "ChunkCodec",
    "CoefficientSum",
    "PublicCKKSContext",
    "SecretCKKSContext",
    "chunk_codec",
    "context_fingerprint",
    "decrypt_chunks",
    "encrypt_chunks",
    "load_chunk",
    "load_chunks",
    "max_chunk_bytes",
]
