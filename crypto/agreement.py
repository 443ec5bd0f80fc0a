"""X25519 key agreement followed by HKDF with an explicit label."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from crypto.errors import KeyMaterialError
from crypto.kdf import hkdf_sha256
from crypto.secret import SecretHolder


class AgreementKey(SecretHolder):
    """An X25519 private key.

    Security: hides itself in repr and refuses pickling. :meth:`private_bytes` exists
    only because SecAgg Shamir-shares the mask-agreement key for dropout recovery; any
    other use of it is a bug.
    """

    __slots__ = ("_key",)

    def __init__(self, key: X25519PrivateKey) -> None:
        self._key = key

    @classmethod
    def generate(cls) -> AgreementKey:
        return cls(X25519PrivateKey.generate())

    @classmethod
    def from_private_bytes(cls, data: bytes) -> AgreementKey:
        if not isinstance(data, bytes) or len(data) != 32:
            raise KeyMaterialError("an X25519 private key is exactly 32 bytes")
        return cls(X25519PrivateKey.from_private_bytes(data))

    def private_bytes(self) -> bytes:
        """The raw 32-byte private key. DANGER: only for Shamir sharing in SecAgg."""
        return self._key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())

    def public_bytes(self) -> bytes:
        return self._key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    def derive(self, peer_public: bytes, *, label: bytes, length: int = 32) -> bytes:
        """X25519 with ``peer_public``, then HKDF-SHA256(info=label).

        Security: rejects a wrong-length key and a low-order peer key (all-zero shared
        secret) with KeyMaterialError. The label separates the uses of one key pair.
        """
        if not isinstance(peer_public, bytes) or len(peer_public) != 32:
            raise KeyMaterialError("an X25519 public key is exactly 32 bytes")
        try:
            shared = self._key.exchange(X25519PublicKey.from_public_bytes(peer_public))
        except ValueError as exc:  # all-zero output: a low-order point
            raise KeyMaterialError(f"invalid X25519 peer key: {exc}") from None
        return hkdf_sha256(shared, info=b"securepool/x25519/v1|" + label, length=length)
