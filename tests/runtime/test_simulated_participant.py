"""The simulated participant factory (securepool.node.serve:simulated_participant), no Ray.

On Flower's simulation engine a ClientApp learns its name from the run config's
``sim-node-names`` and its ``partition-id``, and its files from ``sim-node-root``; the
factory builds the node afresh for every message. Here the same path is taken without
Ray: ``NodeSettings.from_context`` on a simulation-shaped Context, then the factory per
message under the real split coordinator of ``runtime = "flower"``
(:func:`securepool.coordinator.launch.flower_coordinator`), on the directory the scale
bench prepares (run config, PKI, keys from ``keygen``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("securepool.runtime.flower", reason="flwr is not installed")

from flwr.app import Context, RecordDict

from crypto.errors import ConfigError, KeyMaterialError
from securepool.bench.scale import prepare_simulation
from securepool.config import parse_config, parse_toml, participant_ids, read_config_text
from securepool.coordinator.launch import flower_coordinator
from securepool.node.serve import KEY_NAME, SIM_NODES, simulated_participant
from securepool.runtime.flower import NodeSettings
from securepool.runtime.inprocess import InProcessDriver

N = 3


def sim_context(index: int, root: str, names: str = "p00,p01,p02") -> Context:
    return Context(
        run_id=1,
        node_id=100 + index,
        node_config={"partition-id": index, "num-partitions": 3},
        state=RecordDict(),
        run_config={
            "sim-node-names": names,
            "sim-node-factory": "securepool.node.serve:simulated_participant",
            "sim-node-root": root,
        },
    )


class PerMessage:
    """What a Ray ClientApp actor does: the node rebuilt from its files for every message."""

    def __init__(self, context: Context) -> None:
        self.settings = NodeSettings.from_context(context)
        self.builds = 0

    def handle(self, stage: str, payload: bytes) -> bytes:
        self.builds += 1
        node = simulated_participant(self.settings.config)
        reply: bytes = node.handle(stage, payload)
        return reply


def test_nodes_built_per_message_from_the_sim_root_run_the_pool(tmp_path: Path) -> None:
    root = tmp_path / "sim"
    config = prepare_simulation(N, root, iterations=2, models=1)
    cfg = parse_config(parse_toml(read_config_text(config), config))
    nodes = {pid: PerMessage(sim_context(i, str(root))) for i, pid in enumerate(participant_ids(N))}
    assert [n.settings.node_id for n in nodes.values()] == participant_ids(N)
    records: list[Any] = []
    coord = flower_coordinator(cfg, InProcessDriver(nodes), timeout=60.0)
    coord.run(on_iteration=records.append)
    assert [r.iteration for r in records] == [1, 2]
    for r in records:
        (group,) = r.groups
        assert group.status == "aggregated"
        assert set(group.contributors) == set(participant_ids(N))
    assert all(n.builds >= 10 for n in nodes.values())  # every message a fresh node


def test_the_factory_never_creates_a_missing_key(tmp_path: Path) -> None:
    root = tmp_path / "sim"
    prepare_simulation(N, root, iterations=2, models=1)
    key = root / SIM_NODES / "p01" / KEY_NAME
    key.unlink()
    settings = NodeSettings.from_context(sim_context(1, str(root)))
    with pytest.raises(KeyMaterialError, match="does not exist"):
        simulated_participant(settings.config)
    assert not key.exists()


def test_a_relative_or_missing_root_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="absolute"):
        simulated_participant({"node-id": "p0", "sim-node-root": "sim"})
    with pytest.raises(ConfigError, match="sim-node-root"):
        simulated_participant({"node-id": "p0"})


def test_a_node_name_that_is_a_path_never_reaches_the_factory(tmp_path: Path) -> None:
    # the name becomes a directory under sim-node-root: '../p0' would be another node's
    with pytest.raises(ConfigError):
        NodeSettings.from_context(sim_context(1, str(tmp_path), names="p00,../p00,p02"))
