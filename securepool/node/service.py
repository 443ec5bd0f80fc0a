"""An agency's node as its own long-lived service: ``securepool node serve --config NODE.toml``.

The service holds everything only the agency may hold: its identity key, its records,
its DP ledger and, during an iteration, its session state (in memory: a restart is a
dropout from the iteration in progress, and the node rejoins at the next one; the ledger
and the replay counters stay in its state directory, owner-only). It answers protocol
messages on a Unix domain socket (:mod:`securepool.runtime.socket_link`) that only its
own user and the one named by ``relay-user`` (the SuperNode's) may connect to. The
ClientApp that Flower starts per message is then a relay of bytes
(:mod:`securepool.node.relay`): whoever can submit an app to the SuperLink reaches the
wire protocol of this socket and nothing else.

NODE.toml, one ``[node]`` table (paths absolute)::

    [node]
    id = "agency1"                          # its id in the PKI; "auditor" for the auditor
    role = "participant"                    # or "auditor"
    config = "/srv/securepool/run.toml"     # the agreed run config
    state-dir = "/srv/securepool/agency1"   # ledger, counters (0700, files 0600)
    registry-dir = "/srv/securepool/registry"
    key-file = "/srv/securepool/agency1/identity.key"   # default: state-dir/identity.key
    records = "/data/agency1.npz"           # participants; default: built-in partition
    torch-threads = 1
    socket = "/run/securepool/agency1.sock" # where the relay connects
    relay-user = "flwr"                     # the SuperNode's OS user (default: none but
                                            # the service's own)

The service logs (``logging``, logger ``securepool.node``) every message it refuses and
why, so the agency sees what happens to it without asking the coordinator.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pwd
import socket
import threading
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crypto.errors import ConfigError, MessageError, SecurePoolError
from securepool.runtime.driver import NodeApp
from securepool.runtime.socket_link import (
    ANSWERED,
    REFUSED,
    LinkError,
    encode_reply,
    peer_uid,
    read_request,
)

log = logging.getLogger("securepool.node")

#: the keys of NODE.toml's [node] table: (required, optional)
REQUIRED = ("id", "role", "config", "state-dir", "registry-dir", "socket")
OPTIONAL = ("key-file", "records", "torch-threads", "relay-user")
#: a request must arrive whole within this many seconds of connecting
READ_DEADLINE = 60.0
#: connections served at once (each waits for the node, one message at a time)
MAX_CONNECTIONS = 16


@dataclass(frozen=True)
class ServiceConfig:
    """NODE.toml's ``[node]`` table, checked (every problem listed at once)."""

    node_id: str
    role: str
    config: Path
    state_dir: Path
    registry_dir: Path
    socket: Path
    key_file: Path | None = None
    records: Path | None = None
    torch_threads: int = 1
    relay_user: str | None = None

    @classmethod
    def from_toml(cls, path: Path) -> ServiceConfig:
        """Read and check NODE.toml. ConfigError listing every problem."""
        try:
            table = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError([f"node config file not found: {path}"]) from None
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError([f"{path}: not a readable TOML file ({exc})"]) from None
        return cls.from_table(table, source=str(path))

    @classmethod
    def from_table(cls, table: Mapping[str, Any], *, source: str = "node config") -> ServiceConfig:
        extra = sorted(set(table) - {"node"})
        node = table.get("node")
        if not isinstance(node, dict):
            raise ConfigError([f"{source}: no [node] table"])
        problems = [f"{source}: unknown table [{k}]" for k in extra]
        problems += [f"node.{k} is required" for k in REQUIRED if k not in node]
        problems += [
            f"node.{k} is not a key of [node] (keys: {', '.join(REQUIRED + OPTIONAL)})"
            for k in sorted(set(node) - set(REQUIRED) - set(OPTIONAL))
        ]
        for k in (*REQUIRED, *OPTIONAL):
            if k != "torch-threads" and k in node and not isinstance(node[k], str):
                problems.append(f"node.{k} must be a string")
        for k in ("config", "state-dir", "registry-dir", "socket", "key-file", "records"):
            if isinstance(node.get(k), str) and not Path(node[k]).is_absolute():
                problems.append(f"node.{k} must be an absolute path, got {node[k]!r}")
        role = node.get("role")
        if role not in ("participant", "auditor"):
            problems.append(f"node.role must be 'participant' or 'auditor', got {role!r}")
        elif (role == "auditor") != (node.get("id") == "auditor"):
            problems.append("the auditor's node.id is 'auditor', and only the auditor's")
        if role == "auditor" and "records" in node:
            problems.append("node.records: the auditor holds no records")
        threads = node.get("torch-threads", 1)
        if type(threads) is not int or threads < 1:
            problems.append(f"node.torch-threads must be an int >= 1, got {threads!r}")
        user = node.get("relay-user")
        if isinstance(user, str):
            try:
                pwd.getpwnam(user)
            except KeyError:
                problems.append(f"node.relay-user: no OS user named {user!r}")
        if problems:
            raise ConfigError(problems)
        opt = {k: Path(node[k]) for k in ("key-file", "records") if k in node}
        return cls(
            node_id=node["id"],
            role=node["role"],
            config=Path(node["config"]),
            state_dir=Path(node["state-dir"]),
            registry_dir=Path(node["registry-dir"]),
            socket=Path(node["socket"]),
            key_file=opt.get("key-file"),
            records=opt.get("records"),
            torch_threads=threads,
            relay_user=node.get("relay-user"),
        )

    def relay_uid(self) -> int | None:
        return None if self.relay_user is None else pwd.getpwnam(self.relay_user).pw_uid


def build_node(cfg: ServiceConfig) -> NodeApp:
    """The node's NodeApp, built once for the service's lifetime (sessions in memory).

    Security: the identity key must be the operator's (``securepool keygen``: 0600, ours)
    and enrolled in the PKI directory; nothing is created but the state directory."""
    from securepool.config import parse_config, parse_toml, read_config_text
    from securepool.node.keys import load_identity
    from securepool.node.serve import KEY_NAME, build_auditor, build_participant

    identity = load_identity(cfg.key_file or cfg.state_dir / KEY_NAME)
    text = read_config_text(cfg.config)
    run = parse_config(parse_toml(text, cfg.config))
    if cfg.role == "auditor":
        return build_auditor(
            config_text=text,
            state_dir=str(cfg.state_dir),
            registry_dir=str(cfg.registry_dir),
            identity=identity,
        )
    from securepool.data import data_shape

    n_features, n_classes = data_shape(run.data)
    return build_participant(
        config_text=text,
        pid=cfg.node_id,
        state_dir=str(cfg.state_dir),
        registry_dir=str(cfg.registry_dir),
        n_features=n_features,
        n_classes=n_classes,
        records=None if cfg.records is None else str(cfg.records),
        torch_threads=cfg.torch_threads,
        identity=identity,
        sessions_on_disk=False,
    )


class ServedNode:
    """The service's NodeApp, rebuilt when the agreed run config's bytes change (a new
    run with another config: the agency replaces the file, the node follows at its next
    message; the iteration in progress, if any, is dropped like after a restart).

    Security: the config is read by the service, never taken from a message."""

    def __init__(self, cfg: ServiceConfig) -> None:
        self.cfg = cfg
        self._digest = b""
        self.app: NodeApp | None = None

    def build(self) -> NodeApp:
        """The node for the config as it is now (rebuilt if its bytes changed)."""
        digest = hashlib.sha256(self.cfg.config.read_bytes()).digest()
        if self.app is None or digest != self._digest:
            if self.app is not None:
                log.info("%s: the run config changed: node rebuilt", self.cfg.node_id)
            self.app, self._digest = build_node(self.cfg), digest
        return self.app

    def handle(self, stage: str, payload: bytes) -> bytes:
        return self.build().handle(stage, payload)


def _refusal(stage: str, reply: bytes) -> str | None:
    """The reason of a refusal the node sends (None if it answered), for its own log."""
    from securepool.node.wire import Reply

    try:
        parsed = Reply.from_bytes(reply)
    except SecurePoolError:
        return None
    if parsed.ok:
        return None
    return str(parsed.meta.get("reason", "refused"))


class NodeService:
    """Serves one NodeApp on a Unix domain socket (see the module docstring).

    ``allowed``: the user ids that may connect besides the service's own.

    Security: a peer of another user id gets a refusal frame and nothing else; the socket
    file is created 0600 (chowned to the one relay user when the service runs as root);
    one message reaches the NodeApp at a time; a malformed or slow request closes only
    its connection."""

    def __init__(self, app: NodeApp, path: Path, *, allowed: frozenset[int] = frozenset()):
        self.app = app
        self.path = Path(path)
        self.allowed = frozenset({os.geteuid()}) | allowed
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self._stop = threading.Event()
        self._sock: socket.socket | None = None
        self.ready = threading.Event()

    def _bind(self) -> socket.socket:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists() or self.path.is_symlink():
            if not self.path.is_socket():
                raise ConfigError([f"node.socket: {self.path} exists and is not a socket"])
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(os.fspath(self.path))
            except OSError:
                self.path.unlink()  # a stale socket of a service that is gone
            else:
                raise ConfigError([f"node.socket: another service listens on {self.path}"])
            finally:
                probe.close()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            sock.bind(os.fspath(self.path))
        finally:
            os.umask(old)
        others = self.allowed - {os.geteuid()}
        if os.geteuid() == 0 and len(others) == 1:
            os.chown(self.path, next(iter(others)), -1)
        os.chmod(self.path, 0o600)
        sock.listen(MAX_CONNECTIONS)
        sock.settimeout(0.2)
        return sock

    def serve_forever(self) -> None:
        """Accept and answer until :meth:`stop`; removes the socket file when it ends."""
        self._sock = self._bind()
        self.ready.set()
        try:
            while not self._stop.is_set():
                try:
                    conn, _addr = self._sock.accept()
                except TimeoutError:
                    continue
                if not self._slots.acquire(blocking=False):
                    conn.close()  # too many at once: the relay sees a dropout
                    continue
                threading.Thread(target=self._serve_one, args=(conn,), daemon=True).start()
        finally:
            self._sock.close()
            self.path.unlink(missing_ok=True)

    def stop(self) -> None:
        self._stop.set()

    def _serve_one(self, conn: socket.socket) -> None:
        try:
            with conn:
                conn.settimeout(READ_DEADLINE)
                uid = peer_uid(conn)
                if uid not in self.allowed:
                    log.warning("refused a connection from user id %d (not the relay's)", uid)
                    conn.sendall(encode_reply(REFUSED, b"this user may not use the node"))
                    return
                try:
                    stage, payload = read_request(conn)
                except (MessageError, LinkError, OSError) as exc:
                    log.warning("dropped a malformed or incomplete request: %s", exc)
                    return
                with self._lock:
                    reply = self.app.handle(stage, payload)
                why = _refusal(stage, reply)
                if why is not None:
                    log.warning("%s: refused: %s", stage, why)
                else:
                    log.debug("%s: answered (%d bytes)", stage, len(reply))
                conn.settimeout(READ_DEADLINE)
                conn.sendall(encode_reply(ANSWERED, reply))
        except OSError as exc:
            log.warning("the relay went away before its reply: %s", exc)
        finally:
            self._slots.release()


def serve(config_path: Path) -> None:
    """``securepool node serve``: build the node, serve until SIGTERM or SIGINT."""
    import signal

    cfg = ServiceConfig.from_toml(config_path)
    app = ServedNode(cfg)
    app.build()  # now: a bad key or config stops the service before it listens
    uid = cfg.relay_uid()
    service = NodeService(app, cfg.socket, allowed=frozenset() if uid is None else frozenset({uid}))

    def stop(_signum: int, _frame: Any) -> None:
        service.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("%s (%s) serving on %s", cfg.node_id, cfg.role, cfg.socket)
    service.serve_forever()
    log.info("%s stopped", cfg.node_id)


__all__ = ["NodeService", "ServedNode", "ServiceConfig", "build_node", "serve"]
