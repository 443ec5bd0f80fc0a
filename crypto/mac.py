"""HMAC-SHA256 (RFC 2104, FIPS 198-1) under a secret key, every tag bound to a label.

A :class:`MacKey` authenticates data a party writes for itself and reads back later (a
node's own state files): only the key's holder can make a tag, and only the key's
holder can check one. It is not a signature: nobody else can verify it, and it says
nothing about freshness (an older tagged copy still verifies).
"""

from __future__ import annotations

import struct

from cryptography.exceptions import InvalidSignature as _PycaInvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as _hmac

from crypto._validate import require_bytes, require_key
from crypto.errors import InvalidSignature
from crypto.secret import SecretHolder

KEY_SIZE = 32
TAG_SIZE = 32
_DOMAIN = b"securepool/mac/v1"


def mac_input(message: bytes, *, label: bytes) -> bytes:
    """The exact bytes HMAC-SHA256 runs over: domain || len(label) (4 bytes, big-endian)
    || label || message.

    Security: the label is length-delimited, so no (label, message) pair frames to the
    same bytes as another pair: a tag made under one label never verifies under any
    other, and the domain keeps these tags apart from any other HMAC use of the key.
    """
    require_bytes("message", message)
    require_bytes("label", label)
    return _DOMAIN + struct.pack(">I", len(label)) + label + message


class MacKey(SecretHolder):
    """A 32-byte HMAC-SHA256 key (e.g. :meth:`crypto.signing.IdentityKey.derive_mac_key`).

    Security: hides itself in repr and refuses pickling; there is no method that exports
    the key bytes.
    """

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        """Wrap 32 secret bytes (uniformly random, or the output of a KDF).

        Security: anything but 32 bytes raises KeyMaterialError; the caller should drop
        its own copy of ``key``.
        """
        self._key = require_key("HMAC-SHA256 key", key, size=KEY_SIZE)

    def tag(self, message: bytes, *, label: bytes) -> bytes:
        """The 32-byte HMAC-SHA256 tag of :func:`mac_input` ``(message, label)``.

        Security: unforgeable without the key (HMAC-SHA256 is a PRF under the usual
        assumption on SHA-256's compression function). Give each kind of authenticated
        data its own label and put what must not be swapped (owner, version) inside
        ``message``.
        """
        h = _hmac.HMAC(self._key, hashes.SHA256())
        h.update(mac_input(message, label=label))
        return h.finalize()

    def verify(self, message: bytes, tag: bytes, *, label: bytes) -> None:
        """Return only if ``tag`` is this key's tag of ``message`` under ``label``.

        Security: raises :class:`InvalidSignature` on any mismatch (another key, message
        or label, a tag that is not 32 bytes); it never returns False. The comparison is
        constant-time (OpenSSL, via pyca/cryptography).
        """
        require_bytes("tag", tag)
        if len(tag) != TAG_SIZE:
            raise InvalidSignature(f"an HMAC-SHA256 tag is {TAG_SIZE} bytes, got {len(tag)}")
        h = _hmac.HMAC(self._key, hashes.SHA256())
        h.update(mac_input(message, label=label))
        try:
            h.verify(tag)
        except _PycaInvalidSignature:
            raise InvalidSignature(f"MAC does not verify (label {label!r})") from None
