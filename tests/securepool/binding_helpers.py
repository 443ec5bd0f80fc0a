"""Shared pieces of the trust-binding attack tests (plaintext summaries, mask reports, HE
folds): a small pool of the real coordinator, participant nodes and auditor node over
the in-process driver, the lying participant nodes every mode must catch, and a tap on
the link for the tests that play the coordinator (or whoever runs the link).

Every attack is performed from the attacker's side of the wire: a lying participant is a
:class:`ParticipantNode` subclass that trains honestly and then lies in what it sends;
the coordinator, the auditor node and the honest nodes are the code every runtime runs.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from split_helpers import config_text

from crypto.signing import IdentityKey
from protocols.summaries import sketch_projection
from securepool import attacks
from securepool.config import RunConfig, parse_config
from securepool.coordinator.loop import PoolCoordinator
from securepool.coordinator.records import IterationRecord
from securepool.data import federation
from securepool.node.agreement import session_name
from securepool.node.app import ParticipantNode
from securepool.node.auditor import AUDITOR_ID, AuditorNode
from securepool.node.wire import NodeStage, Reply, decode_bundle, encode_bundle, unpack_list
from securepool.runtime.inprocess import InProcessDriver
from securepool.trust.check import public_projection_seed

#: P6 set so that honest nodes are never flagged (a fixed threshold near the largest
#: cosine difference, screens off) while the norm rule stays on: every flag is then the
#: attack's (the binding's checks do not depend on these settings)
QUIET_P6: dict[str, Any] = {
    "enabled": True,
    "sketch_dim": 256,
    "strikes": 1,
    "threshold_rule": "fixed",
    "threshold": 1.9,
    "duplicate_ratio": 0.0,
    "central_ratio": 0.0,
    "align_floor": -1.0,
}


def run_config(
    mode: str,
    *,
    n: int = 6,
    iterations: int = 1,
    trust: Mapping[str, Any] | None = None,
    extra: str = "",
) -> RunConfig:
    """A small run: ``n`` participants, one logreg model (everyone in its one group each
    iteration), the seeded beacon; ``trust``: the ``[trust]`` keys (default
    :data:`QUIET_P6`; empty: the trust check off); ``extra``: more TOML."""
    text = config_text(n=n, mode=mode, iterations=iterations, models=1, max_models=1)
    keys = QUIET_P6 if trust is None else trust
    if keys:
        text += "[trust]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in keys.items())
    return parse_config(tomllib.loads(text + extra))


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return repr(value)


#: QUIET_P6 as a config's ``[trust]`` section (for tests that build TOML text)
QUIET_P6_TOML = "[trust]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in QUIET_P6.items())


# --- lying participant nodes ---------------------------------------------------------

Poison = Callable[[NDArray[np.float32], str], NDArray[np.float32]]


class Recording(ParticipantNode):
    """A participant node that trains honestly, sends ``poison(update, session)`` (its
    honest update without one) and records both: ``honest`` is the last update it
    trained, ``sent[round]`` (the global model it was sent, the update it put in, its
    weight) the plaintext reference of every aggregate it is in."""

    def __init__(self, pid: str, *, poison: Poison | None = None, **kwargs: Any) -> None:
        super().__init__(pid, **kwargs)
        self.poison = poison
        self.honest: NDArray[np.float32] | None = None
        self.sent: dict[int, tuple[NDArray[np.float32], NDArray[np.float32], float]] = {}

    def _local_update(
        self,
        model_id: str,
        params: NDArray[np.float32],
        iteration: int,
        members: tuple[str, ...],
    ) -> tuple[NDArray[np.float32] | None, float, dict[str, Any]]:
        update, weight, meta = super()._local_update(model_id, params, iteration, members)
        if update is not None:
            self.honest = update.copy()
            if self.poison is not None:
                session = session_name(iteration, model_id)
                update = np.asarray(self.poison(update, session), dtype=np.float32)
            self.sent[iteration] = (params.copy(), update.copy(), weight)
        return update, weight, meta


def scale_minus_5(update: NDArray[np.float32], _session: str) -> NDArray[np.float32]:
    """-5x the honest update (a boosted sign flip)."""
    return (-5.0 * update).astype(np.float32)


def backdoor_shift(update: NDArray[np.float32], _session: str) -> NDArray[np.float32]:
    """A model-replacement style shift on a few coordinates of the honest update."""
    shifted = update.copy()
    shifted[:20] += 0.5
    return shifted


POISONS: dict[str, Poison] = {"scale_minus_5": scale_minus_5, "backdoor_shift": backdoor_shift}


def kernel_poison(cfg: RunConfig, *, norm_ratio: float) -> Poison:
    """Adds a perturbation from the kernel of the session's PUBLIC count-sketch
    projection (known to every participant before it trains): the sketch of what is
    sent equals that of the honest update, its norm is ``norm_ratio`` x the honest
    update's (the kernel part of a sign flip, grown: securepool.attacks.kernel_poison)."""

    def poison(update: NDArray[np.float32], session: str) -> NDArray[np.float32]:
        dim = cfg.trust.sketch_dim
        seed = public_projection_seed(cfg.run.seed, session)
        buckets, signs = sketch_projection(update.size, dim=dim, seed=seed)
        target = norm_ratio * float(np.linalg.norm(update.astype(np.float64)))
        return attacks.kernel_poison(
            update, buckets=buckets, signs=signs, dim=dim, target_norm=target
        )

    return poison


# --- the pool --------------------------------------------------------------------------

NodeFactory = Callable[..., ParticipantNode]


@dataclass
class Pool:
    """The coordinator, its participant nodes and the auditor node of one small run."""

    coordinator: PoolCoordinator
    nodes: dict[str, Any]
    auditor_identity: IdentityKey
    records: list[IterationRecord] = field(default_factory=list)

    def run(self) -> list[IterationRecord]:
        """Every iteration of the run (S401 first), each iteration's record."""
        self.coordinator.run(on_iteration=self.records.append)
        return self.records

    def flags(self) -> dict[str, str]:
        """The trust ledger's flags: participant -> the reason of its last flag."""
        ledger = self.coordinator.trust
        assert ledger is not None
        return {f["participant"]: f["reason"] for f in ledger.report()["flags"]}


def pool(
    cfg: RunConfig,
    state_dir: Path,
    *,
    nodes: Mapping[str, NodeFactory] | None = None,
    driver: Callable[[dict[str, Any]], InProcessDriver] = InProcessDriver,
) -> Pool:
    """The coordinator over the in-process driver (or ``driver``: a tap on the link) with
    one node per participant of the run's federation (``nodes[pid]`` builds a lying one;
    every other node is an honest :class:`Recording`) and, with the trust check or in HE
    mode, the auditor node (its files in ``state_dir``), keys in a PKI of its own."""
    data = federation(cfg)
    keys = {pid: IdentityKey.generate() for pid in data.participants}
    auditor = IdentityKey.generate()
    registry = {pid: k.public_bytes() for pid, k in keys.items()}
    registry[AUDITOR_ID] = auditor.public_bytes()
    apps: dict[str, Any] = {
        pid: (nodes or {}).get(pid, Recording)(
            pid,
            cfg=cfg,
            data=local,
            identity=keys[pid],
            registry=registry,
            n_features=data.n_features,
            n_classes=data.n_classes,
        )
        for pid, local in sorted(data.participants.items())
    }
    apps[AUDITOR_ID] = AuditorNode(
        settings=cfg.he_settings(),
        identity=auditor,
        registry=registry,
        state_dir=state_dir,
        corrupt_fraction=cfg.aggregation.mask.corrupt_fraction,
        weighting=cfg.aggregation.weighting,
        trust=cfg.trust,
    )
    coordinator = PoolCoordinator(
        cfg,
        driver_factory=lambda: driver(apps),
        registry=registry,
        n_features=data.n_features,
        n_classes=data.n_classes,
    )
    return Pool(coordinator, apps, auditor)


def assert_exact(p: Pool, record: IterationRecord) -> None:
    """The record's aggregate is exactly (within quantisation or CKKS error) the
    weighted mean of what its contributors put in: nobody left out is in it, nobody in
    it is lost."""
    (group,) = record.groups
    assert group.status == "aggregated", group.status
    sent = [p.nodes[pid].sent[max(p.nodes[pid].sent)] for pid in group.contributors]
    params = sent[0][0]
    mean = sum(w * u.astype(np.float64) for _, u, w in sent) / sum(w for *_, w in sent)
    got = p.coordinator.state.globals[group.model_id]
    np.testing.assert_allclose(got, params + mean, atol=1e-5)


# --- the link ------------------------------------------------------------------------

Rewrite = Callable[[str, str, bytes], bytes]


@dataclass(frozen=True)
class Part:
    """One stage's message to one node as it left the link, and the node's answer to it
    (None: no answer)."""

    stage: str
    node: str
    payload: bytes
    answer: bytes | None


class Tap(InProcessDriver):
    """The link as whoever runs it sees it: every part of every message (bundles
    opened) passes ``rewrite(stage, node, payload)`` on its way to the node; every part
    sent, with its answer, is kept in order (:meth:`parts`)."""

    def __init__(self, apps: Mapping[str, Any], rewrite: Rewrite | None = None) -> None:
        super().__init__(apps)
        self.rewrite = rewrite
        self.log: list[Part] = []

    def parts(self, stage: str) -> list[Part]:
        """Every part of ``stage`` sent so far, in order."""
        return [p for p in self.log if p.stage == stage]

    def exchange(
        self, stage: str, batch: Mapping[str, bytes], *, timeout: float, **kw: Any
    ) -> dict[str, bytes | None]:
        bundled = stage == NodeStage.BUNDLE.value
        parts = {
            node: [
                (st, body if self.rewrite is None else self.rewrite(st, node, body))
                for st, body in (decode_bundle(payload) if bundled else [(stage, payload)])
            ]
            for node, payload in batch.items()
        }
        out = {node: encode_bundle(p) if bundled else p[0][1] for node, p in parts.items()}
        replies = super().exchange(stage, out, timeout=timeout, **kw)
        for node, sent in parts.items():
            raw = replies.get(node)
            answers: list[bytes | None] = [raw]
            if bundled:
                reply = None if raw is None else Reply.from_bytes(raw)
                answers = [None] * len(sent)
                if reply is not None and reply.ok:
                    answers = list(unpack_list(reply.body, what="bundle"))
            for (st, body), answer in zip(sent, answers, strict=True):
                self.log.append(Part(st, node, body, answer))
        return replies


def tapped(rewrite: Rewrite | None = None) -> tuple[list[Tap], Callable[[dict[str, Any]], Tap]]:
    """A driver factory for :func:`pool` that builds a :class:`Tap`, and the list it
    puts it in (the coordinator builds its driver when it connects)."""
    made: list[Tap] = []

    def build(apps: dict[str, Any]) -> Tap:
        made.append(Tap(apps, rewrite))
        return made[-1]

    return made, build
