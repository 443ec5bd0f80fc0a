"""The per-model aggregation seam (P3/S404 of the patent).

The S401–S406 loop in ``securepool`` hands every model group to one
:class:`GroupAggregator`. Three implementations exist:

* ``PlaintextAggregator`` (:mod:`protocols.plaintext`): the **insecure baseline**:
  the coordinator sees every individual update.
* ``MaskedAggregator`` (:mod:`protocols.secagg`): SecAgg+ pairwise masking.
* ``HEAggregator`` (:mod:`protocols.he`): CKKS ciphertexts summed by the coordinator,
  decrypted by the auditor only as aggregates.

Model parameters cross into protocols/ as flat float32 numpy vectors: each
participant's ``update`` is its trained parameters minus the global ones it was sent
(a delta), and ``weight`` is its sample count. The result is the weighted sum and the
total weight, so the caller forms the FedAvg mean. Protocol messages move between role
objects as bytes through a :class:`Router`; no role reads another's memory.

The trust check (P6) enters through ``vet``: after the participants have committed to
their inputs, the aggregator hands the relayed sealed summaries to ``vet`` and drops
whatever participants it returns, through the same path as dropouts.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from crypto.errors import MessageError
from protocols.transcript import Direction, Transcript


class AggregationMode(str, Enum):
    PLAINTEXT = "plaintext"
    MASK = "mask"
    HE = "he"


class Stage(str, Enum):
    """When a simulated participant drops out of a session."""

    ADVERTISE = "advertise"
    SHARE = "share"
    INPUT = "input"
    UNMASK = "unmask"


@dataclass(frozen=True)
class ClientInput:
    """What one participant brings to a group session.

    ``update`` is a flat float32 vector, ``weight`` its (positive) sample count.
    ``sealed_summary`` is the update's summary sealed to the auditor, or None when no
    trust check runs. Held by the participant's object only; never sent as is.
    """

    update: NDArray[np.float32]
    weight: float
    sealed_summary: bytes | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.update, np.ndarray) or self.update.ndim != 1:
            raise MessageError("update must be a flat numpy vector")
        if self.update.dtype != np.float32:
            raise MessageError(f"update must be float32, got {self.update.dtype}")
        if not np.all(np.isfinite(self.update)):
            raise MessageError("update contains NaN or infinity")
        if not (self.weight > 0 and np.isfinite(self.weight)):
            raise MessageError(f"weight must be positive and finite, got {self.weight}")


@dataclass(frozen=True)
class DropoutPlan:
    """Simulated dropouts: participant id -> the stage it vanishes before."""

    drops: Mapping[str, Stage] = field(default_factory=dict)

    def drops_before(self, participant: str, stage: Stage) -> bool:
        at = self.drops.get(participant)
        if at is None:
            return False
        order = list(Stage)
        return order.index(at) <= order.index(stage)


@dataclass(frozen=True)
class GroupResult:
    """The outcome of one group session.

    ``weighted_sum`` is sum_i w_i x_i over ``contributors`` (float64), ``total_weight``
    is sum_i w_i. ``excluded`` maps each participant left out to the reason.
    """

    weighted_sum: NDArray[np.float64]
    total_weight: float
    contributors: frozenset[str]
    excluded: Mapping[str, str]
    upload_bytes: Mapping[str, int] = field(default_factory=dict)

    def mean(self) -> NDArray[np.float64]:
        if self.total_weight <= 0:
            raise MessageError("aggregate has no weight")
        return self.weighted_sum / self.total_weight


class Vet(Protocol):
    """The trust-check hook: relayed sealed summaries in, flagged participants (with the
    reason for each) out.

    ``observed``: the updates the coordinator actually received, where it receives them
    in the clear (plaintext mode only). The check then also binds each sealed summary to
    the update behind it: a participant whose summary is not that of the update it sent
    is flagged (P6 judges what was contributed, not what was claimed). Secure modes pass
    None: the coordinator holds no update to compare.

    ``fold_request``: HE mode with the binding (protocols/he/fold.py): the coordinator's
    :class:`~protocols.he.messages.FoldRequest` bytes, one fold of each participant's
    own ciphertext, for the auditor to judge instead of participant-made summaries
    (``sealed`` is then empty). The hook raises if the auditor refuses the request.
    """

    def __call__(
        self,
        sealed: Mapping[str, bytes],
        /,
        *,
        observed: Mapping[str, NDArray[np.float32]] | None = None,
        fold_request: bytes | None = None,
    ) -> Mapping[str, str]: ...


def group_length(sizes: Mapping[str, int]) -> tuple[int, dict[str, str]]:
    """The vector length of a group and the participants whose update has another one.

    The length is the one most participants share (ties: the smaller); everyone else is
    excluded with a "wrong size" reason, so one participant with a malformed update
    leaves its group instead of stopping the aggregation. Every mode uses this rule.
    Raises MessageError for an empty group.
    """
    if not sizes:
        raise MessageError("no updates to take the group's length from")
    counts = Counter(sizes.values())
    length = min(counts, key=lambda size: (-counts[size], size))
    wrong = {
        pid: f"wrong size: update of length {size}, group has {length}"
        for pid, size in sorted(sizes.items())
        if size != length
    }
    return length, wrong


@dataclass(frozen=True)
class SessionContext:
    """What every member of one group must agree on before sending anything.

    ``joint_seed``: the group's 32-byte seed from the participants' joint randomness
    (:func:`protocols.beacon.group_joint_seed`); ``model_digest``: a hash of the global
    model and the session parameters the members were sent (it also binds the joint
    seed, so a coordinator that showed different members different beacon outcomes is
    caught by the same check).

    Security: SecAgg+ clients sign the digest in their adverts and abort on any
    mismatch, and derive their neighbour graph from the seed. The plaintext baseline
    has nothing to protect with them; HE participants do not yet cross-check their
    models (threat_model.md, "HE mode").
    """

    joint_seed: bytes
    model_digest: bytes


class GroupAggregator(Protocol):
    """One secure (or baseline) aggregation session per model group."""

    mode: AggregationMode

    def aggregate(
        self,
        *,
        session: str,
        inputs: Mapping[str, ClientInput],
        vet: Vet | None = None,
        dropouts: DropoutPlan | None = None,
        context: SessionContext | None = None,
    ) -> GroupResult:
        """Run one session over ``inputs`` and return the aggregate.

        Raises :class:`crypto.errors.ThresholdNotMet` when too few remain; the caller
        keeps that model's last global state.
        """
        ...


@dataclass
class Router:
    """In-process transport: moves bytes between named roles and records each view.

    ``transcripts`` maps a role name to its :class:`Transcript`; roles without one are
    not recorded. Runtimes for Flower or Ray replace this object, not the protocol.
    """

    transcripts: dict[str, Transcript] = field(default_factory=dict)

    def send(self, *, session: str, sender: str, receiver: str, kind: str, payload: bytes) -> bytes:
        if sender in self.transcripts:
            self.transcripts[sender].record(
                session=session, direction=Direction.SENT, peer=receiver, kind=kind, payload=payload
            )
        if receiver in self.transcripts:
            self.transcripts[receiver].record(
                session=session,
                direction=Direction.RECEIVED,
                peer=sender,
                kind=kind,
                payload=payload,
            )
        return payload
