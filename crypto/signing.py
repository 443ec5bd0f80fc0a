"""Ed25519 identity keys; every signature is bound to a label."""

from __future__ import annotations

import struct

from cryptography.exceptions import InvalidSignature as _CryptoInvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from crypto.errors import InvalidSignature, KeyMaterialError
from crypto.secret import SecretHolder


def _framed(label: bytes, message: bytes) -> bytes:
    return b"securepool/sig/v1" + struct.pack(">I", len(label)) + label + message


class IdentityKey(SecretHolder):
    """A participant's or the auditor's long-term Ed25519 signing key.

    Security: hides itself in repr and refuses pickling; the private key never leaves.
    """

    __slots__ = ("_key",)

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key

    @classmethod
    def generate(cls) -> IdentityKey:
        return cls(Ed25519PrivateKey.generate())

    def public_bytes(self) -> bytes:
        return self._key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    def sign(self, message: bytes, *, label: bytes) -> bytes:
        """Sign ``message`` under ``label`` (length-delimited, so labels cannot collide).

        Security: a signature made under one label never verifies under another.
        """
        return self._key.sign(_framed(label, message))


def verify_signature(public: bytes, message: bytes, signature: bytes, *, label: bytes) -> None:
    """Raise :class:`InvalidSignature` unless ``signature`` is valid; never returns False.

    Security: KeyMaterialError for a public key that is not 32 bytes.
    """
    if not isinstance(public, bytes) or len(public) != 32:
        raise KeyMaterialError("an Ed25519 public key is exactly 32 bytes")
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(signature, _framed(label, message))
    except (_CryptoInvalidSignature, ValueError):
        raise InvalidSignature(f"signature does not verify (label {label!r})") from None
