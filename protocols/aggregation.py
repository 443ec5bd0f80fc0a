"""What every aggregation mode shares: the mode enum, a participant's input, the length rule.

Three modes aggregate one model group (P3/S404 of the patent); each is a pair of state
machines, driven by the coordinator (securepool/coordinator/loop.py) and the nodes
(securepool/node/):

* ``plaintext`` (:mod:`protocols.plaintext`): the **insecure baseline**: the
  coordinator sees every individual update.
* ``mask`` (:mod:`protocols.secagg`): SecAgg+ pairwise masking, ``SecAggClient`` on
  each node, ``SecAggServer`` at the coordinator.
* ``he`` (:mod:`protocols.he`): CKKS ciphertexts from each ``HEParticipant``, summed by
  the ``HECoordinator``, decrypted by the auditor's ``HEKeyHolder`` only as aggregates.

Model parameters cross into protocols/ as flat float32 numpy vectors: each
participant's ``update`` is its trained parameters minus the global ones it was sent
(a delta), and ``weight`` its weight: 1 under :attr:`Weighting.EQUAL` (the default), its
sample count under :attr:`Weighting.RECORDS`. A group's result is the weighted sum and
the total weight, so the caller forms the (Fed)Avg mean.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum

import numpy as np
from numpy.typing import NDArray

from crypto.errors import MessageError


class AggregationMode(str, Enum):
    """How a model group is aggregated (``[aggregation] mode``)."""

    PLAINTEXT = "plaintext"
    MASK = "mask"
    HE = "he"


class Weighting(str, Enum):
    """What a participant's update weighs in its group's mean (``[aggregation] weighting``).

    * ``equal``: every update weighs 1. Nothing a node sends depends on its record count,
      and a claimed weight other than 1 is a lie whoever sees it refuses: the
      coordinator (plaintext), the auditor (each member's weight in mask and HE mode
      with the trust check), the sum of the weights (mask and HE without it).
    * ``records``: FedAvg by the record count each participant claims: nobody can check
      a claim (one participant claiming 1024 records owns most of its group's mean),
      and the count is released. For runs where every participant is trusted.
    """

    EQUAL = "equal"
    RECORDS = "records"

    def check(self, weight: float, *, who: str) -> None:
        """MessageError for a weight this rule does not allow (equal: not exactly 1)."""
        if self is Weighting.EQUAL and weight != 1.0:
            raise MessageError(
                f"{who} claims weight {weight!r}; aggregation.weighting = equal weighs "
                "every update 1 (a weight claim is refused)"
            )

    def check_total(self, total: float, contributors: int, *, tolerance: float) -> None:
        """MessageError if an aggregate's total weight is not one per contributor
        (equal), within ``tolerance`` per contributor: a member claimed another weight."""
        if self is Weighting.EQUAL and not abs(total - contributors) <= tolerance * contributors:
            raise MessageError(
                f"the aggregate's total weight is {total:.6g} for {contributors} "
                "contributors under equal weighting: a member claimed another weight"
            )


@dataclass(frozen=True)
class ClientInput:
    """What one participant brings to a group session.

    ``update`` is a flat float32 vector, ``weight`` its (positive) sample count.
    ``sealed_summary`` is the update's summary sealed to the auditor, or None when no
    trust check runs. Held by the participant only; never sent as is.
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
