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

from collections.abc import Callable, Mapping
from typing import Protocol

#: called with a node's id as soon as its reply (or its failure) is in: progress display
OnReply = Callable[[str], None]

#: the largest payload a runtime must carry for one node and stage
MAX_MESSAGE_BYTES = 512 * 1024 * 1024


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
    ) -> dict[str, bytes | None]:
        """Send ``batch[node]`` to every node named, return every node's reply.

        Every key of ``batch`` is a key of the result; ``None`` means no reply within
        ``timeout`` seconds or a failed transport (a dropout). Never raises because of
        one node. ``on_reply(node)``, if given, is called as each node's reply arrives
        (progress only: it sees no payload).
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
    ) -> dict[str, bytes | None]:
        if on_reply is None:
            replies = self._inner.exchange(stage, batch, timeout=timeout)
        else:
            replies = self._inner.exchange(stage, batch, timeout=timeout, on_reply=on_reply)
        self.observe(stage, batch, replies)
        return replies

    def observe(
        self, stage: str, batch: Mapping[str, bytes], replies: Mapping[str, bytes | None]
    ) -> None:
        """What a subclass does with one exchange (nothing here)."""

    def close(self) -> None:
        self._inner.close()
