"""Transcripts of what crossed the wire, for every runtime (``run.record_transcripts``).

:class:`TranscriptRecorder` wraps the coordinator's :class:`Driver`: every message the
coordinator sends and every reply it gets back is recorded twice, once in the
coordinator's transcript and once in the node's own (``received`` there what the
coordinator ``sent``). A bundle (several stages for one node in one round trip) is
recorded part by part under each part's stage, so a transcript reads the same whatever
the runtime batched. Entries carry the stage (``kind``; a reply is ``<stage>:reply``),
the size and SHA-256 of the exact bytes, and, with ``keep_payloads``, the bytes
themselves (hex). The ``session`` of an entry is the SecAgg+ session its message names
where the message is a masked input (the audit compares masked inputs per session), else
the number of the exchange it travelled in.

Security: recording only reads the bytes the runtime moves; it never changes them, and
it sees nothing a role did not send or receive.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from crypto.errors import SecurePoolError
from securepool.runtime.driver import Driver, ObservingDriver

REPLY = ":reply"
#: the stage whose replies are the masked inputs (their session is read from them)
MASKED_INPUT_STAGE = "secagg/shares"
BUNDLE_STAGE = "bundle"


def _session_of_masked(raw: bytes) -> str | None:
    from protocols.secagg.messages import MaskedInput, decode_message
    from securepool.node.wire import Reply

    try:
        session: str = decode_message(Reply.from_bytes(raw).body, MaskedInput).session
        return session
    except (SecurePoolError, ValueError):
        return None


def _parts(stage: str, payload: bytes) -> list[tuple[str, bytes]]:
    """A message as its stages' parts (a bundle opened, anything else as it is)."""
    if stage != BUNDLE_STAGE:
        return [(stage, payload)]
    from securepool.node.wire import decode_bundle

    try:
        return decode_bundle(payload)
    except SecurePoolError:
        return [(stage, payload)]


def _reply_parts(stages: list[str], raw: bytes) -> list[tuple[str, bytes]]:
    if len(stages) == 1:
        return [(stages[0], raw)]
    from securepool.node.wire import Reply, unpack_list

    try:
        reply = Reply.from_bytes(raw)
        items = unpack_list(reply.body, what="bundle replies", expected=len(stages))
    except SecurePoolError:
        return [(BUNDLE_STAGE, raw)]
    return list(zip(stages, items, strict=True))


class TranscriptRecorder:
    """Every role's transcript of one run (see the module docstring)."""

    def __init__(self, *, keep_payloads: bool = False) -> None:
        self.keep_payloads = keep_payloads
        self.entries: dict[str, list[dict[str, Any]]] = {}
        self._exchanges = 0

    def wrap(self, driver: Driver) -> Driver:
        return _RecordingDriver(driver, self)

    def _add(
        self, role: str, *, direction: str, peer: str, kind: str, session: str, data: bytes
    ) -> None:
        entry: dict[str, Any] = {
            "role": role,
            "session": session,
            "direction": direction,
            "peer": peer,
            "kind": kind,
            "bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
        }
        if self.keep_payloads:
            entry["payload_hex"] = data.hex()
        self.entries.setdefault(role, []).append(entry)

    def _message(self, *, sender: str, receiver: str, kind: str, session: str, data: bytes) -> None:
        self._add(sender, direction="sent", peer=receiver, kind=kind, session=session, data=data)
        self._add(
            receiver, direction="received", peer=sender, kind=kind, session=session, data=data
        )

    def record(
        self, stage: str, batch: Mapping[str, bytes], replies: Mapping[str, bytes | None]
    ) -> None:
        self._exchanges += 1
        default = f"exchange-{self._exchanges:06d}"
        for node in sorted(batch):
            parts = _parts(stage, bytes(batch[node]))
            for kind, data in parts:
                self._message(
                    sender="coordinator", receiver=node, kind=kind, session=default, data=data
                )
            raw = replies.get(node)
            if raw is None:
                continue
            for kind, data in _reply_parts([k for k, _ in parts], raw):
                session = default
                if kind == MASKED_INPUT_STAGE:
                    session = _session_of_masked(data) or default
                self._message(
                    sender=node,
                    receiver="coordinator",
                    kind=kind + REPLY,
                    session=session,
                    data=data,
                )

    def append_to(self, directory: Path) -> None:
        """Append every role's entries to ``directory/<role>.jsonl`` (a resumed run adds
        its part to the earlier one's)."""
        directory.mkdir(exist_ok=True)
        for role, rows in sorted(self.entries.items()):
            with (directory / f"{role}.jsonl").open("a", encoding="utf-8") as fh:
                for row in rows:
                    fh.write(json.dumps(row) + "\n")


class _RecordingDriver(ObservingDriver):
    def __init__(self, inner: Driver, recorder: TranscriptRecorder) -> None:
        super().__init__(inner)
        self._recorder = recorder

    def observe(
        self, stage: str, batch: Mapping[str, bytes], replies: Mapping[str, bytes | None]
    ) -> None:
        self._recorder.record(stage, batch, replies)
