"""The statistics round of ``data.scaling = "federated"`` (issue 24), from both sides.

Honest: the federation's standardisation equals the pooled training records' mean and
spread, every node trains under it, and it survives a checkpoint. Attacks from the
coordinator's side of the wire, into real nodes: a round asked twice (also after a
restart), a key directory that isolates a node among a few, different magnitudes for
different members, training without the round, a second standardisation, a round in a
run without federated scaling.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from split_helpers import (
    config_text,
    coordinator_over,
    inprocess_nodes,
    node_builders,
    with_auditor,
)

from protocols.secagg.graph import graph_seed_from
from protocols.secagg.messages import AdvertiseKeys, KeyDirectory, decode_message, encode_message
from protocols.secagg.settings import encoding_spec
from securepool.config import RunConfig, parse_config
from securepool.coordinator.scaling import ScalingRoundFailed
from securepool.data import partition
from securepool.node.wire import NodeStage, Reply
from securepool.runtime.inprocess import InProcessDriver
from securepool.scaling_round import JOINT_SEED, ScalingRequest, round_settings, session_of


def _config(*, scaling: str = "federated", mode: str = "mask", n: int = 6) -> RunConfig:
    text = config_text(n=n, mode=mode, iterations=1, models=1)
    return parse_config(tomllib.loads(text.replace("[data]\n", f'[data]\nscaling = "{scaling}"\n')))


def _pooled(cfg: RunConfig) -> np.ndarray:
    data = partition(cfg.data, seed=cfg.run.seed)
    return np.concatenate([d.x_train.numpy() for d in data.participants.values()])


def _refusal(raw: bytes) -> str:
    reply = Reply.from_bytes(raw)
    assert not reply.ok
    return str(reply.meta.get("reason", ""))


@pytest.mark.parametrize("mode", ["mask", "he", "plaintext"])
def test_the_round_gives_the_pooled_training_records_mean_and_spread(
    mode: str, tmp_path: Path
) -> None:
    cfg = _config(mode=mode)
    nodes, registry = inprocess_nodes(cfg)
    apps = with_auditor(cfg, dict(nodes), registry, tmp_path) if mode == "he" else dict(nodes)
    coord = coordinator_over(cfg, apps, registry)
    records: list[Any] = []
    coord.run(on_iteration=records.append)
    assert coord.scaling is not None
    x = _pooled(cfg)
    mean, std = x.mean(axis=0), x.std(axis=0)
    spread = std > 1e-6  # digits has constant (all-zero) pixels: std 1 there
    assert np.allclose(np.asarray(coord.scaling.mean), mean, atol=1e-5)
    assert np.allclose(np.asarray(coord.scaling.std)[spread], std[spread], rtol=1e-4)
    assert np.all(np.asarray(coord.scaling.std)[~spread] == 1.0)
    # every node trains under the agreed scaling, and the iteration aggregated
    for node in nodes.values():
        assert node._scaling.result == coord.scaling
        assert abs(float(node._data.x_train.numpy()[:, spread].mean())) < 1.0
    assert records and any(g.status == "aggregated" for g in records[0].groups)


def test_the_agreed_scaling_survives_a_checkpoint() -> None:
    cfg = _config()
    nodes, registry = inprocess_nodes(cfg)
    import torch

    holdout = (torch.ones((4, 64)), torch.zeros(4, dtype=torch.int64))
    coord = coordinator_over(cfg, dict(nodes), registry)
    coord.holdout = holdout
    coord.run()
    states = json.loads(json.dumps(coord.component_states()))
    again = coordinator_over(cfg, dict(nodes), registry)
    again.holdout = holdout
    again.load_component_states(states)
    assert again.scaling == coord.scaling
    assert again.holdout is not None and coord.holdout is not None
    assert torch.equal(again.holdout[0], coord.holdout[0])  # scaled once, as in the run


def test_each_round_is_answered_once_even_after_a_restart(tmp_path: Path) -> None:
    cfg = _config()
    builders, registry = node_builders(cfg, tmp_path)
    nodes = {pid: build() for pid, build in builders.items()}
    coordinator_over(cfg, dict(nodes), registry).run()
    ask = ScalingRequest("magnitude").to_bytes()
    # the coordinator asks p00 again, to difference two sums over other survivors
    assert "answered before" in _refusal(nodes["p00"].handle(NodeStage.SCALING_START.value, ask))
    restarted = builders["p00"]()  # a fresh node over the same state files
    assert "answered before" in _refusal(restarted.handle(NodeStage.SCALING_START.value, ask))


def test_a_directory_that_isolates_a_node_among_a_few_gets_no_share() -> None:
    cfg = _config(n=8)
    nodes, _registry = inprocess_nodes(cfg)
    req = ScalingRequest("magnitude")
    few = ("p00", "p01", "p02")  # the victim p00 and two the coordinator claims survived
    adverts = {
        pid: Reply.from_bytes(nodes[pid].handle(NodeStage.SCALING_START.value, req.to_bytes()))
        for pid in few
    }
    # the coordinator's directory of the three, with every other field as the node derives it
    keys = {}
    for pid, reply in adverts.items():
        ad = decode_message(reply.body, AdvertiseKeys)
        keys[pid] = (ad.c_pk, ad.s_pk, ad.model_digest, ad.signature)
    session = session_of("magnitude")
    spec = encoding_spec(round_settings(cfg, members=8), group_size=8)
    directory = encode_message(
        KeyDirectory(
            session,
            keys,
            graph_seed_from(JOINT_SEED, session=session),
            spec.scale,
            req.length(64),
        )
    )
    why = _refusal(nodes["p00"].handle(NodeStage.SCALING_SECAGG.value, directory))
    assert "threshold" in why  # its group is the whole PKI: 3 of 8 is too few
    # and its session is over: nothing more of it leaves
    assert "no statistics session" in _refusal(
        nodes["p00"].handle(NodeStage.SCALING_SECAGG.value, directory)
    )


class _Skewed(InProcessDriver):
    """The coordinator's side: p01 is asked the moments at other magnitudes."""

    def exchange(self, stage: str, batch: Mapping[str, bytes], **kw: Any) -> Any:
        if stage == NodeStage.SCALING_START.value and "p01" in batch:
            req = ScalingRequest.from_bytes(batch["p01"])
            if req.round == "moments":
                skewed = tuple(max(-60, e - 3) for e in req.exponents)
                batch = {**batch, "p01": ScalingRequest("moments", skewed).to_bytes()}
        return super().exchange(stage, batch, **kw)


def test_members_asked_for_other_magnitudes_fail_the_round() -> None:
    cfg = _config()
    nodes, registry = inprocess_nodes(cfg)
    coord = coordinator_over(cfg, dict(nodes), registry, driver=_Skewed)
    with pytest.raises(ScalingRoundFailed, match="moments round failed"):
        coord.run()
    assert all(node._scaling.result is None for node in nodes.values())


def test_a_coordinator_that_skips_the_round_gets_no_training() -> None:
    cfg = _config()
    nodes, registry = inprocess_nodes(cfg)
    # the coordinator runs without the round (its own config says fixed)
    coord = coordinator_over(_config(scaling="fixed"), dict(nodes), registry)
    records: list[Any] = []
    coord.run(on_iteration=records.append)
    statuses = {g.status for g in records[0].groups}
    assert "aggregated" not in statuses
    reasons = [r for g in records[0].groups for r in g.excluded.values()]
    assert any("no standardisation agreed" in r for r in reasons)


def test_a_second_different_standardisation_is_refused() -> None:
    cfg = _config()
    nodes, registry = inprocess_nodes(cfg)
    coord = coordinator_over(cfg, dict(nodes), registry)
    coord.run()
    assert coord.scaling is not None
    same = json.dumps(coord.scaling.to_json()).encode()
    assert Reply.from_bytes(nodes["p02"].handle(NodeStage.SCALING_RESULT.value, same)).ok
    other = json.dumps({"mean": [0.0] * 64, "std": [1.0] * 64}).encode()
    assert "second, different" in _refusal(
        nodes["p02"].handle(NodeStage.SCALING_RESULT.value, other)
    )


def test_no_statistics_leave_a_node_of_a_run_without_federated_scaling() -> None:
    cfg = _config(scaling="fixed")
    nodes, _registry = inprocess_nodes(cfg)
    ask = ScalingRequest("magnitude").to_bytes()
    assert "not federated" in _refusal(nodes["p00"].handle(NodeStage.SCALING_START.value, ask))


class _PerMessage:
    """A NodeApp rebuilt for every message over its state files (as Flower's is)."""

    def __init__(self, build: Any) -> None:
        self.build = build

    def handle(self, stage: str, payload: bytes) -> bytes:
        reply: bytes = self.build().handle(stage, payload)
        return reply


def test_nodes_rebuilt_for_every_message_agree_the_same_scaling(tmp_path: Path) -> None:
    cfg = _config(n=5)
    builders, registry = node_builders(cfg, tmp_path)
    apps = {pid: _PerMessage(build) for pid, build in builders.items()}
    coord = coordinator_over(cfg, dict(apps), registry)
    records: list[Any] = []
    coord.run(on_iteration=records.append)
    assert coord.scaling is not None
    x = _pooled(cfg)
    assert np.allclose(np.asarray(coord.scaling.mean), x.mean(axis=0), atol=1e-5)
    for pid, build in builders.items():  # each kept it in its authenticated state file
        assert build()._scaling.result == coord.scaling, pid
    assert any(g.status == "aggregated" for g in records[0].groups)
