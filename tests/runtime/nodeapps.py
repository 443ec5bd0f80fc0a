"""Small real NodeApps for the runtime tests.

``HashNode`` answers node id + SHA-256 of what it received (stateless: simulations), so a
reply that crossed the wrong way (another node's, another stage's) is caught.
``DyingParticipant`` is a real participant whose SuperNode dies at a chosen stage.
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

    def _session_round(self) -> int | None:
        try:
            doc = json.loads((self.state_dir / "session.json").read_text())
            return int(json.loads(doc["secagg"])["state"]["_iteration"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def handle(self, stage: str, payload: bytes) -> bytes:
        if stage == self.stage and self._session_round() == self.round:
            import os
            import signal

            import psutil

            superexec = psutil.Process(os.getppid())
            (self.state_dir / "died").write_text(f"{stage}@{self.round}")
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
