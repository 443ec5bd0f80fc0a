"""The SuperLink's control plane kept to the coordinator's address (issue 27).

A real SuperLink (TLS, node authentication, listening on 127.0.0.1 only) behind
:class:`~securepool.runtime.control_proxy.ControlProxy`, which admits the control plane
from 127.0.0.1 (the coordinator's operator) only. Another party is 127.0.0.2 (Linux
routes all of 127/8 to loopback, so a client can take that source address): its control
requests (list runs, register a node key) are refused by the proxy before they reach the
SuperLink, while the Fleet calls a SuperNode makes pass through to the SuperLink, which
checks them as before. The coordinator's own ``flwr`` commands and a SuperNode work
through the proxy."""

from __future__ import annotations

import asyncio
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

pytest.importorskip("securepool.runtime.flower", reason="flwr is not installed")

from securepool.runtime.control_proxy import ControlProxy, ProxyConfig
from securepool.runtime.flower_harness import (
    CONNECTION,
    LOOPBACK,
    LocalDeployment,
    free_port,
    write_flwr_config,
)

OTHER = "127.0.0.2"  # a party that is not the coordinator


@pytest.fixture(scope="module")
def proxied(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    work = tmp_path_factory.mktemp("proxy")
    with LocalDeployment(work) as d:
        d.start_superlink()
        port = free_port()
        cfg = ProxyConfig(
            (LOOPBACK, port),
            (LOOPBACK, d.port),
            str(d.pki.server_cert),
            str(d.pki.server_key),
            str(d.pki.ca_cert),
            ProxyConfig.networks([f"{LOOPBACK}/32"]),
        )
        proxy = ControlProxy(cfg)
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def serve() -> None:
            asyncio.set_event_loop(loop)
            loop.run_until_complete(proxy.start())
            ready.set()
            loop.run_forever()

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        assert ready.wait(30)
        # the operator's flwr now reaches the SuperLink through the proxy only
        write_flwr_config(d.flwr_home, address=f"{LOOPBACK}:{port}", ca_cert=d.pki.ca_cert)
        try:
            yield {"d": d, "proxy": proxy, "url": f"https://{LOOPBACK}:{port}"}
        finally:
            asyncio.run_coroutine_threadsafe(proxy.stop(), loop).result(30)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(30)


def _post(url: str, path: str, ca: Path, *, source: str) -> httpx.Response:
    context = ssl.create_default_context(cafile=str(ca))
    transport = httpx.HTTPTransport(verify=context, local_address=source)
    with httpx.Client(transport=transport, timeout=30) as client:
        return client.post(
            url + path, content=b"", headers={"content-type": "application/protobuf"}
        )


def test_a_control_request_from_another_address_is_refused(proxied: dict[str, Any]) -> None:
    d, proxy, url = proxied["d"], proxied["proxy"], proxied["url"]
    before = proxy.refused
    for path in ("/v1/control/list-runs", "/v1/control/start-run", "/v1/fleet/register-node"):
        r = _post(url, path, d.pki.ca_cert, source=OTHER)
        assert r.status_code == 403 and b"control proxy" in r.content, (path, r.status_code)
    assert proxy.refused == before + 3


def test_a_supernode_s_fleet_call_from_another_address_reaches_the_superlink(
    proxied: dict[str, Any],
) -> None:
    d, proxy, url = proxied["d"], proxied["proxy"], proxied["url"]
    before = proxy.refused
    r = _post(url, "/v1/fleet/pull-messages", d.pki.ca_cert, source=OTHER)
    assert proxy.refused == before
    assert b"control proxy" not in r.content  # the SuperLink's own answer (unauthenticated)


def test_the_coordinator_s_commands_and_a_supernode_work_through_the_proxy(
    proxied: dict[str, Any],
) -> None:
    d, url = proxied["d"], proxied["url"]
    listed = d.cli("ls", CONNECTION)  # the Control API, from the coordinator's address
    assert listed.returncode == 0
    key = d.node_key("agency1")  # flwr supernode register, through the proxy
    address = url.removeprefix("https://")
    d.start_supernode(
        "agency1",
        key,
        {"node-id": "agency1", "role": "participant", "factory": "x:y"},
        superlink=address,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if "ActivateNode" in d.log_text("superlink"):
            break
        assert d.procs["agency1"].poll() is None, d.log_text("agency1")[-2000:]
        time.sleep(0.5)
    assert "ActivateNode" in d.log_text("superlink"), d.log_text("agency1")[-2000:]
