"""The ClientApp side of a node service: a relay of bytes (``factory =
"securepool.node.relay:relay"``).

A SuperNode whose node config names ``relay`` (the node service's socket,
:mod:`securepool.node.service`) builds this NodeApp for every message: it forwards the
stage and payload to the socket and returns the service's reply. It imports no torch,
reads no key, no record and no state file, and holds no secret: an app anyone submits
through the SuperLink runs beside it with exactly its reach, the wire protocol.

Node config (``flower-supernode --node-config``): ``node-id``, ``role``, ``factory``,
``relay`` (absolute socket path); nothing else is accepted (a key, records or a state
directory in a relay's node config is refused: they belong to the service).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from crypto.errors import ConfigError
from securepool.runtime.socket_link import LocalLink

#: the node config keys of a relay SuperNode
RELAY_KEYS = ("node-id", "role", "factory", "relay")


class RelayApp:
    """A NodeApp that forwards every message to the node service at ``link``."""

    def __init__(self, link: LocalLink) -> None:
        self.link = link

    def handle(self, stage: str, payload: bytes) -> bytes:
        """The service's reply. Security: bytes in, bytes out; LinkError (the node is a
        dropout for this stage) if the service is not there or refuses this user."""
        return self.link.exchange(stage, payload)


def relay(node_config: Mapping[str, Any]) -> RelayApp:
    """The relay NodeApp from a SuperNode's node config (every problem listed at once)."""
    problems = [f"node config has no {k!r}" for k in RELAY_KEYS if k not in node_config]
    problems += [
        f"node config key {k!r} is not a relay's (keys, records and state belong to the "
        "node service)"
        for k in sorted(set(node_config) - set(RELAY_KEYS))
    ]
    path = node_config.get("relay")
    if isinstance(path, str) and not Path(path).is_absolute():
        problems.append(f"relay must be an absolute socket path, got {path!r}")
    if problems:
        raise ConfigError(problems)
    return RelayApp(LocalLink(Path(str(path))))


__all__ = ["RELAY_KEYS", "RelayApp", "relay"]
