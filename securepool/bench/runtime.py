"""``securepool bench runtime``: time per exchange, in-process NodeApps vs Flower simulation.

    securepool bench runtime --nodes 20,50,100,200 --repeats 5 --payload-bytes 4096

For each n, one exchange = one stage's batch of ``payload-bytes`` to every one of n
nodes, each node answering with a SHA-256 digest bound to its id and the stage
(:class:`DigestNode`), every reply checked. Two runtimes, measured in the same run:

- ``inprocess``: n NodeApps in this process, called one after another (the baseline:
  what the transport costs when nothing crosses a process boundary);
- ``simulation``: :func:`securepool.runtime.simulation.run_simulation`, Flower's
  simulation engine with Ray (loopback only, ``cpus-per-node`` CPUs per ClientApp
  actor), the same ServerApp and ClientApp as a deployment; ``startup_s`` is the wall
  time of the whole simulation minus its exchanges (Ray start, node discovery, stop).

``--deployment N`` measures instead a Flower deployment on 127.0.0.1 with TLS and node
authentication (:mod:`securepool.runtime.flower_harness`, N SuperNodes): the median
time of an exchange with one node and with all N, in the same run.

Prints one JSON object: per n the median seconds per exchange of each runtime (over
``repeats`` exchanges, after one warm-up exchange that is reported apart), the ratio
simulation / inprocess, and the machine's load average before and after.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from crypto.encoding import bind

DOMAIN = b"securepool/bench/runtime/digest-node/v1"


def digest(node_id: str, stage: str, payload: bytes) -> bytes:
    return hashlib.sha256(bind(DOMAIN, node_id, stage, payload)).digest()


class DigestNode:
    """A stateless NodeApp: the digest of (its id, the stage, the payload)."""

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id

    def handle(self, stage: str, payload: bytes) -> bytes:
        return digest(self.node_id, stage, payload)


def make_digest_node(config: Mapping[str, Any]) -> DigestNode:
    return DigestNode(str(config["node-id"]))


def _exchanges(
    driver: Any, repeats: int, payload_bytes: int, size: int | None = None
) -> dict[str, Any]:
    nodes = list(driver.nodes())[:size]
    times = []
    for k in range(repeats + 1):
        stage = f"bench{size or 'all'}x{k}"
        batch = {n: os.urandom(payload_bytes) for n in nodes}
        start = time.perf_counter()
        replies = driver.exchange(stage, batch, timeout=600)
        elapsed = time.perf_counter() - start
        bad = [n for n in nodes if replies[n] != digest(n, stage, batch[n])]
        if bad:
            raise RuntimeError(f"{len(bad)} wrong or missing replies, e.g. {bad[:3]}")
        times.append(elapsed)
    return {"warmup_s": times[0], "times_s": times[1:], "pushes": driver.stats.pushes}


def bench_coordinator(driver: Any, args: str) -> None:
    """The coordinator: ``args`` is a JSON {out, repeats, payload_bytes[, sizes]} or the
    path of a file holding one (``flwr run --run-config`` values cannot hold spaces)."""
    spec = json.loads(args if args.startswith("{") else Path(args).read_text())
    if "sizes" in spec:  # deployment: the same exchanges to 1 node and to all of them
        result = {
            str(size): _exchanges(driver, spec["repeats"], spec["payload_bytes"], size)
            for size in spec["sizes"]
        }
    else:
        result = _exchanges(driver, spec["repeats"], spec["payload_bytes"])
    Path(spec["out"]).write_text(json.dumps(result))


def measure_deployment(n: int, repeats: int, payload_bytes: int) -> dict[str, Any]:
    """A TLS + node-auth deployment on 127.0.0.1 (flower_harness): 1 node vs all n."""
    from securepool.runtime.flower_harness import LocalDeployment

    root = Path(__file__).resolve().parents[2]
    with tempfile.TemporaryDirectory() as tmp, LocalDeployment(Path(tmp), pythonpath=[root]) as d:
        out = Path(tmp) / "deploy.json"
        spec = {"out": str(out), "repeats": repeats, "payload_bytes": payload_bytes}
        spec["sizes"] = [1, n]
        spec_path = Path(tmp) / "spec.json"
        spec_path.write_text(json.dumps(spec))
        d.start_superlink()
        for i in range(n):
            key = d.node_key(f"p{i}")
            factory = "securepool.bench.runtime:make_digest_node"
            d.start_supernode(
                f"p{i}", key, {"node-id": f"p{i}", "role": "participant", "factory": factory}
            )
        d.run(
            root,
            {
                "coordinator": "securepool.bench.runtime:bench_coordinator",
                "coordinator-args": str(spec_path),
                "nodes": n,
            },
        )
        deadline = time.monotonic() + 90 + 2 * (repeats + 1) * 20
        while not out.exists() and time.monotonic() < deadline:
            time.sleep(1)
        if not out.exists():
            raise RuntimeError(
                f"deployment bench did not finish:\n{d.log_text('superlink')[-2000:]}"
            )
        got = json.loads(out.read_text())
    one, every = got["1"], got[str(n)]
    return {
        "deployment_nodes": n,
        "one_node_s_per_exchange": statistics.median(one["times_s"]),
        "all_nodes_s_per_exchange": statistics.median(every["times_s"]),
        "ratio_all_vs_one": statistics.median(every["times_s"]) / statistics.median(one["times_s"]),
        "pushes": every["pushes"],  # hello + (repeats+1) per size: one per exchange
        "times_s": {"1": one["times_s"], str(n): every["times_s"]},
    }


class _InProcess:
    def __init__(self, n: int) -> None:
        self.apps = {f"p{i}": DigestNode(f"p{i}") for i in range(n)}
        self.stats = argparse.Namespace(pushes=0)

    def nodes(self) -> tuple[str, ...]:
        return tuple(self.apps)

    def exchange(
        self, stage: str, batch: Mapping[str, bytes], *, timeout: float, **_: Any
    ) -> dict[str, bytes | None]:
        self.stats.pushes += 1
        return {n: self.apps[n].handle(stage, p) for n, p in batch.items()}


def measure(n: int, repeats: int, payload_bytes: int, cpus_per_node: float) -> dict[str, Any]:
    from securepool.runtime.simulation import participant_names, run_simulation

    inproc = _exchanges(_InProcess(n), repeats, payload_bytes)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "sim.json"
        spec = {"out": str(out), "repeats": repeats, "payload_bytes": payload_bytes}
        start = time.perf_counter()
        run_simulation(
            names=participant_names(n),
            factory="securepool.bench.runtime:make_digest_node",
            coordinator="securepool.bench.runtime:bench_coordinator",
            coordinator_args=json.dumps(spec),
            cpus_per_node=cpus_per_node,
        )
        total = time.perf_counter() - start
        sim = json.loads(out.read_text())
    in_med = statistics.median(inproc["times_s"])
    sim_med = statistics.median(sim["times_s"])
    return {
        "n": n,
        "inprocess_s_per_exchange": in_med,
        "simulation_s_per_exchange": sim_med,
        "ratio_simulation_vs_inprocess": sim_med / in_med,
        "simulation_warmup_exchange_s": sim["warmup_s"],
        "simulation_startup_s": total - sim["warmup_s"] - sum(sim["times_s"]),
        "simulation_pushes": sim["pushes"],  # discovery + warm-up + repeats
    }


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="securepool bench runtime", description=__doc__)
    p.add_argument("--nodes", default="20,50,100,200", help="comma-separated n")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--payload-bytes", type=int, default=4096)
    p.add_argument("--cpus-per-node", type=float, default=1.0)
    p.add_argument(
        "--deployment",
        type=int,
        default=0,
        metavar="N",
        help="instead: a local TLS deployment of N SuperNodes, exchanges to 1 vs N nodes",
    )
    args = p.parse_args(argv)
    ns = [int(x) for x in args.nodes.split(",")]
    load_before = os.getloadavg()
    if args.deployment:
        rows = [measure_deployment(args.deployment, args.repeats, args.payload_bytes)]
    else:
        rows = [measure(n, args.repeats, args.payload_bytes, args.cpus_per_node) for n in ns]
    print(
        json.dumps(
            {
                "bench": "runtime",
                "repeats": args.repeats,
                "payload_bytes": args.payload_bytes,
                "cpus_per_node": args.cpus_per_node,
                "cpu_count": os.cpu_count(),
                "loadavg_before": load_before,
                "loadavg_after": os.getloadavg(),
                "rows": rows,
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv[1:]))
