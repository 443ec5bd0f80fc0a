"""The Flower driver and ClientApp handler against crafted Flower messages.

A node (or anyone who can put messages on the SuperLink) is the attacker here: the
replies below are built as a malicious ClientApp would build them, pushed through a Grid
that behaves like Flower's (message ids from push_messages, replies by pull_messages)
into the real FlowerDriver.exchange; and crafted requests go into the real ClientApp
handler. The end-to-end deployment is in test_flower_deployment.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

import pytest

flower = pytest.importorskip(
    "securepool.runtime.flower", reason="flwr is not installed (it is a dependency)"
)

from flwr.app import (  # noqa: E402
    ArrayRecord,
    ConfigRecord,
    Context,
    Error,
    Message,
    RecordDict,
)
from flwr.common.constant import SUPERLINK_NODE_ID  # noqa: E402
from flwr.supercore.task_identity import TaskIdentity  # noqa: E402

from crypto.errors import ConfigError  # noqa: E402
from securepool.runtime.driver import Patience  # noqa: E402

FlowerDriver = flower.FlowerDriver
TransportError = flower.TransportError

Reply = Callable[[Message], list[Message]]


@pytest.fixture(autouse=True)
def _task_identity() -> None:
    TaskIdentity.run_id = 1
    TaskIdentity.task_id = 1
    TaskIdentity.node_id = 1


def honest(msg: Message) -> list[Message]:
    stage, payload = flower.unpack(msg.content, max_bytes=1 << 20)
    return [Message(flower.pack(stage, b"ok:" + payload), reply_to=msg)]


class FakeGrid:
    """Flower's Grid contract: push assigns message ids, pull returns replies once."""

    def __init__(self, behaviours: dict[int, Reply]) -> None:
        self.behaviours = behaviours
        self.outbox: list[Message] = []
        self.pushes = 0

    def get_node_ids(self) -> Iterable[int]:
        return list(self.behaviours)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        self.pushes += 1
        ids = []
        for msg in messages:
            msg.metadata.__dict__["_message_id"] = msg.object_id
            ids.append(msg.metadata.message_id)
            self.outbox.extend(self.behaviours[msg.metadata.dst_node_id](msg))
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        wanted = set(message_ids)
        out = [m for m in self.outbox if m.metadata.reply_to_message_id in wanted]
        self.outbox = [m for m in self.outbox if m not in out]
        return out


def driver_for(behaviours: dict[str, Reply], **kw: Any) -> tuple[FlowerDriver, FakeGrid]:
    ids = {name: 100 + i for i, name in enumerate(behaviours)}
    grid = FakeGrid({ids[n]: b for n, b in behaviours.items()})
    return FlowerDriver(grid, ids, poll_interval=0.01, **kw), grid


def reply_with(content: RecordDict) -> Reply:
    return lambda msg: [Message(content, reply_to=msg)]


def test_one_exchange_is_one_push_and_returns_every_reply() -> None:
    driver, grid = driver_for({"p1": honest, "p2": honest, "p3": honest})
    replies = driver.exchange("s1", {n: n.encode() for n in driver.nodes()}, timeout=5)
    assert replies == {"p1": b"ok:p1", "p2": b"ok:p2", "p3": b"ok:p3"}
    assert grid.pushes == 1 and driver.stats.pushes == 1 and driver.stats.exchanges == 1


MALFORMED = {
    "other record name": RecordDict(
        {"evil": ConfigRecord({"v": 1, "stage": "s1", "payload": b""})}
    ),
    "two records": RecordDict(
        {
            "securepool": ConfigRecord({"v": 1, "stage": "s1", "payload": b""}),
            "extra": ConfigRecord({"x": 1}),
        }
    ),
    "array record": RecordDict({"securepool": ArrayRecord()}),
    "missing payload": RecordDict({"securepool": ConfigRecord({"v": 1, "stage": "s1"})}),
    "extra field": RecordDict(
        {"securepool": ConfigRecord({"v": 1, "stage": "s1", "payload": b"", "node": "p2"})}
    ),
    "other version": RecordDict(
        {"securepool": ConfigRecord({"v": 2, "stage": "s1", "payload": b""})}
    ),
    "bool version": RecordDict(
        {"securepool": ConfigRecord({"v": True, "stage": "s1", "payload": b""})}
    ),
    "str payload": RecordDict(
        {"securepool": ConfigRecord({"v": 1, "stage": "s1", "payload": "x"})}
    ),
    "other stage": RecordDict(
        {"securepool": ConfigRecord({"v": 1, "stage": "s0", "payload": b""})}
    ),
    "bad stage id": RecordDict(
        {"securepool": ConfigRecord({"v": 1, "stage": "s1\n", "payload": b""})}
    ),
    "oversized": RecordDict(
        {"securepool": ConfigRecord({"v": 1, "stage": "s1", "payload": b"\0" * 1025})}
    ),
}


@pytest.mark.parametrize("kind", sorted(MALFORMED))
def test_a_malformed_or_oversized_reply_is_a_dropout_of_that_node_only(kind: str) -> None:
    driver, _ = driver_for(
        {"p1": honest, "p2": reply_with(MALFORMED[kind]), "p3": honest}, max_reply_bytes=1024
    )
    replies = driver.exchange("s1", {n: b"x" for n in driver.nodes()}, timeout=2)
    assert replies == {"p1": b"ok:x", "p2": None, "p3": b"ok:x"}
    assert driver.stats.rejected == {"p2": 1}


def test_bytes_are_counted_per_node_and_a_refused_reply_counts_nothing() -> None:
    driver, _ = driver_for(
        {"p1": honest, "p2": reply_with(MALFORMED["oversized"])}, max_reply_bytes=1024
    )
    driver.exchange("s1", {"p1": b"abcd", "p2": b"xy"}, timeout=2)
    driver.exchange("s1", {"p1": b"e"}, timeout=2)
    assert driver.stats.sent_bytes == {"p1": 5, "p2": 2}
    assert driver.stats.received_bytes == {"p1": len(b"ok:abcd") + len(b"ok:e")}


def test_an_error_reply_is_a_dropout() -> None:
    def fail(msg: Message) -> list[Message]:
        return [Message(Error(code=1, reason="ClientApp raised"), reply_to=msg)]

    driver, _ = driver_for({"p1": honest, "p2": fail})
    assert driver.exchange("s1", {"p1": b"a", "p2": b"b"}, timeout=2) == {
        "p1": b"ok:a",
        "p2": None,
    }


def test_the_superlinks_error_for_a_dead_node_ends_its_wait_but_cannot_carry_content() -> None:
    """What the SuperLink sends when a node's heartbeat lapsed (src = the SuperLink),
    and the same sender trying to pass content off as a node's reply."""

    def superlink(src_content: RecordDict | None) -> Reply:
        def reply(msg: Message) -> list[Message]:
            if src_content is None:
                out = Message(Error(code=5, reason="node unavailable"), reply_to=msg)
            else:
                out = Message(src_content, reply_to=msg)
            out.metadata.__dict__["_src_node_id"] = SUPERLINK_NODE_ID
            return [out]

        return reply

    driver, _ = driver_for({"p1": honest, "p2": superlink(None)})
    start = time.monotonic()
    replies = driver.exchange("s1", {"p1": b"a", "p2": b"b"}, timeout=30)
    assert replies == {"p1": b"ok:a", "p2": None}
    assert time.monotonic() - start < 5  # not the stage's 30 s
    assert driver.stats.unavailable == {"p2": 1}
    driver, _ = driver_for({"p1": honest, "p2": superlink(flower.pack("s1", b"forged"))})
    replies = driver.exchange("s1", {"p1": b"a", "p2": b"b"}, timeout=0.5)
    assert replies == {"p1": b"ok:a", "p2": None}
    assert driver.stats.unavailable == {}


def test_the_exchange_ends_when_every_node_answered_or_is_known_dead() -> None:
    """Issue 26: no stage timeout is spent on a node Flower reports dead, by its own
    error reply (its ClientApp raised or was killed) or the SuperLink's (the node is
    offline); a silent node alone costs the timeout."""

    def app_failed(msg: Message) -> list[Message]:
        return [Message(Error(code=1, reason="ClientApp exited"), reply_to=msg)]

    def offline(msg: Message) -> list[Message]:
        out = Message(Error(code=5, reason="node unavailable"), reply_to=msg)
        out.metadata.__dict__["_src_node_id"] = SUPERLINK_NODE_ID
        return [out]

    behaviours: dict[str, Reply] = {"p1": honest, "p2": app_failed, "p3": offline}
    driver, _ = driver_for(behaviours)
    start = time.monotonic()
    got = driver.exchange("s1", {"p1": b"a", "p2": b"b", "p3": b"c"}, timeout=60)
    assert time.monotonic() - start < 5  # not the stage's 60 s
    assert got == {"p1": b"ok:a", "p2": None, "p3": None}
    assert driver.stats.rejected == {"p2": 1} and driver.stats.unavailable == {"p3": 1}
    driver, _ = driver_for({**behaviours, "p4": lambda msg: []})
    start = time.monotonic()
    got = driver.exchange("s1", {"p1": b"a", "p2": b"b", "p3": b"c", "p4": b"d"}, timeout=0.5)
    assert 0.5 <= time.monotonic() - start < 5  # the silent node is waited for
    assert got == {"p1": b"ok:a", "p2": None, "p3": None, "p4": None}


def test_a_node_cannot_answer_for_another() -> None:
    """p2 answers p1's message (its id, p2 as sender) and keeps quiet on its own."""
    holder: dict[str, Message] = {}

    def remember(msg: Message) -> list[Message]:
        holder["p1"] = msg
        return []

    def impostor(msg: Message) -> list[Message]:
        forged = Message(flower.pack("s1", b"forged"), reply_to=holder["p1"])
        forged.metadata.__dict__["_src_node_id"] = msg.metadata.dst_node_id
        return [forged]

    driver, _ = driver_for({"p1": remember, "p2": impostor})
    assert driver.exchange("s1", {"p1": b"a", "p2": b"b"}, timeout=0.3) == {
        "p1": None,
        "p2": None,
    }


def test_the_first_reply_counts_and_a_second_cannot_replace_it() -> None:
    def twice(msg: Message) -> list[Message]:
        return [
            Message(flower.pack("s1", b"first"), reply_to=msg),
            Message(flower.pack("s1", b"second"), reply_to=msg),
        ]

    driver, _ = driver_for({"p1": twice})
    assert driver.exchange("s1", {"p1": b""}, timeout=2) == {"p1": b"first"}


def test_a_stale_reply_from_an_earlier_stage_is_ignored() -> None:
    kept: list[Message] = []

    def late(msg: Message) -> list[Message]:
        kept.append(msg)
        if len(kept) == 1:
            return []  # silent in stage s1 ...
        # ... then answers s2 with its s1 reply and the genuine s2 one
        return [
            Message(flower.pack("s1", b"old"), reply_to=kept[0]),
            Message(flower.pack("s2", b"new"), reply_to=msg),
        ]

    driver, _ = driver_for({"p1": late})
    assert driver.exchange("s1", {"p1": b""}, timeout=0.2) == {"p1": None}
    assert driver.exchange("s2", {"p1": b""}, timeout=2) == {"p1": b"new"}


def test_a_silent_node_is_none_within_the_timeout() -> None:
    driver, _ = driver_for({"p1": honest, "p2": lambda msg: []})
    start = time.monotonic()
    replies = driver.exchange("s1", {"p1": b"a", "p2": b"b"}, timeout=0.5)
    assert replies == {"p1": b"ok:a", "p2": None}
    assert time.monotonic() - start < 0.5 + 0.5  # the deadline, plus at most one poll


def test_unknown_nodes_are_none_and_never_sent_to() -> None:
    driver, grid = driver_for({"p1": honest})
    assert driver.exchange("s1", {"p1": b"a", "ghost": b"b"}, timeout=1) == {
        "p1": b"ok:a",
        "ghost": None,
    }
    assert driver.exchange("s2", {"ghost": b"b"}, timeout=1) == {"ghost": None}
    assert grid.pushes == 1


def hello(node_id: str, role: str) -> Reply:
    return lambda msg: [
        Message(flower.pack(flower.HELLO_STAGE, f"{node_id}\n{role}".encode()), reply_to=msg)
    ]


def test_discover_maps_ids() -> None:
    grid = FakeGrid({7: hello("p1", "participant"), 8: hello("auditor", "auditor")})
    driver = FlowerDriver.discover(grid, expected=2, timeout=5, poll_interval=0.01)
    assert driver.nodes() == ("auditor", "p1")
    assert driver.flower_node_id("p1") == 7 and driver.stats.pushes == 1


@pytest.mark.parametrize(
    "claims",
    [
        [("p1", "participant"), ("p1", "participant")],  # two nodes, one id
        [("p1", "auditor"), ("p2", "participant")],  # a participant posing as auditor
        [("auditor", "participant"), ("p2", "participant")],
        [("p1 x", "participant"), ("p2", "participant")],  # not an identifier
    ],
)
def test_discover_refuses_ambiguous_or_false_claims(claims: list[tuple[str, str]]) -> None:
    grid = FakeGrid({10 + i: hello(n, r) for i, (n, r) in enumerate(claims)})
    with pytest.raises(TransportError):
        FlowerDriver.discover(grid, expected=2, timeout=5, poll_interval=0.01)


def test_discover_fails_when_too_few_nodes_connect() -> None:
    grid = FakeGrid({7: hello("p1", "participant")})
    with pytest.raises(TransportError, match="1 of 2 nodes"):
        FlowerDriver.discover(grid, expected=2, timeout=0.2, poll_interval=0.01)


# --- the node side: crafted requests into the ClientApp handler ------------------------


def node_context(**node_config: Any) -> Context:
    return Context(run_id=1, node_id=5, node_config=node_config, state=RecordDict(), run_config={})


GOOD_NODE = {"node-id": "p1", "role": "participant", "factory": "nodeapps:make_hash_node"}


def request(content: RecordDict) -> Message:
    msg = Message(content, 5, flower.MESSAGE_TYPE)
    msg.metadata.__dict__["_message_id"] = msg.object_id
    return msg


def test_the_client_app_answers_with_its_node_app() -> None:
    import nodeapps

    reply = flower.answer(request(flower.pack("s1", b"hi")), node_context(**GOOD_NODE))
    assert flower.unpack(reply.content, max_bytes=64) == (
        "s1",
        nodeapps.expected_hash("p1", "s1", b"hi"),
    )
    hello_reply = flower.answer(
        request(flower.pack(flower.HELLO_STAGE, b"")), node_context(**GOOD_NODE)
    )
    assert flower.unpack(hello_reply.content, max_bytes=64)[1] == b"p1\nparticipant"


# "oversized" and "other stage" are well-formed requests as far as the node can tell
# (the size limit and the stage sequence are the coordinator's checks on replies)
@pytest.mark.parametrize("kind", sorted(set(MALFORMED) - {"oversized", "other stage"}))
def test_the_client_app_refuses_malformed_requests(kind: str) -> None:
    with pytest.raises(TransportError):
        flower.answer(request(MALFORMED[kind]), node_context(**GOOD_NODE))


@pytest.mark.parametrize(
    "config, problem",
    [
        ({"role": "participant", "factory": "m:f"}, "no node-id"),
        ({**GOOD_NODE, "role": "superuser"}, "role"),
        ({**GOOD_NODE, "role": "auditor"}, "auditor"),
        ({**GOOD_NODE, "node-id": "auditor"}, "auditor"),
        ({**GOOD_NODE, "factory": ""}, "factory"),
        ({**GOOD_NODE, "node-id": "../etc"}, "node-id"),
    ],
)
def test_node_config_problems_are_named(config: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        flower.NodeSettings.from_context(node_context(**config))


def test_factory_names_must_be_module_colon_function() -> None:
    with pytest.raises(ConfigError):
        flower.load_callable("nodeapps.make_hash_node")
    with pytest.raises(ConfigError):
        flower.load_callable("nodeapps:DOMAIN")


def test_patience_ends_the_wait_for_a_silent_node_once_half_have_answered() -> None:
    """Issue 26: a SuperNode killed mid-stage is silent until the SuperLink's heartbeat
    verdict (about a minute); with the run's patience the stage stops waiting at
    max(floor, factor x the median answer time), far below its timeout, and the silent
    node is a dropout. A late answer in time is still taken."""
    silent: dict[str, Reply] = {"p1": honest, "p2": honest, "p3": honest, "p4": lambda m: []}
    driver, _ = driver_for(silent)
    start = time.monotonic()
    got = driver.exchange(
        "s1", {n: n.encode() for n in silent}, timeout=60, patience=Patience(3.0, 0.3)
    )
    assert time.monotonic() - start < 5  # not the stage's 60 s
    assert got == {"p1": b"ok:p1", "p2": b"ok:p2", "p3": b"ok:p3", "p4": None}
    assert driver.stats.impatient == 1
    # fewer than half answered: patience sets no bound, the timeout does
    driver, _ = driver_for({"p1": honest, "p2": lambda m: [], "p3": lambda m: []})
    start = time.monotonic()
    got = driver.exchange(
        "s1", {"p1": b"a", "p2": b"b", "p3": b"c"}, timeout=0.6, patience=Patience(3.0, 0.01)
    )
    assert time.monotonic() - start >= 0.6 and got["p1"] == b"ok:a"


def test_patience_deadline() -> None:
    p = Patience(factor=3.0, floor=10.0)
    assert p.deadline(100.0, 600.0, 10, [101.0, 102.0, 103.0, 104.0]) == 700.0  # 4 < 5
    assert p.deadline(100.0, 600.0, 10, [104.0, 101.0, 102.0, 103.0, 108.0]) == 124.0
    assert p.deadline(100.0, 600.0, 10, [101.0] * 5) == 110.0  # the floor
    assert p.deadline(100.0, 20.0, 10, [108.0] * 9) == 120.0  # never past the timeout
    assert Patience(0.0, 10.0).deadline(100.0, 600.0, 4, [101.0] * 4) == 700.0  # off
    assert Patience(3.0, 10.0).deadline(100.0, 600.0, 1, [130.0]) == 190.0  # a lone node
