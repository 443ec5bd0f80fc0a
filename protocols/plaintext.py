"""INSECURE BASELINE: plaintext FedAvg aggregation.

Every participant sends its raw update and sample count to the coordinator, which
sees each one. It exists only to compare against the secure modes (``mask``, ``he``)
and to run the P6 trust check on raw parameters. Never use it where any participant's
update is sensitive.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from crypto.errors import MessageError, ThresholdNotMet
from protocols.aggregation import (
    AggregationMode,
    ClientInput,
    DropoutPlan,
    GroupResult,
    Router,
    SessionContext,
    Stage,
    Vet,
    group_length,
)

_VERSION = 1
_HEADER = struct.Struct(">BdI")  # version, weight, length


def encode_plain_update(update: NDArray[np.float32], weight: float) -> bytes:
    """Wire form of a plaintext update: version, weight, length, float32 LE values."""
    return _HEADER.pack(_VERSION, weight, update.size) + update.astype("<f4").tobytes()


def decode_plain_update(payload: bytes) -> tuple[NDArray[np.float32], float]:
    if len(payload) < _HEADER.size:
        raise MessageError("plaintext update shorter than its header")
    version, weight, length = _HEADER.unpack_from(payload)
    if version != _VERSION:
        raise MessageError(f"plaintext update version {version}, expected {_VERSION}")
    body = payload[_HEADER.size :]
    if len(body) != 4 * length:
        raise MessageError(f"plaintext update body has {len(body)} bytes, expected {4 * length}")
    vec = np.frombuffer(body, dtype="<f4").astype(np.float32)
    if not (np.isfinite(weight) and weight > 0) or not np.all(np.isfinite(vec)):
        raise MessageError("plaintext update has a non-finite value or a non-positive weight")
    return vec, weight


@dataclass
class PlaintextAggregator:
    """INSECURE BASELINE: the coordinator receives every update in the clear."""

    min_contributors: int = 1
    router: Router = field(default_factory=Router)
    mode: AggregationMode = AggregationMode.PLAINTEXT
    coordinator: str = "coordinator"

    def aggregate(
        self,
        *,
        session: str,
        inputs: Mapping[str, ClientInput],
        vet: Vet | None = None,
        dropouts: DropoutPlan | None = None,
        context: SessionContext | None = None,  # see SessionContext: not used here
    ) -> GroupResult:
        plan = dropouts or DropoutPlan()
        excluded: dict[str, str] = {}
        received: dict[str, tuple[NDArray[np.float32], float]] = {}
        upload: dict[str, int] = {}
        summaries: dict[str, bytes] = {}
        for pid, inp in inputs.items():
            if plan.drops_before(pid, Stage.INPUT):
                excluded[pid] = "dropped out"
                continue
            payload = self.router.send(
                session=session,
                sender=pid,
                receiver=self.coordinator,
                kind="plain_update",
                payload=encode_plain_update(inp.update, inp.weight),
            )
            upload[pid] = len(payload)
            try:
                received[pid] = decode_plain_update(payload)
            except MessageError as exc:
                excluded[pid] = f"malformed update: {exc}"
                continue
            if inp.sealed_summary is not None:
                summaries[pid] = inp.sealed_summary
        if vet is not None:
            observed = {pid: received[pid][0] for pid in summaries if pid in received}
            for pid, reason in vet(summaries, observed=observed).items():
                if pid in received:
                    del received[pid]
                    excluded[pid] = f"untrusted: {reason}"
        if received:
            length, wrong = group_length({pid: vec.size for pid, (vec, _) in received.items()})
            excluded.update(wrong)
            received = {pid: r for pid, r in received.items() if pid not in wrong}
        if len(received) < self.min_contributors or not received:
            raise ThresholdNotMet(
                f"session {session}: {len(received)} contributors, need {self.min_contributors}",
                survivors=len(received),
                threshold=self.min_contributors,
            )
        total = np.zeros(length, dtype=np.float64)
        weight = 0.0
        for vec, w in received.values():
            total += w * vec.astype(np.float64)
            weight += w
        return GroupResult(
            weighted_sum=total,
            total_weight=weight,
            contributors=frozenset(received),
            excluded=excluded,
            upload_bytes=upload,
        )
