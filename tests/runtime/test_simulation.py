"""The same ServerApp and ClientApp on Flower's simulation engine (Ray), 50 nodes.

The coordinator (``socket_coordinator`` below, run by the simulation's ServerApp in this
process) makes two exchanges with every simulated node, then lists every inet socket of
this process and of all its descendants (Ray's gcs_server, raylet, agents and the
ClientApp actors) while they are all alive. The test fails on any socket whose local or
remote address is not loopback.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import json
from pathlib import Path
from typing import Any

import nodeapps
import psutil
import pytest

# imported before ray: it keeps Ray on loopback, which only works if ray is not loaded yet
from securepool.runtime.simulation import participant_names, run_simulation

if importlib.util.find_spec("ray") is None:
    pytest.skip("flwr[simulation] (ray) is not installed", allow_module_level=True)

N = 50


def sockets_of_this_process_tree() -> list[dict[str, Any]]:
    me = psutil.Process()
    found = []
    for proc in [me, *me.children(recursive=True)]:
        try:
            name = proc.name()
            for conn in proc.net_connections(kind="inet"):
                found.append(
                    {
                        "process": name,
                        "pid": proc.pid,
                        "local": conn.laddr.ip if conn.laddr else None,
                        "remote": conn.raddr.ip if conn.raddr else None,
                        "status": conn.status,
                    }
                )
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def socket_coordinator(driver: Any, args: str) -> None:
    out: dict[str, Any] = {"nodes": list(driver.nodes()), "exchanges": []}
    for stage in ("s1", "s2"):
        batch = {n: f"{stage}:{n}".encode() for n in driver.nodes()}
        replies = driver.exchange(stage, batch, timeout=120)
        out["exchanges"].append(
            {
                "ok": sorted(
                    n for n, r in replies.items() if r == nodeapps.expected_hash(n, stage, batch[n])
                ),
                "pushes": driver.stats.pushes,
            }
        )
    out["sockets"] = sockets_of_this_process_tree()
    Path(args).write_text(json.dumps(out))


def is_loopback(ip: str | None) -> bool:
    if ip is None:
        return True  # a listening socket has no remote end
    addr = ipaddress.ip_address(ip.split("%")[0])
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_loopback


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("sim") / "out.json"
    run_simulation(
        names=participant_names(N),
        factory="nodeapps:make_hash_node",
        coordinator="test_simulation:socket_coordinator",
        coordinator_args=str(out),
    )
    return dict(json.loads(out.read_text()))


def test_every_simulated_node_answers_each_exchange(simulated: dict[str, Any]) -> None:
    names = participant_names(N)
    assert simulated["nodes"] == sorted(names)
    for exchange in simulated["exchanges"]:
        assert exchange["ok"] == sorted(names)
    # discovery + two exchanges, each one push of the whole batch
    assert [e["pushes"] for e in simulated["exchanges"]] == [2, 3]


def test_ray_stays_on_loopback(simulated: dict[str, Any]) -> None:
    sockets = simulated["sockets"]
    ray_processes = {s["process"] for s in sockets} - {"python", "pytest"}
    assert ray_processes, "no Ray process socket was seen: the check would be vacuous"
    outside = [s for s in sockets if not (is_loopback(s["local"]) and is_loopback(s["remote"]))]
    assert outside == []


def test_the_loopback_check_sees_other_addresses() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("::ffff:127.0.0.1")
    assert not is_loopback("0.0.0.0") and not is_loopback("::") and not is_loopback("192.0.2.2")
