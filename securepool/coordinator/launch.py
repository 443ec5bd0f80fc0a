"""Build the coordinator and its nodes for each runtime.

``runtime = "inprocess"`` (:func:`inprocess_coordinator`, the default): the same
:class:`PoolCoordinator` and the same :class:`ParticipantNode` / :class:`AuditorNode`
as every other runtime, called in this process through :class:`InProcessDriver`; every
message is the real wire bytes. The nodes keep their keys and session state in memory
(the auditor in a private temporary directory), and their durable state (privacy ledger,
last beacon and SecAgg+ iterations) is exported with every checkpoint, so ``--resume``
rebuilds them where they were. One OS process holds every role: this demonstrates the
protocol, not isolation between organisations (``multiprocess`` and ``flower`` do).

``runtime = "multiprocess"``: one OS process per participant node.

The coordinator's process computes the data's shape and, in ``holdout`` evaluation, its
own held-out test set (the same split as :func:`securepool.data.partition`); it never
holds a participant's records. Each node process loads its own share (built-in dataset
by partition id: a demo) and keeps its key, ledger and state under ``OUT.nodes/<id>/``
(:func:`nodes_dir`: beside the coordinator's run directory, not inside it — the nodes'
files are theirs, not part of the coordinator's checked run); public keys are
published under ``OUT.nodes/registry/`` (the demo's PKI).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from crypto.signing import IdentityKey, VerifiedSignatures
from protocols.aggregation import AggregationMode
from securepool.config import EvaluationMode, RunConfig
from securepool.coordinator.loop import PoolCoordinator
from securepool.data import data_shape, federation, load_arrays, table_holdout
from securepool.node.attacker import participant_class
from securepool.node.auditor import AUDITOR_ID
from securepool.node.serve import build_auditor, build_participant, read_registry
from securepool.runtime.driver import Driver, NodeApp
from securepool.runtime.inprocess import InProcessDriver
from securepool.runtime.multiprocess import MultiprocessDriver, NodeSpec

#: imported once by the fork server, not by every node: the node's code, and the module
#: torch.optim imports on first use (about 5 s of imports on this machine)
NODE_PRELOAD = ("securepool.node.serve", "torch._dynamo")


def holdout_set(cfg: RunConfig) -> tuple[int, int, tuple[torch.Tensor, torch.Tensor] | None]:
    """(features, classes, the coordinator's held-out set or None in federated mode);
    dataset = "csv": the held-out set is the coordinator's own ``evaluation.holdout``."""
    if not cfg.data.dataset.is_builtin:
        return table_holdout(cfg)
    x, y = load_arrays(cfg.data.dataset)
    n_features, n_classes = int(x.shape[1]), int(y.max()) + 1
    if cfg.evaluation.mode is not EvaluationMode.HOLDOUT:
        return n_features, n_classes, None
    rng = np.random.default_rng(np.random.SeedSequence([cfg.run.seed, 0xDA7A]))
    order = rng.permutation(len(y))
    hold = order[: int(round(cfg.data.holdout_fraction * len(y)))]
    return n_features, n_classes, (torch.from_numpy(x[hold]), torch.from_numpy(y[hold]))


def node_specs(
    cfg: RunConfig, config_text: str, root: Path, *, n_features: int, n_classes: int
) -> list[NodeSpec]:
    """Every participant node, and the auditor node in HE mode or with the trust check."""
    auditor = [
        NodeSpec(
            AUDITOR_ID,
            build_auditor,
            {
                "config_text": config_text,
                "state_dir": str(root / AUDITOR_ID),
                "registry_dir": str(root / "registry"),
            },
        )
    ]
    return (auditor if auditor_needed(cfg) else []) + [
        NodeSpec(
            pid,
            build_participant,
            {
                "config_text": config_text,
                "pid": pid,
                "state_dir": str(root / pid),
                "registry_dir": str(root / "registry"),
                "n_features": n_features,
                "n_classes": n_classes,
                "torch_threads": cfg.run.torch_threads,
            },
        )
        for pid in cfg.data.ids()
    ]


def nodes_dir(out: Path) -> Path:
    """Where the demo's node processes keep their own files for run directory ``out``."""
    return out.with_name(out.name + ".nodes")


def flower_coordinator(cfg: RunConfig, driver: Driver, *, timeout: float) -> PoolCoordinator:
    """The coordinator of a ``runtime = "flower"`` run over the ServerApp's driver; the
    PKI is ``run.registry`` (every participant's ``<id>.pub``), read when it connects."""
    n_features, n_classes, holdout = holdout_set(cfg)
    return PoolCoordinator(
        cfg,
        driver_factory=lambda: driver,
        registry=lambda: read_registry(Path(cfg.run.registry)),
        n_features=n_features,
        n_classes=n_classes,
        holdout=holdout,
        timeout=timeout,
    )


def multiprocess_coordinator(
    cfg: RunConfig, config_text: str, out: Path, *, timeout: float = 600.0
) -> PoolCoordinator:
    """The coordinator of a multiprocess run; node processes start at its first run()."""
    n_features, n_classes, holdout = holdout_set(cfg)
    root = nodes_dir(out)
    specs = node_specs(cfg, config_text, root, n_features=n_features, n_classes=n_classes)
    return PoolCoordinator(
        cfg,
        driver_factory=lambda: MultiprocessDriver(specs, preload=NODE_PRELOAD),
        registry=lambda: read_registry(root / "registry"),
        n_features=n_features,
        n_classes=n_classes,
        holdout=holdout,
        timeout=timeout,
    )


def demo_nodes(cfg: RunConfig, config_text: str, root: Path) -> dict[str, NodeApp]:
    """Every participant node (and in HE mode the auditor) built in THIS process, each
    with its demo key and state under ``root/<id>`` and the PKI in ``root/registry``:
    the split runtime without a transport (benchmarks, reference runs)."""
    n_features, n_classes = data_shape(cfg.data)
    nodes: dict[str, NodeApp] = {
        spec.node_id: spec.build(**spec.args)
        for spec in node_specs(cfg, config_text, root, n_features=n_features, n_classes=n_classes)
    }
    return nodes


def inprocess_split(cfg: RunConfig, nodes: Mapping[str, NodeApp], root: Path) -> PoolCoordinator:
    """The split coordinator over ``nodes`` on the in-process driver; the PKI is
    ``root/registry`` (as :func:`demo_nodes` wrote it)."""
    n_features, n_classes, holdout = holdout_set(cfg)
    return PoolCoordinator(
        cfg,
        driver_factory=lambda: InProcessDriver(dict(nodes)),
        registry=lambda: read_registry(root / "registry"),
        n_features=n_features,
        n_classes=n_classes,
        holdout=holdout,
    )


def auditor_needed(cfg: RunConfig) -> bool:
    """HE mode and the trust check need the auditor node."""
    return cfg.aggregation.mode is AggregationMode.HE or cfg.trust.enabled


class InProcessNodes:
    """The in-process runtime's nodes: built in this process from the federation's
    public split, keys in memory, the auditor's files in a private temporary directory
    (removed by :meth:`close`)."""

    def __init__(self, cfg: RunConfig, *, durable: Mapping[str, Any] | None = None) -> None:
        data = federation(cfg)  # the split, with the audit's canaries in their hosts' data
        self.n_features, self.n_classes = data.n_features, data.n_classes
        self.holdout = (data.x_holdout, data.y_holdout)
        identities = {pid: IdentityKey.generate() for pid in data.participants}
        self._auditor_dir: Path | None = None
        auditor_identity = IdentityKey.generate()
        self.registry = {pid: k.public_bytes() for pid, k in identities.items()}
        if auditor_needed(cfg):
            self.registry[AUDITOR_ID] = auditor_identity.public_bytes()
        saved = durable or {}
        verified = VerifiedSignatures()  # one process: each signature verified once
        self.apps: dict[str, NodeApp] = {
            pid: participant_class(cfg, pid)(
                pid,
                cfg=cfg,
                data=local,
                identity=identities[pid],
                registry=self.registry,
                n_features=data.n_features,
                n_classes=data.n_classes,
                durable=saved.get(pid),
                verified=verified,
            )
            for pid, local in sorted(data.participants.items())
        }
        if auditor_needed(cfg):
            from securepool.node.auditor import AuditorNode

            self._auditor_dir = Path(tempfile.mkdtemp(prefix="securepool-auditor-"))
            self.apps[AUDITOR_ID] = AuditorNode(
                settings=cfg.he_settings(),
                identity=auditor_identity,
                registry=self.registry,
                state_dir=self._auditor_dir,
                corrupt_fraction=cfg.aggregation.mask.corrupt_fraction,
                weighting=cfg.aggregation.weighting,
                trust=cfg.trust,
            )

    def durable_states(self) -> dict[str, Any]:
        """Every participant node's durable state, for the checkpoint."""
        return {
            pid: app.durable_state()
            for pid, app in sorted(self.apps.items())
            if hasattr(app, "durable_state")
        }

    def close(self) -> None:
        if self._auditor_dir is not None:
            shutil.rmtree(self._auditor_dir, ignore_errors=True)
            self._auditor_dir = None


def inprocess_coordinator(
    cfg: RunConfig, *, durable: Mapping[str, Any] | None = None
) -> tuple[PoolCoordinator, InProcessNodes]:
    """The default runtime: the coordinator over :class:`InProcessDriver` and the nodes
    (``durable``: the nodes' states of a checkpoint, when resuming)."""
    nodes = InProcessNodes(cfg, durable=durable)
    coordinator = PoolCoordinator(
        cfg,
        driver_factory=lambda: InProcessDriver(nodes.apps),
        registry=nodes.registry,
        n_features=nodes.n_features,
        n_classes=nodes.n_classes,
        holdout=nodes.holdout if cfg.evaluation.mode is EvaluationMode.HOLDOUT else None,
        timeout=cfg.run.stage_timeout,
    )
    return coordinator, nodes
