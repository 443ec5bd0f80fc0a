"""One agency's local link between its SuperNode's relay and its node service.

The node service (:mod:`securepool.node.service`) listens on a Unix domain socket; the
ClientApp that Flower starts per message (:mod:`securepool.node.relay`) connects, sends
one request and reads one reply. The wire is the SecurePool message itself, framed:

* request: ``b"SPL1"`` | u16 stage length | stage (ASCII) | u32 payload length | payload;
* reply:   ``b"SPL1"`` | u8 status (0 answered, 1 refused by the link) | u32 length |
  the NodeApp's reply bytes (status 0) or a UTF-8 reason (status 1).

Only this module's stdlib code runs on the relay side: no torch, no key, no record.

Security: the service accepts a connection only from a process whose user id
(``SO_PEERCRED``, checked by the kernel, not claimed by the peer) is its own or the one
its operator named (the SuperNode's user), and the socket file is that user's alone
(0600), so an app submitted through the SuperLink reaches exactly the wire protocol,
which the node already treats as coming from a party that may lie. Frames are bounded
(:data:`MAX_FRAME`) and read with deadlines; a malformed frame closes the connection.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
from dataclasses import dataclass
from pathlib import Path

from crypto.errors import MessageError, SecurePoolError

MAGIC = b"SPL1"
MAX_FRAME = 1 << 30  # the Driver's own bound on a message (securepool.runtime.driver)
MAX_STAGE = 64
ANSWERED, REFUSED = 0, 1
_HEAD = struct.Struct(">4sH")
_LEN = struct.Struct(">I")
_REPLY = struct.Struct(">4sBI")


class LinkError(SecurePoolError):
    """The local link to the node service failed (not there, refused, went away)."""


def _read_exact(sock: socket.socket, n: int) -> bytes:
    chunks, got = [], 0
    while got < n:
        chunk = sock.recv(min(n - got, 1 << 20))
        if not chunk:
            raise LinkError(f"the local link closed after {got} of {n} bytes")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def encode_request(stage: str, payload: bytes) -> bytes:
    """The request frame. Security: MessageError for a stage that is not short ASCII or
    a payload past :data:`MAX_FRAME`."""
    try:
        raw = stage.encode("ascii")
    except UnicodeEncodeError:
        raise MessageError("a stage name is ASCII") from None
    if not raw or len(raw) > MAX_STAGE or len(payload) > MAX_FRAME:
        raise MessageError(f"a request of stage {stage!r} with {len(payload)} bytes")
    return _HEAD.pack(MAGIC, len(raw)) + raw + _LEN.pack(len(payload)) + payload


def read_request(sock: socket.socket) -> tuple[str, bytes]:
    """One request frame from ``sock``. Security: MessageError for anything but one
    well-formed, bounded frame; LinkError if the peer goes away."""
    magic, n = _HEAD.unpack(_read_exact(sock, _HEAD.size))
    if magic != MAGIC or not 0 < n <= MAX_STAGE:
        raise MessageError("not a SecurePool local-link request")
    try:
        stage = _read_exact(sock, n).decode("ascii")
    except UnicodeDecodeError:
        raise MessageError("a stage name is ASCII") from None
    (size,) = _LEN.unpack(_read_exact(sock, _LEN.size))
    if size > MAX_FRAME:
        raise MessageError(f"a payload of {size} bytes (at most {MAX_FRAME})")
    return stage, _read_exact(sock, size)


def encode_reply(status: int, body: bytes) -> bytes:
    """The reply frame (status :data:`ANSWERED` or :data:`REFUSED`)."""
    return _REPLY.pack(MAGIC, status, len(body)) + body


def read_reply(sock: socket.socket) -> bytes:
    """The NodeApp's reply; LinkError naming the reason if the link refused.

    Security: bounded like a request; MessageError for a malformed frame."""
    magic, status, size = _REPLY.unpack(_read_exact(sock, _REPLY.size))
    if magic != MAGIC or status not in (ANSWERED, REFUSED) or size > MAX_FRAME:
        raise MessageError("not a SecurePool local-link reply")
    body = _read_exact(sock, size)
    if status == REFUSED:
        raise LinkError(f"the node service refused: {body.decode('utf-8', 'replace')}")
    return body


def peer_uid(conn: socket.socket) -> int:
    """The user id of the process at the other end (Linux ``SO_PEERCRED``).

    Security: the kernel's record of who connected, not something the peer sends."""
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


@dataclass(frozen=True)
class LocalLink:
    """The relay's side: one connection per exchange (Flower runs one message per
    ClientApp process), with a deadline on connecting and on the whole reply."""

    path: Path
    timeout: float = 600.0

    def exchange(self, stage: str, payload: bytes) -> bytes:
        """Send one request, return the NodeApp's reply bytes.

        Security: LinkError (never a partial reply) if the service is not there,
        refuses this peer, or does not answer in time."""
        request = encode_request(stage, payload)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(self.timeout)
            try:
                sock.connect(os.fspath(self.path))
                # the service may have refused this peer before reading: read its why
                with contextlib.suppress(OSError):
                    sock.sendall(request)
                return read_reply(sock)
            except (OSError, struct.error) as exc:
                raise LinkError(
                    f"the node service at {self.path} is not reachable or went away "
                    f"({type(exc).__name__}: {exc})"
                ) from None


__all__ = [
    "ANSWERED",
    "MAX_FRAME",
    "REFUSED",
    "LinkError",
    "LocalLink",
    "encode_reply",
    "encode_request",
    "peer_uid",
    "read_reply",
    "read_request",
]
