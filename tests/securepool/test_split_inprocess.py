"""The coordinator / node split over the in-process Driver: attacks from both sides.

Malicious nodes send crafted replies into the real coordinator (a malformed, an
oversized reply, a garbage plaintext update): that node only is excluded and the
group's aggregate equals the one where that node simply dropped out. A malicious
coordinator sends crafted stage messages into real nodes (a model id that is not the
node's group's, another global model to one member): the nodes refuse. Every run uses
``assignment.beacon = "seeded-insecure"`` (reproducible groups) and plain training.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from split_helpers import (
    config,
    config_text,
    coordinator_over,
    inprocess_nodes,
    stages_of,
)

from protocols.beacon import BeaconCoordinator
from securepool.config import parse_config
from securepool.coordinator.loop import PoolCoordinator
from securepool.data import federation
from securepool.node.agreement import model_hash
from securepool.node.app import STATE_FILE, ParticipantNode
from securepool.node.wire import (
    NodeStage,
    Reply,
    TrainRequest,
    decode_bundle,
    encode_bundle,
    pack_list,
    unpack_list,
)
from securepool.runtime.inprocess import InProcessDriver


class Rogue:
    """A participant node that answers one stage with crafted bytes."""

    def __init__(self, honest: ParticipantNode, stage: str, reply: bytes | None) -> None:
        self.honest, self.stage, self.reply = honest, stage, reply

    def handle(self, stage: str, payload: bytes) -> bytes:
        if stage == NodeStage.BUNDLE.value:  # its stage in a bundle: that part only
            parts = decode_bundle(payload)
            if self.stage in [st for st, _ in parts]:
                if self.reply is None:
                    raise ConnectionError("dropped out")
                answers = [self.handle(st, body) for st, body in parts]
                return Reply(True, pack_list(answers)).to_bytes()
        honest = self.honest.handle(stage, payload)
        if stage != self.stage:
            return honest
        if self.reply is None:
            raise ConnectionError("dropped out")  # the driver turns this into None
        return self.reply


def one_iteration(mode: str, rogue: str, stage: str, reply: bytes | None) -> Any:
    cfg = config(n=5, mode=mode, iterations=1, max_models=1)
    nodes, registry = inprocess_nodes(cfg)
    apps: dict[str, Any] = dict(nodes)
    apps[rogue] = Rogue(nodes[rogue], stage, reply)
    coord = coordinator_over(cfg, apps, registry)
    records: list[Any] = []
    coord.run(on_iteration=records.append)
    return records[0], coord.state.globals


@pytest.mark.parametrize(
    ("mode", "stage", "reply", "reason"),
    [
        ("mask", "secagg/shares", b"\x00garbage", "malformed reply"),
        ("mask", "secagg/keys", b"\x00garbage", "malformed reply"),  # in a bundle
        ("mask", "secagg/shares", Reply(True, b"\x01" * (6 << 20)).to_bytes(), "over the limit"),
        ("mask", "train", Reply(True, b"not an advert").to_bytes(), "refused by the coordinator"),
        ("plaintext", "train", Reply(True, b"\x01" * 40).to_bytes(), "malformed update"),
    ],
)
def test_a_bad_reply_excludes_that_node_only(
    mode: str, stage: str, reply: bytes, reason: str
) -> None:
    record, globals_ = one_iteration(mode, "p02", stage, reply)
    (group,) = record.groups
    assert group.status == "aggregated"
    assert set(group.contributors) == set(group.members) - {"p02"}
    assert reason in group.excluded["p02"]
    # the same aggregate as when p02 simply drops out at that stage
    dropped_record, dropped = one_iteration(mode, "p02", stage, None)
    assert dropped_record.groups[0].contributors == group.contributors
    for mid in globals_:
        np.testing.assert_allclose(globals_[mid], dropped[mid], atol=1e-5)


class Tamper:
    """The coordinator's side of the wire, rewriting one node's TRAIN message (and
    keeping every part's answer)."""

    def __init__(self, inner: InProcessDriver, victim: str, rewrite: Any) -> None:
        self.inner, self.victim, self.rewrite = inner, victim, rewrite
        self.replies: dict[str, bytes | None] = {}

    def nodes(self) -> tuple[str, ...]:
        return self.inner.nodes()

    def exchange(self, stage: str, batch: Mapping[str, bytes], *, timeout: float, **kw: Any) -> Any:
        batch = dict(batch)
        bundled = stage == NodeStage.BUNDLE.value
        if self.victim in batch:  # its TRAIN part (the key directory rides beside it)
            parts = decode_bundle(batch[self.victim]) if bundled else [(stage, batch[self.victim])]
            parts = [
                (st, self.rewrite(TrainRequest.from_bytes(body)))
                if st == NodeStage.TRAIN.value
                else (st, body)
                for st, body in parts
            ]
            batch[self.victim] = encode_bundle(parts) if bundled else parts[0][1]
        out = self.inner.exchange(stage, batch, timeout=timeout, **kw)
        for k, raw in out.items():  # every part's answer, as "stage:node"
            stages = stages_of(stage, batch[k])
            answers: list[bytes | None] = [raw]
            if bundled:
                reply = None if raw is None else Reply.from_bytes(raw)
                answers = [None] * len(stages)
                if reply is not None and reply.ok:
                    answers = list(unpack_list(reply.body, what="bundle"))
            for st, answer in zip(stages, answers, strict=True):
                self.replies[f"{st}:{k}"] = answer
        return out

    def close(self) -> None:
        self.inner.close()


def tampered_run(rewrite: Any, *, n: int = 5, max_models: int = 1) -> tuple[Any, Tamper]:
    cfg = config(n=n, mode="mask", iterations=1, max_models=max_models)
    nodes, registry = inprocess_nodes(cfg)
    holder: list[Tamper] = []

    def factory() -> Tamper:
        holder.append(Tamper(InProcessDriver(nodes), "p01", rewrite))
        return holder[0]

    coord = PoolCoordinator(
        cfg, driver_factory=factory, registry=registry, n_features=64, n_classes=10
    )
    records: list[Any] = []
    coord.run(on_iteration=records.append)
    return records[0], holder[0]


def _refusal(raw: bytes | None) -> dict[str, Any]:
    assert raw is not None
    reply = Reply.from_bytes(raw)
    assert not reply.ok
    return dict(reply.meta)


def test_node_refuses_a_model_that_is_not_its_groups() -> None:
    def other_model(req: TrainRequest) -> bytes:
        return TrainRequest(
            req.outcome, "mlp" if req.model_id == "lr" else "lr", req.params
        ).to_bytes()

    record, tamper = tampered_run(other_model)
    meta = _refusal(tamper.replies["train:p01"])
    assert meta["error"] == "SecurityViolation" and "its group is" in meta["reason"]
    assert "p01" in record.groups[0].excluded


def _nudged(req: TrainRequest, *, relist: bool) -> bytes:
    params = req.params.copy()
    params[0] += 0.5
    hashes = dict(req.model_hashes)
    if relist:  # the round's model list rewritten to match, for this member only
        hashes[req.model_id] = model_hash(params)
    return dataclasses.replace(
        req, params=params, model_hashes=tuple(sorted(hashes.items()))
    ).to_bytes()


def test_a_different_global_model_to_one_member_is_refused_by_it() -> None:
    """Model inconsistency (Pasquini et al.): the model must be the round's listed one."""
    record, tamper = tampered_run(functools.partial(_nudged, relist=False))
    meta = _refusal(tamper.replies["train:p01"])
    assert meta["error"] == "SecurityViolation" and "model list" in meta["reason"]
    (group,) = record.groups
    assert "p01" in group.excluded and "p01" not in group.contributors


def test_a_model_and_list_for_one_member_leave_it_without_a_certificate() -> None:
    """The same with the list rewritten for that member: it endorses another statement,
    so the round's certificate is not on what it endorsed and its SecAgg+ stops."""
    record, tamper = tampered_run(functools.partial(_nudged, relist=True))
    meta = _refusal(tamper.replies["secagg/shares:p01"])
    assert meta["error"] == "SecurityViolation" and "quorum certificate" in meta["reason"]
    (group,) = record.groups  # the others refuse its digest (another model) at delivery
    assert "p01" not in group.contributors


def test_a_train_request_carries_the_pool_iteration_and_a_node_refuses_one_past_the_cap() -> None:
    """The pool iteration seeds only the mini-batch order (so a resumed run trains like an
    uninterrupted one); one past convergence.max_iterations is refused."""
    seen: list[int] = []

    def past_the_cap(req: TrainRequest) -> bytes:
        seen.append(req.iteration)
        return dataclasses.replace(req, iteration=99).to_bytes()

    record, tamper = tampered_run(past_the_cap)
    assert seen == [1]
    meta = _refusal(tamper.replies["train:p01"])
    assert meta["error"] == "MessageError" and "pool iteration 99" in meta["reason"]
    assert "p01" in record.groups[0].excluded


def test_node_refuses_an_unknown_stage_and_secagg_without_a_session() -> None:
    nodes, _ = inprocess_nodes(config(n=3, mode="mask"))
    node = nodes["p00"]
    assert _refusal(node.handle("no-such-stage", b""))["error"] == "StageError"
    assert _refusal(node.handle(NodeStage.SECAGG_KEYS.value, b"x"))["error"] == "StageError"
    assert _refusal(node.handle(NodeStage.TRAIN.value, b"\x00"))["error"] == "MessageError"


def test_the_default_runtime_equals_nodes_with_their_own_state_files(tmp_path: Path) -> None:
    """Same seed, seeded beacon: the default runtime (in-memory nodes, shared signature
    memo) and the same coordinator over nodes that persist every stage in their own state
    directory, as a node Flower rebuilds per message does, agree within quantisation."""
    from securepool.coordinator.launch import demo_nodes, inprocess_split
    from securepool.runner import prepare

    text = config_text(n=6, mode="mask", iterations=1)
    cfg, default, nodes = prepare(text, Path("x.toml"))
    assert nodes is not None
    default.run()
    nodes.close()
    files = inprocess_split(cfg, demo_nodes(cfg, text, tmp_path), tmp_path)
    files.run()
    for mid, vec in files.state.globals.items():
        np.testing.assert_allclose(default.state.globals[mid], vec, atol=1e-5)
    assert {m: r.errors for m, r in default.state.test.items()} == {
        m: r.errors for m, r in files.state.test.items()
    }


def test_dp_ledger_lives_in_the_node_state_dir_and_survives_a_restart(tmp_path: Path) -> None:
    text = config_text(n=4, mode="mask", iterations=1, max_models=1) + (
        "[privacy]\nenabled = true\nnoise_multiplier = 1.0\n"
    )
    # with DP on, evaluation is on the coordinator's holdout (nodes refuse to count)
    text = text.replace('mode = "federated"', 'mode = "holdout"')
    cfg = parse_config(tomllib.loads(text))
    nodes, registry = inprocess_nodes(cfg)
    for pid, node in nodes.items():  # give every node its own state directory
        node._state_dir = tmp_path / pid
    data = federation(cfg)
    coord = PoolCoordinator(
        cfg,
        driver_factory=lambda: InProcessDriver(nodes),
        registry=registry,
        n_features=64,
        n_classes=10,
        holdout=(data.x_holdout, data.y_holdout),
    )
    records: list[Any] = []
    coord.run(on_iteration=records.append)
    eps = records[0].epsilon
    assert eps is not None and all(v > 0 for v in eps.values())
    state = json.loads((tmp_path / "p00" / STATE_FILE).read_text())
    assert state["beacon_last_iteration"] == 1 and state["privacy"]["ledger"]
    again = ParticipantNode(
        "p00",
        cfg=cfg,
        data=nodes["p00"]._data,
        identity=nodes["p00"]._identity,
        registry=registry,
        n_features=64,
        n_classes=10,
        state_dir=tmp_path / "p00",
    )
    assert again._dp.epsilon() == pytest.approx(nodes["p00"]._dp.epsilon())
    # the restarted node still refuses an old iteration's beacon (replay)
    assert again._beacon_client().last_iteration == 1
    old = BeaconCoordinator(registry).start(
        iteration=1, pool_digest=bytes(32), invited=sorted(registry)
    )
    meta = _refusal(again.handle(NodeStage.BEACON_START.value, old))
    assert meta["error"] == "StageError" and "replayed" in meta["reason"]


def test_one_batch_per_stage_whatever_the_number_of_groups() -> None:
    """An iteration costs the protocol's round trips, not that times the groups."""
    cfg = config(n=8, mode="mask", iterations=1, max_models=2)
    nodes, registry = inprocess_nodes(cfg)
    calls: list[tuple[str, int]] = []

    class Counting(InProcessDriver):
        def exchange(
            self, stage: str, batch: Mapping[str, bytes], *, timeout: float, **kw: Any
        ) -> Any:
            calls.append((stage, len(batch)))
            return super().exchange(stage, batch, timeout=timeout, **kw)

    coord = coordinator_over(cfg, nodes, registry, Counting)
    records: list[Any] = []
    coord.run(on_iteration=records.append)
    assert len(records[0].groups) == 2  # this seed gives two groups
    assert all(g.status == "aggregated" for g in records[0].groups)
    stages = [s for s, _ in calls]
    assert stages == [
        "hello",
        "evaluate",  # S401 before the loop
        "beacon/start",
        "bundle",  # beacon/commits, with each node's SecAgg+ key advert for the round
        # the iteration: four round trips to the participants
        "bundle",  # train, with its group's key directory: ShareKeys come back with it
        "bundle",  # secagg/shares, led by the round's quorum certificate
        "secagg/survivors",
        "secagg/unmask",
        "evaluate",  # S405
    ]
    assert dict(calls)["bundle"] == 8  # both groups' members in one batch
