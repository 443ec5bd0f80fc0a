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
roles, reached only by messages.

The multiprocess variant of this check is
``tests/securepool/test_split_trust.py::test_with_the_auditor_in_its_own_process_the_coordinator_holds_no_secret``.
"""

from __future__ import annotations

import gc
import sys
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from crypto.secret import SecretHolder
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
[trust]
enabled = true
sketch_dim = 256
# P6 set so that honest nodes are never flagged (as in test_split_trust.py): every
# member's input is unmasked, so this test does not depend on P6's false positives
strikes = 1
threshold_rule = "fixed"
threshold = 1.9
duplicate_ratio = 0.0
central_ratio = 0.0
align_floor = -1.0
"""

#: secret-key objects: identity (Ed25519), agreement and HPKE (X25519), CKKS secret
#: contexts and every other SecretHolder of crypto/, and pyca's raw private keys
SECRET_TYPES = (SecretHolder, Ed25519PrivateKey, X25519PrivateKey)
#: the coordinator's code: its frames' locals are its in-flight state
COORDINATOR_CODE = (
    Path(__file__).resolve().parents[2] / "securepool" / "coordinator",
    Path(__file__).resolve().parents[2] / "securepool" / "schedule.py",
)
#: never descended into: immutable leaves, and what leads to the whole program (types,
#: modules, code) rather than to this object's state
LEAVES = (type, types.ModuleType, types.CodeType, str, bytes, int, float, complex, bool)


@dataclass
class Found:
    """What a walk of an object graph reached."""

    objects: list[object] = field(default_factory=list)
    secrets: list[object] = field(default_factory=list)
    arrays: list[np.ndarray] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)

    @property
    def types(self) -> set[str]:
        return {type(o).__name__ for o in self.objects}

    def secret_names(self) -> list[str]:
        return sorted(type(o).__name__ for o in self.secrets)


def walk(root: object, *, stop: tuple[type, ...] = ()) -> Found:
    """Every object reachable from ``root`` through :func:`gc.get_referents` (functions
    through their closures and defaults, not their module's globals), not descending
    into instances of ``stop``: secret-key objects, and every array and tensor."""
    found = Found()
    seen: set[int] = set()
    stack: list[object] = [root]
    while stack:
        obj = stack.pop()
        if id(obj) in seen or obj is None or isinstance(obj, LEAVES):
            continue
        seen.add(id(obj))
        found.objects.append(obj)
        if isinstance(obj, SECRET_TYPES):
            found.secrets.append(obj)
        elif isinstance(obj, stop):
            found.stopped.append(type(obj).__name__)
        elif isinstance(obj, torch.Tensor):
            found.arrays.append(obj.detach().cpu().numpy())
        elif isinstance(obj, np.ndarray):
            found.arrays.append(obj)
            if isinstance(obj.base, np.ndarray):
                stack.append(obj.base)
        elif isinstance(obj, types.FunctionType):
            stack.extend(c.cell_contents for c in obj.__closure__ or () if _filled(c))
            stack.extend(obj.__defaults__ or ())
            stack.extend((obj.__kwdefaults__ or {}).values())
        elif isinstance(obj, types.MethodType):
            stack.extend((obj.__self__, obj.__func__))
        elif isinstance(obj, types.BuiltinFunctionType):
            stack.append(obj.__self__)
        else:
            stack.extend(gc.get_referents(obj))
    return found


def _filled(cell: Any) -> bool:
    try:
        cell.cell_contents  # noqa: B018
    except ValueError:
        return False
    return True


def _coordinator_locals() -> list[dict[str, Any]]:
    """The local variables of every frame on this call stack running coordinator code."""
    out = []
    frame: types.FrameType | None = sys._getframe(1)
    while frame is not None:
        code = Path(frame.f_code.co_filename).resolve()
        if any(code == c or code.is_relative_to(c) for c in COORDINATOR_CODE):
            out.append(dict(frame.f_locals))
        frame = frame.f_back
    return out


class Inspector:
    """A Driver wrapper: walks the coordinator when the unmask stage is sent."""

    def __init__(self, inner: Driver, coordinator: object) -> None:
        self.inner, self.coordinator = inner, coordinator
        self.coordinator_view: Found | None = None
        self.node_view: Found | None = None  # the positive control: a node's graph

    def nodes(self) -> tuple[str, ...]:
        return self.inner.nodes()

    def exchange(
        self, stage: str, batch: Mapping[str, bytes], *, timeout: float
    ) -> dict[str, bytes | None]:
        if stage == NodeStage.SECAGG_UNMASK.value and self.coordinator_view is None:
            roots = [self.coordinator, *_coordinator_locals()]
            self.coordinator_view = walk(roots, stop=(InProcessDriver, InProcessNodes))
            apps = self.inner._apps  # type: ignore[attr-defined]  # the other roles
            self.node_view = walk(apps["p00"])
        return self.inner.exchange(stage, batch, timeout=timeout)

    def close(self) -> None:
        self.inner.close()


def test_in_process_the_coordinator_holds_no_secret_key_and_no_update(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    path.write_text(CONFIG)
    cfg, coordinator, nodes = prepare(CONFIG, path)
    assert cfg.run.runtime is Runtime.INPROCESS and nodes is not None  # the default
    initial = {m: v.copy() for m, v in coordinator.state.globals.items()}
    spies: list[Inspector] = []

    def wrap(driver: Driver) -> Inspector:
        spies.append(Inspector(driver, coordinator))
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
    seen, node = spy.coordinator_view, spy.node_view
    assert seen is not None and node is not None
    # the walk reached the coordinator's protocol state, and stopped at the runtime only
    assert {"SecAggServer", "BindingKeys", "TrustLedger", "PoolCoordinator"} <= seen.types
    assert "MaskVerdict" in seen.types or "_Group" in seen.types
    assert set(seen.stopped) == {"InProcessDriver", "InProcessNodes"}

    # no identity, agreement, HPKE or CKKS secret-key object, but for each SecAgg+
    # server's own throwaway X25519 key (``SecAggServer._probe``, made by the server to
    # check the public keys it is sent; no node's key)
    probes = {id(o._probe) for o in seen.objects if type(o).__name__ == "SecAggServer"}  # type: ignore[attr-defined]
    assert probes and [type(o).__name__ for o in seen.secrets if id(o) not in probes] == []
    # no float vector of the model's size but the global model (no plaintext update)
    size = coordinator.layouts["lr"].size
    model_sized = [a for a in seen.arrays if a.dtype.kind == "f" and a.size == size]
    assert model_sized, "the walk found not even the global model"
    for arr in model_sized:
        assert np.array_equal(arr.reshape(-1), initial["lr"]), "a model-sized vector: an update"
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
            assert not any(r.tobytes() in records_of for r in rows), "a participant's record"

    # the same walk over a node (the positive control) finds its secrets and its update
    assert {"IdentityKey", "AgreementKey"} <= set(node.secret_names())
    assert any(
        a.dtype.kind == "f"
        and a.ndim == 1
        and a.size == size
        and not np.array_equal(a, initial["lr"])
        for a in node.arrays
    )
