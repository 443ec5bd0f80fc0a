"""Small real NodeApps and a scripted coordinator for the runtime tests.

``SigningNode`` signs what it receives with its own Ed25519 key (a file named in its node
config, never sent), so every reply is checkable by whoever knows the public key, and a
reply that crossed the wrong way (another node's, another stage's) fails verification.
Misbehaving variants (``behaviour`` in node config) are the attacker's side of the wire:
``oversized`` answers with more bytes than the coordinator accepts, ``raise`` fails.

``scripted_coordinator`` is the ServerApp's coordinator in the deployment tests: it runs
the exchanges listed in a JSON plan (``coordinator-args`` = the plan's path), waits for
marker files when told to (so the test can kill a node between two exchanges), and
writes every reply and the driver's counters to the plan's ``out`` file.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from crypto.encoding import bind

DOMAIN = b"securepool/tests/runtime/signing-node/v1"


def statement(node_id: str, stage: str, payload: bytes) -> bytes:
    return bind(DOMAIN, node_id, stage, payload)


def verify(public_key: bytes, node_id: str, stage: str, payload: bytes, reply: bytes) -> None:
    """Raises InvalidSignature unless ``reply`` is node_id's signature of (stage, payload)."""
    Ed25519PublicKey.from_public_bytes(public_key).verify(reply, statement(node_id, stage, payload))


def write_node_key(path: Path) -> bytes:
    """A fresh Ed25519 key in ``path`` (raw, 0600); returns the raw public key."""
    key = Ed25519PrivateKey.generate()
    path.write_bytes(key.private_bytes_raw())
    path.chmod(0o600)
    return key.public_key().public_bytes_raw()


class SigningNode:
    def __init__(self, node_id: str, key: Ed25519PrivateKey, behaviour: str) -> None:
        self.node_id, self.key, self.behaviour = node_id, key, behaviour

    def handle(self, stage: str, payload: bytes) -> bytes:
        if self.behaviour == "raise":
            raise RuntimeError("this node fails on purpose")
        if self.behaviour == "oversized":
            return b"\0" * (2 * 1024 * 1024)
        return self.key.sign(statement(self.node_id, stage, payload))


def make_signing_node(config: Mapping[str, Any]) -> SigningNode:
    """The NodeApp factory named in node config (``factory``)."""
    raw = Path(str(config["key-file"])).read_bytes()
    return SigningNode(
        str(config["node-id"]),
        Ed25519PrivateKey.from_private_bytes(raw),
        str(config.get("behaviour", "honest")),
    )


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


def scripted_coordinator(driver: Any, args: str) -> None:
    """Run the plan at ``args`` (JSON) against ``driver``; write what happened."""
    plan = json.loads(Path(args).read_text())
    out: dict[str, Any] = {"nodes": list(driver.nodes()), "steps": []}
    out_path = Path(plan["out"])
    for step in plan["steps"]:
        if "signal" in step:  # tell the test, then wait for its answer
            Path(step["signal"]).write_text("ready")
            deadline = time.monotonic() + step.get("wait_timeout", 60)
            while not Path(step["wait"]).exists() and time.monotonic() < deadline:
                time.sleep(0.2)
            continue
        targets = step["to"] if step["to"] != "*" else list(driver.nodes())
        batch = {n: f"{step['stage']}:{n}".encode() for n in targets}
        pushes = driver.stats.pushes
        start = time.monotonic()
        replies = driver.exchange(step["stage"], batch, timeout=step["timeout"])
        out["steps"].append(
            {
                "stage": step["stage"],
                "sent": {n: p.hex() for n, p in batch.items()},
                "replies": {n: (r.hex() if r is not None else None) for n, r in replies.items()},
                "seconds": time.monotonic() - start,
                "pushes": driver.stats.pushes - pushes,
                "rejected": dict(driver.stats.rejected),
            }
        )
        out_path.write_text(json.dumps(out))
    out["done"] = True
    out_path.write_text(json.dumps(out))
