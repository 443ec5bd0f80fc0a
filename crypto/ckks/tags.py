"""Contribution tags: secret random values a participant adds to reserved CKKS slots.

Each participant draws a 32-byte seed per session, seals it to the key holder, and puts
``expand_tags(seed, ...)`` into the tag slots of every chunk it encrypts. The key holder,
knowing every claimed contributor's seed, expects the tag slots of an honest aggregate
to decrypt to the sum of their tags; see protocols/he/keyholder.py for what that proves.
"""

from __future__ import annotations

import hashlib

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from numpy.typing import NDArray

from crypto.errors import KeyMaterialError

SEED_BYTES = 32


def expand_tags(seed: bytes, *, n_chunks: int, per_chunk: int) -> NDArray[np.float64]:
    """Tags of shape ``(n_chunks, per_chunk)``, uniform on [0, 1) in steps of 2^-32.

    Security: ChaCha20 keystream under a key derived from ``seed`` with a domain label;
    without the seed the tags are unpredictable (2^-32 resolution per tag).
    """
    if len(seed) != SEED_BYTES:
        raise KeyMaterialError(f"tag seed must be {SEED_BYTES} bytes, got {len(seed)}")
    key = hashlib.sha256(b"securepool/he/tags/v1\x00" + seed).digest()
    count = n_chunks * per_chunk
    stream = Cipher(algorithms.ChaCha20(key, b"\x00" * 16), mode=None).encryptor().update(
        b"\x00" * (4 * count)
    )
    words = np.frombuffer(stream, dtype="<u4").astype(np.float64)
    return (words / 2.0**32).reshape(n_chunks, per_chunk)
