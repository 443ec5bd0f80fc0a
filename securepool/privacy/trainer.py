"""DPTrainer: DP-SGD local training through Opacus, one privacy account per participant.

Implements :class:`securepool.training.LocalTrainer`. Every call wraps the pool model
in Opacus' GradSampleModule for that call only (the hooks are removed afterwards, so a
pool model re-used across iterations never stacks hooks), trains with per-sample
clipping and Gaussian noise, and records the (noise multiplier, sample rate, steps) it
ran into the participant's ledger. A participant whose epsilon would exceed
``epsilon_max`` with this call does not train: the run goes on without it.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from typing import Any

import torch
from opacus import PrivacyEngine
from opacus.accountants.utils import get_noise_multiplier
from opacus.validators import ModuleValidator
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from crypto.errors import ConfigError
from securepool.privacy.accounting import PrivacyLedger
from securepool.privacy.config import GradSampleMode, PrivacyConfig
from securepool.training import TrainReport, TrainSettings


def validate_models(models: Mapping[str, nn.Module]) -> list[str]:
    """Problems that make a pool model incompatible with Opacus (e.g. BatchNorm)."""
    out = []
    for mid, model in models.items():
        errors = ModuleValidator.validate(model, strict=False)
        if errors:
            out.append(f"pool model {mid!r} cannot train with DP-SGD: {errors[0]}")
    return out


class DPTrainer:
    """Record-level DP-SGD for every participant, with composition across iterations."""

    def __init__(
        self, config: PrivacyConfig, *, records: Mapping[str, int], planned_rounds: int
    ) -> None:
        self.config = config
        self.records = dict(records)
        self.planned_rounds = config.planned_rounds or planned_rounds
        self.ledger = PrivacyLedger(delta=config.delta)
        self._sigma: dict[str, float] = {}

    # --- calibration -----------------------------------------------------------------

    @staticmethod
    def sample_rate(n: int, batch_size: int) -> float:
        """Opacus' Poisson rate: 1 / (batches per epoch of the plain loader)."""
        return 1.0 / max(1, math.ceil(n / batch_size))

    def noise_multiplier(self, pid: str, *, n: int, settings: TrainSettings) -> float:
        if self.config.noise_multiplier is not None:
            return self.config.noise_multiplier
        if pid not in self._sigma:
            q = self.sample_rate(n, settings.batch_size)
            steps = self.planned_rounds * settings.epochs * round(1 / q)
            if self.config.target_epsilon is None:
                raise ConfigError(["privacy: neither noise_multiplier nor target_epsilon set"])
            self._sigma[pid] = float(
                get_noise_multiplier(
                    target_epsilon=self.config.target_epsilon,
                    target_delta=self.config.delta,
                    sample_rate=q,
                    steps=steps,
                    accountant="rdp",
                )
            )
        return self._sigma[pid]

    # --- LocalTrainer --------------------------------------------------------------------

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
        cfg = self.config
        n = int(x.shape[0])
        q = self.sample_rate(n, settings.batch_size)
        sigma = self.noise_multiplier(participant, n=n, settings=settings)
        planned = (sigma, q, settings.epochs * round(1 / q))
        if cfg.epsilon_max is not None:
            would = self.ledger.epsilon(participant, extra=planned)
            if would > cfg.epsilon_max:
                self.ledger.account(participant).skipped += 1
                spent = self.ledger.epsilon(participant)
                return TrainReport(
                    samples=n,
                    steps=0,
                    skipped=(
                        f"privacy budget: eps {spent:.3f} spent, {would:.3f} after this "
                        f"round > epsilon_max {cfg.epsilon_max}"
                    ),
                )
        model.train()  # evaluation may have left it in eval mode; Opacus needs train mode
        gen = torch.Generator().manual_seed(seed)
        loader = DataLoader(TensorDataset(x, y), batch_size=settings.batch_size, generator=gen)
        optimizer = torch.optim.SGD(model.parameters(), lr=settings.lr, momentum=settings.momentum)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Opacus warns about secure_mode=False each time
            engine = PrivacyEngine(accountant="rdp", secure_mode=cfg.secure_rng)
            private, dp_opt, dp_loader = engine.make_private(
                module=model,
                optimizer=optimizer,
                data_loader=loader,
                noise_multiplier=sigma,
                max_grad_norm=cfg.max_grad_norm,
                poisson_sampling=cfg.poisson_sampling,
                grad_sample_mode=GradSampleMode(cfg.grad_sample_mode).value,
                noise_generator=None if cfg.secure_rng else gen,
            )
        loss_fn = nn.CrossEntropyLoss(reduction="sum")
        private.train()
        steps = 0
        with warnings.catch_warnings():
            # torch warns on every backward that the first layer's input needs no gradient
            warnings.filterwarnings("ignore", message="Full backward hook is firing")
            try:
                for _ in range(settings.epochs):
                    for xb, yb in dp_loader:
                        dp_opt.zero_grad()
                        # sum / expected batch size: an empty Poisson batch gives zero loss
                        loss = loss_fn(private(xb), yb) / (q * n)
                        loss.backward()
                        dp_opt.step()
                        steps += 1
            finally:
                private._close()  # remove Opacus' hooks from the shared pool model
        for sigma_h, q_h, steps_h in engine.accountant.history:
            self.ledger.record(participant, sigma=float(sigma_h), q=float(q_h), steps=int(steps_h))
        return TrainReport(samples=n, steps=steps)

    # --- reporting and checkpoints -------------------------------------------------------

    def epsilon(self, pid: str) -> float:
        return self.ledger.epsilon(pid)

    def worst_epsilon(self) -> float:
        return max((self.epsilon(p) for p in self.records), default=0.0)

    def report(self) -> dict[str, dict[str, Any]]:
        out = {}
        for pid in self.records:
            acc = self.ledger.account(pid)
            eps = self.epsilon(pid)
            out[pid] = {
                "epsilon": eps,
                "delta": self.config.delta,
                "steps": acc.steps,
                "sample_rate": acc.history[-1][1] if acc.history else None,
                "noise_multiplier": acc.history[-1][0] if acc.history else None,
                "iterations": acc.iterations,
                "rounds_skipped_for_budget": acc.skipped,
                "budget": self.config.epsilon_max,
                "budget_exhausted": acc.skipped > 0,
            }
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"ledger": self.ledger.state_dict(), "sigma": dict(self._sigma)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            self.ledger.load_state_dict(state.get("ledger", {}))
            self._sigma = {k: float(v) for k, v in state.get("sigma", {}).items()}
