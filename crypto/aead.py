"""ChaCha20-Poly1305 (RFC 8439) authenticated encryption, random 96-bit nonce prefixed.

Sealed format: nonce (12 bytes) || ciphertext (len(plaintext) bytes) || tag (16 bytes).
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from crypto._validate import require_bytes, require_key
from crypto.errors import DecryptionError

KEY_SIZE = 32
NONCE = 12
TAG = 16
OVERHEAD = NONCE + TAG


def aead_seal(key: bytes, plaintext: bytes, *, aad: bytes) -> bytes:
    """Encrypt and authenticate ``plaintext``, binding ``aad``; nonce || ciphertext || tag.

    Security: IND-CCA2 and ciphertext integrity under a 32-byte uniformly random key
    (derive it with HKDF under its own label; anything but 32 bytes raises
    KeyMaterialError). The nonce is 12 fresh bytes of ``os.urandom``: a nonce collision
    (which would leak the XOR of two plaintexts and allow forgeries) has probability
    about q^2 / 2^97 after q messages under one key, negligible for the handful of
    messages SecurePool seals per (session, sender, receiver) key. Put everything the
    receiver must agree on (session, round, sender, receiver) in ``aad``: it is
    authenticated, not encrypted. The length of the plaintext is not hidden.
    """
    require_key("AEAD key", key, size=KEY_SIZE)
    require_bytes("plaintext", plaintext)
    require_bytes("aad", aad)
    nonce = os.urandom(NONCE)
    return nonce + ChaCha20Poly1305(key).encrypt(nonce, plaintext, aad)


def aead_open(key: bytes, sealed: bytes, *, aad: bytes) -> bytes:
    """Decrypt and verify what :func:`aead_seal` produced under the same key and ``aad``.

    Security: raises :class:`DecryptionError` for a wrong key, a different ``aad``, any
    flipped bit, truncation or extension; no plaintext byte is returned unless the tag
    verifies (the check is constant-time, inside OpenSSL). A key that is not 32 bytes
    raises KeyMaterialError (a programming error, not an attack); a non-bytes
    ``sealed`` or ``aad`` raises CryptoTypeError.
    """
    require_key("AEAD key", key, size=KEY_SIZE)
    require_bytes("sealed", sealed)
    require_bytes("aad", aad)
    if len(sealed) < OVERHEAD:
        raise DecryptionError(f"sealed message has {len(sealed)} bytes, fewer than {OVERHEAD}")
    try:
        return ChaCha20Poly1305(key).decrypt(sealed[:NONCE], sealed[NONCE:], aad)
    except InvalidTag:
        raise DecryptionError("authentication failed: wrong key, wrong aad or tampered") from None
