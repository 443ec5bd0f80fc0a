"""What an aggregation mode is to the coordinator, and what the coordinator does for it.

:class:`~securepool.coordinator.loop.PoolCoordinator` runs the schedule, the beacon, the
train stage and evaluation; one :class:`AggregationStrategy` per ``aggregation.mode``
(:mod:`.plaintext`, :mod:`.mask`, :mod:`.he`) says which auditor offer it needs at
connect, which two of its stages the next iteration's beacon rides on, what it does
with each node's train reply, which stages follow train, and how a group ends as
(weighted sum, weight, contributors). A mode reaches the nodes and the auditor only
through a :class:`Link` (the coordinator), and the trust check only through
:class:`~securepool.coordinator.trust.TrustRelay`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from numpy.typing import NDArray

from securepool.node.wire import NodeStage, Reply

if TYPE_CHECKING:
    from securepool.config import RunConfig
    from securepool.coordinator.trust import TrustRelay

#: a finished group: the weighted sum of its updates, their total weight, contributors
Aggregate = tuple[NDArray[np.float64], float, tuple[str, ...]]


@dataclass
class Group:
    """One model group of one iteration, as every mode sees it.

    ``excluded`` collects who is left out of the aggregate and why; ``aborted`` set means
    the group keeps its last global model (its reason goes into the iteration record).
    """

    model_id: str
    members: tuple[str, ...]
    session: str
    iteration: int  # the pool iteration (what the trust ledger's flags name)
    params: NDArray[np.float32]  # the global model the members were sent
    joint_seed: bytes  # the group's joint seed (SecAgg+ graph, the HE fold seed)
    started: float
    excluded: dict[str, str] = field(default_factory=dict)
    aborted: str | None = None
    note: str = ""  # what the outcome should say besides its status (e.g. steps stopped)
    #: the mode's own state of this group (its SecAgg+ server, the updates received...),
    #: set by :meth:`AggregationStrategy.begin`; it lives and dies with the iteration
    state: Any = None


class Link(Protocol):
    """What the coordinator does for a mode: round trips (the next beacon rides on them
    where the mode says), reading replies, the PKI."""

    @property
    def registry(self) -> Mapping[str, bytes]:
        """The PKI (node id -> Ed25519 public key), read at connect."""
        ...

    def send(self, stage: NodeStage, batch: Mapping[str, bytes]) -> dict[str, bytes | None]:
        """One batch of ``stage`` to the nodes of ``batch`` in one round trip; each
        node's raw reply (None: no reply, or a failed bundle)."""
        ...

    def ask_auditor(self, stage: NodeStage, requests: Sequence[bytes]) -> list[bytes]:
        """Every request of one auditor stage in one message; the auditor's answer to
        each, in order (empty for a refusal or no reply)."""
        ...

    def open_reply(self, raw: bytes | None, *, auditor: bool = False) -> tuple[Reply | None, str]:
        """A node's reply, or None and why it is not usable."""
        ...

    def auditor_offer(self, raw: bytes | None, what: str) -> tuple[bytes, bytes]:
        """(the auditor's offer body, the auditor's PKI key); SecurePoolError if none."""
        ...


class AggregationStrategy(Protocol):
    """One aggregation mode, as the coordinator drives it (see the module docstring)."""

    #: the auditor stage :meth:`PoolCoordinator.connect` asks for an offer, or None
    offer_stage: NodeStage | None
    #: the stages the next iteration's ``beacon/start`` and ``beacon/commits`` ride on
    beacon_stages: tuple[NodeStage, NodeStage] | None
    #: the stages whose request the round's quorum certificate leads (protocols.quorum):
    #: a participant stage goes to every member, an auditor stage with the statement
    quorum_stages: frozenset[NodeStage]

    def accept_offer(self, raw: bytes | None) -> None:
        """The auditor's reply to :attr:`offer_stage`; SecurePoolError if unusable."""
        ...

    def train_offers(self) -> tuple[bytes, bytes]:
        """(HE context offer, trust opening-key offer) every TrainRequest carries."""
        ...

    def begin(self, groups: Sequence[Group]) -> None:
        """This iteration's groups, before the train stage is sent: each gets the
        mode's state (:attr:`Group.state`)."""
        ...

    def file_train(self, group: Group, pid: str, body: bytes) -> None:
        """A member's train reply (its body); a bad one excludes the member."""
        ...

    #: the stage asked with each beacon reveal for the node's advance key advert of that
    #: round (mask mode: ``secagg/prekeys``), or None
    prekey_stage: NodeStage | None

    def train_parts(
        self, groups: Sequence[Group], adverts: Mapping[str, bytes]
    ) -> dict[str, tuple[NodeStage, bytes]]:
        """A part to send each member with its train request (mask mode: its group's key
        directory, from ``adverts``, the round's advance key adverts)."""
        ...

    def file_train_part(self, group: Group, pid: str, raw: bytes | None) -> None:
        """A member's reply to its :meth:`train_parts` part."""
        ...

    def after_train(self, groups: Sequence[Group]) -> None:
        """The mode's stages after train, each one batch over every group."""
        ...

    def finish(self, group: Group) -> Aggregate:
        """A group not aborted: its aggregate; ThresholdNotMet if too few are in it."""
        ...


class NoTrainParts:
    """A mode that sends nothing with the train request and asks for no advance keys."""

    prekey_stage: NodeStage | None = None

    def train_parts(
        self, groups: Sequence[Group], adverts: Mapping[str, bytes]
    ) -> dict[str, tuple[NodeStage, bytes]]:
        return {}

    def file_train_part(self, group: Group, pid: str, raw: bytes | None) -> None:
        return None


class OpeningKeyMode:
    """What the modes whose participants seal to the auditor's HPKE opening key share
    (plaintext: ballots under the validation vote; mask: binding reports): the
    constructor, the trust offer asked for at connect and relayed in every TrainRequest
    (plaintext mode relays it under the validation vote only)."""

    def __init__(
        self,
        cfg: RunConfig,
        link: Link,
        *,
        trust: TrustRelay | None,
        model_sizes: Mapping[str, int],
    ) -> None:
        self.cfg = cfg
        self._link = link
        self._trust = trust
        self._sizes = dict(model_sizes)
        self.offer_stage = None if trust is None else NodeStage.TRUST_OFFER

    def accept_offer(self, raw: bytes | None) -> None:
        """The auditor's opening key, checked against its PKI key (participants check
        it again before they seal anything to it)."""
        if self._trust is not None:
            self._trust.accept_offer(raw)

    def train_offers(self) -> tuple[bytes, bytes]:
        """No HE context; the trust check's opening key, if on."""
        return b"", (b"" if self._trust is None else self._trust.offer)
