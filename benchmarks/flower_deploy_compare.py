"""SecurePool's mask-mode pool vs Flower 1.42's own SecAgg+, on one local deployment.

    PYTHONPATH=$PWD /work/main/.venv/bin/python benchmarks/flower_deploy_compare.py \
        --nodes 10 --hidden 1536 --json benchmarks/flower_deploy_compare.json

One deployment (securepool.runtime.flower_harness.LocalDeployment: a SuperLink with TLS
and SuperNode authentication, ``--nodes`` SuperNodes on 127.0.0.1, every process started
and stopped by its id), on which two apps run one after the other on the same SuperNodes:

1. SecurePool (``flwr run`` of the repository: the ServerApp's coordinator
   :func:`pool_coordinator` below, a :func:`securepool.coordinator.flower.run_pool` that
   also records the driver's per-node payload bytes per iteration), mask mode, one MLP
   of ``d`` parameters (``--hidden``), ``--iterations`` iterations on the digits split.
   Iteration 2 is the clean steady-state iteration; in the last iteration the victim's
   SuperNode is SIGKILLed when the coordinator sends the stage that asks for the masked
   inputs (``secagg/shares``: after the victim's key shares went out), as the ServerApp's
   driver logs it.
2. Flower's SecAggPlusWorkflow + secaggplus_mod (benchmarks/flower_secaggplus/), the
   same model and the same digits partition trained in the ClientApp's fit, ``--rounds``
   rounds; round 1 is clean, and in the last round the victim's (restarted) SuperNode is
   SIGKILLed when the collect-masked-vectors stage is sent (after its key shares, before
   its masked vector: the same point as in 1).

``--relays``: every agency's node and the auditor run as node services (``securepool node
serve``, :mod:`securepool.node.service`) behind relay ClientApps, their SuperNodes as the
OS user ``nobody`` when the bench runs as root, as in tests/runtime/test_flower_pool.py
(the harness's :meth:`~securepool.runtime.flower_harness.LocalDeployment.
start_relayed_node`); the killed node's SuperNode and service are both SIGKILLed. Side
``inline`` (with ``--relays``, e.g. ``--sides inline,securepool,flower``) first runs
SecurePool with the nodes inside the SuperNodes on the same SuperLink and node keys, then
replaces those SuperNodes by the relayed ones: the relay layout against the in-SuperNode
one in the same run. Flower's ClientApp runs in the SuperNodes in both layouts (it trains
itself; a relay SuperNode's node config names no pool config, so it reads the run
config's).

Prints (and with ``--json`` writes) one JSON object: per side the seconds of every
iteration / round, whether it completed, the mean bytes per node per iteration / round
(SecurePool: payload bytes counted by FlowerDriver; Flower: serialized RecordDict bytes
counted by a wrapped Grid), the slowdown of the killed iteration / round against the
clean one, the ratio SecurePool / Flower, and the load average at every step. Time-bounded
(``--deadline`` seconds per app run, then ``flwr stop``); the deployment is stopped in any
case.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "benchmarks" / "flower_secaggplus"

CONFIG = """\
[run]
seed = 3
runtime = "flower"
registry = "{registry}"
stage_timeout = {stage_timeout}
[data]
dataset = "digits"
participants = {n}
[[pool.models]]
id = "mlp"
arch = "mlp"
seed = 1
hidden = {hidden}
[assignment]
min_group_size = 3
min_models = 1
max_models = 1
[training]
epochs = 1
batch_size = 16
lr = 0.1
[evaluation]
mode = "holdout"
[convergence]
error_range = [0.0, 0.0001]
max_iterations = {iterations}
[aggregation]
mode = "mask"
{trust}"""

#: ``--trust``: the P6 trust check with its defaults, judged by the auditor's SuperNode
TRUST = """[trust]
enabled = true
"""


class ProgressDriver:
    """The ServerApp's driver, logging every stage it sends (the bench kills by it)."""

    def __init__(self, inner: Any, progress: Path) -> None:
        self.inner, self.progress = inner, progress

    def _log(self, **fields: Any) -> None:
        with self.progress.open("a") as f:
            f.write(json.dumps({"t": time.time(), **fields}) + "\n")

    def nodes(self) -> tuple[str, ...]:
        return tuple(self.inner.nodes())

    def exchange(
        self, stage: str, batch: Any, *, timeout: float, **kw: Any
    ) -> dict[str, bytes | None]:
        from securepool.node.wire import NodeStage, decode_bundle

        carries = sorted(
            {
                st
                for payload in batch.values()
                for st in (
                    [s for s, _ in decode_bundle(payload)]
                    if stage == NodeStage.BUNDLE.value
                    else [stage]
                )
            }
        )
        self._log(event="send", stage=stage, carries=carries, nodes=len(batch))
        replies: dict[str, bytes | None] = self.inner.exchange(stage, batch, timeout=timeout, **kw)
        missing = sorted(n for n, r in replies.items() if r is None)
        self._log(event="replies", stage=stage, missing=missing)
        return replies

    def close(self) -> None:
        self.inner.close()


def pool_coordinator(driver: Any, args: str) -> None:
    """The ServerApp's coordinator: ``run_pool`` plus per-iteration driver bytes, written
    to ``OUT.stats.json`` (also when the run fails)."""
    from securepool.coordinator.flower import parse_args
    from securepool.runner import start_job

    _, config, out = parse_args(args)
    assert config is not None
    per_iteration: list[dict[str, Any]] = []
    last: dict[str, dict[str, int]] = {"sent": {}, "received": {}}

    def snapshot(record: Any) -> None:
        sent, received = dict(driver.stats.sent_bytes), dict(driver.stats.received_bytes)
        per_iteration.append(
            {
                "iteration": record.iteration,
                "sent_bytes": {k: v - last["sent"].get(k, 0) for k, v in sent.items()},
                "received_bytes": {k: v - last["received"].get(k, 0) for k, v in received.items()},
                "pushes": driver.stats.pushes,
            }
        )
        last["sent"], last["received"] = sent, received
        _dump()

    def _dump(error: str | None = None) -> None:
        doc = {"iterations": per_iteration, "error": error, "pushes": driver.stats.pushes}
        Path(str(out) + ".stats.json").write_text(json.dumps(doc))

    try:
        start_job(
            config,
            out,
            driver=ProgressDriver(driver, Path(str(out) + ".progress.jsonl")),
            on_iteration=snapshot,
        )
    except Exception as exc:
        _dump(f"{type(exc).__name__}: {exc}")
        raise
    _dump()


def _stop_unfinished(d: Any, submitted: str) -> None:
    """``flwr stop`` the run that ``flwr run`` said it started (a side past its deadline:
    its ServerApp must not go on beside the next side's)."""
    import re

    from securepool.runtime.flower_harness import CONNECTION, HarnessError

    found = re.search(r"started run (\d+)", submitted)
    if found is not None:
        with contextlib.suppress(HarnessError, subprocess.TimeoutExpired):
            d.cli("stop", found.group(1), CONNECTION, timeout=60.0)


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


#: the SecurePool stage that asks for the masked inputs (after the key shares went out)
KILL_STAGE = "secagg/shares"


def _sent(progress: Path, stage: str) -> int:
    """How many times the coordinator has sent ``stage`` so far."""
    if not progress.exists():
        return 0
    lines = [json.loads(x) for x in progress.read_text().splitlines() if x.strip()]
    return sum(1 for e in lines if e["event"] == "send" and stage in e.get("carries", [e["stage"]]))


def finished_waiting(out: Path, iterations: int, *, timeout: float = 30.0) -> bool:
    """Wait until the stats file has caught up with the metrics (written just after)."""
    deadline = time.monotonic() + timeout
    stats = Path(str(out) + ".stats.json")
    while time.monotonic() < deadline:
        try:
            if len(json.loads(stats.read_text())["iterations"]) >= iterations:
                return True
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.5)
    return False


def stage_seconds(progress: Path) -> list[dict[str, Any]]:
    """Every round trip the coordinator made, in order: the stage sent, to how many
    nodes, and the seconds until its replies were in (from the ProgressDriver's log)."""
    if not progress.exists():
        return []
    events = [json.loads(x) for x in progress.read_text().splitlines() if x.strip()]
    out: list[dict[str, Any]] = []
    sent: dict[str, Any] | None = None
    for e in events:
        if e["event"] == "send":
            sent = e
        elif sent is not None:
            out.append(
                {
                    "stage": sent["stage"],
                    "carries": sent.get("carries", [sent["stage"]]),
                    "nodes": sent["nodes"],
                    "seconds": round(e["t"] - sent["t"], 2),
                    "missing": e["missing"],
                }
            )
            sent = None
    return out


def _per_node(counts: list[dict[str, int]], n: int) -> float:
    """Mean bytes per participant node (sent + received) over ``n`` nodes (the driver's
    discovery probe ids ``flower-*`` carry no payload, and the auditor is counted apart)."""
    return (
        sum(
            v
            for c in counts
            for k, v in c.items()
            if not k.startswith("flower-") and k != "auditor"
        )
        / n
    )


def securepool_side(
    d: Any, args: argparse.Namespace, work: Path, *, name: str, victim: list[str]
) -> dict:
    """One SecurePool run into ``work/NAME-run``; ``victim``: the processes SIGKILLed
    (in this order) when the last iteration asks for the masked inputs."""
    out = work / f"{name}-run"
    progress = Path(str(out) + ".progress.jsonl")
    config = work / "pool.toml"
    start = time.monotonic()
    loads = {"start": _load()}
    submitted = d.run(
        ROOT,
        {
            "coordinator": "flower_deploy_compare:pool_coordinator",
            "coordinator-args": f"run {config} {out}",
            "nodes": args.nodes + (1 if args.trust else 0),  # and the auditor's SuperNode
            "discovery-timeout": 180.0,
        },
    )
    killed_at = None
    while time.monotonic() - start < args.deadline:
        if (out / "summary.json").exists():
            break
        if killed_at is None and _sent(progress, KILL_STAGE) >= args.iterations:
            for proc in victim:  # masked inputs asked for, not sent yet
                d.stop(proc, sig=signal.SIGKILL)
            killed_at = time.monotonic() - start
            loads["kill"] = _load()
        time.sleep(0.2)
    loads["end"] = _load()
    finished = (out / "summary.json").exists()
    if not finished:
        _stop_unfinished(d, submitted)
    if finished:
        finished_waiting(out, args.iterations)
    metrics = []
    if (out / "metrics.jsonl").exists():
        metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    stats_path = Path(str(out) + ".stats.json")
    stats = json.loads(stats_path.read_text()) if stats_path.exists() else {"iterations": []}
    iterations = []
    for m, s in zip(metrics, stats["iterations"], strict=False):
        (group,) = m["groups"]
        iterations.append(
            {
                "iteration": m["iteration"],
                "seconds": m["seconds"],
                "status": group["status"],
                "contributors": group.get("contributors"),  # how many
                "excluded": group.get("excluded"),  # {node: why}
                "bytes_per_node": _per_node([s["sent_bytes"], s["received_bytes"]], args.nodes),
                "auditor_bytes": sum(
                    c.get("auditor", 0) for c in (s["sent_bytes"], s["received_bytes"])
                ),
            }
        )
    return {
        "finished": finished,
        "wall_s": round(time.monotonic() - start, 1),
        "killed_at_s": killed_at,
        "iterations": iterations,
        "error": stats.get("error"),
        "round_trips": stats.get("pushes"),
        "stage_seconds": stage_seconds(progress),
        "loadavg": loads,
        "log_tail": None if finished else d.log_text("superlink")[-1500:],
    }


def flower_side(d: Any, args: argparse.Namespace, work: Path) -> dict:
    out = work / "flower-run"
    out.mkdir()
    progress = out / "progress.jsonl"
    start = time.monotonic()
    loads = {"start": _load()}
    submitted = d.run(
        APP,
        {
            "config": str(work / "pool.toml"),
            "out": str(out),
            "nodes": args.nodes,
            "rounds": args.rounds,
            "num-shares": args.num_shares,
            "reconstruction-threshold": args.reconstruction_threshold,
            "timeout": args.stage_timeout,
        },
    )
    killed_at = None
    while time.monotonic() - start < args.deadline:
        if (out / "done").exists():
            break
        if killed_at is None and progress.exists():
            events = [json.loads(x) for x in progress.read_text().splitlines() if x.strip()]
            rounds = [i for i, e in enumerate(events) if e["event"] == "round"]
            if len(rounds) == args.rounds:
                sends = [e for e in events[rounds[-1] :] if e["event"] == "send"]
                if len(sends) >= 3:  # collect_masked_vectors just sent
                    d.stop(args.victim_restarted, sig=signal.SIGKILL)
                    killed_at = time.monotonic() - start
                    loads["kill"] = _load()
        time.sleep(0.2)
    loads["end"] = _load()
    if not (out / "done").exists():
        _stop_unfinished(d, submitted)
    doc = json.loads((out / "rounds.json").read_text()) if (out / "rounds.json").exists() else {}
    rounds = [
        {
            "round": r["round"],
            "seconds": r["seconds"],
            "stages": r["stages"],
            "completed": r["error"] is None and r["stages"] == 4,
            "error": r["error"],
            "bytes_per_node": _per_node([r["sent_bytes"], r["received_bytes"]], args.nodes),
        }
        for r in doc.get("rounds", [])
    ]
    return {
        "finished": (out / "done").exists(),
        "wall_s": round(time.monotonic() - start, 1),
        "killed_at_s": killed_at,
        "rounds": rounds,
        "loadavg": loads,
        "log_tail": None if (out / "done").exists() else d.log_text("superlink")[-1500:],
    }


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--nodes", type=int, default=10)
    p.add_argument("--hidden", type=int, default=1536, help="MLP width (1536: d = 99,850)")
    p.add_argument("--iterations", type=int, default=3, help="SecurePool iterations (>= 3)")
    p.add_argument("--rounds", type=int, default=2, help="Flower SecAgg+ rounds (>= 2)")
    p.add_argument("--num-shares", type=float, default=1.0)
    p.add_argument("--reconstruction-threshold", type=float, default=0.6)
    p.add_argument("--stage-timeout", type=float, default=180.0, help="both sides, s")
    p.add_argument("--deadline", type=float, default=1200.0, help="per app run, s")
    p.add_argument("--sides", default="securepool,flower")
    p.add_argument("--work", type=Path, help="work directory (default: a new temp dir)")
    p.add_argument("--json", type=Path)
    p.add_argument(
        "--trust",
        action="store_true",
        help="SecurePool side with the trust check (an auditor SuperNode judges every group)",
    )
    p.add_argument(
        "--relays",
        action="store_true",
        help="every node as a node service behind a relay SuperNode ('nobody' when root); "
        "side 'inline' then runs SecurePool with the nodes in the SuperNodes first",
    )
    args = p.parse_args(argv)
    if args.iterations < 3 or args.rounds < 2 or args.nodes < 4:
        p.error("--iterations >= 3, --rounds >= 2, --nodes >= 4")
    sides = args.sides.split(",")
    if set(sides) - {"inline", "securepool", "flower"} or ("inline" in sides and not args.relays):
        p.error("--sides: of inline, securepool, flower; inline only with --relays")
    sys.path.insert(0, str(ROOT / "benchmarks"))  # this module, for the ServerApp too
    import tempfile

    from securepool.node.keys import keygen, public_path
    from securepool.runtime.flower_harness import (
        RELAY_USER,
        LocalDeployment,
        node_service_toml,
        relays_as_another_user,
    )

    work = args.work or Path(tempfile.mkdtemp(prefix="securepool-deploy-compare-"))
    work = work.resolve()
    if args.relays:  # the SuperNodes' user reaches the CA, the apps and the sockets; every
        os.chmod(work, 0o755)  # agency's own folder stays 0700, its files 0600
    registry = work / "registry"
    registry.mkdir(parents=True)
    pids = [f"p{i:02d}" for i in range(args.nodes)]
    args.victim = pids[-1]
    args.victim_restarted = f"{args.victim}-restarted"
    relay_user = RELAY_USER if args.relays and relays_as_another_user() else None
    (work / "pool.toml").write_text(
        CONFIG.format(
            registry=registry,
            stage_timeout=args.stage_timeout,
            n=args.nodes,
            hidden=args.hidden,
            iterations=args.iterations,
            trust=TRUST if args.trust else "",
        )
    )
    agencies = [*pids, "auditor"] if args.trust else pids
    keys = {pid: work / "agencies" / pid / "identity.key" for pid in agencies}
    for pid, key in keys.items():
        keygen(key)
        (registry / f"{pid}.pub").write_bytes(public_path(key).read_bytes())
    tomls = {
        pid: node_service_toml(
            work,
            pid,
            config=work / "pool.toml",
            registry=registry,
            key=keys[pid],
            relay_user=relay_user,
        )
        for pid in (agencies if args.relays else ())
    }

    def node_config(pid: str) -> dict[str, str]:
        role = "auditor" if pid == "auditor" else "participant"
        return {
            "node-id": pid,
            "role": role,
            "factory": f"securepool.node.serve:flower_{role}",
            "config": str(work / "pool.toml"),
            "state-dir": str(keys[pid].parent),
            "registry-dir": str(registry),
            "key-file": str(keys[pid]),
        }

    result: dict[str, Any] = {
        "bench": "flower_deploy_compare",
        "nodes": args.nodes,
        "d": 64 * args.hidden + args.hidden + args.hidden * 10 + 10,
        "cpu_count": os.cpu_count(),
        "trust": args.trust,
        "relays": args.relays,
        "relay_user": relay_user,
        "loadavg_before": _load(),
        "secagg_plus": {
            "num_shares": args.num_shares,
            "reconstruction_threshold": args.reconstruction_threshold,
        },
        "work": str(work),
    }
    t0 = time.monotonic()
    final = "relays" if args.relays else "inline"
    plan = [("securepool_inline", "inline")] if "inline" in sides else []
    plan += [("securepool", final)] if "securepool" in sides else []
    with LocalDeployment(work, pythonpath=[ROOT, ROOT / "benchmarks"]) as d:
        d.start_superlink()
        flower_keys = {pid: d.node_key(pid) for pid in agencies}

        def start(layout: str, pid: str, name: str) -> list[str]:
            """``pid``'s SuperNode ``name`` in ``layout``; its processes, SuperNode first."""
            if layout == "relays":
                d.start_relayed_node(name, flower_keys[pid], tomls[pid], user=relay_user)
                return [name, f"{name}-service"]
            d.start_supernode(name, flower_keys[pid], node_config(pid))
            return [name]

        def start_all(layout: str) -> dict[str, list[str]]:
            suffix = "-inline" if layout == "inline" and args.relays else ""
            return {pid: start(layout, pid, pid + suffix) for pid in agencies}

        procs: dict[str, list[str]] = {}
        layout = None
        for key, wanted in plan:
            if layout != wanted:
                for names in procs.values():
                    for proc in names:
                        d.stop(proc)
                procs, layout = start_all(wanted), wanted
                result.setdefault("deployment_s", round(time.monotonic() - t0, 1))
            result[key] = securepool_side(d, args, work, name=key, victim=procs[args.victim])
            result[key]["layout"] = layout
        if layout != final:
            for names in procs.values():
                for proc in names:
                    d.stop(proc)
            procs = start_all(final)
            result.setdefault("deployment_s", round(time.monotonic() - t0, 1))
            for proc in procs[args.victim]:
                d.stop(proc, sig=signal.SIGKILL)
        if args.trust:  # Flower's app runs on the agencies' SuperNodes only
            for proc in procs["auditor"]:
                d.stop(proc)
        start(final, args.victim, args.victim_restarted)
        if "flower" in sides:
            result["flower"] = flower_side(d, args, work)
    result["loadavg_after"] = _load()
    summarise(result)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


def summarise(result: dict[str, Any]) -> None:
    """Clean vs killed, and SecurePool / Flower, from what was measured."""
    out: dict[str, Any] = {}
    fl = result.get("flower")
    for side in ("securepool_inline", "securepool"):
        sp = result.get(side)
        if not sp or len(sp["iterations"]) < 3:
            continue
        clean = statistics.median(it["seconds"] for it in sp["iterations"][1:-1])
        last = sp["iterations"][-1]
        out[f"{side}_clean_iteration_s"] = clean
        out[f"{side}_killed_iteration_s"] = last["seconds"]
        out[f"{side}_killed_iteration_status"] = last["status"]
        out[f"{side}_kill_slowdown_s"] = last["seconds"] - clean
        out[f"{side}_bytes_per_node_clean_iteration"] = sp["iterations"][1]["bytes_per_node"]
    if "securepool_inline_clean_iteration_s" in out and "securepool_clean_iteration_s" in out:
        out["ratio_relays_vs_inline_clean"] = (
            out["securepool_clean_iteration_s"] / out["securepool_inline_clean_iteration_s"]
        )
        out["ratio_relays_vs_inline_killed"] = (
            out["securepool_killed_iteration_s"] / out["securepool_inline_killed_iteration_s"]
        )
    if fl and len(fl["rounds"]) >= 2:
        out["flower_clean_round_s"] = statistics.median(r["seconds"] for r in fl["rounds"][:-1])
        last = fl["rounds"][-1]
        out["flower_killed_round_s"] = last["seconds"]
        out["flower_killed_round_completed"] = last["completed"]
        out["flower_kill_slowdown_s"] = last["seconds"] - out["flower_clean_round_s"]
        out["flower_bytes_per_node_clean_round"] = fl["rounds"][0]["bytes_per_node"]
    if "securepool_clean_iteration_s" in out and "flower_clean_round_s" in out:
        out["ratio_securepool_vs_flower_clean"] = (
            out["securepool_clean_iteration_s"] / out["flower_clean_round_s"]
        )
        out["ratio_securepool_vs_flower_killed"] = (
            out["securepool_killed_iteration_s"] / out["flower_killed_round_s"]
        )
        out["target_no_slower_met"] = out["ratio_securepool_vs_flower_clean"] <= 1.0
    result["summary"] = out


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
