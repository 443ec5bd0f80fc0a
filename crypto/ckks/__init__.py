"""CKKS (TenSEAL) primitives for HE-mode aggregation: parameters, typed public/secret
contexts, chunked encrypt/add/decrypt, worker processes, and the small pieces the
contribution check needs (identity signatures, a sealed box, contribution tags)."""

from crypto.ckks.context import PublicCKKSContext, SecretCKKSContext, context_fingerprint
from crypto.ckks.params import MAX_LOG_Q_128, CKKSParameters
from crypto.ckks.vectors import (
    CiphertextSum,
    decrypt_chunks,
    encrypt_chunks,
    load_chunk,
    load_chunks,
    max_chunk_bytes,
)

__all__ = [
    "MAX_LOG_Q_128",
    "CKKSParameters",
    "CiphertextSum",
    "PublicCKKSContext",
    "SecretCKKSContext",
    "context_fingerprint",
    "decrypt_chunks",
    "encrypt_chunks",
    "load_chunk",
    "load_chunks",
    "max_chunk_bytes",
]
