"""A TLS-terminating proxy in front of the SuperLink that keeps its control plane to the
coordinator's addresses (issue 27).

flwr 1.42 serves every API of the SuperLink (Fleet for SuperNodes, Control for the
``flwr`` CLI, Runtime for the ServerApp) as protobuf over HTTPS on one port, and its
open-source SuperLink authenticates no account: anyone holding the CA certificate who
reaches the port can list, stop and submit runs and register node keys. Behind this
proxy the SuperLink listens on 127.0.0.1 only; the proxy listens where the federation
connects and forwards

* the Fleet API calls a registered SuperNode makes (:data:`NODE_PATHS`) from anyone (the
  SuperLink still checks each node's signature: node authentication is unchanged);
* everything else (Control: runs, logs, stops, app submission, node registration;
  Runtime) only from the addresses in ``control_from`` (the coordinator's operator);

and answers any other request 403 without forwarding it. Requests are HTTP/1.1 (what
flwr's clients speak), parsed with h11; a response is streamed back as it arrives
(``flwr log --stream``).

    securepool proxy --listen 0.0.0.0:8000 --upstream 127.0.0.1:9000 \\
        --cert server.pem --key server.key --ca ca.crt --control-from 10.0.0.5

Security: the decision is made on the TCP peer address the kernel reports and on the
request path; a request whose target is not a plain absolute path is refused. TLS on
both sides: clients verify the proxy's certificate (the federation's server certificate),
the proxy verifies the SuperLink's against the CA.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import ssl
from collections.abc import Iterable
from dataclasses import dataclass, field

import h11

log = logging.getLogger("securepool.proxy")

#: the Fleet API calls a registered SuperNode makes (flwr 1.42): allowed from anyone
NODE_PATHS = frozenset(
    f"/v1/fleet/{name}"
    for name in (
        "activate-node",
        "deactivate-node",
        "send-node-heartbeat",
        "pull-messages",
        "push-messages",
        "pull-object",
        "push-object",
        "confirm-message-received",
        "get-run",
        "get-fab",
    )
)
MAX_BODY = 512 * 1024 * 1024  # the Driver's own bound on a message
READ = 1 << 16


@dataclass(frozen=True)
class ProxyConfig:
    listen: tuple[str, int]
    upstream: tuple[str, int]
    cert: str
    key: str
    ca: str
    control_from: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = field(
        default_factory=tuple
    )

    @staticmethod
    def networks(
        items: Iterable[str],
    ) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        return tuple(ipaddress.ip_network(i, strict=False) for i in items)

    def allowed(self, peer: str, method: bytes, target: bytes) -> bool:
        """Whether a request from ``peer`` may reach the SuperLink."""
        if not target.startswith(b"/") or b"?" in target or b"#" in target or b".." in target:
            return False
        path = target.decode("ascii", "replace")
        if method == b"POST" and path in NODE_PATHS:
            return True
        try:
            addr = ipaddress.ip_address(peer)
        except ValueError:
            return False
        return any(addr in net for net in self.control_from)


async def _next(conn: h11.Connection, reader: asyncio.StreamReader) -> object:
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event
        conn.receive_data(await reader.read(READ))


async def _send(
    writer: asyncio.StreamWriter,
    conn: h11.Connection,
    event: h11.Request | h11.Response | h11.Data | h11.EndOfMessage,
) -> None:
    data = conn.send(event)
    if data:
        writer.write(data)
        await writer.drain()


class ControlProxy:
    """The proxy (see the module docstring); :meth:`serve` until :meth:`stop`."""

    def __init__(self, cfg: ProxyConfig) -> None:
        self.cfg = cfg
        self._server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._server_ctx.load_cert_chain(cfg.cert, cfg.key)
        self._client_ctx = ssl.create_default_context(cafile=cfg.ca)
        self._server: asyncio.AbstractServer | None = None
        self.refused = 0

    async def start(self) -> None:
        host, port = self.cfg.listen
        self._server = await asyncio.start_server(
            self._client, host, port, ssl=self._server_ctx, limit=READ
        )

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = str(writer.get_extra_info("peername")[0])
        down = h11.Connection(h11.SERVER, max_incomplete_event_size=READ)
        up: tuple[asyncio.StreamReader, asyncio.StreamWriter, h11.Connection] | None = None
        try:
            while True:
                request = await _next(down, reader)
                if not isinstance(request, h11.Request):
                    return  # the client closed (ConnectionClosed) or sent garbage
                body = bytearray()
                while True:
                    event = await _next(down, reader)
                    if isinstance(event, h11.Data):
                        body += event.data
                        if len(body) > MAX_BODY:
                            return
                    elif isinstance(event, h11.EndOfMessage):
                        break
                    else:
                        return
                if not self.cfg.allowed(peer, request.method, request.target):
                    self.refused += 1
                    log.warning(
                        "refused %s %s from %s", request.method.decode(), request.target, peer
                    )
                    text = b"refused by the federation's control proxy\n"
                    await _send(
                        writer,
                        down,
                        h11.Response(
                            status_code=403,
                            headers=[("content-length", str(len(text))), ("connection", "close")],
                        ),
                    )
                    await _send(writer, down, h11.Data(data=text))
                    await _send(writer, down, h11.EndOfMessage())
                    return
                if up is None:
                    host, port = self.cfg.upstream
                    ur, uw = await asyncio.open_connection(
                        host, port, ssl=self._client_ctx, server_hostname=host, limit=READ
                    )
                    up = (ur, uw, h11.Connection(h11.CLIENT, max_incomplete_event_size=READ))
                await self._forward(request, bytes(body), up, down, writer)
                if down.our_state is not h11.DONE or up[2].our_state is not h11.DONE:
                    return
                down.start_next_cycle()
                up[2].start_next_cycle()
        except (h11.ProtocolError, ConnectionError, ssl.SSLError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()
            if up is not None:
                up[1].close()

    async def _forward(
        self,
        request: h11.Request,
        body: bytes,
        up: tuple[asyncio.StreamReader, asyncio.StreamWriter, h11.Connection],
        down: h11.Connection,
        writer: asyncio.StreamWriter,
    ) -> None:
        ur, uw, uc = up
        headers = [(k, v) for k, v in request.headers if k.lower() != b"host"]
        host, port = self.cfg.upstream
        headers.append((b"host", f"{host}:{port}".encode()))
        await _send(
            uw, uc, h11.Request(method=request.method, target=request.target, headers=headers)
        )
        if body:
            await _send(uw, uc, h11.Data(data=body))
        await _send(uw, uc, h11.EndOfMessage())
        response = await _next(uc, ur)
        if not isinstance(response, h11.Response):
            raise ConnectionError("the SuperLink gave no response")
        await _send(
            writer,
            down,
            h11.Response(
                status_code=response.status_code,
                headers=list(response.headers),
                reason=response.reason,
            ),
        )
        while True:
            event = await _next(uc, ur)
            if isinstance(event, h11.Data):
                await _send(writer, down, h11.Data(data=event.data))
            elif isinstance(event, h11.EndOfMessage):
                await _send(writer, down, h11.EndOfMessage())
                return
            else:
                raise ConnectionError("the SuperLink closed mid-response")


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


def main(argv: list[str] | None = None) -> int:
    """``securepool proxy``: serve until SIGTERM or SIGINT."""
    import argparse
    import signal

    ap = argparse.ArgumentParser(prog="securepool proxy", description=__doc__.splitlines()[0])
    ap.add_argument("--listen", required=True, help="HOST:PORT the federation connects to")
    ap.add_argument("--upstream", required=True, help="the SuperLink's HOST:PORT (loopback)")
    ap.add_argument("--cert", required=True, help="the federation's server certificate")
    ap.add_argument("--key", required=True, help="its private key")
    ap.add_argument("--ca", required=True, help="the federation CA (checks the SuperLink)")
    ap.add_argument(
        "--control-from",
        action="append",
        default=[],
        metavar="ADDRESS",
        help="an address or network allowed the control plane (repeat; the coordinator's)",
    )
    args = ap.parse_args(argv)
    cfg = ProxyConfig(
        _address(args.listen),
        _address(args.upstream),
        args.cert,
        args.key,
        args.ca,
        ProxyConfig.networks(args.control_from),
    )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    async def run() -> None:
        proxy = ControlProxy(cfg)
        await proxy.start()
        done = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, done.set)
        log.info("listening on %s:%d for %s:%d", *cfg.listen, *cfg.upstream)
        await done.wait()
        await proxy.stop()

    asyncio.run(run())
    return 0


__all__ = ["NODE_PATHS", "ControlProxy", "ProxyConfig", "main"]
