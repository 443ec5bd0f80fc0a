"""The one interface between the coordinator and the nodes (participants, the auditor).

The coordinator drives every protocol as a sequence of *stages*. For one stage of every
group of an iteration it builds one message per node and calls
:meth:`Driver.exchange` once, so an iteration costs the protocols' number of round
trips, not that times the number of groups. Each node answers through its
:class:`NodeApp`. A node that does not answer within the timeout, or whose transport
fails, gets ``None``: the protocols treat it as a dropout.

Runtimes move bytes only: the same protocol code runs in-process, across OS processes,
on Flower's deployment runtime and on Flower's simulation engine. Nothing here
authenticates or encrypts: what crosses a link is protected end to end by the protocol
messages themselves (signatures, AEAD, HPKE), and the transport (e.g. Flower's TLS and
node authentication) is defence in depth.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

#: called with a node's id as soon as its reply (or its failure) is in: progress display
OnReply = Callable[[str], None]

#: the largest payload a runtime must carry for one node and stage
MAX_MESSAGE_BYTES = 512 * 1024 * 1024


@dataclass(frozen=True)
class Patience:
    """How long a stage waits for the nodes that have not answered yet (issue 26).

    A runtime cannot always tell a dead node from a slow one: Flower's SuperLink reports
    a killed SuperNode only once two of its 30 s heartbeats have lapsed. So once half of
    a stage's nodes have answered (the pace of the live ones: the median answer took
    ``t`` seconds), the stage waits for the rest until ``max(floor, factor * t)`` seconds
    from its start, and never past its timeout. A node that misses that is a dropout of
    the stage, as at the timeout (SecAgg+ recovers it; an honest straggler misses one
    stage of one iteration). ``factor = 0``: no such bound, every stage may take its
    whole timeout."""

    factor: float  # the run config's ``stage_patience`` (its defaults live there)
    floor: float  # ``stage_patience_floor``, seconds

    def deadline(self, start: float, timeout: float, n: int, answered: Sequence[float]) -> float:
        """When the stage started at ``start`` (monotonic seconds) with ``n`` nodes stops
        waiting, given the times ``answered`` (monotonic, any order) at which nodes
        answered so far."""
        end = start + timeout
        pace = math.ceil(n / 2)
        if self.factor <= 0 or n <= 0 or len(answered) < pace:
            return end
        median = sorted(answered)[pace - 1] - start
        return min(end, start + max(self.floor, self.factor * median))


class NodeApp(Protocol):
    """A node's side: answers one message of one stage with one reply.

    A runtime may build a fresh NodeApp for every message (Flower starts a new ClientApp
    process per message): whatever a node must remember between stages lives in its own
    storage, never in the coordinator's process.
    """

    def handle(self, stage: str, payload: bytes) -> bytes: ...


class Driver(Protocol):
    """The coordinator's side of a runtime."""

    def nodes(self) -> tuple[str, ...]:
        """The node ids this runtime can reach (participant ids and ``"auditor"``)."""
        ...

    def exchange(
        self,
        stage: str,
        batch: Mapping[str, bytes],
        *,
        timeout: float,
        on_reply: OnReply | None = None,
        patience: Patience | None = None,
    ) -> dict[str, bytes | None]:
        """Send ``batch[node]`` to every node named, return every node's reply.

        Every key of ``batch`` is a key of the result; ``None`` means no reply within
        ``timeout`` seconds (or, with ``patience``, by its deadline once half the nodes
        have answered) or a failed transport (a dropout). Never raises because of one
        node. ``on_reply(node)``, if given, is called as each node's reply arrives
        (progress only: it sees no payload). A runtime whose nodes answer synchronously
        (in-process) has nothing to wait for and no use for ``patience``.
        """
        ...

    def close(self) -> None:
        """Stop what this runtime started (processes, connections); idempotent."""
        ...


class ObservingDriver:
    """A Driver that carries every exchange through ``inner`` unchanged and shows it,
    payloads and replies, to :meth:`observe` afterwards (transcripts, byte counts)."""

    def __init__(self, inner: Driver) -> None:
        self._inner = inner

    def nodes(self) -> tuple[str, ...]:
        return self._inner.nodes()

    def exchange(
        self,
        stage: str,
        batch: Mapping[str, bytes],
        *,
        timeout: float,
        on_reply: OnReply | None = None,
        patience: Patience | None = None,
    ) -> dict[str, bytes | None]:
        extra: dict[str, Any] = {}
        if on_reply is not None:
            extra["on_reply"] = on_reply
        if patience is not None:
            extra["patience"] = patience
        replies = self._inner.exchange(stage, batch, timeout=timeout, **extra)
        self.observe(stage, batch, replies)
        return replies

    def observe(
        self, stage: str, batch: Mapping[str, bytes], replies: Mapping[str, bytes | None]
    ) -> None:
        """What a subclass does with one exchange (nothing here)."""

    def close(self) -> None:
        self._inner.close()
