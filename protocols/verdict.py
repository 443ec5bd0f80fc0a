"""The auditor's signed verdict on one session: the trusted participant and the flagged.

The signed payload is :func:`crypto.encoding.bind` of every field under a versioned
domain (floats as their 8-byte IEEE bits), so two different verdicts never sign the same
bytes; the session and every participant id are validated identifiers.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass, field

from crypto.encoding import bind, require_identifier
from crypto.signing import IdentityKey, verify_signature

LABEL = b"securepool/verdict/v2"
_DOMAIN = b"securepool/verdict/payload/v2"
_F64 = struct.Struct(">d")


@dataclass(frozen=True)
class Verdict:
    session: str
    trusted: str | None
    flagged: Mapping[str, str]  # participant -> reason
    differences: Mapping[str, float] = field(default_factory=dict)
    threshold: float = 0.0

    def payload(self) -> bytes:
        """The signed bytes. Security: injective in every field (CryptoError for an
        invalid session or participant id); ``trusted = None`` encodes as empty bytes,
        which no id can be."""
        fields: list[bytes | str | int] = [
            require_identifier("session", self.session),
            b"" if self.trusted is None else require_identifier("trusted", self.trusted),
            len(self.flagged),
        ]
        for pid, reason in sorted(self.flagged.items()):
            fields += [require_identifier("flagged", pid), reason]
        fields.append(len(self.differences))
        for pid, diff in sorted(self.differences.items()):
            fields += [require_identifier("participant", pid), _F64.pack(float(diff))]
        fields.append(_F64.pack(float(self.threshold)))
        return bind(_DOMAIN, *fields)

    def sign(self, key: IdentityKey) -> bytes:
        """Security: the signature binds the session, so a verdict cannot be replayed."""
        return key.sign(self.payload(), label=LABEL)

    def verify(self, public: bytes, signature: bytes) -> None:
        """Raise InvalidSignature unless the auditor signed exactly this verdict."""
        verify_signature(public, self.payload(), signature, label=LABEL)
