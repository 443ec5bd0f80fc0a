"""The Flower transport: a :class:`Driver` over Flower's Message API, and the node side.

Deployment (flwr 1.42): the coordinator runs inside Flower's ``ServerApp`` and talks to
the nodes through :class:`FlowerDriver`, which wraps the ``Grid`` it is given; every
participant and the auditor runs a SuperNode whose ``ClientApp`` answers each message
with :func:`answer`, building the node's :class:`NodeApp` from a factory named in the
SuperNode's own node config. The same two apps run on Flower's simulation engine
(:mod:`.simulation`). Components are in :mod:`.flower_app`.

What goes over the wire is SecurePool's own bytes, one ``ConfigRecord`` per message::

    RecordDict({"securepool": ConfigRecord({"v": 1, "stage": str, "payload": bytes})})

with ``message_type = "query.securepool"``. Flower's TLS protects the link to the
SuperLink and SuperNode authentication keeps unregistered nodes out, but the SuperLink
stores and forwards every message: the protocol messages carry their own end-to-end
protection (see threat_model.md, "Flower deployment").

Round trips: :meth:`FlowerDriver.exchange` pushes one stage's whole batch with a single
``push_messages`` call and pulls the replies every ``poll_interval`` seconds until all
have arrived or ``timeout`` has passed (Flower's ``send_and_receive`` sleeps 3 s between
pulls and may overrun its timeout by that much). A SuperNode itself polls the SuperLink
every 3 s and starts a new ``flwr-clientapp`` process per message (about 3 s): a round
trip costs several seconds whatever its size, so the protocols must need few of them.
"""

from __future__ import annotations

import importlib
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from crypto.encoding import require_identifier
from crypto.errors import ConfigError, SecurePoolError
from securepool.runtime.driver import MAX_MESSAGE_BYTES, NodeApp, OnReply, Patience

# Flower's telemetry posts usage events to Flower's servers unless this is "0"; it is
# read when flwr is first imported. SecurePool sends no traffic anywhere but the
# federation's own addresses.
os.environ["FLWR_TELEMETRY_ENABLED"] = "0"

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.common.constant import SUPERLINK_NODE_ID

from securepool.node.agreement import AUDITOR_ID

#: Flower message type of every SecurePool message ("query" category, own action)
MESSAGE_TYPE = "query.securepool"
#: the one record of a SecurePool message and its format version
RECORD = "securepool"
WIRE_VERSION = 1
#: the discovery stage: a node answers with its SecurePool id and role, no NodeApp runs
HELLO_STAGE = "securepool.hello"
#: node roles (node config ``role``); the auditor's node id is always ``"auditor"``
ROLES = ("participant", "auditor")

_FIELDS = frozenset({"v", "stage", "payload"})


class TransportError(SecurePoolError):
    """The Flower transport cannot work as configured (not one node's failure)."""


def pack(stage: str, payload: bytes) -> RecordDict:
    """The RecordDict carrying one SecurePool message of ``stage``."""
    return RecordDict(
        {RECORD: ConfigRecord({"v": WIRE_VERSION, "stage": stage, "payload": payload})}
    )


def unpack(content: RecordDict, *, max_bytes: int) -> tuple[str, bytes]:
    """``(stage, payload)`` from a SecurePool RecordDict, or :class:`TransportError`.

    Security: everything a peer sent is checked before it is used: exactly one
    ``ConfigRecord`` named ``securepool`` holding exactly ``v``, ``stage`` and
    ``payload``, of the right types, the known version, a valid stage identifier and a
    payload of at most ``max_bytes``. (Flower has already read the whole message into
    memory by then: the limit protects SecurePool's decoders, not Flower's buffers.)
    """
    names = list(content.keys())
    if names != [RECORD]:
        raise TransportError(f"expected the single record {RECORD!r}, got {names!r}")
    record = content[RECORD]
    if not isinstance(record, ConfigRecord):
        raise TransportError(f"record {RECORD!r} is a {type(record).__name__}, not a ConfigRecord")
    keys = set(record.keys())
    if keys != _FIELDS:
        raise TransportError(f"record fields {sorted(keys)!r}, expected {sorted(_FIELDS)!r}")
    version, stage, payload = record["v"], record["stage"], record["payload"]
    if type(version) is not int or version != WIRE_VERSION:
        raise TransportError(f"wire version {version!r}, expected {WIRE_VERSION}")
    if not isinstance(stage, str):
        raise TransportError(f"stage is a {type(stage).__name__}, not a str")
    try:
        require_identifier("stage", stage)
    except SecurePoolError as err:
        raise TransportError(str(err)) from err
    if not isinstance(payload, bytes):
        raise TransportError(f"payload is a {type(payload).__name__}, not bytes")
    if len(payload) > max_bytes:
        raise TransportError(f"payload of {len(payload)} bytes exceeds {max_bytes}")
    return stage, payload


@dataclass
class ExchangeStats:
    """What the driver did, counted by the driver itself (tests and benchmarks read it)."""

    exchanges: int = 0
    pushes: int = 0  # push_messages calls: one per exchange = one round trip per stage
    pulls: int = 0
    rejected: dict[str, int] = field(default_factory=dict)  # node -> replies refused
    #: node -> the SuperLink's error replies (node offline, message expired) taken as
    #: that node's dropout before the stage's timeout
    unavailable: dict[str, int] = field(default_factory=dict)
    last_seconds: float = 0.0
    #: nodes given up on before the stage's timeout by its :class:`Patience` bound
    impatient: int = 0
    #: node -> SecurePool payload bytes pushed to it / accepted from it (the record's
    #: few bytes of envelope, Flower's framing and TLS not counted)
    sent_bytes: dict[str, int] = field(default_factory=dict)
    received_bytes: dict[str, int] = field(default_factory=dict)


class FlowerDriver:
    """The coordinator's :class:`~securepool.runtime.driver.Driver` over a Flower Grid.

    Build it with :meth:`discover` inside a ServerApp: it waits for ``expected`` nodes
    to connect, asks each its SecurePool id (the ``hello`` stage, one round trip) and
    maps ids to Flower node ids. Two Flower nodes claiming one id, or a node id that is
    not a valid identifier, stop the run with :class:`TransportError`: the mapping is
    only as good as Flower's node authentication, so it is checked, not guessed.

    Security: the driver authenticates nothing itself. A reply is accepted only from
    the Flower node the message was sent to, only once, only for the stage that was
    sent, only in the wire format of :func:`unpack` and only up to ``max_reply_bytes``;
    anything else is that node's dropout (``None``), never an error of the exchange.
    The SuperLink's own error reply to a message (node offline, message expired) ends
    that node's wait at once, as a dropout; it can never carry a reply's content.
    Whether the bytes are the node's own is for the protocol messages to prove.
    """

    def __init__(
        self,
        grid: Any,
        node_ids: Mapping[str, int],
        *,
        max_reply_bytes: int = MAX_MESSAGE_BYTES,
        poll_interval: float = 0.5,
    ) -> None:
        if not 0 < max_reply_bytes <= MAX_MESSAGE_BYTES:
            raise ConfigError([f"max_reply_bytes must be in 1..{MAX_MESSAGE_BYTES}"])
        if not poll_interval > 0:
            raise ConfigError(["poll_interval must be > 0"])
        self._grid = grid
        self._ids: dict[str, int] = {
            require_identifier("node id", n): v for n, v in node_ids.items()
        }
        self._max_reply = max_reply_bytes
        self._poll = poll_interval
        self._closed = False
        self.stats = ExchangeStats()

    @classmethod
    def discover(
        cls,
        grid: Any,
        *,
        expected: int,
        timeout: float,
        max_reply_bytes: int = MAX_MESSAGE_BYTES,
        poll_interval: float = 0.5,
    ) -> FlowerDriver:
        """Wait up to ``timeout`` s for ``expected`` nodes, then learn their ids.

        Nodes that do not answer the hello stage within the remaining time are left
        out; fewer than ``expected`` answering raises :class:`TransportError`.
        """
        if expected < 1:
            raise ConfigError(["expected must be >= 1 node"])
        deadline = time.monotonic() + timeout
        flower_ids: list[int] = []
        while time.monotonic() < deadline:
            flower_ids = sorted(int(i) for i in grid.get_node_ids())
            if len(flower_ids) >= expected:
                break
            time.sleep(min(1.0, poll_interval * 2))
        if len(flower_ids) < expected:
            raise TransportError(
                f"{len(flower_ids)} of {expected} nodes connected within {timeout:.0f} s"
            )
        probe = cls(
            grid,
            {f"flower-{i}": i for i in flower_ids},
            max_reply_bytes=min(max_reply_bytes, 4096),
            poll_interval=poll_interval,
        )
        replies = probe.exchange(
            HELLO_STAGE,
            {f"flower-{i}": b"" for i in flower_ids},
            timeout=max(1.0, deadline - time.monotonic()),
        )
        claimed: dict[str, list[int]] = {}
        for name, reply in replies.items():
            if reply is None:
                continue
            node_id, _, role = reply.decode("ascii", "replace").partition("\n")
            try:
                require_identifier("node id", node_id)
            except SecurePoolError as err:
                raise TransportError(f"Flower node {name} claims an invalid id: {err}") from err
            if role not in ROLES or (role == "auditor") != (node_id == AUDITOR_ID):
                raise TransportError(f"Flower node {name} claims id {node_id!r} with role {role!r}")
            claimed.setdefault(node_id, []).append(probe._ids[name])
        doubles = {n: v for n, v in claimed.items() if len(v) > 1}
        if doubles:
            raise TransportError(f"several Flower nodes claim one SecurePool id: {doubles}")
        if len(claimed) < expected:
            raise TransportError(f"{len(claimed)} of {expected} nodes answered the hello stage")
        driver = cls(
            grid,
            {n: v[0] for n, v in claimed.items()},
            max_reply_bytes=max_reply_bytes,
            poll_interval=poll_interval,
        )
        driver.stats = probe.stats  # the hello round trip counts
        return driver

    def nodes(self) -> tuple[str, ...]:
        return tuple(sorted(self._ids))

    def flower_node_id(self, node: str) -> int:
        """The Flower node id behind a SecurePool node id (for logs and tests)."""
        return self._ids[node]

    def exchange(
        self,
        stage: str,
        batch: Mapping[str, bytes],
        *,
        timeout: float,
        on_reply: OnReply | None = None,
        patience: Patience | None = None,
    ) -> dict[str, bytes | None]:
        """One round trip: push every message of ``batch`` at once, pull until done.

        Timeout semantics: returns as soon as every node pushed to has answered or is
        known dead, else when ``timeout`` seconds (from the push) have passed, plus at
        most one pull. A node is known dead when an error reply arrives for its message:
        its own (its ClientApp raised or was killed: a dropout, counted in
        ``stats.rejected``) or the SuperLink's (src = the SuperLink: the node is
        offline or the message expired, counted in ``stats.unavailable``). The SuperLink
        declares a SuperNode offline only once its heartbeat lapses (flwr 1.42: two
        30 s heartbeat intervals, not configurable on the SuperNode), so without
        ``patience`` a node killed mid-stage costs up to the stage's ``timeout``; with
        it, at most ``max(floor, factor x`` the median live node's answer time) once half
        the nodes have answered (:class:`~securepool.runtime.driver.Patience`); in the
        stages after, the SuperLink answers for it at once. Unknown nodes and payloads over the size
        limit are never sent (None at once); a refused push makes every node None.
        """
        if self._closed:
            raise TransportError("the driver is closed")
        require_identifier("stage", stage)
        if not timeout > 0:
            raise ConfigError(["timeout must be > 0"])
        start = time.monotonic()
        result: dict[str, bytes | None] = dict.fromkeys(batch)
        messages: list[Message] = []
        order: list[str] = []
        for node, payload in batch.items():
            if node not in self._ids or len(payload) > MAX_MESSAGE_BYTES:
                continue  # unknown or unreachable node: a dropout, never a crash
            messages.append(
                Message(
                    pack(stage, bytes(payload)),
                    self._ids[node],
                    MESSAGE_TYPE,
                    ttl=max(timeout, 1.0),
                    group_id=stage,
                )
            )
            order.append(node)
        self.stats.exchanges += 1
        if not messages:
            return result
        self.stats.pushes += 1
        try:
            message_ids = list(self._grid.push_messages(messages))
        except Exception:  # the SuperLink refused the whole push: every node drops out
            self.stats.last_seconds = time.monotonic() - start
            return result
        pending: dict[str, tuple[str, int]] = {
            mid: (node, self._ids[node])
            for mid, node in zip(message_ids, order, strict=False)
            if mid is not None
        }
        for node, _ in pending.values():
            self.stats.sent_bytes[node] = self.stats.sent_bytes.get(node, 0) + len(batch[node])
        deadline, sent, answered = start + timeout, len(pending), list[float]()
        while pending:
            self.stats.pulls += 1
            try:
                replies: Iterable[Message] = self._grid.pull_messages(list(pending))
            except Exception:
                replies = ()
            for reply in replies:
                before = dict(pending)
                self._accept(reply, stage, pending, result)
                for mid in before.keys() - pending.keys():
                    if result[before[mid][0]] is not None:
                        answered.append(time.monotonic())
                    if on_reply is not None:
                        on_reply(before[mid][0])
            now = time.monotonic()
            if patience is not None:
                deadline = patience.deadline(start, timeout, sent, answered)
            if not pending or now >= deadline:
                self.stats.impatient += len(pending) if pending and now < start + timeout else 0
                break
            time.sleep(min(self._poll, deadline - now))
        self.stats.last_seconds = time.monotonic() - start
        return result

    def _accept(
        self,
        reply: Message,
        stage: str,
        pending: dict[str, tuple[str, int]],
        result: dict[str, bytes | None],
    ) -> None:
        meta = reply.metadata
        entry = pending.get(meta.reply_to_message_id)
        if entry is None:  # unknown, stale or duplicate reply
            return
        node, flower_id = entry
        if meta.src_node_id == SUPERLINK_NODE_ID and reply.has_error():
            # the SuperLink's own error reply: the node is offline (its heartbeat lapsed)
            # or the message expired. A dropout now rather than at the stage's timeout;
            # the SuperLink relays every message, so it could drop this one anyway.
            del pending[meta.reply_to_message_id]
            self.stats.unavailable[node] = self.stats.unavailable.get(node, 0) + 1
            return
        if meta.src_node_id != flower_id:  # another node answering for this one
            return
        del pending[meta.reply_to_message_id]  # first answer counts, good or bad
        try:
            if reply.has_error() or not reply.has_content():
                raise TransportError(f"node {node} replied with an error")
            got_stage, payload = unpack(reply.content, max_bytes=self._max_reply)
            if got_stage != stage:
                raise TransportError(f"node {node} answered stage {got_stage!r}, not {stage!r}")
        except (TransportError, ValueError, TypeError, KeyError):
            self.stats.rejected[node] = self.stats.rejected.get(node, 0) + 1
            return
        result[node] = payload
        self.stats.received_bytes[node] = self.stats.received_bytes.get(node, 0) + len(payload)

    def close(self) -> None:
        self._closed = True


# --- the node side ------------------------------------------------------------------

NodeFactory = Callable[[Mapping[str, Any]], NodeApp]


def load_callable(spec: str) -> Callable[..., Any]:
    """The callable named ``"package.module:function"`` (a node factory, a coordinator).

    Security: the name comes from the node operator's own SuperNode command line (node
    config), never from a message: a coordinator cannot choose what code a node runs
    beyond the FAB it ships (which a node can pin with ``--trusted-entities``).
    """
    module, sep, attr = spec.partition(":")
    if not sep or not module or not attr:
        raise ConfigError([f"factory {spec!r} must be 'package.module:function'"])
    target = importlib.import_module(module)
    for part in attr.split("."):
        target = getattr(target, part)
    if not callable(target):
        raise ConfigError([f"factory {spec!r} is not callable"])
    return cast(Callable[..., Any], target)


@dataclass(frozen=True)
class NodeSettings:
    """Who this node is, from its node config (or, in simulation, the run config)."""

    node_id: str
    role: str
    factory: str
    config: Mapping[str, Any]

    @classmethod
    def from_context(cls, context: Context) -> NodeSettings:
        node = dict(context.node_config)
        run = dict(context.run_config)
        problems = []
        if "node-id" in node:  # a deployed SuperNode: its operator's node config
            settings = dict(node)
        elif "partition-id" in node and run.get("sim-node-names"):  # simulation
            names = str(run["sim-node-names"]).split(",")
            index = int(node["partition-id"])
            if not 0 <= index < len(names):
                raise ConfigError([f"partition-id {index} has no name in sim-node-names"])
            settings = {
                **node,
                "node-id": names[index],
                "role": "auditor" if names[index] == AUDITOR_ID else "participant",
                "factory": run.get("sim-node-factory", ""),
            }
            if run.get("sim-node-root"):  # the directory the simulated nodes' files are in
                settings["sim-node-root"] = str(run["sim-node-root"])
        else:
            raise ConfigError(["node config has no node-id (set it with --node-config)"])
        node_id, role, factory = (
            settings.get("node-id"),
            settings.get("role"),
            settings.get("factory"),
        )
        try:
            require_identifier("node-id", node_id)
        except SecurePoolError as err:
            problems.append(str(err))
        if role not in ROLES:
            problems.append(f"role {role!r} is not one of {ROLES}")
        elif (role == "auditor") != (node_id == AUDITOR_ID):
            problems.append(f"the auditor's node-id is {AUDITOR_ID!r}, and only the auditor's")
        if not isinstance(factory, str) or not factory:
            problems.append("factory 'package.module:function' is required in the node config")
        if problems:
            raise ConfigError(problems)
        return cls(str(node_id), str(role), str(factory), settings)


def answer(message: Message, context: Context) -> Message:
    """The ClientApp's handler: one SecurePool message in, one reply out.

    The NodeApp is built afresh for every message (Flower starts a new ClientApp process
    per message), so whatever it keeps between stages is in its own files. A NodeApp
    that raises makes Flower send an error reply: that node is a dropout for the stage.

    Security: the incoming message is checked with :func:`unpack` before the NodeApp
    sees it; the NodeApp must itself verify what the payload claims.
    """
    settings = NodeSettings.from_context(context)
    stage, payload = unpack(message.content, max_bytes=MAX_MESSAGE_BYTES)
    if stage == HELLO_STAGE:
        reply = f"{settings.node_id}\n{settings.role}".encode("ascii")
    else:
        factory = cast(NodeFactory, load_callable(settings.factory))
        app = factory(settings.config)
        reply = app.handle(stage, payload)
        if not isinstance(reply, bytes):
            raise TransportError(f"NodeApp returned {type(reply).__name__}, not bytes")
    return Message(pack(stage, reply), reply_to=message)
