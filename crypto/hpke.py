"""HPKE (RFC 9180, base mode, single shot) to the auditor's key, from ``cryptography``.

Suites: DHKEM(X25519, HKDF-SHA256) or the hybrid post-quantum KEM ML-KEM-768 + X25519
(``Kem.MLKEM768_X25519``), each with HKDF-SHA256 and ChaCha20-Poly1305.
"""

from __future__ import annotations

from enum import Enum

from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric.mlkem import MLKEM768PrivateKey, MLKEM768PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from crypto.errors import DecryptionError, KeyMaterialError
from crypto.secret import SecretHolder

_X25519_PUBLIC = 32
_MLKEM768_PUBLIC = 1184


class Kem(str, Enum):
    X25519 = "x25519"
    MLKEM768_X25519 = "mlkem768x25519"


def _suite(kem: Kem) -> hpke.Suite:
    k = hpke.KEM.X25519 if kem is Kem.X25519 else hpke.KEM.MLKEM768_X25519
    return hpke.Suite(k, hpke.KDF.HKDF_SHA256, hpke.AEAD.CHACHA20_POLY1305)


class SummaryOpeningKey(SecretHolder):
    """The auditor's HPKE private key. Hides itself in repr; refuses pickling."""

    __slots__ = ("_mlkem", "_x", "kem")

    def __init__(self, kem: Kem = Kem.X25519) -> None:
        self.kem = kem
        self._x = X25519PrivateKey.generate()
        self._mlkem = MLKEM768PrivateKey.generate() if kem is Kem.MLKEM768_X25519 else None

    def private_bytes(self) -> bytes:
        """The key to store in the auditor's own files (owner-only): the X25519 private
        key (32 bytes), or the ML-KEM-768 seed (64 bytes) || the X25519 private key.

        Security: a secret; only :meth:`from_private_bytes` reads it back. Never sent."""
        x = self._x.private_bytes_raw()
        return x if self._mlkem is None else self._mlkem.private_bytes_raw() + x

    @classmethod
    def from_private_bytes(cls, data: bytes, kem: Kem = Kem.X25519) -> SummaryOpeningKey:
        """The key :meth:`private_bytes` stored; KeyMaterialError for a wrong length."""
        want = 32 if kem is Kem.X25519 else 96
        if not isinstance(data, bytes) or len(data) != want:
            raise KeyMaterialError(f"a stored {kem.value} opening key is {want} bytes")
        key = cls.__new__(cls)
        key.kem = kem
        key._x = X25519PrivateKey.from_private_bytes(data[-32:])
        key._mlkem = None if kem is Kem.X25519 else MLKEM768PrivateKey.from_seed_bytes(data[:64])
        return key

    def public_bytes(self) -> bytes:
        """X25519 public key (32 bytes), or ML-KEM-768 || X25519 public keys (1216 bytes)."""
        x = self._x.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        if self._mlkem is None:
            return x
        return self._mlkem.public_key().public_bytes_raw() + x

    def open(self, sealed: bytes, *, info: bytes) -> bytes:
        """Open a sealed message; DecryptionError on a wrong key, wrong info or tampering.

        Security: ``info`` binds the context (session, participant): a message sealed for
        one context does not open in another.
        """
        key: X25519PrivateKey | hpke.MLKEM768X25519PrivateKey = (
            self._x if self._mlkem is None else hpke.MLKEM768X25519PrivateKey(self._mlkem, self._x)
        )
        try:
            return _suite(self.kem).decrypt(sealed, key, info=info)
        except Exception:
            raise DecryptionError(
                "HPKE open failed: wrong key, wrong context or tampered"
            ) from None


def hpke_seal(public: bytes, plaintext: bytes, *, info: bytes) -> bytes:
    """Seal ``plaintext`` to ``public`` (its length selects the KEM).

    Security: IND-CCA2 under the KEM and AEAD (RFC 9180); the sender is not authenticated
    (base mode) — the aggregation protocol authenticates participants separately.
    """
    if len(public) == _X25519_PUBLIC:
        pub: X25519PublicKey | hpke.MLKEM768X25519PublicKey = X25519PublicKey.from_public_bytes(
            public
        )
        kem = Kem.X25519
    elif len(public) == _MLKEM768_PUBLIC + _X25519_PUBLIC:
        pub = hpke.MLKEM768X25519PublicKey(
            MLKEM768PublicKey.from_public_bytes(public[:_MLKEM768_PUBLIC]),
            X25519PublicKey.from_public_bytes(public[_MLKEM768_PUBLIC:]),
        )
        kem = Kem.MLKEM768_X25519
    else:
        raise KeyMaterialError(f"an HPKE public key has 32 or 1216 bytes, not {len(public)}")
    return _suite(kem).encrypt(plaintext, pub, info=info)
