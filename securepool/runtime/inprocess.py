"""InProcessDriver: the Driver over NodeApp objects in this process (tests, the demo).

Deterministic: nodes are called one after another in sorted id order. A node that
raises, or whose reply is not bytes or is over :data:`~.driver.MAX_MESSAGE_BYTES`, gets
``None`` (a dropout), exactly as a crashed or silent remote node would. There is no
timeout to enforce in one thread; ``timeout`` is checked to be positive and otherwise
has no effect here (a node that hangs hangs the run: use the multiprocess runtime to
contain one).
"""

from __future__ import annotations

from collections.abc import Mapping

from securepool.runtime.driver import MAX_MESSAGE_BYTES, NodeApp, OnReply, Patience


class InProcessDriver:
    def __init__(self, apps: Mapping[str, NodeApp]) -> None:
        self._apps = dict(apps)

    def nodes(self) -> tuple[str, ...]:
        return tuple(sorted(self._apps))

    def exchange(
        self,
        stage: str,
        batch: Mapping[str, bytes],
        *,
        timeout: float,
        on_reply: OnReply | None = None,
        patience: Patience | None = None,
    ) -> dict[str, bytes | None]:
        """Every node's :meth:`NodeApp.handle`, called in turn: each answers before the
        next is asked, so there is never a node to wait for (``patience`` has nothing to
        bound)."""
        if not timeout > 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        out: dict[str, bytes | None] = {}
        for node in sorted(batch):
            app = self._apps.get(node)
            reply: bytes | None = None
            if app is not None:
                try:
                    got = app.handle(stage, bytes(batch[node]))
                    if isinstance(got, bytes) and len(got) <= MAX_MESSAGE_BYTES:
                        reply = got
                except Exception:
                    reply = None
            out[node] = reply
            if on_reply is not None:
                on_reply(node)
        return out

    def close(self) -> None:
        self._apps.clear()
