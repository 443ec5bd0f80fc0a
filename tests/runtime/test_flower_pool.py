"""The random pool on a real Flower 1.42 deployment on 127.0.0.1 (TLS, node auth).

One module-scoped deployment: a SuperLink with TLS and ``--enable-supernode-auth``, four
participant SuperNodes (p00-p03), each with its own identity key file from
``securepool keygen`` (0600, never sent), its own state directory and the built-in
digits partition of its id, and an ``intruder`` with a node key the SuperLink never
registered. ``flwr run`` starts the ServerApp, whose coordinator runs a two-iteration
mask-mode pool into a run directory exactly as ``securepool run`` would.

In iteration 2 the test SIGKILLs p03's SuperNode after p03 has sent its key shares and
before its masked input: SecAgg+ dropout recovery must finish the group without it.
The reference is the same config on the in-process driver, with p03 dropping out at the
same stage: the final pools are equal within quantisation. One pool model and four
participants with ``min_group_size = 3`` keep the groups of both runs the same (the
seeded beacon hashes the pool, which differs between runs within quantisation).
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip(
    "securepool.runtime.flower", reason="flwr is not installed (it is a dependency)"
)  # first: it turns Flower telemetry off before flwr loads

from securepool.config import parse_config, parse_toml
from securepool.coordinator.launch import holdout_set
from securepool.coordinator.loop import PoolCoordinator
from securepool.node.app import SESSION_FILE
from securepool.node.keys import keygen, public_path
from securepool.node.serve import build_participant, read_registry
from securepool.rundir import GLOBALS
from securepool.runtime.flower_harness import LocalDeployment
from securepool.runtime.inprocess import InProcessDriver

ROOT = Path(__file__).resolve().parents[2]
NODES = ("p00", "p01", "p02", "p03")
VICTIM = "p03"
DEADLINE = 540.0  # a hang guard: about 2 minutes on a quiet machine

CONFIG = """
[run]
seed = 11
runtime = "{runtime}"
{registry}
stage_timeout = 45.0
[data]
participants = 4
[[pool.models]]
id = "lr"
arch = "logreg"
seed = 1
[assignment]
min_group_size = 3
min_models = 1
max_models = 1
beacon = "seeded-insecure"
[training]
epochs = 1
lr = 0.3
[evaluation]
mode = "holdout"
[convergence]
error_range = [0.0, 0.0001]
max_iterations = 2
[aggregation]
mode = "mask"
"""


def _secagg_stage(state_dir: Path) -> str | None:
    try:
        doc = json.loads((state_dir / SESSION_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not doc.get("secagg"):
        return None
    state = json.loads(doc["secagg"])["state"]
    return str(state["_iteration"]) + "/" + str(state["stage"]["v"])


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Any:
    work = tmp_path_factory.mktemp("flower-pool")
    registry = work / "registry"
    registry.mkdir()
    config = work / "pool.toml"
    config.write_text(
        CONFIG.format(runtime="flower", registry=f'registry = "{registry}"'), encoding="utf-8"
    )
    out = work / "run"
    for pid in NODES:
        key = work / "agencies" / pid / "identity.key"
        keygen(key)
        (registry / f"{pid}.pub").write_bytes(public_path(key).read_bytes())
    with LocalDeployment(work, pythonpath=[ROOT]) as d:
        start = time.monotonic()
        d.start_superlink()
        for pid in NODES:
            d.start_supernode(
                pid,
                d.node_key(pid),
                {
                    "node-id": pid,
                    "role": "participant",
                    "factory": "securepool.node.serve:flower_participant",
                    "config": str(config),
                    "state-dir": str(work / "agencies" / pid),
                    "registry-dir": str(registry),
                    "key-file": str(work / "agencies" / pid / "identity.key"),
                },
            )
        intruder = d.start_supernode(
            "intruder",
            d.node_key("intruder", register=False),
            {
                "node-id": "intruder",
                "role": "participant",
                "factory": "securepool.node.serve:flower_participant",
            },
        )
        d.run(
            ROOT,
            {
                "coordinator": "securepool.coordinator.flower:run_pool",
                "coordinator-args": f"run {config} {out}",
                "nodes": len(NODES),
                "discovery-timeout": 90.0,
            },
        )
        killed_at = None
        victim_dir = work / "agencies" / VICTIM
        while time.monotonic() - start < DEADLINE:
            if killed_at is None and _secagg_stage(victim_dir) == "2/INPUT":
                d.stop(VICTIM, sig=signal.SIGKILL)  # shares sent, masked input not yet
                killed_at = time.monotonic() - start
            if (out / "summary.json").exists():
                break
            time.sleep(0.2)
        if not (out / "summary.json").exists():
            logs = "\n".join(f"--- {n}\n{d.log_text(n)[-2500:]}" for n in ("superlink", "p00"))
            pytest.fail(f"the pool did not finish in {DEADLINE:.0f} s\n{logs}")
        yield {
            "work": work,
            "out": out,
            "killed_at": killed_at,
            "seconds": time.monotonic() - start,
            "intruder_exit": intruder.poll(),
            "intruder_log": d.log_text("intruder"),
        }


class DropsAt:
    """The reference's p03: silent from one stage of one iteration on."""

    def __init__(self, node: Any, stage: str, iteration: int) -> None:
        self.node, self.stage, self.iteration, self.trains, self.gone = (
            node,
            stage,
            iteration,
            0,
            False,
        )

    def handle(self, stage: str, payload: bytes) -> bytes:
        self.trains += stage == "train"
        if self.trains >= self.iteration and stage == self.stage:
            self.gone = True
        if self.gone:
            raise ConnectionError("dropped out")
        reply: bytes = self.node.handle(stage, payload)
        return reply


def reference(work: Path) -> PoolCoordinator:
    text = CONFIG.format(runtime="inprocess", registry="")
    cfg = parse_config(parse_toml(text, Path("ref.toml")))
    n_features, n_classes, holdout = holdout_set(cfg)
    root = work / "reference"
    nodes: dict[str, Any] = {
        pid: build_participant(
            config_text=text,
            pid=pid,
            state_dir=str(root / pid),
            registry_dir=str(root / "registry"),
            n_features=n_features,
            n_classes=n_classes,
        )
        for pid in NODES
    }
    nodes[VICTIM] = DropsAt(nodes[VICTIM], "secagg/shares", 2)
    coord = PoolCoordinator(
        cfg,
        driver_factory=lambda: InProcessDriver(nodes),
        registry=lambda: read_registry(root / "registry"),
        n_features=n_features,
        n_classes=n_classes,
        holdout=holdout,
    )
    coord.run()
    return coord


def test_the_pool_runs_over_tls_and_equals_the_in_process_runtime(deployment: Any) -> None:
    out = deployment["out"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["iterations"] == 2
    ref = reference(deployment["work"])
    with np.load(out / GLOBALS) as npz:
        final = {m: npz[m] for m in npz.files}
    assert set(final) == set(ref.state.globals)
    for mid, vec in ref.state.globals.items():
        np.testing.assert_allclose(final[mid], vec, atol=1e-5)
    print({"seconds": round(deployment["seconds"], 1), "killed_at": deployment["killed_at"]})


def test_a_node_killed_mid_iteration_is_recovered_by_secagg(deployment: Any) -> None:
    assert deployment["killed_at"] is not None, "p03 never reached the input stage"
    lines = (deployment["out"] / "metrics.jsonl").read_text().splitlines()
    second = json.loads(lines[1])
    (group,) = second["groups"]
    assert group["status"] == "aggregated"
    assert set(group["contributors"]) == {"p00", "p01", "p02"}
    assert VICTIM in group["excluded"]


def test_an_unregistered_node_is_refused(deployment: Any) -> None:
    log = deployment["intruder_log"]
    assert deployment["intruder_exit"] not in (None, 0), log[-2000:]
    assert "Failed to activate SuperNode" in log, log[-2000:]
    first = json.loads((deployment["out"] / "metrics.jsonl").read_text().splitlines()[0])
    assert "intruder" not in json.dumps(first)
