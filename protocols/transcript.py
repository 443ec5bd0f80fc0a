"""Per-role transcripts: everything one role saw, in order.

Every runtime (in-process, Flower, Ray) moves protocol messages between roles; a
:class:`Transcript` records what crossed into or out of one role, as the exact bytes
on the wire, so that tests and audits can show what that role could learn.

Security: a transcript holds only what the role itself saw. Recording never changes
a protocol's behaviour.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path


class Direction(str, Enum):
    RECEIVED = "received"
    SENT = "sent"


@dataclass(frozen=True)
class TranscriptEntry:
    session: str
    direction: Direction
    peer: str
    kind: str
    size: int
    sha256: str
    payload: bytes  # empty when the transcript keeps digests only

    def to_json(self) -> dict[str, object]:
        return {
            "session": self.session,
            "direction": self.direction.value,
            "peer": self.peer,
            "kind": self.kind,
            "bytes": self.size,
            "sha256": self.sha256,
        }


@dataclass
class Transcript:
    """The ordered view of one role (``role``) across sessions.

    With ``keep_payloads=False`` only sizes and SHA-256 digests are kept (long runs).
    """

    role: str
    entries: list[TranscriptEntry] = field(default_factory=list)
    keep_payloads: bool = True

    def record(
        self, *, session: str, direction: Direction, peer: str, kind: str, payload: bytes
    ) -> None:
        data = bytes(payload)
        self.entries.append(
            TranscriptEntry(
                session,
                direction,
                peer,
                kind,
                len(data),
                hashlib.sha256(data).hexdigest(),
                data if self.keep_payloads else b"",
            )
        )

    def received(self, kind: str | None = None) -> list[TranscriptEntry]:
        return [
            e
            for e in self.entries
            if e.direction is Direction.RECEIVED and (kind is None or e.kind == kind)
        ]

    def sent(self, kind: str | None = None) -> list[TranscriptEntry]:
        return [
            e
            for e in self.entries
            if e.direction is Direction.SENT and (kind is None or e.kind == kind)
        ]

    def total_bytes(self) -> int:
        return sum(e.size for e in self.entries)

    def write_jsonl(self, path: Path) -> None:
        """Write a digest of the transcript (sizes and hashes, not the payloads)."""
        with path.open("w", encoding="utf-8") as fh:
            for e in self.entries:
                fh.write(json.dumps({"role": self.role, **e.to_json()}) + "\n")
