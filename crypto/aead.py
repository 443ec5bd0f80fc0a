"""ChaCha20-Poly1305 authenticated encryption with a random 96-bit nonce prefixed."""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from crypto.errors import DecryptionError, KeyMaterialError

NONCE = 12
TAG = 16


def _check_key(key: bytes) -> None:
    if not isinstance(key, bytes) or len(key) != 32:
        raise KeyMaterialError("an AEAD key is exactly 32 bytes")


def aead_seal(key: bytes, plaintext: bytes, *, aad: bytes) -> bytes:
    """Encrypt and authenticate; returns nonce || ciphertext || tag.

    Security: random nonces are safe for up to 2^32 messages per key; SecurePool derives
    a fresh key per (session, sender, receiver), so a key seals a handful of messages.
    """
    _check_key(key)
    nonce = os.urandom(NONCE)
    return nonce + ChaCha20Poly1305(key).encrypt(nonce, plaintext, aad)


def aead_open(key: bytes, sealed: bytes, *, aad: bytes) -> bytes:
    """Decrypt; raise :class:`DecryptionError` on a wrong key, wrong aad or any tampering."""
    _check_key(key)
    if not isinstance(sealed, bytes) or len(sealed) < NONCE + TAG:
        raise DecryptionError("sealed message too short")
    try:
        return ChaCha20Poly1305(key).decrypt(sealed[:NONCE], sealed[NONCE:], aad)
    except InvalidTag:
        raise DecryptionError("authentication failed: wrong key, wrong aad or tampered") from None
