"""Role separation in the default runtime (``inprocess``): the coordinator holds no secret.

Every role lives in one OS process here, so nothing but the code keeps them apart: this
checks that the coordinator's own objects hold none of the others' secrets. One
iteration of mask mode with the trust check (its auditor node holds the opening key)
runs as ``securepool run`` builds it (:func:`securepool.runner.prepare`); a Driver
wrapper (``PoolCoordinator.wrap_driver``, where the runner puts its transcript
recorder) walks the coordinator's object graph with :func:`gc.get_referents` when the
unmask stage is sent — when every node holds its SecAgg+ client (keys, and the update
inside) and the auditor has judged. The walk starts from the coordinator and from the
local variables of every frame running the coordinator's code at that moment (the
iteration's groups and SecAgg+ servers live there), and stops at the runtime objects
that hold the other roles (the :class:`InProcessDriver`, and the
:class:`InProcessNodes` its factory closes over): the nodes behind them are other
roles, reached only by messages. The walk is
:func:`separation_helpers.coordinator_view`, shared with the multiprocess tests.

The multiprocess variant of this check is
``tests/securepool/test_split_trust.py::test_with_the_auditor_in_its_own_process_the_coordinator_holds_no_secret``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from binding_helpers import QUIET_P6_TOML
from separation_helpers import Found, WalkAt, foreign_secrets, probe_keys, walk

from securepool.config import Runtime
from securepool.coordinator.launch import InProcessNodes
from securepool.data import federation
from securepool.node.auditor import AUDITOR_ID
from securepool.node.wire import NodeStage
from securepool.runner import prepare
from securepool.runtime.driver import Driver
from securepool.runtime.inprocess import InProcessDriver

CONFIG = """
[run]
seed = 5
[data]
participants = 4
[[pool.models]]
id = "lr"
arch = "logreg"
seed = 1
[assignment]
min_group_size = 3
max_models = 1
beacon = "seeded-insecure"
[training]
epochs = 1
lr = 0.3
[convergence]
error_range = [0.0, 0.0001]
max_iterations = 1
[aggregation]
mode = "mask"
"""
# P6 set so that honest nodes are never flagged (as in test_split_trust.py): every member's
# input is unmasked, so this test does not depend on P6's false positives
CONFIG += QUIET_P6_TOML


def test_in_process_the_coordinator_holds_no_secret_key_and_no_update(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    path.write_text(CONFIG)
    cfg, coordinator, nodes = prepare(CONFIG, path)
    assert cfg.run.runtime is Runtime.INPROCESS and nodes is not None  # the default
    initial = {m: v.copy() for m, v in coordinator.state.globals.items()}
    spies: list[WalkAt] = []
    node_views: list[Found] = []

    def walk_a_node(spy: WalkAt) -> None:  # the positive control: another role's graph
        apps = spy.inner._apps  # type: ignore[attr-defined]  # the other roles
        node_views.append(walk({"p00": apps["p00"]}))

    def wrap(driver: Driver) -> WalkAt:
        stop = (InProcessDriver, InProcessNodes)
        at = NodeStage.SECAGG_UNMASK
        spies.append(WalkAt(driver, coordinator, at=at, stop=stop, then=walk_a_node))
        return spies[-1]

    coordinator.wrap_driver = wrap
    records: list[Any] = []
    try:
        coordinator.run(on_iteration=records.append)
    finally:
        coordinator.close()
        nodes.close()
    (group,) = records[0].groups
    assert group.status == "aggregated" and len(group.contributors) == 4
    assert coordinator.trust is not None and AUDITOR_ID in nodes.apps

    (spy,) = spies
    (node,) = node_views
    seen = spy.view
    assert seen is not None
    # the walk reached the coordinator's protocol state, and stopped at the runtime only
    assert {"SecAggServer", "BindingKeys", "TrustLedger", "PoolCoordinator"} <= seen.types
    assert "MaskVerdict" in seen.types or "_Group" in seen.types
    assert set(seen.stopped) == {"InProcessDriver", "InProcessNodes"}

    # no identity, agreement, HPKE or CKKS secret-key object, but for each SecAgg+
    # server's own throwaway X25519 key (``SecAggServer._probe``, made by the server to
    # check the public keys it is sent; no node's key)
    assert probe_keys(seen) and seen.described(foreign_secrets(seen)) == []
    # no float vector of the model's size but the global model (no plaintext update)
    size = coordinator.layouts["lr"].size
    model_sized = [a for a in seen.arrays if a.dtype.kind == "f" and a.size == size]
    assert model_sized, "the walk found not even the global model"
    for arr in model_sized:
        assert np.array_equal(arr.reshape(-1), initial["lr"]), f"an update at {seen.path(arr)}"
    # no participant's record (the coordinator's own held-out set is not theirs)
    data = federation(cfg)
    holdout = {row.tobytes() for row in data.x_holdout.numpy()}
    records_of = {
        row.tobytes()
        for d in data.participants.values()
        for x in (d.x_train, d.x_test)
        for row in x.numpy()
    } - holdout
    for arr in seen.arrays:
        if arr.dtype == np.float32 and arr.size and arr.size % data.n_features == 0:
            rows = arr.reshape(-1, data.n_features)
            assert not any(r.tobytes() in records_of for r in rows), (
                f"a participant's record at {seen.path(arr)}"
            )

    # the same walk over a node (the positive control) finds its secrets and its update
    assert {"IdentityKey", "AgreementKey"} <= set(node.secret_names())
    assert any(
        a.dtype.kind == "f"
        and a.ndim == 1
        and a.size == size
        and not np.array_equal(a, initial["lr"])
        for a in node.arrays
    )
