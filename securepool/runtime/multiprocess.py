"""MultiprocessDriver: every node in its own OS process, over a pipe of its own.

Each node is a ``multiprocessing`` *forkserver* child: forked from a fresh server
interpreter that has only imported the node's code (``preload``), never from the
coordinator's process, so nothing of the coordinator's memory is inherited, and the
heavy imports (torch) are paid once, not once per node. The child builds its
:class:`NodeApp` itself from a :class:`NodeSpec` (paths and the config text, no data,
no keys) and then answers frames. No socket is opened: the pipes are anonymous,
local to this machine.

Frames: request ``u64 seq | u16 stage length | stage | payload``; reply ``u64 seq |
reply``. A reply with an old sequence number (a node that answered after its timeout)
is discarded, so a late answer is never taken for the next stage's. A node that does
not answer within the timeout, whose process died (killed, crashed), or whose reply is
over :data:`~.driver.MAX_MESSAGE_BYTES` gets ``None``; a node whose pipe is broken or
that sent an oversized frame is killed (by its PID) and stays a dropout.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import signal
import struct
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any, cast

from securepool.runtime.driver import MAX_MESSAGE_BYTES, NodeApp, OnReply, Patience

_REQ = struct.Struct(">QH")
_SEQ = struct.Struct(">Q")
STOP = "__stop__"
READY = b"ready"
#: what :meth:`MultiprocessDriver._read` returns for a frame that is not this stage's reply
_LATE = object()


@dataclass(frozen=True)
class NodeSpec:
    """What a node process is started with: a builder and its (picklable) arguments."""

    node_id: str
    build: Callable[..., NodeApp]  # a module-level function, run in the child
    args: Mapping[str, Any]


def _child(conn: Connection, spec: NodeSpec) -> None:
    try:
        app = spec.build(**spec.args)
    except BaseException as exc:
        conn.send_bytes(_SEQ.pack(0) + b"failed: " + repr(exc).encode()[:4000])
        conn.close()
        return
    conn.send_bytes(_SEQ.pack(0) + READY)
    while True:
        try:
            frame = conn.recv_bytes(MAX_MESSAGE_BYTES + 1024)
        except (EOFError, OSError):
            return
        seq, n = _REQ.unpack_from(frame)
        stage = frame[_REQ.size : _REQ.size + n].decode("utf-8", "replace")
        if stage == STOP:
            return
        payload = frame[_REQ.size + n :]
        try:
            reply = app.handle(stage, payload)
        except Exception:
            reply = b""
        conn.send_bytes(_SEQ.pack(seq) + reply)


class MultiprocessDriver:
    """Start one process per :class:`NodeSpec`; see the module docstring."""

    def __init__(
        self,
        specs: list[NodeSpec],
        *,
        startup_timeout: float = 300.0,
        preload: tuple[str, ...] = ("securepool.node.serve",),
    ) -> None:
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(list(preload))
        self._conns: dict[str, Connection] = {}
        self._procs: dict[str, Any] = {}
        self._dead: set[str] = set()
        self.startup_errors: dict[str, str] = {}
        self._seq = 0
        for spec in specs:
            parent, child = ctx.Pipe(duplex=True)
            proc = ctx.Process(target=_child, args=(child, spec), name=f"node-{spec.node_id}")
            proc.daemon = True
            proc.start()
            child.close()
            self._conns[spec.node_id], self._procs[spec.node_id] = parent, proc
        deadline = time.monotonic() + startup_timeout
        for node, conn in self._conns.items():
            got = self._receive(node, conn, 0, deadline)
            if got != READY:
                self.startup_errors[node] = (
                    "no answer" if got is None else got.decode("utf-8", "replace")
                )
                self._kill(node)

    # --- the Driver ------------------------------------------------------------------

    def nodes(self) -> tuple[str, ...]:
        return tuple(sorted(self._conns))

    def pids(self) -> dict[str, int]:
        """Every node's process id (tests kill nodes by PID)."""
        return {n: int(p.pid) for n, p in self._procs.items()}

    def exchange(
        self,
        stage: str,
        batch: Mapping[str, bytes],
        *,
        timeout: float,
        on_reply: OnReply | None = None,
        patience: Patience | None = None,
    ) -> dict[str, bytes | None]:
        """The nodes' replies as they come, until every node sent to has answered or
        died, the ``timeout`` has passed, or ``patience``'s bound once half of them
        have answered (:class:`~securepool.runtime.driver.Patience`)."""
        if not timeout > 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        self._seq += 1
        seq = self._seq
        head = stage.encode("utf-8")
        out: dict[str, bytes | None] = {node: None for node in batch}
        sent = []
        for node in sorted(batch):
            conn = self._conns.get(node)
            if conn is None or node in self._dead:
                continue
            try:
                conn.send_bytes(_REQ.pack(seq, len(head)) + head + bytes(batch[node]))
                sent.append(node)
            except (OSError, ValueError):
                self._kill(node)
        start = time.monotonic()
        pending = {self._conns[node]: node for node in sent}
        answered: list[float] = []

        def done(conn: Connection, reply: bytes | None) -> None:
            node = pending.pop(conn)
            out[node] = reply
            if reply is not None:
                answered.append(time.monotonic())
            if on_reply is not None:
                on_reply(node)

        while pending:
            deadline = start + timeout
            if patience is not None:
                deadline = patience.deadline(start, timeout, len(sent), answered)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            for ready in wait(list(pending), timeout=min(remaining, 0.5)):
                conn = cast(Connection, ready)
                got = self._read(pending[conn], conn, seq)
                if got is not _LATE:
                    done(conn, cast("bytes | None", got))
            for conn, node in list(pending.items()):
                if not self._procs[node].is_alive():  # died without a word: out at once
                    self._dead.add(node)
                    done(conn, None)
        return out

    def close(self) -> None:
        for node, conn in self._conns.items():
            if node not in self._dead:
                with contextlib.suppress(OSError, ValueError):
                    conn.send_bytes(_REQ.pack(0, len(STOP)) + STOP.encode())
        end = time.monotonic() + 10.0
        for node, proc in self._procs.items():
            proc.join(max(0.0, end - time.monotonic()))
            if proc.is_alive():
                self._kill(node)
                proc.join(5.0)
            self._conns[node].close()
        self._dead.update(self._procs)

    # --- internals -------------------------------------------------------------------

    def kill(self, node: str) -> None:
        """SIGKILL one node's process by its PID (tests: a node crashing mid-run)."""
        self._kill(node)

    def _kill(self, node: str) -> None:
        self._dead.add(node)
        proc = self._procs.get(node)
        if proc is not None and proc.pid is not None and proc.is_alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)

    def _read(self, node: str, conn: Connection, seq: int) -> bytes | object | None:
        """One frame from a connection that has one: the reply to ``seq``, None if the
        node is out for good, or :data:`_LATE` (a late reply to an earlier stage, or a
        runt frame: discarded, keep waiting)."""
        try:
            frame = conn.recv_bytes(MAX_MESSAGE_BYTES + _SEQ.size)
        except (EOFError, OSError):  # died, or an oversized frame: out for good
            self._kill(node)
            return None
        if len(frame) < _SEQ.size or _SEQ.unpack_from(frame)[0] != seq:
            return _LATE
        return frame[_SEQ.size :]

    def _receive(self, node: str, conn: Connection, seq: int, deadline: float) -> bytes | None:
        """One node's reply to ``seq`` by ``deadline`` (its start-up answer), else None."""
        proc = self._procs[node]
        while True:
            remaining = deadline - time.monotonic()
            try:
                ready = conn.poll(max(0.0, min(remaining, 0.5)))
            except (EOFError, OSError):
                self._kill(node)
                return None
            if not ready:
                if remaining <= 0:
                    return None
                if not proc.is_alive():
                    self._dead.add(node)
                    return None
                continue
            got = self._read(node, conn, seq)
            if got is not _LATE:
                return cast("bytes | None", got)
