"""``privacy.mechanism = "distributed"`` through the real coordinator and nodes: what it
refuses, that a run has the local mechanism's shape and files, how many exchanges its
steps cost, and two attacks from the coordinator's side of the wire (another sum for one
node) and from a node's (vanishing after step 0)."""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from split_helpers import coordinator_over, inprocess_nodes

from crypto.errors import ConfigError
from protocols.secagg.messages import StepModel, decode_message, encode_message
from securepool.cli import main
from securepool.config import parse_config
from securepool.node.wire import NodeStage, Reply
from securepool.runtime.inprocess import InProcessDriver

BASE = """
[run]
seed = 7
[data]
dataset = "digits"
participants = 5
partition = "iid"
holdout_fraction = 0.2
local_test_fraction = 0.05
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
batch_size = 64
lr = 2.0
[evaluation]
mode = "holdout"
[convergence]
error_range = [0.0, 0.0001]
max_iterations = 2
[acceptance]
max_error_bound = 0.9
[aggregation]
mode = "{mode}"
[aggregation.mask]
clip = 8.0
[privacy]
enabled = {enabled}
noise_multiplier = 1.5
sample_rate = 0.5
steps = 3
mechanism = "{mechanism}"
"""


def _text(*, mode: str = "mask", enabled: str = "true", mechanism: str = "distributed") -> str:
    return BASE.format(mode=mode, enabled=enabled, mechanism=mechanism)


def _cfg(extra: str = "", *, iterations: int = 2, **kw: str) -> Any:
    text = _text(**kw).replace("max_iterations = 2", f"max_iterations = {iterations}")
    return parse_config(tomllib.loads(text + extra))


@pytest.mark.parametrize(
    ("kw", "extra", "reason"),
    [
        ({"mode": "he"}, "", "aggregation.mode = 'he'"),
        ({"mode": "plaintext"}, "", "aggregation.mode = 'plaintext'"),
        ({"enabled": "false"}, "", "needs privacy.enabled = true"),
        ({}, "[trust]\nenabled = true\n", "trust.enabled = true"),
        ({}, '[attack]\nenabled = true\nkind = "scaling"\nparticipants = ["p01"]\n', "[attack]"),
    ],
)
def test_what_the_distributed_mechanism_refuses(
    kw: dict[str, str], extra: str, reason: str
) -> None:
    with pytest.raises(ConfigError) as info:
        _cfg(extra, **kw)
    text = str(info.value)
    assert "privacy.mechanism = 'distributed'" in text and reason in text


def _run(tmp: Path, mechanism: str) -> Path:
    cfg = tmp / f"{mechanism}.toml"
    cfg.write_text(_text(mechanism=mechanism))
    out = tmp / mechanism
    assert main(["run", str(cfg), "--out", str(out), "--quiet"]) in (0, 1)
    return out


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_a_run_has_the_local_mechanisms_shape_files_and_epsilon(tmp_path: Path) -> None:
    local, dist = _run(tmp_path, "local"), _run(tmp_path, "distributed")
    assert _files(local) == _files(dist)
    pools = [json.loads((d / "pool" / "manifest.json").read_text()) for d in (local, dist)]
    assert [m["id"] for m in pools[0]["models"]] == [m["id"] for m in pools[1]["models"]]
    for d in (local, dist):
        assert np.load(d / "pool" / "lr.npy").shape == (650,)
    eps = [json.loads((d / "summary.json").read_text())["privacy"] for d in (local, dist)]
    assert sorted(eps[0]) == sorted(eps[1])
    for pid in eps[0]:
        assert eps[0][pid]["epsilon"] == pytest.approx(eps[1][pid]["epsilon"], rel=1e-3)
        assert eps[1][pid]["mechanism"] == "distributed"
        assert eps[1][pid]["distributed_log10_tau"] < -1000  # Kairouz et al.'s tau: nil
    lines = [json.loads(x) for x in (dist / "metrics.jsonl").read_text().splitlines()]
    assert all(g["status"] == "aggregated" and g["contributors"] == 5 for g in lines[0]["groups"])


class Spy(InProcessDriver):
    """Counts the exchanges of each stage; ``rewrite`` may replace what one node gets."""

    rewrite: Any = None

    def __init__(self, apps: Mapping[str, Any]) -> None:
        super().__init__(apps)
        self.stages: list[str] = []
        self.replies: dict[str, dict[str, bytes | None]] = {}

    def exchange(self, stage: str, batch: Mapping[str, bytes], *, timeout: float, **kw: Any) -> Any:
        self.stages.append(stage)
        if self.rewrite is not None:
            batch = self.rewrite(stage, dict(batch))
        out = super().exchange(stage, batch, timeout=timeout, **kw)
        self.replies.setdefault(stage, {}).update(out)
        return out


def _one_iteration(apps_of: Any = None, rewrite: Any = None) -> tuple[Any, Spy, Any]:
    cfg = _cfg(iterations=1)
    nodes, registry = inprocess_nodes(cfg)
    apps: dict[str, Any] = dict(nodes) if apps_of is None else apps_of(nodes)
    spies: list[Spy] = []

    class Driver(Spy):
        def __init__(self, a: Mapping[str, Any]) -> None:
            super().__init__(a)
            self.rewrite = rewrite
            spies.append(self)

    coord = coordinator_over(cfg, apps, registry, driver=Driver)
    start = coord.state.globals["lr"].copy() if coord.state.globals else None
    records: list[Any] = []
    coord.run(on_iteration=records.append)
    return records[0], spies[0], (start, coord.state.globals["lr"])


def test_each_later_step_costs_two_exchanges() -> None:
    record, spy, _ = _one_iteration()
    assert spy.stages.count(NodeStage.DP_MODEL.value) == 2  # steps 1 and 2 of 3
    assert spy.stages.count(NodeStage.DP_STEP.value) == 2
    assert record.groups[0].status == "aggregated" and not record.groups[0].note


def _another_sum_for_p01(stage: str, batch: dict[str, bytes]) -> dict[str, bytes]:
    """The coordinator's lie: p01 gets a step sum of its own making."""
    if stage == NodeStage.DP_MODEL.value and "p01" in batch:
        msg = decode_message(batch["p01"], StepModel)
        total = msg.total.copy()
        total[:-1] += np.uint64(1 << 30)
        batch["p01"] = encode_message(StepModel(msg.session, msg.step, total))
    return batch


def test_another_sum_for_one_node_is_refused_by_every_node() -> None:
    """The coordinator sends p01 a step sum of its own making at step 1: every node
    refuses the step's go (p01's signature is over another model), nothing of step 1
    leaves, and the group keeps the model of step 0."""

    rewrite = _another_sum_for_p01

    record, spy, _ = _one_iteration(rewrite=rewrite)
    group = record.groups[0]
    assert group.status == "aggregated" and "steps stopped" in group.note
    replies = spy.replies[NodeStage.DP_MODEL.value]
    assert all(Reply.from_bytes(r).ok for r in replies.values() if r is not None)
    # the honest coordinator code refused p01's digest; a go was never sent
    assert "p01" in group.note and NodeStage.DP_STEP.value not in spy.stages


def test_a_lying_coordinator_that_forwards_every_signature_gets_no_input(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As above, but the coordinator also forwards p01's signature to everyone (it is the
    coordinator's own server that refused it above): every node refuses the go."""
    forged: dict[str, bytes] = {}

    def rewrite(stage: str, batch: dict[str, bytes]) -> dict[str, bytes]:
        if stage == NodeStage.DP_MODEL.value and "p01" in batch:
            forged["on"] = b"1"
        return _another_sum_for_p01(stage, batch)

    from protocols.secagg.messages import StepDigest
    from securepool.coordinator.modes import mask as mask_mode

    class Liar(mask_mode.SteppedServer):
        def receive_step(self, data: bytes, *, sender: str) -> None:
            msg = decode_message(data)
            if isinstance(msg, StepDigest):  # file every signature unchecked
                self._digests[sender] = msg.signature
                return
            super().receive_step(data, sender=sender)

    monkeypatch.setattr(mask_mode, "SteppedServer", Liar)
    record, spy, _ = _one_iteration(rewrite=rewrite)
    assert forged and NodeStage.DP_STEP.value in spy.stages
    step_replies = spy.replies[NodeStage.DP_STEP.value]
    assert len(step_replies) == 5
    for raw in step_replies.values():
        assert raw is not None
        reply = Reply.from_bytes(raw)
        assert not reply.ok and "did not sign the model" in reply.meta["reason"]
    assert "steps stopped" in record.groups[0].note


class Vanishing:
    """A node that answers until its first later step, then is gone."""

    def __init__(self, honest: Any) -> None:
        self.honest = honest

    def handle(self, stage: str, payload: bytes) -> bytes:
        if stage == NodeStage.DP_STEP.value:
            raise ConnectionError("gone")
        return bytes(self.honest.handle(stage, payload))


def test_a_node_vanishing_after_step_0_stops_the_steps_and_step_0_stands() -> None:
    def apps(nodes: dict[str, Any]) -> dict[str, Any]:
        return {**nodes, "p03": Vanishing(nodes["p03"])}

    record, _spy, (start, end) = _one_iteration(apps_of=apps)
    group = record.groups[0]
    assert group.status == "aggregated" and group.contributors == tuple(f"p0{i}" for i in range(5))
    assert "steps stopped" in group.note and "p03" in group.note
    assert "p03" in group.excluded and NodeStage.DP_STEP.value in group.excluded["p03"]
    assert start is not None and not np.array_equal(start, end)  # step 0 moved the model
