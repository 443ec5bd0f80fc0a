"""Seal short secrets to the key holder (an HPKE-base-mode shape from crypto/ primitives).

A fresh ephemeral X25519 key per message, the key derived with HKDF over both public
keys (:meth:`crypto.agreement.AgreementKey.derive`), then ChaCha20-Poly1305 with the
caller's associated data (:func:`crypto.aead.aead_seal`). Carries each participant's
contribution-tag seed to the key holder through the coordinator, which cannot open it.
"""

from __future__ import annotations

from crypto.aead import NONCE, TAG, aead_open, aead_seal
from crypto.agreement import AgreementKey
from crypto.errors import DecryptionError, KeyMaterialError

_LABEL = b"securepool/he/sealbox/v1|"
SEALED_OVERHEAD = 32 + NONCE + TAG


def seal_to(recipient_public: bytes, plaintext: bytes, *, aad: bytes) -> bytes:
    """Encrypt ``plaintext`` so only the holder of ``recipient_public``'s private key reads it.

    Security: IND-CCA2 (X25519 + HKDF + AEAD); ``aad`` is bound, so a sealed value moved
    into another context fails to open. Not sender-authenticated: sign the result (the
    HE receipt does) when the sender matters.
    """
    if not isinstance(recipient_public, bytes) or len(recipient_public) != 32:
        raise KeyMaterialError("an X25519 public key is exactly 32 bytes")
    eph = AgreementKey.generate()
    eph_pub = eph.public_bytes()
    key = eph.derive(recipient_public, label=_LABEL + eph_pub + recipient_public)
    return eph_pub + aead_seal(key, plaintext, aad=aad)


def open_sealed(recipient: AgreementKey, sealed: bytes, *, aad: bytes) -> bytes:
    """Open a :func:`seal_to` output; :class:`DecryptionError` on any tampering or move."""
    if not isinstance(sealed, bytes) or len(sealed) < SEALED_OVERHEAD:
        raise DecryptionError(f"sealed box shorter than {SEALED_OVERHEAD} bytes")
    eph_pub, body = sealed[:32], sealed[32:]
    try:
        key = recipient.derive(eph_pub, label=_LABEL + eph_pub + recipient.public_bytes())
    except KeyMaterialError as exc:
        raise DecryptionError(f"sealed box has an invalid ephemeral key: {exc}") from exc
    return aead_open(key, body, aad=aad)
