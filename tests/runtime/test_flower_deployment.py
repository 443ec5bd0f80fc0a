"""A real Flower 1.42 deployment on 127.0.0.1: TLS, SuperNode authentication, 4 nodes.

One module-scoped deployment (about 1.5-3 minutes: SuperNodes and the grid poll every
3 s and every message starts a ClientApp process) runs a scripted coordinator in the
ServerApp; each test checks one property of what it recorded:

* p0, p1, p2 sign what they receive (tests/runtime/nodeapps.py); p3 answers with more
  bytes than the coordinator accepts (``max-reply-bytes`` = 1 MiB);
* ``intruder`` has a key the SuperLink never registered;
* between two exchanges the test kills p2's SuperNode (SIGKILL, by its process group).

Every process is started by the harness and stopped by its id at the end, on failure too.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip(
    "securepool.runtime.flower", reason="flwr is not installed (it is a dependency)"
)  # first: it turns Flower telemetry off before flwr loads

import nodeapps

from securepool.runtime.flower_harness import LocalDeployment

ROOT = Path(__file__).resolve().parents[2]
HONEST = ("p0", "p1", "p2")
DEADLINE = 240.0  # the whole scenario; each wait below is bounded by it


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Any:
    work = tmp_path_factory.mktemp("flower")
    public: dict[str, bytes] = {}
    plan = {
        "out": str(work / "out.json"),
        "steps": [
            {"stage": "one", "to": list(HONEST), "timeout": 120},
            {"stage": "all", "to": "*", "timeout": 120},
            {"signal": str(work / "ready-to-kill"), "wait": str(work / "killed")},
            {"stage": "after-kill", "to": list(HONEST), "timeout": 25},
        ],
    }
    (work / "plan.json").write_text(json.dumps(plan))
    with LocalDeployment(work, pythonpath=[ROOT / "tests" / "runtime", ROOT]) as d:
        start = time.monotonic()
        d.start_superlink()
        for name in (*HONEST, "p3"):
            key = d.node_key(name)
            public[name] = nodeapps.write_node_key(work / f"{name}.ed25519")
            d.start_supernode(
                name,
                key,
                {
                    "node-id": name,
                    "role": "participant",
                    "factory": "nodeapps:make_signing_node",
                    "key-file": str(work / f"{name}.ed25519"),
                    "behaviour": "oversized" if name == "p3" else "honest",
                },
            )
        intruder_key = d.node_key("intruder", register=False)
        nodeapps.write_node_key(work / "intruder.ed25519")
        intruder = d.start_supernode(
            "intruder",
            intruder_key,
            {
                "node-id": "intruder",
                "role": "participant",
                "factory": "nodeapps:make_signing_node",
                "key-file": str(work / "intruder.ed25519"),
            },
        )
        d.run(
            ROOT,
            {
                "coordinator": "nodeapps:scripted_coordinator",
                "coordinator-args": str(work / "plan.json"),
                "nodes": 4,
                "max-reply-bytes": 1024 * 1024,
                "discovery-timeout": 90.0,
            },
        )
        out: dict[str, Any] = {}
        killed = False
        out_path = work / "out.json"
        while time.monotonic() - start < DEADLINE:
            if not killed and (work / "ready-to-kill").exists():
                d.stop("p2", sig=signal.SIGKILL)
                (work / "killed").write_text("yes")
                killed = True
            if out_path.exists():
                try:
                    out = json.loads(out_path.read_text())
                except json.JSONDecodeError:  # being written
                    out = {}
                if out.get("done"):
                    break
            time.sleep(0.5)
        if not out.get("done"):
            logs = "\n".join(f"--- {n}\n{d.log_text(n)[-1500:]}" for n in ("superlink", "p0", "p3"))
            pytest.fail(f"the scenario did not finish in {DEADLINE:.0f} s: {out}\n{logs}")
        intruder_exit = intruder.poll()
        yield {
            "out": out,
            "steps": {s["stage"]: s for s in out["steps"]},
            "public": public,
            "intruder_exit": intruder_exit,
            "intruder_log": d.log_text("intruder"),
        }


def check_signed(step: dict[str, Any], public: dict[str, bytes], nodes: tuple[str, ...]) -> None:
    for node in nodes:
        reply = step["replies"][node]
        assert reply is not None, f"{node} did not answer {step['stage']}"
        nodeapps.verify(
            public[node],
            node,
            step["stage"],
            bytes.fromhex(step["sent"][node]),
            bytes.fromhex(reply),
        )


def test_one_exchange_reaches_three_nodes_and_returns_each_reply(deployment: Any) -> None:
    step = deployment["steps"]["one"]
    assert set(step["replies"]) == set(HONEST)
    check_signed(step, deployment["public"], HONEST)


def test_one_stage_to_several_nodes_is_one_round_trip(deployment: Any) -> None:
    for stage in ("one", "all", "after-kill"):
        assert deployment["steps"][stage]["pushes"] == 1
    print({s: round(v["seconds"], 1) for s, v in deployment["steps"].items()})


def test_an_oversized_reply_is_none_for_that_node_only(deployment: Any) -> None:
    step = deployment["steps"]["all"]
    assert step["replies"]["p3"] is None
    assert step["rejected"] == {"p3": 1}
    check_signed(step, deployment["public"], HONEST)


def test_a_node_killed_mid_run_is_a_dropout_within_the_timeout(deployment: Any) -> None:
    step = deployment["steps"]["after-kill"]
    assert step["replies"]["p2"] is None
    check_signed(step, deployment["public"], ("p0", "p1"))
    assert step["seconds"] < 25 + 1.0  # the timeout plus at most one pull


def test_an_unregistered_node_is_refused(deployment: Any) -> None:
    """Same CA, same TLS, same command line as p0-p3, but its key was never registered."""
    assert "intruder" not in deployment["out"]["nodes"]
    assert deployment["out"]["nodes"] == ["p0", "p1", "p2", "p3"]
    log = deployment["intruder_log"]
    assert deployment["intruder_exit"] not in (None, 0), log[-2000:]
    assert "Failed to activate SuperNode" in log, log[-2000:]
