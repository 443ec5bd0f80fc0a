"""The role-separation walk shared by the tests that check the coordinator holds no secret.

:func:`coordinator_view` walks, with :func:`gc.get_referents`, every object reachable
from a :class:`~securepool.coordinator.loop.PoolCoordinator` AND from the local
variables of every frame on the call stack running the coordinator's code (an
iteration's groups and SecAgg+ servers live in ``step()``'s locals, not on the
coordinator), so it is meant to be called mid-iteration from a Driver wrapper
(:class:`WalkAt`). The walk records every secret-key object, every array and tensor,
and where it found each (:meth:`Found.path`); it does not descend into the runtime
objects it is told to stop at (in-process: the Driver that holds the other roles).

The one secret-key object a coordinator legitimately holds is each SecAgg+ server's
own throwaway X25519 key (``SecAggServer._probe``, made by the server to check the
public keys it is sent; no node's key): :func:`foreign_secrets` exempts exactly those,
by identity.

Used by ``test_separation.py`` (the default runtime) and by the multiprocess variants in
``test_split_multiprocess.py``, ``test_split_he.py`` and ``test_split_trust.py``.
"""

from __future__ import annotations

import dataclasses
import gc
import sys
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from crypto.agreement import AgreementKey
from crypto.secret import SecretHolder
from protocols.secagg.server import SecAggServer
from securepool.node.wire import NodeStage, decode_bundle
from securepool.runtime.driver import Driver

#: secret-key objects: identity (Ed25519), agreement and HPKE (X25519), CKKS secret
#: contexts and every other SecretHolder of crypto/, and pyca's raw private keys
SECRET_TYPES = (SecretHolder, Ed25519PrivateKey, X25519PrivateKey)
_ROOT = Path(__file__).resolve().parents[2]
#: the coordinator's code: its frames' locals are its in-flight state
COORDINATOR_CODE = (_ROOT / "securepool" / "coordinator", _ROOT / "securepool" / "schedule.py")
#: never descended into: immutable leaves, and what leads to the whole program (types,
#: modules, code) rather than to this object's state
LEAVES = (type, types.ModuleType, types.CodeType, str, bytes, int, float, complex, bool)


@dataclass
class Found:
    """What a walk of an object graph reached, and by which edge it reached each object."""

    objects: list[object] = field(default_factory=list)
    secrets: list[object] = field(default_factory=list)
    arrays: list[np.ndarray] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)
    #: id(object) -> (the object it was reached from, or None for a root; the root's label)
    _via: dict[int, tuple[object | None, str]] = field(default_factory=dict, repr=False)
    #: id(array made from a tensor) -> the tensor, so a tensor's path can be given
    _origin: dict[int, object] = field(default_factory=dict, repr=False)
    #: id(secret or array) -> its path (:meth:`path`)
    _paths: dict[int, str] = field(default_factory=dict, repr=False)

    @property
    def types(self) -> set[str]:
        """The type names of every object reached."""
        return {type(o).__name__ for o in self.objects}

    def secret_names(self) -> list[str]:
        """The type names of the secret-key objects reached, sorted."""
        return sorted(type(o).__name__ for o in self.secrets)

    def path(self, obj: object) -> str:
        """How the walk reached ``obj`` (a secret or an array it found) from its root,
        e.g. ``#4 MaskMode.after_train() locals['m'].server._probe``; worked out when
        the walk ends, while the graph is as the walk saw it."""
        return self._paths[id(obj)]

    def _trace(self, obj: object) -> str:
        obj = self._origin.get(id(obj), obj)
        parts: list[str] = []
        while True:
            parent, label = self._via[id(obj)]
            if parent is None:
                parts.append(label)
                break
            parts.append(_edge(parent, obj, self._via))
            obj = parent
        return "".join(reversed(parts))

    def described(self, objs: list[object]) -> list[str]:
        """``type at path`` for each of ``objs``."""
        return [f"{type(o).__name__} at {self.path(o)}" for o in objs]


def walk(roots: Mapping[str, object], *, stop: tuple[type, ...] = ()) -> Found:
    """Every object reachable from ``roots`` (label -> object) through
    :func:`gc.get_referents` (functions through their closures and defaults, not their
    module's globals), not descending into instances of ``stop``, secret-key objects,
    arrays or tensors (each recorded); an earlier walk's :class:`Found` (held by the
    test's Driver wrapper) is skipped."""
    found = Found()
    stack: list[tuple[object, object | None, str]] = [(r, None, k) for k, r in roots.items()]
    stack.reverse()
    while stack:
        obj, parent, label = stack.pop()
        if id(obj) in found._via or obj is None or isinstance(obj, LEAVES):
            continue
        if isinstance(obj, Found):  # an earlier walk's record (a WalkAt's): the test's
            continue
        found._via[id(obj)] = (parent, label)
        found.objects.append(obj)
        for child in _children(obj, found, stop):
            stack.append((child, obj, ""))
    found._paths = {id(o): found._trace(o) for o in [*found.secrets, *found.arrays]}
    return found


def _children(obj: object, found: Found, stop: tuple[type, ...]) -> list[object]:
    """Record ``obj`` if it is a secret, array or stop; what the walk descends into."""
    if isinstance(obj, SECRET_TYPES):
        found.secrets.append(obj)
        return []
    if isinstance(obj, stop):
        found.stopped.append(type(obj).__name__)
        return []
    if isinstance(obj, torch.Tensor):
        arr = obj.detach().cpu().numpy()
        found.arrays.append(arr)
        found._origin[id(arr)] = obj
        return []
    if isinstance(obj, np.ndarray):
        found.arrays.append(obj)
        return [obj.base] if isinstance(obj.base, np.ndarray) else []
    if isinstance(obj, types.FunctionType):
        out: list[object] = [c.cell_contents for c in obj.__closure__ or () if _filled(c)]
        return out + list(obj.__defaults__ or ()) + list((obj.__kwdefaults__ or {}).values())
    if isinstance(obj, types.MethodType):
        return [obj.__self__, obj.__func__]
    if isinstance(obj, types.BuiltinFunctionType):
        return [obj.__self__]
    return list(gc.get_referents(obj))


def _filled(cell: Any) -> bool:
    try:
        cell.cell_contents  # noqa: B018
    except ValueError:
        return False
    return True


def _edge(parent: object, child: object, via: Mapping[int, tuple[object | None, str]]) -> str:
    """How ``parent`` refers to ``child``, as a piece of a path (best effort)."""
    if isinstance(parent, dict):
        grand = via[id(parent)][0]
        is_vars = grand is not None and getattr(grand, "__dict__", None) is parent
        for k, v in parent.items():
            if v is child:
                return f".{k}" if is_vars and isinstance(k, str) else f"[{k!r}]"
            if k is child:
                return f"<key {k!r}>"
    if isinstance(parent, (list, tuple)):
        for i, v in enumerate(parent):
            if v is child:
                return f"[{i}]"
    if isinstance(parent, (set, frozenset)):
        return "{...}"
    attrs = getattr(parent, "__dict__", None)
    if attrs is child:
        return ""  # the attribute's name is the next edge's (``.name``)
    if isinstance(attrs, dict):  # an instance whose attributes gc sees without a dict
        for k, v in attrs.items():
            if v is child:
                return f".{k}"
    if isinstance(parent, types.FunctionType):
        free = zip(parent.__code__.co_freevars, parent.__closure__ or (), strict=False)
        for name, cell in free:
            if _filled(cell) and cell.cell_contents is child:
                return f"<closure {parent.__qualname__}: {name}>"
    if isinstance(parent, types.MethodType):
        return ".__self__" if parent.__self__ is child else ".__func__"
    if isinstance(parent, np.ndarray):
        return ".base"
    for klass in type(parent).__mro__:
        for name in klass.__dict__.get("__slots__", ()):
            if getattr(parent, name, None) is child:
                return f".{name}"
    if dataclasses.is_dataclass(parent):
        for f in dataclasses.fields(parent):
            if getattr(parent, f.name, None) is child:
                return f".{f.name}"
    return f" -> <{type(child).__name__}>"


def coordinator_locals() -> dict[str, dict[str, Any]]:
    """The local variables of every frame on this call stack running coordinator code,
    labelled ``qualname() locals`` (innermost first)."""
    out: dict[str, dict[str, Any]] = {}
    frame: types.FrameType | None = sys._getframe(1)
    depth = 0
    while frame is not None:
        code = Path(frame.f_code.co_filename).resolve()
        if any(code == c or code.is_relative_to(c) for c in COORDINATOR_CODE):
            out[f"#{depth} {frame.f_code.co_qualname}() locals"] = dict(frame.f_locals)
            depth += 1
        frame = frame.f_back
    return out


def coordinator_view(coordinator: object, *, stop: tuple[type, ...] = ()) -> Found:
    """Walk the coordinator and its in-flight state: every object reachable from
    ``coordinator`` and from the locals of every frame now running coordinator code
    (call it from inside the coordinator's call, e.g. a Driver wrapper's exchange)."""
    return walk({"coordinator": coordinator, **coordinator_locals()}, stop=stop)


def probe_keys(found: Found) -> set[int]:
    """The ids of the SecAgg+ servers' own throwaway keys (``SecAggServer._probe``)."""
    return {
        id(o._probe)
        for o in found.objects
        if isinstance(o, SecAggServer) and isinstance(o._probe, AgreementKey)
    }


def foreign_secrets(found: Found) -> list[object]:
    """Every secret-key object the walk reached but a SecAgg+ server's own ``_probe``."""
    probes = probe_keys(found)
    return [o for o in found.secrets if id(o) not in probes]


def carries(stage: str, batch: Mapping[str, bytes], wanted: NodeStage) -> bool:
    """Whether a batch sent as ``stage`` carries ``wanted``: as its own stage, or as a
    part of some node's bundle (the next beacon rides on some of a mode's stages)."""
    if stage == wanted.value:
        return True
    if stage != NodeStage.BUNDLE.value:
        return False
    return any(st == wanted.value for payload in batch.values() for st, _ in decode_bundle(payload))


class WalkAt:
    """A Driver wrapper: :func:`coordinator_view` the first time a batch carrying
    ``at`` is sent (before it is sent), then ``then(view)`` if given."""

    def __init__(
        self,
        inner: Driver,
        coordinator: object,
        *,
        at: NodeStage,
        stop: tuple[type, ...] = (),
        then: Callable[[WalkAt], None] | None = None,
    ) -> None:
        self.inner, self.coordinator, self.at, self.stop = inner, coordinator, at, stop
        self.then = then
        self.view: Found | None = None

    def nodes(self) -> tuple[str, ...]:
        """The inner driver's nodes."""
        return tuple(self.inner.nodes())

    def exchange(
        self,
        stage: str,
        batch: Mapping[str, bytes],
        *,
        timeout: float,
        on_reply: Any = None,
        **kw: Any,
    ) -> dict[str, bytes | None]:
        """Walk the coordinator if this batch is the first to carry ``at``; send it."""
        if self.view is None and carries(stage, batch, self.at):
            self.view = coordinator_view(self.coordinator, stop=self.stop)
            if self.then is not None:
                self.then(self)
        if on_reply is None:
            return self.inner.exchange(stage, batch, timeout=timeout, **kw)
        return self.inner.exchange(stage, batch, timeout=timeout, on_reply=on_reply, **kw)

    def close(self) -> None:
        """Close the inner driver."""
        self.inner.close()
