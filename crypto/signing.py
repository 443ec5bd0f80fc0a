"""Ed25519 identity keys (RFC 8032); every signature is bound to a label.

Keys are generated and stored through pyca/cryptography; signing and verification run
in libsodium (through PyNaCl's bindings), whose verification is about twice as fast as
OpenSSL's here and stricter: it refuses public keys and signature points ``R`` of small
order and non-canonical encodings, as well as non-canonical ``S``. The wire bytes are
the same either way: raw 32-byte public keys and 64-byte signatures.
"""

from __future__ import annotations

import hashlib
import struct

import nacl.bindings as _sodium
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)
from nacl.exceptions import BadSignatureError as _SodiumBadSignature

from crypto._validate import require_bytes, require_key
from crypto.encoding import bind
from crypto.errors import InvalidSignature, KeyMaterialError
from crypto.kdf import hkdf_sha256
from crypto.mac import KEY_SIZE as MAC_KEY_SIZE
from crypto.mac import MacKey
from crypto.secret import SecretHolder

PUBLIC_SIZE = 32
PRIVATE_SIZE = 32
SIGNATURE_SIZE = 64
_DOMAIN = b"securepool/sig/v1"
#: HKDF salt of every key derived from an identity key's seed (never a signing key)
_DERIVE_SALT = b"securepool/identity-derived-key/v1"


def signed_bytes(message: bytes, *, label: bytes) -> bytes:
    """The exact bytes Ed25519 signs: domain || len(label) (4 bytes, big-endian) ||
    label || message.

    Security: the label is length-delimited, so no (label, message) pair frames to the
    same bytes as another pair: a signature made under one label never verifies under
    any other, and a raw Ed25519 signature over ``message`` alone never verifies here.
    """
    require_bytes("message", message)
    require_bytes("label", label)
    return _DOMAIN + struct.pack(">I", len(label)) + label + message


class IdentityKey(SecretHolder):
    """A participant's, coordinator's or auditor's long-term Ed25519 signing key.

    Security: hides itself in repr and refuses pickling; there is no method that exports
    the private key.
    """

    __slots__ = ("_key", "_public", "_signing")

    def __init__(self, key: Ed25519PrivateKey) -> None:
        """Wrap a pyca key; use :meth:`generate` or :meth:`from_private_bytes` instead.

        Security: takes ownership of ``key``; the caller should drop its reference. The
        object also keeps libsodium's 64-byte form of the key (seed || public key), from
        which it signs; the public key libsodium derives from the seed must equal
        OpenSSL's, else KeyMaterialError.
        """
        if not isinstance(key, Ed25519PrivateKey):
            raise KeyMaterialError(f"expected an Ed25519PrivateKey, got {type(key).__name__}")
        self._key = key
        self._public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        seed = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        public, self._signing = _sodium.crypto_sign_seed_keypair(seed)
        if public != self._public:  # two RFC 8032 implementations disagree: never sign
            raise KeyMaterialError("libsodium and OpenSSL derive different Ed25519 public keys")

    @classmethod
    def generate(cls) -> IdentityKey:
        """A fresh key pair.

        Security: the 32-byte seed comes from the OS CSPRNG (via OpenSSL).
        """
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_private_bytes(cls, seed: bytes) -> IdentityKey:
        """Load an RFC 8032 private key (the 32-byte seed), e.g. from a key store.

        Security: the seed is the whole secret; anything but 32 bytes raises
        KeyMaterialError. Signing is deterministic (RFC 8032), so no per-signature
        randomness can fail.
        """
        raw = require_key("Ed25519 private key", seed, size=PRIVATE_SIZE)
        return cls(Ed25519PrivateKey.from_private_bytes(raw))

    def public_bytes(self) -> bytes:
        """The raw 32-byte public key.

        Security: public; it is the identity others verify against, so it must reach
        them through a channel they trust (the PKI / enrolment), never from the signer's
        own unsigned message.
        """
        return self._public

    def sign(self, message: bytes, *, label: bytes) -> bytes:
        """A 64-byte Ed25519 signature over :func:`signed_bytes` ``(message, label)``.

        Security: a signature made under one label never verifies under another, so a
        signed key advertisement cannot be replayed as, say, a signed verdict. Give each
        signed message type its own label and put session and round inside ``message``.
        Signed by libsodium: RFC 8032 signing is deterministic, so the bytes are the
        ones OpenSSL would produce.
        """
        framed = signed_bytes(message, label=label)
        return _sodium.crypto_sign(framed, self._signing)[:SIGNATURE_SIZE]

    def derive_mac_key(self, *, label: bytes) -> MacKey:
        """A MAC key only this key's holder can compute, for data it keeps for itself
        (e.g. a node's state files): HKDF-SHA256 (RFC 5869) of the 32-byte Ed25519 seed,
        salt ``securepool/identity-derived-key/v1``, info ``label``.

        Security: the seed is a uniformly random 32-byte secret, so HKDF gives a key as
        good as a random one; Ed25519 itself only ever hashes the seed with SHA-512
        (RFC 8032), and HKDF-SHA256 under this salt is an independent function of it, so
        the MAC key tells nothing about the signing key, nor a signature about the MAC
        key. Each ``label`` gives a computationally independent key: use one label per
        purpose. The key is deterministic (the same identity key gives it after every
        restart) and nobody else can check its tags; the seed never leaves this object.
        """
        require_bytes("label", label)
        if not label:
            raise KeyMaterialError("a derived key needs a non-empty label")
        seed = self._key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        return MacKey(hkdf_sha256(seed, info=label, length=MAC_KEY_SIZE, salt=_DERIVE_SALT))


def verify_signature(public: bytes, message: bytes, signature: bytes, *, label: bytes) -> None:
    """Return only if ``signature`` is ``public``'s signature of ``message`` under ``label``.

    Security: raises :class:`InvalidSignature` on any mismatch (wrong key, message,
    label, or a signature that is not 64 bytes); it never returns False, so a forgotten
    check cannot pass silently. A public key that is not 32 bytes raises
    KeyMaterialError (32 bytes that are not a curve point just fail to verify).
    RFC 8032 verification by libsodium, secure under the usual EdDSA unforgeability
    assumptions, and strict: ``S`` must be canonical (below the group order L, so a
    signature cannot be malleated into another valid one by adding L), and a public key
    or ``R`` that is of small order or not canonically encoded fails. Under a
    small-order public key (one of the 8 torsion points, e.g. the identity) a signature
    ``(R = [S]B, S)`` satisfies the verification equation for any message; OpenSSL
    accepts such forgeries, this function refuses every signature under such a key.
    """
    require_key("Ed25519 public key", public, size=PUBLIC_SIZE)
    framed = signed_bytes(message, label=label)
    require_bytes("signature", signature)
    if len(signature) != SIGNATURE_SIZE:
        raise InvalidSignature(
            f"an Ed25519 signature is {SIGNATURE_SIZE} bytes, got {len(signature)}"
        )
    try:
        _sodium.crypto_sign_open(signature + framed, public)
    except _SodiumBadSignature:
        raise InvalidSignature(f"signature does not verify (label {label!r})") from None


class VerifiedSignatures:
    """Signatures already verified in this process: the in-process runtime's memo.

    The in-process runtime runs every node in one process, so the n participants of a
    beacon or a SecAgg+ group would verify the same signatures n times each (n^2
    verifications per iteration). Sharing one of these between them makes each
    verification happen once: a lookup succeeds only for the exact (label, key, message,
    signature) triple that really verified, so every node's check has the same outcome
    as verifying itself. Nodes in their own processes (``multiprocess``, Flower) each
    verify for themselves (or hold a memo of their own).

    Security: a memo only ever answers "verified" for a triple that
    :func:`verify_signature` accepted in this process; sharing one between parties
    means trusting each other's process (one OS process holds them all anyway).
    """

    def __init__(self) -> None:
        self._ok: set[bytes] = set()

    def verify(self, public: bytes, message: bytes, signature: bytes, *, label: bytes) -> None:
        """:func:`verify_signature`, remembered when it succeeds.

        Security: raises InvalidSignature exactly when ``verify_signature`` would; the
        memo key is SHA-256 of an injective encoding of (label, key, message, signature).
        """
        digest = hashlib.sha256(
            bind(b"securepool/signing/verified/v1", label, public, message, signature)
        ).digest()
        if digest in self._ok:
            return
        verify_signature(public, message, signature, label=label)
        self._ok.add(digest)


def verify_maybe_memo(
    memo: VerifiedSignatures | None,
    public: bytes,
    message: bytes,
    signature: bytes,
    *,
    label: bytes,
) -> None:
    """:func:`verify_signature`, through ``memo`` when one is given.

    Security: the same outcome as :func:`verify_signature` (raises InvalidSignature on
    any mismatch); the memo only skips repeating a verification that succeeded.
    """
    if memo is None:
        verify_signature(public, message, signature, label=label)
    else:
        memo.verify(public, message, signature, label=label)
