"""The auditor's signed verdict on one session: the trusted participant and the flagged."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field

from crypto.signing import IdentityKey, verify_signature

LABEL = b"securepool/verdict/v1"


@dataclass(frozen=True)
class Verdict:
    session: str
    trusted: str | None
    flagged: Mapping[str, str]  # participant -> reason
    differences: Mapping[str, float] = field(default_factory=dict)
    threshold: float = 0.0

    def payload(self) -> bytes:
        return json.dumps(
            {
                "session": self.session,
                "trusted": self.trusted,
                "flagged": dict(sorted(self.flagged.items())),
                "differences": {k: round(v, 12) for k, v in sorted(self.differences.items())},
                "threshold": round(self.threshold, 12),
            },
            sort_keys=True,
        ).encode()

    def sign(self, key: IdentityKey) -> bytes:
        """Security: the signature binds the session, so a verdict cannot be replayed."""
        return key.sign(self.payload(), label=LABEL)

    def verify(self, public: bytes, signature: bytes) -> None:
        """Raise InvalidSignature unless the auditor signed exactly this verdict."""
        verify_signature(public, self.payload(), signature, label=LABEL)
