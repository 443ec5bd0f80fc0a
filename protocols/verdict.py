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
#: the start of a flag's reason for a lie an honest participant cannot produce (a binding
#: report that contradicts its own masked input, an omitted or false mask seed, a weight
#: other than the one the run allows): the coordinator marks its liar at once, whatever
#: the strike rule (the strikes spare honest outliers of the statistical checks only)
PROVEN = "proven lie: "


def proven(reason: str) -> str:
    """``reason`` as the reason of a proven lie (see :data:`PROVEN`)."""
    return reason if reason.startswith(PROVEN) else PROVEN + reason


def is_proven(reason: str) -> bool:
    """Whether a flag's ``reason`` names a proven lie (see :data:`PROVEN`)."""
    return reason.startswith(PROVEN)


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
