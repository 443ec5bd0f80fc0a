"""HKDF-SHA256 (RFC 5869) with explicit labels."""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from crypto._validate import require_bytes, require_int
from crypto.errors import KeyMaterialError

MAX_LENGTH = 255 * 32  # RFC 5869: at most 255 blocks of the hash's output


def hkdf_sha256(ikm: bytes, *, info: bytes, length: int, salt: bytes | None = None) -> bytes:
    """Derive ``length`` bytes from ``ikm`` under the label ``info`` (RFC 5869).

    ``salt=None`` means the RFC's default, a string of 32 zero bytes.

    Security: ``info`` is the domain-separation label: one secret used under two
    different labels gives computationally independent keys, so every use in SecurePool
    has its own label. HKDF does not add entropy: ``ikm`` must hold enough itself (a
    Diffie-Hellman output, 32 bytes from ``os.urandom``). ``length`` outside
    ``1..8160`` raises KeyMaterialError; a non-bytes input raises CryptoTypeError.
    """
    require_bytes("ikm", ikm)
    require_bytes("info", info)
    if salt is not None:
        require_bytes("salt", salt)
    length = require_int("length", length)
    if not 1 <= length <= MAX_LENGTH:
        raise KeyMaterialError(f"HKDF-SHA256 length must be in 1..{MAX_LENGTH}, got {length}")
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(ikm)
