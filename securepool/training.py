"""Local training of one participant (P2/S403): plain SGD, or DP-SGD via a trainer.

The S401–S406 loop calls a :class:`LocalTrainer` for every participant it assigned to
a model. :class:`PlainTrainer` is ordinary mini-batch SGD; the differentially private
trainer in :mod:`securepool.privacy` implements the same protocol with Opacus and keeps
one privacy accountant per participant.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn


@dataclass(frozen=True)
class TrainSettings:
    """Local training hyper-parameters, shared by every participant."""

    epochs: int = 1
    batch_size: int = 32
    lr: float = 0.1
    momentum: float = 0.0


@dataclass(frozen=True)
class TrainReport:
    """What one call of local training did.

    ``skipped`` names the reason when the participant did not train (e.g. its privacy
    budget is spent); then the model is unchanged and it contributes nothing.
    """

    samples: int
    steps: int
    skipped: str | None = None


class LocalTrainer(Protocol):
    """Trains ``model`` in place on one participant's local data."""

    def train(
        self,
        *,
        participant: str,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        settings: TrainSettings,
        seed: int,
    ) -> TrainReport: ...

    def privacy_spent(self) -> dict[str, float] | None:
        """Each participant's epsilon so far (None when training is not private)."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume (e.g. privacy accountants); JSON-serialisable."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class PlainTrainer:
    """Non-private mini-batch SGD with cross-entropy loss."""

    def train(
        self,
        *,
        participant: str,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        settings: TrainSettings,
        seed: int,
    ) -> TrainReport:
        gen = torch.Generator().manual_seed(seed)
        opt = torch.optim.SGD(model.parameters(), lr=settings.lr, momentum=settings.momentum)
        loss_fn = nn.CrossEntropyLoss()
        model.train()
        n = x.shape[0]
        steps = 0
        for _ in range(settings.epochs):
            order = torch.randperm(n, generator=gen)
            for start in range(0, n, settings.batch_size):
                idx = order[start : start + settings.batch_size]
                opt.zero_grad()
                loss = loss_fn(model(x[idx]), y[idx])
                loss.backward()
                opt.step()
                steps += 1
        return TrainReport(samples=n, steps=steps)

    def privacy_spent(self) -> dict[str, float] | None:
        return None

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        return None
