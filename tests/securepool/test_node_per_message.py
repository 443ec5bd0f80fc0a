"""A participant node rebuilt for every message (as Flower's ClientApp is) over its own
state directory gives the same pool as a long-lived node; its session file is
owner-only, gone when the session ends, and a torn one costs that node one iteration.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from split_helpers import config, coordinator_over, inprocess_nodes, node_builders, stages_of

from crypto.errors import MessageError
from crypto.signing import IdentityKey
from protocols.session_state import restore_secagg, snapshot_secagg
from protocols.snapshot import restore, snapshot
from securepool.config import RunConfig
from securepool.coordinator.loop import PoolCoordinator
from securepool.node.app import SESSION_FILE


class PerMessage:
    """A NodeApp that lives for one message: a new ParticipantNode every time."""

    def __init__(self, build: Any, state_dir: Path, seen: list[set[str]]) -> None:
        self.build, self.state_dir, self.seen = build, state_dir, seen

    def handle(self, stage: str, payload: bytes) -> bytes:
        reply: bytes = self.build().handle(stage, payload)
        self.seen.append({p.name for p in self.state_dir.iterdir()})
        return reply


def per_message_nodes(cfg: RunConfig, root: Path) -> tuple[dict[str, Any], dict[str, bytes]]:
    builders, registry = node_builders(cfg, root)
    apps: dict[str, Any] = {}
    for pid, build in builders.items():
        (root / pid).mkdir()
        apps[pid] = PerMessage(build, root / pid, [])
    return apps, registry


def run(cfg: RunConfig, apps: dict[str, Any], registry: dict[str, bytes]) -> PoolCoordinator:
    coord = coordinator_over(cfg, apps, registry)
    coord.run()
    return coord


def test_a_node_rebuilt_for_every_message_gives_the_same_pool(tmp_path: Path) -> None:
    # one model: the stochastic rounding of the masked sums differs between runs, which
    # would change the next iteration's joint seed (it hashes the pool) and groups
    cfg = config(n=5, mode="mask", iterations=2, max_models=1, models=1)
    apps, registry = per_message_nodes(cfg, tmp_path)
    fresh = run(cfg, apps, registry)
    nodes, registry2 = inprocess_nodes(cfg)
    long_lived = run(cfg, dict(nodes), registry2)
    assert fresh.state.iteration == long_lived.state.iteration == 2
    for mid, vec in long_lived.state.globals.items():
        np.testing.assert_allclose(fresh.state.globals[mid], vec, atol=1e-5)
    # the session file existed between stages, and is gone once each session ended
    seen = apps["p00"].seen
    assert any(SESSION_FILE in names for names in seen)
    assert SESSION_FILE not in seen[-1]


def test_the_session_file_is_owner_only(tmp_path: Path) -> None:
    cfg = config(n=5, mode="mask", iterations=1, max_models=1)
    apps, registry = per_message_nodes(cfg, tmp_path)
    modes: list[int] = []
    original = PerMessage.handle

    def spy(self: PerMessage, stage: str, payload: bytes) -> bytes:
        reply = original(self, stage, payload)
        path = self.state_dir / SESSION_FILE
        if path.exists():
            modes.append(stat.S_IMODE(path.stat().st_mode))
        return reply

    PerMessage.handle = spy  # type: ignore[method-assign]
    try:
        run(cfg, apps, registry)
    finally:
        PerMessage.handle = original  # type: ignore[method-assign]
    assert modes and set(modes) == {0o600}


def test_a_torn_session_file_costs_that_node_its_iteration_only(tmp_path: Path) -> None:
    cfg = config(n=5, mode="mask", iterations=1, max_models=1, models=1)
    apps, registry = per_message_nodes(cfg, tmp_path)
    victim = apps["p01"]
    original = victim.handle

    def tear(stage: str, payload: bytes) -> bytes:
        reply: bytes = original(stage, payload)
        path = victim.state_dir / SESSION_FILE
        # the key directory rides in a bundle with the train request
        if "secagg/keys" in stages_of(stage, payload) and path.exists():
            path.write_bytes(path.read_bytes()[:100])  # a crash mid-write, or a bad disk
        return reply

    victim.handle = tear
    records: list[Any] = []
    coord = coordinator_over(cfg, apps, registry)
    coord.run(on_iteration=records.append)
    (group,) = records[0].groups
    assert group.status == "aggregated"
    assert set(group.contributors) == set(group.members) - {"p01"}
    assert "no SecAgg+ session open" in group.excluded["p01"]
    assert not (victim.state_dir / SESSION_FILE).exists()


class Plain:
    def __init__(self) -> None:
        self.value = b"x"


def test_a_snapshot_names_only_the_classes_it_allows() -> None:
    class Holder:
        def __init__(self) -> None:
            self.inner = Plain()

    with pytest.raises(MessageError, match="cannot write"):
        snapshot(Holder(), omit=())
    data = snapshot(Plain(), omit=())
    forged = json.loads(data)
    forged["state"]["value"] = {"t": "dc", "c": "os:system", "v": {}}
    with pytest.raises(MessageError, match="not an allowed class"):
        restore(Plain, json.dumps(forged).encode(), inject={})
    with pytest.raises(MessageError, match="not a version-1 snapshot"):
        restore(Holder, data, inject={})


def test_a_secagg_snapshot_of_another_node_is_refused(tmp_path: Path) -> None:
    from protocols.secagg.client import SecAggClient, SessionHistory
    from protocols.secagg.settings import MaskSettings

    keys = {p: IdentityKey.generate() for p in ("a", "b", "c")}
    directory = {p: k.public_bytes() for p, k in keys.items()}
    client = SecAggClient(
        pid="a",
        session="s1",
        identity=keys["a"],
        directory=directory,
        settings=MaskSettings(),
        update=np.ones(4, np.float32),
        weight=1.0,
        members=directory,
        joint_seed=bytes(32),
        model_digest=bytes(32),
    )
    client.start()
    data = snapshot_secagg(client)
    back = restore_secagg(
        data, identity=keys["a"], history=SessionHistory(), settings=MaskSettings()
    )
    assert back.stage is client.stage and back._c.public_bytes() == client._c.public_bytes()
    with pytest.raises(Exception, match="not this node's"):
        restore_secagg(data, identity=keys["b"], history=SessionHistory(), settings=MaskSettings())


def test_a_node_that_does_not_train_imports_no_torch_and_no_dataset() -> None:
    """Flower starts a process per message: the beacon and SecAgg+ stages stay light."""
    import subprocess
    import sys

    code = (
        "import sys, securepool.node.serve, securepool.runtime.flower\n"
        "print(sorted(m for m in ('torch', 'sklearn', 'opacus') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip() == "[]", out.stdout


def test_dataset_shapes_are_those_of_the_data() -> None:
    from securepool.config import Dataset
    from securepool.data import load_arrays

    for dataset in (d for d in Dataset if d.is_builtin):  # csv: from its files (test_tables)
        x, y = load_arrays(dataset)
        assert dataset.shape == (x.shape[1], int(y.max()) + 1)


@pytest.mark.parametrize("mode", ["plaintext", "he"])
def test_a_node_that_sends_its_update_at_train_keeps_no_session_file(
    tmp_path: Path, mode: str
) -> None:
    """Plaintext and HE nodes endorse the round's outcome in their train reply and wait
    for nothing after it (the beacon machine already holds them to one outcome per
    round), so no session file outlives their train stage."""
    cfg = config(n=5, mode=mode, iterations=1, max_models=1, models=1)
    apps, registry = per_message_nodes(cfg, tmp_path)
    if mode == "he":
        from split_helpers import with_auditor

        apps = with_auditor(cfg, apps, registry, tmp_path / "auditor")
    coord = coordinator_over(cfg, apps, registry)
    records: list[Any] = []
    coord.run(on_iteration=records.append)
    assert records[0].groups[0].status == "aggregated"
    for pid, app in apps.items():
        if isinstance(app, PerMessage):
            assert SESSION_FILE not in app.seen[-1], pid
