"""Small real NodeApps for the runtime tests.

``HashNode`` answers node id + SHA-256 of what it received (stateless: simulations), so a
reply that crossed the wrong way (another node's, another stage's) is caught.
``DyingParticipant`` is a real participant whose SuperNode dies at a chosen stage;
``LyingParticipant`` one that sends the auditor a false binding report in one round.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from crypto.encoding import bind

DOMAIN = b"securepool/tests/runtime/signing-node/v1"


class HashNode:
    """A stateless NodeApp for simulations: replies node id + SHA-256 of the payload."""

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id

    def handle(self, stage: str, payload: bytes) -> bytes:
        import hashlib

        return hashlib.sha256(bind(DOMAIN, self.node_id, stage, payload)).digest()


def make_hash_node(config: Mapping[str, Any]) -> HashNode:
    return HashNode(str(config["node-id"]))


def expected_hash(node_id: str, stage: str, payload: bytes) -> bytes:
    import hashlib

    return hashlib.sha256(bind(DOMAIN, node_id, stage, payload)).digest()


class DyingParticipant:
    """A real participant node whose SuperNode dies at a chosen stage of a chosen beacon
    round: on receiving ``stage`` while its open SecAgg+ session is of ``round``, its
    ClientApp SIGKILLs its own SuperNode (the parent of the flower-superexec that started
    it) and exits, so the message is never answered. Deterministic, unlike a kill timed
    from outside (which races the reply's push)."""

    def __init__(self, node: Any, state_dir: Path, stage: str, round_: int) -> None:
        self.node, self.state_dir, self.stage, self.round = node, state_dir, stage, round_

    def handle(self, stage: str, payload: bytes) -> bytes:
        from securepool.node.wire import NodeStage, decode_bundle

        carried = [st for st, _ in decode_bundle(payload)] if stage == NodeStage.BUNDLE else [stage]
        if self.stage in carried and _session_round(self.state_dir) == self.round:
            import os
            import signal

            import psutil

            superexec = psutil.Process(os.getppid())
            (self.state_dir / "died").write_text(f"{self.stage}@{self.round}")
            os.kill(superexec.ppid(), signal.SIGKILL)  # the SuperNode
            superexec.kill()
            os._exit(1)
        reply: bytes = self.node.handle(stage, payload)
        return reply


def make_dying_participant(config: Mapping[str, Any]) -> DyingParticipant:
    """``securepool.node.serve:flower_participant`` plus ``dies-at = "STAGE@ROUND"``."""
    from securepool.node.serve import flower_participant

    own = {k: v for k, v in config.items() if k != "dies-at"}
    stage, round_ = str(config["dies-at"]).rsplit("@", 1)
    return DyingParticipant(
        flower_participant(own), Path(str(own["state-dir"])), stage, int(round_)
    )


class LyingParticipant:
    """A real participant node that lies to the auditor in one beacon round: its
    consistency signature carries a sealed binding report that is not one (64 zero
    bytes) instead of the report its client sealed. The lie is the node's own outgoing
    bytes, so every other role meets it on the wire; the auditor must flag it."""

    def __init__(self, node: Any, state_dir: Path, round_: int) -> None:
        self.node, self.state_dir, self.round = node, state_dir, round_
        self.lied = 0

    def handle(self, stage: str, payload: bytes) -> bytes:
        from securepool.node.wire import NodeStage, decode_bundle

        lying = _session_round(self.state_dir) == self.round
        reply: bytes = self.node.handle(stage, payload)
        if not lying:
            return reply
        if stage == NodeStage.SECAGG_SURVIVORS.value:
            return self._lie(reply)
        if stage == NodeStage.BUNDLE.value:
            from securepool.node.wire import Reply, pack_list, unpack_list

            stages = [st for st, _ in decode_bundle(payload)]
            outer = Reply.from_bytes(reply)
            parts = unpack_list(outer.body, what="bundle replies")
            parts = [
                self._lie(p) if st == NodeStage.SECAGG_SURVIVORS.value else p
                for st, p in zip(stages, parts, strict=True)
            ]
            return Reply(outer.ok, pack_list(parts), outer.meta).to_bytes()
        return reply

    def _lie(self, raw: bytes) -> bytes:
        import dataclasses

        from protocols.secagg.messages import decode_message, encode_message
        from securepool.node.wire import Reply

        reply = Reply.from_bytes(raw)
        if not reply.ok:
            return raw
        msg = decode_message(reply.body)
        forged = dataclasses.replace(msg, sealed_report=b"\x00" * 64)  # type: ignore[type-var]
        self.lied += 1
        return Reply(True, encode_message(forged), reply.meta).to_bytes()


def _session_round(state_dir: Path) -> int | None:
    """The beacon round of the node's open SecAgg+ session (from its session file)."""
    try:
        doc = json.loads((state_dir / "session.json").read_text())
        return int(json.loads(doc["secagg"])["state"]["_iteration"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def make_lying_participant(config: Mapping[str, Any]) -> LyingParticipant:
    """``securepool.node.serve:flower_participant`` plus ``lies-at = "ROUND"``."""
    from securepool.node.serve import flower_participant

    own = {k: v for k, v in config.items() if k != "lies-at"}
    return LyingParticipant(
        flower_participant(own), Path(str(own["state-dir"])), int(config["lies-at"])
    )
