"""INSECURE BASELINE: ``aggregation.mode = "plaintext"``, the coordinator sums raw updates.

Each member's train reply is its update and weight (:mod:`protocols.plaintext`), and
nothing else: with the trust check the coordinator summarises the updates it received
itself, under a projection drawn after every update of the group is fixed. After train:

* ``plain/ballot`` (the validation vote only, ``trust.voting = "validation"``): every
  member whose update arrived gets its group's received updates and scores them on its
  own records; its ballot comes back sealed to the auditor (the coordinator cannot read
  it). The coordinator sees every update in this mode anyway, which is why the config
  allows the vote here only;
* ``plain/judge`` (the trust check): the auditor's signed verdict on each group's
  summaries (:meth:`~securepool.coordinator.trust.TrustRelay.judge_plain`, with the
  ballots).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from crypto.errors import SecurePoolError, ThresholdNotMet
from protocols.aggregation import group_length
from protocols.plaintext import decode_plain_update
from protocols.verdict import proven
from securepool.coordinator.modes.base import Aggregate, Group, NoTrainParts, OpeningKeyMode
from securepool.coordinator.trust import PlainCase
from securepool.node.wire import BallotRequest, NodeStage


@dataclass
class _Received:
    """A plaintext group's replies: updates and the ballots."""

    updates: dict[str, tuple[NDArray[np.float32], float]] = field(default_factory=dict)
    ballots: dict[str, bytes] = field(default_factory=dict)


def _received(group: Group) -> _Received:
    if not isinstance(group.state, _Received):
        raise SecurePoolError(f"group {group.session} is not a plaintext group")
    return group.state


class PlaintextMode(NoTrainParts, OpeningKeyMode):
    """The plaintext mode's part of an iteration (see the module docstring)."""

    beacon_stages: tuple[NodeStage, NodeStage] | None = None
    #: the coordinator sees every update: no stage of its own waits for a quorum
    quorum_stages: frozenset[NodeStage] = frozenset()

    def train_offers(self) -> tuple[bytes, bytes]:
        """No HE context; the trust check's opening key under the validation vote only
        (the ballots are sealed to it; nothing else a participant sends here is)."""
        if self._trust is None or not self._trust.wants_ballots:
            return b"", b""
        return b"", self._trust.offer

    def begin(self, groups: Sequence[Group]) -> None:
        """Fresh replies for every group of the iteration."""
        for g in groups:
            g.state = _Received()

    def file_train(self, group: Group, pid: str, body: bytes) -> None:
        """The update and its weight."""
        got = _received(group)
        try:
            vec, weight = decode_plain_update(body)
        except SecurePoolError as exc:
            group.excluded[pid] = f"malformed update: {exc}"
            return
        try:  # the coordinator sees every weight: a claim the run does not allow is a lie
            self.cfg.aggregation.weighting.check(weight, who=pid)
        except SecurePoolError as exc:
            group.excluded[pid] = f"weight refused: {exc}"
            if self._trust is not None:  # a proven lie: its liar is marked at once
                self._trust.record_lies(group, {pid: proven(f"weight refused: {exc}")})
            return
        got.updates[pid] = (vec, weight)

    def after_train(self, groups: Sequence[Group]) -> None:
        """The validation vote's ballots, then the auditor's verdicts (trust check)."""
        if self._trust is None:
            return
        if self._trust.wants_ballots:
            self._ballots(groups)
        cases = []
        for g in groups:
            got = _received(g)
            cases.append(PlainCase(g, got.updates, got.ballots))
        self._trust.judge_plain(cases)

    def _ballots(self, groups: Sequence[Group]) -> None:
        """``plain/ballot``: one batch over every group. Each member whose update
        arrived (with the model's size) gets the group's session, global model and those
        updates, and answers with its ballot sealed to the auditor, relayed unread. A
        member that gives none casts no vote; one whose ballot does not open is flagged
        by the auditor."""
        batch: dict[str, bytes] = {}
        owner: dict[str, Group] = {}
        for g in groups:
            size = self._sizes[g.model_id]
            candidates = {
                pid: vec
                for pid, (vec, _w) in sorted(_received(g).updates.items())
                if vec.size == size
            }
            if len(candidates) < 2:
                continue  # nobody's peers to score
            request = BallotRequest(g.session, g.model_id, g.params, candidates).to_bytes()
            for pid in candidates:
                batch[pid], owner[pid] = request, g
        replies = self._link.send(NodeStage.PLAIN_BALLOT, batch)
        for pid, raw in sorted(replies.items()):
            reply, _why = self._link.open_reply(raw)
            if reply is not None and pid in owner:
                _received(owner[pid]).ballots[pid] = reply.body

    def finish(self, group: Group) -> Aggregate:
        """The weighted sum of the updates left, if at least ``min_group_size``."""
        size = self._sizes[group.model_id]
        got = {}
        for pid, (vec, w) in _received(group).updates.items():
            if vec.size != size:
                group.excluded[pid] = f"wrong size: update of length {vec.size}, model has {size}"
            else:
                got[pid] = (vec, w)
        if got:
            _length, wrong = group_length({p: v.size for p, (v, _) in got.items()})
            group.excluded.update(wrong)
        need = self.cfg.assignment.min_group_size
        if len(got) < need:
            raise ThresholdNotMet(
                f"session {group.session}: {len(got)} contributors, need {need}",
                survivors=len(got),
                threshold=need,
            )
        total = np.zeros(size, dtype=np.float64)
        weight = 0.0
        for vec, w in got.values():
            total += w * vec.astype(np.float64)
            weight += w
        return total, weight, tuple(sorted(got))
