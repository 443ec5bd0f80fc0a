"""The participant role (an agency): holds its records, trains what it is sent.

A participant receives a global model as a flat vector, trains it locally (P2/S403)
and returns its *update* (trained minus received parameters) with its sample count as
a :class:`protocols.aggregation.ClientInput`. It never sees another participant's data.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from torch import nn

from crypto.signing import IdentityKey
from protocols.aggregation import ClientInput
from protocols.beacon import BeaconParticipant
from securepool.data import LocalData
from securepool.evaluation import TestResult, count_errors
from securepool.models import Layout, flatten, load_flat
from securepool.training import LocalTrainer, TrainReport, TrainSettings


@dataclass
class LocalOutcome:
    report: TrainReport
    update: NDArray[np.float32] | None  # None when the participant did not train


@dataclass
class Participant:
    """An agency: its records, its identity key, its own beacon state (S403 checks)."""

    pid: str
    data: LocalData
    identity: IdentityKey = field(default_factory=IdentityKey.generate, repr=False)
    beacon: BeaconParticipant | None = field(default=None, repr=False)

    def train(
        self,
        *,
        model: nn.Module,
        global_params: NDArray[np.float32],
        layout: Layout,
        trainer: LocalTrainer,
        settings: TrainSettings,
        seed: int,
    ) -> LocalOutcome:
        """P2/S403: load the global model as the local model, train, return the delta."""
        load_flat(model, global_params, layout)
        report = trainer.train(
            participant=self.pid,
            model=model,
            x=self.data.x_train,
            y=self.data.y_train,
            settings=settings,
            seed=seed,
        )
        if report.skipped is not None:
            return LocalOutcome(report, None)
        delta = (flatten(model) - global_params).astype(np.float32)
        return LocalOutcome(report, delta)

    def client_input(
        self, update: NDArray[np.float32], *, weight: float, sealed_summary: bytes | None
    ) -> ClientInput:
        return ClientInput(update=update, weight=weight, sealed_summary=sealed_summary)

    def score_candidates(
        self,
        *,
        model: nn.Module,
        global_params: NDArray[np.float32],
        candidates: Mapping[str, NDArray[np.float32]],
        layout: Layout,
    ) -> dict[str, float]:
        """Validation vote (P6, plaintext mode only): the mean cross-entropy of each
        candidate's model (global + its update) on this participant's own records.

        Privacy: this participant sees its peers' individual updates; the run config
        allows it only where the coordinator sees them anyway (plaintext mode).
        """
        scores: dict[str, float] = {}
        model.eval()
        for cid, update in candidates.items():
            if cid == self.pid:
                continue
            load_flat(model, (global_params + update).astype(np.float32), layout)
            with torch.no_grad():
                loss = F.cross_entropy(model(self.data.x_train), self.data.y_train)
            scores[cid] = float(loss)
        return scores

    def local_test(
        self, *, model: nn.Module, global_params: NDArray[np.float32], layout: Layout
    ) -> TestResult:
        """Federated S401/S405: test on the local split; only counts leave."""
        load_flat(model, global_params, layout)
        return count_errors(model, self.data.x_test, self.data.y_test)
