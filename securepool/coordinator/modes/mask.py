"""``aggregation.mode = "mask"``: SecAgg+ pairwise masking, one server per group.

Each member's train reply is its SecAgg+ ``AdvertiseKeys``; the coordinator holds one
:class:`~protocols.secagg.server.SecAggServer` per group and never an individual
update. After train, four stages, each one batch over every group:

====================  ===============================================================
``secagg/keys``       KeyDirectory -> ShareKeys
``secagg/shares``     ShareDelivery -> MaskedInput
``secagg/survivors``  SurvivorList -> ConsistencySignature (+ the next ``beacon/start``)
``mask/judge``        with the trust check: the auditor's signed verdicts (auditor only)
``secagg/unmask``     UnmaskRequest -> UnmaskResponse (+ the next ``beacon/commits``)
====================  ===============================================================

With the trust check the SecAgg+ servers bind every masked input to a sealed report
(:mod:`protocols.secagg.binding`); the judgement and the post-check after unmasking are
:class:`~securepool.coordinator.trust.TrustRelay`'s. A member whose message is refused
is excluded like a dropout; SecAgg+ recovery completes the group if enough remain.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from crypto.errors import SecurePoolError, ThresholdNotMet
from crypto.fixedpoint import decode
from protocols.secagg.binding import JudgeRequest
from protocols.secagg.labels import prekey_label
from protocols.secagg.server import SecAggServer
from protocols.secagg.stepped import SteppedServer, StepRule, noise_floor
from securepool.coordinator.modes.base import Aggregate, Group, OpeningKeyMode
from securepool.node.agreement import session_parts
from securepool.node.wire import NodeStage
from securepool.privacy.config import Mechanism


@dataclass
class _Masked:
    """A mask group's server, the auditor's signed verdict and the unmasked sum."""

    server: SecAggServer
    verdict: tuple[bytes, bytes] | None = None  # with the trust check: (data, signature)
    total: Any = None  # with the trust check: the unmasked sum, taken before the post-check


def _stepped(group: Group) -> SteppedServer:
    server = _masked(group).server
    if not isinstance(server, SteppedServer):
        raise SecurePoolError(f"group {group.session} has no multi-step session")
    return server


class StepPlan:
    """What the coordinator derives, like every member, for a group's multi-step session:
    the number of steps and the public SGD rule (its grid from the noise share)."""

    def __init__(self, cfg: Any) -> None:
        from securepool.privacy.trainer import ParticipantDP

        self.cfg = cfg
        self._dp = ParticipantDP(
            "coordinator", cfg.privacy, planned_rounds=cfg.convergence.max_iterations
        )
        self._cache: dict[tuple[int, int], tuple[int, StepRule]] = {}

    def for_group(self, group_size: int, dimension: int) -> tuple[int, StepRule]:
        key = (group_size, dimension)
        if key not in self._cache:
            train = self.cfg.training.settings()
            floor = noise_floor(
                group_size,
                self.cfg.mask_settings(),
                min_group_size=self.cfg.assignment.min_group_size,
            )
            spec = self._dp.share_spec(settings=train, dimension=dimension, floor=floor)
            rule = StepRule(
                lr=train.lr,
                momentum=train.momentum,
                grid=spec.grid_step,
                batch_size=float(train.batch_size),
            )
            self._cache[key] = (self.cfg.privacy.local_steps(train.epochs), rule)
        return self._cache[key]


def _masked(group: Group) -> _Masked:
    if not isinstance(group.state, _Masked):
        raise SecurePoolError(f"group {group.session} has no SecAgg+ server")
    return group.state


#: the SecAgg+ stages after train (each closes the one before it on every server:
#: :meth:`~protocols.secagg.server.SecAggServer.close_step`); the key directory rode on
#: the train stage (:meth:`MaskMode.train_parts`)
_STAGES: tuple[NodeStage, ...] = (
    NodeStage.SECAGG_SHARES,
    NodeStage.SECAGG_SURVIVORS,
    NodeStage.SECAGG_UNMASK,
)


class MaskMode(OpeningKeyMode):
    """The mask mode's part of an iteration (see the module docstring)."""

    #: the next beacon rides on the last two SecAgg+ stages (the auditor's own stage,
    #: mask/judge, stays an auditor-only round trip)
    beacon_stages: tuple[NodeStage, NodeStage] | None = (
        NodeStage.SECAGG_SURVIVORS,
        NodeStage.SECAGG_UNMASK,
    )
    #: members require the certificate before their masked input (their ShareKeys,
    #: shares of fresh keys, leave with the train reply)
    quorum_stages: frozenset[NodeStage] = frozenset({NodeStage.SECAGG_SHARES})
    #: each node's key advert for a round is asked with its beacon reveal
    prekey_stage: NodeStage | None = NodeStage.SECAGG_PREKEYS

    _plan: StepPlan | None = None

    @property
    def _steps(self) -> StepPlan | None:
        """The multi-step sessions' plan under ``privacy.mechanism = "distributed"``."""
        if not (self.cfg.privacy.enabled and self.cfg.privacy.mechanism is Mechanism.DISTRIBUTED):
            return None
        if self._plan is None:
            self._plan = StepPlan(self.cfg)
        return self._plan

    def begin(self, groups: Sequence[Group]) -> None:
        """One SecAgg+ server per group (bound to the auditor with the trust check; a
        multi-step one under ``privacy.mechanism = "distributed"``)."""
        binding = None if self._trust is None else self._trust.binding
        for g in groups:
            kw: dict[str, Any] = {
                "session": g.session,
                "settings": self.cfg.mask_settings(),
                "directory": {p: self._link.registry[p] for p in g.members},
                "length": self._sizes[g.model_id],
                "min_contributors": self.cfg.assignment.min_group_size,
                "joint_seed": g.joint_seed,
                "members": g.members,
            }
            kw["advert_session"] = prekey_label(session_parts(g.session)[0])
            if self._steps is None:
                g.state = _Masked(SecAggServer(binding=binding, **kw))
            else:
                steps, rule = self._steps.for_group(len(g.members), self._sizes[g.model_id])
                g.state = _Masked(SteppedServer(steps=steps, params=g.params, rule=rule, **kw))

    def train_parts(
        self, groups: Sequence[Group], adverts: Mapping[str, bytes]
    ) -> dict[str, tuple[NodeStage, bytes]]:
        """Each group's key directory from its members' advance adverts, to ride on the
        train stage: the server files the adverts and closes the key stage now (a member
        without a valid advert is left out, like one that did not advertise)."""
        out: dict[str, tuple[NodeStage, bytes]] = {}
        for g in groups:
            m = _masked(g)
            for pid in g.members:
                advert = adverts.get(pid)
                if advert is None:
                    g.excluded.setdefault(pid, "no key advert with its beacon reveal")
                    continue
                self._receive(g, pid, advert)
            try:
                directory = m.server.close_keys()
            except SecurePoolError as exc:  # ThresholdNotMet among them
                g.aborted = f"aborted: {exc}"
                continue
            for pid in m.server.advertised:
                out[pid] = (NodeStage.SECAGG_KEYS, directory)
        return out

    def file_train(self, group: Group, pid: str, body: bytes) -> None:
        """A member's train reply: its keys were advertised in advance (nothing to file)."""
        if body:
            group.excluded.setdefault(pid, "refused by the coordinator: a train reply body")

    def file_train_part(self, group: Group, pid: str, raw: bytes | None) -> None:
        """A member's ShareKeys, the reply to the directory sent with its train request."""
        reply, why = self._link.open_reply(raw)
        if reply is None:
            group.excluded.setdefault(pid, f"{NodeStage.SECAGG_KEYS.value}: {why}")
        else:
            self._receive(group, pid, reply.body)

    def _receive(self, group: Group, pid: str, body: bytes) -> None:
        try:
            _masked(group).server.receive(body, sender=pid)
        except SecurePoolError as exc:
            group.excluded[pid] = f"refused by the coordinator: {exc}"

    def after_train(self, groups: Sequence[Group]) -> None:
        """The four SecAgg+ stages, each one batch over all groups; with the trust
        check, the auditor's judgement between survivors and unmask and the post-check
        after unmasking."""
        binding = self._trust is not None and self._trust.binding is not None
        for stage in _STAGES:
            if stage is NodeStage.SECAGG_UNMASK and binding:
                self._judge(groups)
            batch: dict[str, bytes] = {}
            owner: dict[str, Group] = {}
            for g in groups:
                if g.aborted is not None:
                    continue
                m = _masked(g)
                try:
                    out = m.server.close_step(m.verdict)
                except ThresholdNotMet as exc:
                    g.aborted = f"aborted: {exc}"
                    continue
                except SecurePoolError as exc:  # e.g. no valid verdict of the auditor
                    g.aborted = f"aborted: {type(exc).__name__}: {exc}"
                    continue
                for pid, reason in m.server.excluded.items():
                    g.excluded.setdefault(pid, reason)
                for pid, msg in out.items():
                    batch[pid], owner[pid] = msg, g
            replies = self._link.send(stage, batch)
            for pid, raw in sorted(replies.items()):
                reply, why = self._link.open_reply(raw)
                if reply is None:
                    owner[pid].excluded.setdefault(pid, f"{stage.value}: {why}")
                else:
                    self._receive(owner[pid], pid, reply.body)
        if binding:
            self._post_check(groups)
        if self._steps is not None:
            self._run_steps(groups)

    def _run_steps(self, groups: Sequence[Group]) -> None:
        """``privacy.mechanism = "distributed"``: step 0's unmasking, then every later
        DP-SGD step of every group, two batches per step (the sum -> signed model
        digests; all signatures -> masked inputs). A group whose step fails keeps the
        model of its last completed step (:mod:`protocols.secagg.stepped`)."""
        live: list[Group] = []
        for g in groups:
            m = _masked(g)
            if g.aborted is not None:
                continue
            try:
                m.total = m.server.close_unmask()
            except ThresholdNotMet as exc:
                g.aborted = f"aborted: {exc}"
                continue
            except SecurePoolError as exc:
                g.aborted = f"aborted: unmasking failed: {type(exc).__name__}: {exc}"
                continue
            live.append(g)
        while True:
            live = [g for g in live if _stepped(g).more]
            if not live:
                return
            for stage, close in ((NodeStage.DP_MODEL, None), (NodeStage.DP_STEP, "digests")):
                batch: dict[str, bytes] = {}
                owner: dict[str, Group] = {}
                for g in list(live):
                    server = _stepped(g)
                    try:
                        out = server.open_step() if close is None else server.close_digests()
                    except SecurePoolError as exc:
                        self._stop(g, exc)
                        live.remove(g)
                        continue
                    for pid, msg in out.items():
                        batch[pid], owner[pid] = msg, g
                replies = self._link.send(stage, batch)
                for pid, raw in sorted(replies.items()):
                    reply, why = self._link.open_reply(raw)
                    g = owner[pid]
                    if reply is None:
                        g.excluded.setdefault(pid, f"{stage.value}: {why}")
                        continue
                    try:
                        _stepped(g).receive_step(reply.body, sender=pid)
                    except SecurePoolError as exc:
                        g.excluded.setdefault(pid, f"{stage.value}: refused: {exc}")
            for g in list(live):
                try:
                    _stepped(g).close_step_inputs()
                except SecurePoolError as exc:
                    self._stop(g, exc)
                    live.remove(g)

    @staticmethod
    def _stop(group: Group, exc: SecurePoolError) -> None:
        """A failed step: the group keeps its last completed step's model (recorded)."""
        group.note = f"steps stopped: {exc}"

    def _judge(self, groups: Sequence[Group]) -> None:
        """Every group's judge request to the auditor (one message, the trust layer's);
        each group keeps the signed verdict its clients require before unmasking."""
        trust = self._trust
        if trust is None:
            return
        asked: list[tuple[Group, JudgeRequest]] = []
        for g in groups:
            if g.aborted is not None:
                continue
            try:
                asked.append((g, _masked(g).server.judge_request()))
            except SecurePoolError as exc:
                g.aborted = f"aborted: no judge request: {exc}"
        verdicts = trust.judge_masks(asked)
        for g, _request in asked:
            if g.session in verdicts:
                _masked(g).verdict = verdicts[g.session]

    def _post_check(self, groups: Sequence[Group]) -> None:
        """After unmasking: each group's post-check (the trust layer's) against the
        commitments of the auditor's verdict; a group holding a liar's input aborts."""
        trust = self._trust
        if trust is None:
            return
        for g in groups:
            m = _masked(g)
            if g.aborted is not None or m.verdict is None:
                continue
            try:
                m.total = m.server.close_unmask()
                trust.post_check(g, m.server.post_check_request())
            except ThresholdNotMet as exc:
                g.aborted = f"aborted: {exc}"
            except SecurePoolError as exc:
                g.aborted = f"aborted: unmasking failed: {exc}"

    def finish(self, group: Group) -> Aggregate:
        """The unmasked sum, decoded: its last value is the total weight (under the
        distributed mechanism: the model after the group's last completed step, as the
        mean update, the contributors weighing one each)."""
        m = _masked(group)
        if isinstance(m.server, SteppedServer):
            contributors = tuple(sorted(m.server.contributors))
            n = float(len(contributors))
            delta = m.server.model.astype(np.float64) - group.params.astype(np.float64)
            return delta * n, n, contributors
        total = m.server.close_unmask() if m.total is None else m.total
        if m.server.spec is None:
            raise ThresholdNotMet("no encoding fixed", survivors=0, threshold=1)
        values = decode(total, m.server.spec)
        weighted, weight = values[:-1].astype(np.float64), float(values[-1])
        contributors = tuple(sorted(m.server.contributors))
        # with the trust check the auditor has already struck a member that claimed
        # another weight; without it only the total shows the lie (nobody to name)
        self.cfg.aggregation.weighting.check_total(weight, len(contributors), tolerance=1e-6)
        kept = {p: r for p, r in group.excluded.items() if p not in contributors}
        group.excluded.clear()
        group.excluded.update(kept)
        for pid in group.members:
            if pid not in contributors:
                group.excluded.setdefault(pid, "not in the aggregate")
        return weighted, weight, contributors
