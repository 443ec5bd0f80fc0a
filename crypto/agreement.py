"""X25519 key agreement (RFC 7748) followed by HKDF-SHA256 with an explicit label."""

from __future__ import annotations

import hmac

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from crypto._validate import require_bytes, require_key
from crypto.errors import KeyMaterialError
from crypto.kdf import hkdf_sha256
from crypto.secret import SecretHolder

KEY_SIZE = 32
_INFO_PREFIX = b"securepool/x25519/v1|"


def agreement_salt(public_a: bytes, public_b: bytes) -> bytes:
    """The HKDF salt of one key agreement: both public keys, in sorted order.

    Security: binds the derived key to the exact encodings of both public keys (as
    RFC 9180's DHKEM does), so two different encodings of one point, or a substituted
    key, never give the same derived key. Sorted, so both sides compute the same salt.
    """
    return b"".join(sorted((public_a, public_b)))


class AgreementKey(SecretHolder):
    """An X25519 private key for one purpose (share encryption or pairwise masks).

    Security: hides itself in repr and refuses pickling. :meth:`derive` always runs the
    shared secret through HKDF under a caller's label: the raw X25519 output is never
    returned, so it cannot be used as a key by mistake.
    """

    __slots__ = ("_key", "_public")

    def __init__(self, key: X25519PrivateKey) -> None:
        """Wrap a pyca key; use :meth:`generate` or :meth:`from_private_bytes` instead.

        Security: takes ownership of ``key``; the caller should drop its reference.
        """
        if not isinstance(key, X25519PrivateKey):
            raise KeyMaterialError(f"expected an X25519PrivateKey, got {type(key).__name__}")
        self._key = key
        self._public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    @classmethod
    def generate(cls) -> AgreementKey:
        """A fresh key pair.

        Security: the private scalar comes from the OS CSPRNG (via OpenSSL).
        """
        return cls(X25519PrivateKey.generate())

    @classmethod
    def from_private_bytes(cls, data: bytes) -> AgreementKey:
        """Load a raw 32-byte private key (e.g. one reconstructed from Shamir shares).

        Security: any 32 bytes are a valid X25519 private key (RFC 7748 clamps them), so
        this cannot tell a right key from a wrong one; anything but 32 bytes raises
        KeyMaterialError.
        """
        raw = require_key("X25519 private key", data, size=KEY_SIZE)
        return cls(X25519PrivateKey.from_private_bytes(raw))

    def private_bytes(self) -> bytes:
        """The raw 32-byte private key. DANGER: this exports the secret.

        Security: it exists only because SecAgg Shamir-shares the pairwise-mask key so
        that the survivors can unmask a participant who drops out. Any other use
        (logging, storing, sending) is a bug: whoever holds these bytes can recompute
        every key this key pair derives, past and future. The protocol must never reveal
        both this key's shares and the self-mask shares of the same participant.
        """
        return self._key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())

    def public_bytes(self) -> bytes:
        """The raw 32-byte public key.

        Security: public, but not authenticated by itself: a receiver must check it
        under the owner's identity signature before deriving anything from it.
        """
        return self._public

    def derive(self, peer_public: bytes, *, label: bytes, length: int = 32) -> bytes:
        """X25519 with ``peer_public``, then HKDF-SHA256.

        HKDF runs with ``info = b"securepool/x25519/v1|" + label`` and
        ``salt = agreement_salt(own public, peer public)``; both sides get the same bytes.

        Security: the label separates the uses of one key pair (a key derived for share
        encryption never equals one derived for masks). Rejects, with KeyMaterialError, a
        peer key that is not 32 bytes and a low-order peer key (the shared secret would
        be all zeros, a value any attacker knows); ``length`` outside 1..8160 also raises
        KeyMaterialError. Computationally secure under the CDH assumption on Curve25519;
        it authenticates no one.
        """
        require_key("X25519 peer public key", peer_public, size=KEY_SIZE)
        require_bytes("label", label)
        try:
            shared = self._key.exchange(X25519PublicKey.from_public_bytes(peer_public))
        except ValueError:  # pyca refuses an all-zero output (a low-order point)
            raise KeyMaterialError("invalid X25519 peer key: low-order point") from None
        if hmac.compare_digest(shared, bytes(KEY_SIZE)):  # in case a backend does not
            raise KeyMaterialError("invalid X25519 peer key: all-zero shared secret")
        return hkdf_sha256(
            shared,
            info=_INFO_PREFIX + label,
            length=length,
            salt=agreement_salt(self._public, peer_public),
        )
