"""Build a participant node inside its own process (the multiprocess runtime's child).

:func:`build_participant` runs in the node's process: it reads the run config, loads
(or, for demo nodes, creates) the node's identity key from its state directory,
publishes the public half to the registry directory (the demo's stand-in for a PKI
enrolment), loads its records and builds the :class:`~securepool.node.app.
ParticipantNode`. Nothing secret crosses to the coordinator's process.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crypto.errors import ConfigError, KeyMaterialError
from crypto.signing import IdentityKey
from securepool.config import parse_config, parse_toml, read_config_text
from securepool.node.app import ParticipantNode
from securepool.node.attacker import participant_class
from securepool.node.auditor import AUDITOR_ID, AuditorNode
from securepool.node.keys import load_identity, load_or_create, load_public
from securepool.outputs import private_dir

if TYPE_CHECKING:
    from securepool.data import LocalData

KEY_NAME = "identity.key"


def read_registry(registry_dir: Path) -> dict[str, bytes]:
    """Every ``<participant>.pub`` in ``registry_dir`` (the PKI of a demo run)."""
    return {p.stem: load_public(p) for p in sorted(Path(registry_dir).glob("*.pub"))}


def enrolled_identity(
    node_id: str, *, state: Path, registry: Path, identity: IdentityKey | None
) -> IdentityKey:
    """The node's identity key, checked against its ``<id>.pub`` in the PKI directory.

    ``identity`` given (a deployed node): its public key must already be in the registry
    (enrolled out of band). None (a demo node): the key is created in ``state`` on first
    use and published to the registry directory. KeyMaterialError otherwise.
    """
    pub = registry / f"{node_id}.pub"
    if identity is None:
        identity = load_or_create(state / KEY_NAME)
        registry.mkdir(parents=True, exist_ok=True)
        if not pub.exists():
            pub.write_text(identity.public_bytes().hex() + "\n", encoding="ascii")
    if not pub.exists():
        raise KeyMaterialError(f"{pub} does not exist: {node_id} is not enrolled in the PKI")
    if load_public(pub) != identity.public_bytes():
        raise KeyMaterialError(f"{pub} holds another key than {node_id}'s key file")
    return identity


def _node_config(node_config: Mapping[str, Any], optional: tuple[str, ...]) -> IdentityKey:
    """Check a SuperNode's node config (every problem at once); its identity key."""
    problems = [f"node config has no {k!r}" for k in FLOWER_NODE_KEYS if k not in node_config]
    unknown = set(node_config) - set(FLOWER_NODE_KEYS) - set(optional)
    problems += [f"node config key {k!r} is not known" for k in sorted(unknown)]
    is_auditor = node_config.get("role") == "auditor"
    if is_auditor != (node_config.get("node-id") == AUDITOR_ID):
        problems.append(f"the auditor's node-id is {AUDITOR_ID!r}, and only the auditor's")
    if problems:
        raise ConfigError(problems)
    state = Path(str(node_config["state-dir"]))
    return load_identity(Path(str(node_config.get("key-file") or state / KEY_NAME)))


def build_participant(
    *,
    config_text: str,
    pid: str,
    state_dir: str,
    registry_dir: str,
    n_features: int,
    n_classes: int,
    records: str | None = None,
    torch_threads: int = 1,
    identity: IdentityKey | None = None,
    sessions_on_disk: bool = True,
) -> ParticipantNode:
    """A participant node; ``identity``: see :func:`enrolled_identity`;
    ``sessions_on_disk`` False for a long-lived node service (sessions in memory)."""
    cfg = parse_config(tomllib.loads(config_text))
    if records is not None and cfg.audit.canaries:
        raise ConfigError(
            [
                f"audit.canaries = {cfg.audit.canaries}: canaries are inserted into the "
                "built-in partition only, and this node reads its own records file "
                f"({Path(records).name}): set audit.canaries = 0 for a deployment"
            ]
        )
    state = Path(state_dir)
    private_dir(state)
    reg = Path(registry_dir)
    identity = enrolled_identity(pid, state=state, registry=reg, identity=identity)

    def data() -> LocalData:  # loaded at the first stage that trains or evaluates
        import torch

        from securepool.data import table_schema
        from securepool.node.records import builtin_partition, load_records

        torch.set_num_threads(torch_threads)
        if records is None:
            return builtin_partition(cfg, pid=pid)
        return load_records(
            Path(records),
            n_features=n_features,
            n_classes=n_classes,
            local_test_fraction=cfg.data.local_test_fraction,
            min_records=cfg.data.min_records,
            seed=cfg.run.seed,
            schema=None if cfg.data.dataset.is_builtin else table_schema(cfg.data),
        )

    return participant_class(cfg, pid)(
        pid,
        cfg=cfg,
        data=data,
        identity=identity,
        registry=lambda: read_registry(reg),
        n_features=n_features,
        n_classes=n_classes,
        state_dir=state,
        sessions_on_disk=sessions_on_disk,
    )


#: the node config keys of a SecurePool participant SuperNode (``--node-config``)
FLOWER_NODE_KEYS = ("node-id", "role", "factory", "config", "state-dir", "registry-dir")
FLOWER_NODE_OPTIONAL = ("key-file", "records", "torch-threads")


def flower_participant(node_config: Mapping[str, Any]) -> ParticipantNode:
    """A participant's NodeApp from its SuperNode's node config (``factory =
    "securepool.node.serve:flower_participant"``), built afresh for every message.

    Node config: ``config`` the agreed run config (TOML path), ``state-dir`` the node's
    own directory (ledger, session state), ``registry-dir`` the PKI (every participant's
    ``<id>.pub``), optional ``key-file`` (default ``state-dir/identity.key``; made by
    ``securepool keygen``, never created here), ``records`` (a CSV/NPZ file; default:
    the built-in dataset's partition of ``node-id``, for demos), ``torch-threads``.
    Every problem is listed at once (ConfigError).
    """
    identity = _node_config(node_config, FLOWER_NODE_OPTIONAL)  # refused unless 0600, ours
    pid = str(node_config["node-id"])
    cfg_path = Path(str(node_config["config"]))
    text = read_config_text(cfg_path)
    cfg = parse_config(parse_toml(text, cfg_path))
    from securepool.data import data_shape

    n_features, n_classes = data_shape(cfg.data)
    return build_participant(
        config_text=text,
        pid=pid,
        state_dir=str(node_config["state-dir"]),
        registry_dir=str(node_config["registry-dir"]),
        n_features=n_features,
        n_classes=n_classes,
        records=None if not node_config.get("records") else str(node_config["records"]),
        torch_threads=int(node_config.get("torch-threads", 1)),
        identity=identity,
    )


def build_auditor(
    *, config_text: str, state_dir: str, registry_dir: str, identity: IdentityKey | None = None
) -> AuditorNode:
    """The auditor's NodeApp in its own process. ``identity`` None (a demo auditor): its
    key is created in ``state_dir`` and published to the registry as ``auditor.pub``."""
    cfg = parse_config(tomllib.loads(config_text))
    state = Path(state_dir)
    reg = Path(registry_dir)
    identity = enrolled_identity(AUDITOR_ID, state=state, registry=reg, identity=identity)
    return AuditorNode(
        settings=cfg.he_settings(),
        identity=identity,
        registry=lambda: read_registry(reg),
        state_dir=state,
        corrupt_fraction=cfg.aggregation.mask.corrupt_fraction,
        weighting=cfg.aggregation.weighting,
        trust=cfg.trust,
    )


def flower_auditor(node_config: Mapping[str, Any]) -> AuditorNode:
    """The auditor's NodeApp from its SuperNode's node config (``factory =
    "securepool.node.serve:flower_auditor"``, ``node-id = "auditor"``, ``role =
    "auditor"``): ``config``, ``state-dir``, ``registry-dir``, optional ``key-file``."""
    identity = _node_config(node_config, ("key-file",))
    if node_config.get("node-id") != AUDITOR_ID:
        raise ConfigError([f"the auditor's node-id is {AUDITOR_ID!r}"])
    cfg_path = Path(str(node_config["config"]))
    return build_auditor(
        config_text=read_config_text(cfg_path),
        state_dir=str(node_config["state-dir"]),
        registry_dir=str(node_config["registry-dir"]),
        identity=identity,
    )


#: the layout of a simulation's node directory (``sim-node-root``), made by the bench
SIM_CONFIG = "config.toml"
SIM_REGISTRY = "registry"
SIM_NODES = "nodes"


def simulated_participant(node_config: Mapping[str, Any]) -> ParticipantNode:
    """A participant's NodeApp on Flower's simulation engine (``sim-node-factory =
    "securepool.node.serve:simulated_participant"``), built afresh for every message.

    The node is named by the simulation (node config ``node-id``, from the run config's
    ``sim-node-names`` and its ``partition-id``); its files are under ``sim-node-root``
    (the run config key of the same name), prepared beforehand: ``config.toml`` (the run
    config every node and the coordinator read), ``registry/<id>.pub`` (the PKI) and
    ``nodes/<id>/identity.key`` (from :func:`securepool.node.keys.keygen`, 0600; never
    created here), the node's state directory. Records: the built-in dataset's partition
    of ``node-id`` (a simulation is a demo of scale, not a deployment).
    """
    problems = [
        f"node config has no {k!r}" for k in ("node-id", "sim-node-root") if k not in node_config
    ]
    if problems:
        raise ConfigError(problems)
    root = Path(str(node_config["sim-node-root"]))
    pid = str(node_config["node-id"])
    if not root.is_absolute():
        raise ConfigError([f"sim-node-root must be an absolute path, got {root}"])
    state = root / SIM_NODES / pid
    return flower_participant(
        {
            "node-id": pid,
            "role": "participant",
            "factory": "securepool.node.serve:simulated_participant",
            "config": str(root / SIM_CONFIG),
            "state-dir": str(state),
            "registry-dir": str(root / SIM_REGISTRY),
            "key-file": str(state / KEY_NAME),
        }
    )
