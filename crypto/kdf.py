"""HKDF-SHA256 (RFC 5869) with explicit labels."""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from crypto.errors import KeyMaterialError


def hkdf_sha256(ikm: bytes, *, info: bytes, length: int, salt: bytes | None = None) -> bytes:
    """Derive ``length`` bytes from ``ikm`` under the label ``info``.

    Security: ``info`` is the domain-separation label; two uses of one secret with
    different labels give independent keys. ``ikm`` must carry enough entropy itself.
    """
    if not isinstance(ikm, bytes) or not isinstance(info, bytes):
        raise TypeError("ikm and info must be bytes")
    if not 1 <= length <= 255 * 32:
        raise KeyMaterialError(f"HKDF-SHA256 length must be in 1..8160, got {length}")
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(ikm)
