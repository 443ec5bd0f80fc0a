"""Optional parts that plug into the S401–S406 loop: the trust check and attacks.

The loop depends only on these small protocols; :mod:`securepool.wiring` builds the
concrete objects from the run configuration.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from protocols.aggregation import Vet
from securepool.data import FederatedData


class TrustHooks(Protocol):
    """P6 on privileged summaries: participants seal, the auditor vets, marks persist."""

    def seal(self, *, participant: str, update: NDArray[np.float32], session: str) -> bytes:
        """The participant's summary of ``update``, sealed to the auditor."""
        ...

    def seal_ballot(self, *, voter: str, scores: Mapping[str, float], session: str) -> bytes:
        """A voter's losses of its peers' models on its records, sealed to the auditor."""
        ...

    @property
    def wants_ballots(self) -> bool:
        """Whether the vote needs participants' validation ballots (see vet_for)."""
        ...

    def vet_for(
        self,
        *,
        session: str,
        iteration: int,
        model_id: str,
        ballots: Mapping[str, bytes] | None = None,
    ) -> Vet:
        """The hook the aggregator calls with the relayed sealed summaries; ``ballots``
        maps each voter to its sealed ballot (see seal_ballot)."""
        ...

    def is_excluded(self, participant: str, iteration: int) -> bool: ...

    def report(self) -> dict[str, Any]:
        """Untrusted marks and verdict history, for summary.json and the audit trail."""
        ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class AttackHooks(Protocol):
    """Malicious participants for experiments ([attack] section)."""

    malicious: frozenset[str]

    def poison_data(self, data: FederatedData) -> FederatedData:
        """Data-level attacks (label flipping) before training; others return ``data``."""
        ...

    def poison(
        self,
        *,
        model_id: str,
        updates: Mapping[str, NDArray[np.float32]],
        group_size: int,
        session: str | None = None,
    ) -> dict[str, NDArray[np.float32]]:
        """Return the updates with the malicious participants' ones replaced (``session``:
        the aggregation session, whose public sketch projection an attack may target)."""
        ...

    def summary_sources(
        self,
        *,
        honest: Mapping[str, NDArray[np.float32]],
        sent: Mapping[str, NDArray[np.float32]],
    ) -> dict[str, NDArray[np.float32]]:
        """The update each participant's sealed summary is computed from: ``sent`` except
        for the attacks that hide behind a cover summary (issue 13)."""
        ...

    def poison_ballots(
        self, ballots: Mapping[str, Mapping[str, float]]
    ) -> dict[str, dict[str, float]]:
        """Validation vote: malicious voters score a malicious peer best (collusion)."""
        ...
