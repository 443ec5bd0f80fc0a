"""Build a participant node inside its own process (the multiprocess runtime's child).

:func:`build_participant` runs in the node's process: it reads the run config, loads
(or, for demo nodes, creates) the node's identity key from its state directory,
publishes the public half to the registry directory (the demo's stand-in for a PKI
enrolment), loads its records and builds the :class:`~securepool.node.app.
ParticipantNode`. Nothing secret crosses to the coordinator's process.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from crypto.errors import KeyMaterialError
from securepool.config import parse_config
from securepool.node.app import ParticipantNode
from securepool.node.keys import load_or_create, load_public
from securepool.node.records import builtin_partition, load_records

KEY_NAME = "identity.key"


def read_registry(registry_dir: Path) -> dict[str, bytes]:
    """Every ``<participant>.pub`` in ``registry_dir`` (the PKI of a demo run)."""
    return {p.stem: load_public(p) for p in sorted(Path(registry_dir).glob("*.pub"))}


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
) -> ParticipantNode:
    import torch

    torch.set_num_threads(torch_threads)
    cfg = parse_config(tomllib.loads(config_text))
    state = Path(state_dir)
    state.mkdir(parents=True, exist_ok=True)
    identity = load_or_create(state / KEY_NAME)
    reg = Path(registry_dir)
    reg.mkdir(parents=True, exist_ok=True)
    pub = reg / f"{pid}.pub"
    if pub.exists():
        if load_public(pub) != identity.public_bytes():
            raise KeyMaterialError(f"{pub} holds another key than {pid}'s key file")
    else:
        pub.write_text(identity.public_bytes().hex() + "\n", encoding="ascii")
    if records is None:
        data = builtin_partition(cfg.data, seed=cfg.run.seed, pid=pid)
    else:
        data = load_records(
            Path(records),
            n_features=n_features,
            n_classes=n_classes,
            local_test_fraction=cfg.data.local_test_fraction,
            min_records=cfg.data.min_records,
            seed=cfg.run.seed,
        )
    return ParticipantNode(
        pid,
        cfg=cfg,
        data=data,
        identity=identity,
        registry=lambda: read_registry(reg),
        n_features=n_features,
        n_classes=n_classes,
        state_dir=state,
    )
