"""Shared builders for the role-split tests (small runs: few participants, 1-2 iterations)."""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from crypto.signing import IdentityKey
from securepool.config import RunConfig, parse_config
from securepool.coordinator.loop import PoolCoordinator
from securepool.data import partition
from securepool.node.app import ParticipantNode
from securepool.node.wire import NodeStage, decode_bundle
from securepool.runtime.inprocess import InProcessDriver

BASE = """
[run]
seed = 5
runtime = "{runtime}"
[data]
participants = {n}
[[pool.models]]
id = "lr"
arch = "logreg"
seed = 1
{mlp}[assignment]
min_group_size = 3
min_models = 1
max_models = {max_models}
beacon = "seeded-insecure"
[training]
epochs = 1
lr = 0.3
[evaluation]
mode = "federated"
[convergence]
error_range = [0.0, 0.0001]
max_iterations = {iterations}
[aggregation]
mode = "{mode}"
"""


MLP = """[[pool.models]]
id = "mlp"
arch = "mlp"
seed = 2
hidden = 16
"""


def config_text(
    *,
    n: int = 6,
    mode: str = "mask",
    iterations: int = 1,
    runtime: str = "inprocess",
    max_models: int = 2,
    models: int = 2,
) -> str:
    """``models = 1``: the logreg alone (every participant in its group each iteration,
    so runs whose aggregates differ within quantisation still pick the same groups)."""
    return BASE.format(
        n=n,
        mode=mode,
        iterations=iterations,
        runtime=runtime,
        max_models=max_models,
        mlp=MLP if models == 2 else "",
    )


def stages_of(stage: str, payload: bytes) -> list[str]:
    """The stages one message carries: its own, or each part of a bundle (a node's
    stages ride in bundles where the certificate, the beacon or the key directory join
    them)."""
    if stage != NodeStage.BUNDLE.value:
        return [stage]
    return [st for st, _ in decode_bundle(payload)]


def config(**kw: Any) -> RunConfig:
    return parse_config(tomllib.loads(config_text(**kw)))


def node_builders(
    cfg: RunConfig, root: Path | None = None
) -> tuple[dict[str, Callable[[], ParticipantNode]], dict[str, bytes]]:
    """A builder of each participant's node (each call: a fresh node object over the
    same keys, data and, with ``root``, state directory ``root/<id>``), and the PKI."""
    data = partition(cfg.data, seed=cfg.run.seed)
    keys = {pid: IdentityKey.generate() for pid in data.participants}
    registry = {pid: k.public_bytes() for pid, k in keys.items()}

    def builder(pid: str, d: Any) -> Callable[[], ParticipantNode]:
        state = None if root is None else root / pid
        return lambda: ParticipantNode(
            pid,
            cfg=cfg,
            data=d,
            identity=keys[pid],
            registry=registry,
            n_features=data.n_features,
            n_classes=data.n_classes,
            state_dir=state,
        )

    return {pid: builder(pid, d) for pid, d in data.participants.items()}, registry


def inprocess_nodes(cfg: RunConfig) -> tuple[dict[str, ParticipantNode], dict[str, bytes]]:
    """Participant nodes in this process (the in-process runtime), with a PKI."""
    builders, registry = node_builders(cfg)
    return {pid: build() for pid, build in builders.items()}, registry


def coordinator_over(
    cfg: RunConfig,
    apps: dict[str, Any],
    registry: dict[str, bytes],
    driver: type[InProcessDriver] = InProcessDriver,
) -> PoolCoordinator:
    """The split coordinator over ``apps`` (node id -> NodeApp) on the in-process driver
    (or a subclass of it that spies on or rewrites the exchanges)."""
    return PoolCoordinator(
        cfg,
        driver_factory=lambda: driver(apps),
        registry=registry,
        n_features=64,
        n_classes=10,
    )


def with_auditor(
    cfg: RunConfig, nodes: dict[str, Any], registry: dict[str, bytes], state_dir: Path
) -> dict[str, Any]:
    """``nodes`` plus an auditor node (HE mode's key holder), its key in ``registry``."""
    from securepool.node.auditor import AUDITOR_ID, AuditorNode

    key = IdentityKey.generate()
    registry[AUDITOR_ID] = key.public_bytes()
    apps = dict(nodes)
    apps[AUDITOR_ID] = AuditorNode(
        settings=cfg.he_settings(),
        identity=key,
        registry=registry,
        state_dir=state_dir,
        corrupt_fraction=cfg.aggregation.mask.corrupt_fraction,
        weighting=cfg.aggregation.weighting,
    )
    return apps


def inprocess_coordinator(
    cfg: RunConfig, apps: dict[str, Any] | None = None, *, state: Path | None = None
) -> tuple[PoolCoordinator, dict[str, ParticipantNode]]:
    nodes, registry = inprocess_nodes(cfg)
    reachable: dict[str, Any] = dict(nodes)
    reachable.update(apps or {})
    return coordinator_over(cfg, reachable, registry), nodes
