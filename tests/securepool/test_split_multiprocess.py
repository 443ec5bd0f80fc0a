"""The role split across OS processes: every participant node in its own process.

One small multiprocess run (4 participants, one group, 2 iterations, mask mode,
``assignment.beacon = "seeded-insecure"`` so the assignment is reproducible) checks:

* separation: while the nodes hold their secrets (mid-iteration), a walk of the
  coordinator's object graph, from the coordinator and from its frames' locals where
  the iteration's SecAgg+ server lives (``separation_helpers.coordinator_view``), finds
  no participant record, no secret key object but the server's own throwaway probe key
  and no float vector of a model's size other than a global model (no plaintext
  update);
* a node SIGKILLed by its PID mid-iteration (before its masked input) is a dropout and
  the iteration completes by SecAgg+ dropout recovery;
* iteration 1 gives the same global models as the in-process runtime with the same
  seed, within quantisation.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from separation_helpers import Found, carries, coordinator_view, foreign_secrets, probe_keys
from split_helpers import config_text, inprocess_coordinator

from securepool.config import parse_config
from securepool.coordinator.launch import multiprocess_coordinator
from securepool.data import partition
from securepool.node.wire import NodeStage
from securepool.runtime.multiprocess import MultiprocessDriver


class Spy:
    """Wraps the real driver: walks the coordinator (:func:`coordinator_view`, from the
    coordinator and its frames' locals) when iteration 1's unmask stage is sent, and
    kills a node, by PID, at the secagg/shares stage of iteration 2 (after the stage's
    batch is built)."""

    def __init__(self, inner: MultiprocessDriver, coordinator: Any, victim: str) -> None:
        self.inner, self.coordinator, self.victim = inner, coordinator, victim
        self.iteration = 0
        self.findings: list[Found] = []
        self.killed_pid: int | None = None

    def nodes(self) -> tuple[str, ...]:
        return self.inner.nodes()

    def exchange(self, stage: str, batch: Mapping[str, bytes], *, timeout: float, **kw: Any) -> Any:
        if carries(stage, batch, NodeStage.TRAIN):
            self.iteration += 1
        # iteration 1's unmask carries iteration 2's beacon commits: a bundle
        unmask = carries(stage, batch, NodeStage.SECAGG_UNMASK)
        if unmask and self.iteration == 1 and not self.findings:
            self.findings.append(coordinator_view(self.coordinator))
        if carries(stage, batch, NodeStage.SECAGG_SHARES) and self.iteration == 2:
            self.killed_pid = self.inner.pids()[self.victim]
            os.kill(self.killed_pid, signal.SIGKILL)
        return self.inner.exchange(stage, batch, timeout=timeout, **kw)

    def close(self) -> None:
        self.inner.close()


def test_every_node_in_its_own_process_coordinator_holds_no_secret(tmp_path: Path) -> None:
    text = config_text(n=4, mode="mask", iterations=2, runtime="multiprocess", max_models=1)
    cfg = parse_config(tomllib.loads(text))
    coord = multiprocess_coordinator(cfg, text, tmp_path, timeout=120.0)
    factory = coord._driver_factory
    spies: list[Spy] = []

    def spied() -> Spy:
        spies.append(Spy(factory(), coord, victim="p03"))  # type: ignore[arg-type]
        return spies[0]

    coord._driver_factory = spied
    records = []
    globals_after: list[dict[str, np.ndarray]] = []

    def keep(record: Any) -> None:
        records.append(record)
        globals_after.append({m: v.copy() for m, v in coord.state.globals.items()})

    try:
        coord.run(on_iteration=keep)
        pids = spies[0].inner.pids()
    finally:
        coord.close()
    spy = spies[0]

    # every participant ran in its own OS process, none of them this one
    assert len(set(pids.values())) == 4 and os.getpid() not in pids.values()
    assert not spy.inner.startup_errors

    # separation, inspected mid-iteration 1 (every node holds its SecAgg+ client then):
    # the walk reached the iteration's SecAgg+ server, and found no secret-key object but
    # the server's own throwaway ``_probe`` key
    (found,) = spy.findings
    assert "SecAggServer" in found.types and probe_keys(found)
    assert found.described(foreign_secrets(found)) == []
    data = partition(cfg.data, seed=cfg.run.seed)
    rows = {
        row.tobytes()
        for d in data.participants.values()
        for x in (d.x_train, d.x_test)
        for row in x.numpy()
    }
    sizes = {lay.size for lay in coord.layouts.values()}
    allowed = [v for g in [coord.state.globals, *globals_after] for v in g.values()]
    initial = inprocess_coordinator(cfg)[0].state.globals
    allowed += list(initial.values())
    for arr in found.arrays:
        if arr.dtype == np.float32 and arr.size % 64 == 0 and arr.size:
            rows_here = arr.reshape(-1, 64)
            assert not any(r.tobytes() in rows for r in rows_here), f"a record: {found.path(arr)}"
        if arr.ndim == 1 and arr.size in sizes and arr.dtype.kind == "f":
            assert any(a.shape == arr.shape and np.array_equal(a, arr) for a in allowed), (
                f"a model-sized float vector that is no global model: {found.path(arr)}"
            )

    # the node killed mid-iteration 2 is a dropout; dropout recovery completes the group
    assert spy.killed_pid == pids["p03"]
    (group,) = records[1].groups
    assert group.status == "aggregated"
    assert group.contributors == ("p00", "p01", "p02")
    assert "p03" in group.excluded

    # iteration 1 equals the in-process runtime's with the same seed (quantisation only)
    ref, _nodes = inprocess_coordinator(cfg)
    ref_records: list[Any] = []
    ref.cfg = dataclasses.replace(
        cfg, convergence=dataclasses.replace(cfg.convergence, max_iterations=1)
    )
    ref.run(on_iteration=ref_records.append)
    assert ref_records[0].joint_seed == records[0].joint_seed
    for mid, vec in ref.state.globals.items():
        np.testing.assert_allclose(globals_after[0][mid], vec, atol=1e-5)


def test_securepool_run_multiprocess_then_resume_after_a_coordinator_crash(
    tmp_path: Path,
) -> None:
    """The public entry points: ``[run] runtime = "multiprocess"``, then ``--resume``
    after the coordinator dies between iterations; restarted nodes reload their keys and
    state (a replayed iteration would be refused) and the run continues."""
    import json

    from securepool.runner import resume_job, start_job

    cfg_file = tmp_path / "run.toml"
    cfg_file.write_text(config_text(n=4, mode="plaintext", iterations=2, runtime="multiprocess"))
    out = tmp_path / "out"

    def crash(record: Any) -> None:
        raise KeyboardInterrupt("coordinator killed after iteration 1")

    with pytest.raises(KeyboardInterrupt):
        start_job(cfg_file, out, on_iteration=crash)
    nodes = tmp_path / "out.nodes"  # beside the run directory: the nodes' own files
    keys = {p: (nodes / p / "identity.key").read_bytes() for p in ("p00", "p01", "p02", "p03")}
    for pid in keys:
        assert (nodes / pid / "identity.key").stat().st_mode & 0o077 == 0
        assert (nodes / "registry" / f"{pid}.pub").is_file()
    summary = resume_job(out)
    assert summary["iterations"] == 2 and summary["aggregation"]["mode"] == "plaintext"
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["iteration"] for x in lines] == [1, 2]
    assert json.loads(lines[1])["groups"][0]["status"] == "aggregated"
    for pid, key in keys.items():  # the same keys, and each node's state moved on
        assert (nodes / pid / "identity.key").read_bytes() == key
        state = json.loads((nodes / pid / "node_state.json").read_text())
        assert state["beacon_last_iteration"] == 2


def test_a_coordinator_killed_mid_iteration_resumes_with_fresh_beacon_rounds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Mask mode, the coordinator dies in the middle of iteration 2, after the nodes have
    committed to (and taken part in) rounds past the checkpoint: ``--resume`` redoes
    iteration 2 on rounds above those the nodes report, so no node is asked to replay a
    round it refuses, and the run finishes."""
    import json

    from securepool.runner import resume_job, start_job

    cfg_file = tmp_path / "run.toml"
    cfg_file.write_text(
        config_text(n=4, mode="mask", iterations=3, runtime="multiprocess", max_models=1)
    )
    out = tmp_path / "out"
    real = MultiprocessDriver.exchange
    trains = []

    def dies(self: MultiprocessDriver, stage: str, batch: Any, *, timeout: float, **kw: Any) -> Any:
        trains.append(carries(stage, batch, NodeStage.TRAIN))
        if sum(trains) == 2 and carries(stage, batch, NodeStage.SECAGG_SHARES):
            raise KeyboardInterrupt("coordinator killed mid-iteration 2")
        return real(self, stage, batch, timeout=timeout, **kw)

    monkeypatch.setattr(MultiprocessDriver, "exchange", dies)
    with pytest.raises(KeyboardInterrupt):
        start_job(cfg_file, out)
    monkeypatch.setattr(MultiprocessDriver, "exchange", real)
    nodes = tmp_path / "out.nodes"
    before = {
        p: json.loads((nodes / p / "node_state.json").read_text())["beacon_last_iteration"]
        for p in ("p00", "p01", "p02", "p03")
    }
    assert max(before.values()) >= 2  # the nodes are past the checkpoint's round (1)
    summary = resume_job(out)
    assert summary["iterations"] == 3
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [x["iteration"] for x in lines] == [1, 2, 3]
    assert all(x["groups"][0]["status"] == "aggregated" for x in lines)
    state = json.loads((out / "checkpoint" / "state.json").read_text())
    assert state["components"]["round"] > max(before.values())


def test_a_frozen_node_costs_the_patience_bound_not_the_stage_timeout(tmp_path: Path) -> None:
    """Issue 26: a node that is alive but never answers (SIGSTOPped by its PID at the
    shares of iteration 2, as a SuperNode killed mid-stage looks to the coordinator
    until Flower's heartbeat verdict) is a dropout once the others have answered and the
    run's patience bound has passed, not after the stage's timeout (120 s here); SecAgg+
    recovery completes the group without it."""
    import time

    text = config_text(n=4, mode="mask", iterations=2, runtime="multiprocess", max_models=1)
    text = text.replace("[run]\n", "[run]\nstage_patience = 3.0\nstage_patience_floor = 2.0\n")
    cfg = parse_config(tomllib.loads(text))
    assert cfg.run.stage_patience_floor == 2.0
    coord = multiprocess_coordinator(cfg, text, tmp_path, timeout=120.0)
    factory = coord._driver_factory
    waits: list[float] = []

    class Freezes:
        def __init__(self, inner: MultiprocessDriver) -> None:
            self.inner, self.trains, self.frozen = inner, 0, 0

        def nodes(self) -> tuple[str, ...]:
            return self.inner.nodes()

        def exchange(self, stage: str, batch: Mapping[str, bytes], **kw: Any) -> Any:
            self.trains += carries(stage, batch, NodeStage.TRAIN)
            if carries(stage, batch, NodeStage.SECAGG_SHARES) and self.trains == 2:
                self.frozen = self.inner.pids()["p03"]
                os.kill(self.frozen, signal.SIGSTOP)
                start = time.monotonic()
                out = self.inner.exchange(stage, batch, **kw)
                waits.append(time.monotonic() - start)
                return out
            return self.inner.exchange(stage, batch, **kw)

        def close(self) -> None:
            if self.frozen:
                os.kill(self.frozen, signal.SIGKILL)
            self.inner.close()

    drivers: list[Freezes] = []

    def frozen() -> Freezes:
        drivers.append(Freezes(factory()))  # type: ignore[arg-type]
        return drivers[-1]

    coord._driver_factory = frozen
    records: list[Any] = []
    try:
        coord.run(on_iteration=records.append)
    finally:
        coord.close()
    assert drivers[0].frozen and len(waits) == 1
    assert waits[0] < 60  # the patience bound, not the 120 s stage timeout
    (group,) = records[1].groups
    assert group.status == "aggregated"
    assert group.contributors == ("p00", "p01", "p02") and "p03" in group.excluded
