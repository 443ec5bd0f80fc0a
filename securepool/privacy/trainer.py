"""DP-SGD local training: each participant's own engine, ledger, randomness and budget.

:class:`ParticipantDP` is the participant's side of differential privacy and belongs to
the participant (a node in deployment): it holds its own :class:`PrivacyLedger`, its own
:class:`crypto.entropy.SecureStream` (keyed from ``os.urandom`` when it is made) and its
own ``epsilon_max``. It trains with Opacus' per-sample clipping, samples its batches by
Poisson sampling from that stream and adds discrete Gaussian noise from it
(:mod:`securepool.privacy.noise`). It refuses to train when its own ledger says the
round would exceed its budget: it does not take the coordinator's bookkeeping on trust.

:class:`DPTrainer` is only the in-process router of the :class:`LocalTrainer` protocol:
one ParticipantDP per participant id, created on first use; it keeps no privacy state
of its own.

``secure_rng = false`` (experiments only) keys the stream from the run seed instead, so
a run can be replayed bit for bit — and so can its noise, by anyone holding the config:
such runs are labelled ``dp_noise_reproducible: true`` everywhere they are reported.
"""

from __future__ import annotations

import math
import statistics
import warnings
from collections.abc import Mapping
from typing import Any

import torch
from opacus.accountants.utils import get_noise_multiplier
from opacus.grad_sample.utils import prepare_module
from opacus.validators import ModuleValidator
from torch import nn

from crypto.encoding import bind
from crypto.entropy import SecureStream
from crypto.errors import ConfigError
from securepool.privacy.accounting import PrivacyLedger
from securepool.privacy.config import GradSampleMode, PrivacyConfig
from securepool.privacy.noise import GridNoiseOptimizer, grid_for, sampler_delta
from securepool.training import TrainReport, TrainSettings

NOISE_SOURCE_SECURE = "discrete Gaussian on a 2^k grid, AES-256-CTR keyed from os.urandom"
NOISE_SOURCE_REPRODUCIBLE = (
    "discrete Gaussian on a 2^k grid, AES-256-CTR keyed from the run seed "
    "(REPRODUCIBLE: anyone with the config can replay the noise)"
)


def validate_models(models: Mapping[str, nn.Module]) -> list[str]:
    """Problems that make a pool model incompatible with Opacus (e.g. BatchNorm)."""
    out = []
    for mid, model in models.items():
        errors = ModuleValidator.validate(model, strict=False)
        if errors:
            out.append(f"pool model {mid!r} cannot train with DP-SGD: {errors[0]}")
    return out


def sample_rate(n: int, batch_size: int) -> float:
    """Poisson rate: 1 / (batches per epoch of a plain loader)."""
    return 1.0 / max(1, math.ceil(n / batch_size))


class ParticipantDP:
    """One participant's DP-SGD: its ledger, its private randomness, its budget."""

    def __init__(
        self, pid: str, config: PrivacyConfig, *, records: int, planned_rounds: int
    ) -> None:
        self.pid = pid
        self.config = config
        self.records = records
        self.planned_rounds = config.planned_rounds or planned_rounds
        self.ledger = PrivacyLedger(delta=config.delta)
        self.stream: SecureStream | None = SecureStream() if config.secure_rng else None
        self.noise_samples = 0
        self._sigma: float | None = None

    @property
    def noise_reproducible(self) -> bool:
        return not self.config.secure_rng

    def noise_multiplier(self, settings: TrainSettings) -> float:
        """The configured sigma, or the one that meets target_epsilon after the planned
        rounds (computed once, from this participant's own record count)."""
        if self.config.noise_multiplier is not None:
            return self.config.noise_multiplier
        if self._sigma is None:
            if self.config.target_epsilon is None:
                raise ConfigError(["privacy: neither noise_multiplier nor target_epsilon set"])
            q = sample_rate(self.records, settings.batch_size)
            steps = self.planned_rounds * settings.epochs * round(1 / q)
            self._sigma = float(
                get_noise_multiplier(
                    target_epsilon=self.config.target_epsilon,
                    target_delta=self.config.delta,
                    sample_rate=q,
                    steps=steps,
                    accountant="rdp",
                )
            )
        return self._sigma

    def epsilon(self) -> float:
        return self.ledger.epsilon(self.pid)

    def _stream_for(self, seed: int) -> SecureStream:
        if self.stream is not None:
            return self.stream
        return SecureStream.insecure_from_seed(
            seed.to_bytes(8, "big", signed=False),
            label=bind(b"securepool/dp-noise/v1", self.pid),
        )

    def train(
        self,
        *,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        settings: TrainSettings,
        seed: int,
    ) -> TrainReport:
        """Train ``model`` in place with DP-SGD, or refuse (unchanged) over budget.

        ``seed`` is used only when ``secure_rng = false`` (the reproducible mode)."""
        cfg = self.config
        n = int(x.shape[0])
        q = sample_rate(n, settings.batch_size)
        steps_planned = settings.epochs * round(1 / q)
        sigma = self.noise_multiplier(settings)
        dimension = sum(p.numel() for p in model.parameters() if p.requires_grad)
        grid = grid_for(
            noise_multiplier=sigma, max_grad_norm=cfg.max_grad_norm, dimension=dimension
        )
        planned = (grid.effective_multiplier, q, steps_planned)
        if cfg.epsilon_max is not None:
            would = self.ledger.epsilon(self.pid, extra=planned)
            if would > cfg.epsilon_max:
                self.ledger.account(self.pid).skipped += 1
                return TrainReport(
                    samples=n,
                    steps=0,
                    skipped=(
                        f"privacy budget: eps {self.epsilon():.3f} spent, {would:.3f} after "
                        f"this round > epsilon_max {cfg.epsilon_max}"
                    ),
                )
        stream = self._stream_for(seed)
        model.train()  # evaluation may have left it in eval mode
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            private = prepare_module(
                model,
                GradSampleMode(cfg.grad_sample_mode).value,
                batch_first=True,
                loss_reduction="sum",
            )
        optimizer = GridNoiseOptimizer(
            torch.optim.SGD(model.parameters(), lr=settings.lr, momentum=settings.momentum),
            stream=stream,
            grid=grid,
            noise_multiplier=sigma,
            max_grad_norm=cfg.max_grad_norm,
            expected_batch_size=q * n,
            loss_reduction="mean",
        )
        loss_fn = nn.CrossEntropyLoss(reduction="sum")
        private.train()
        with warnings.catch_warnings():
            # torch warns on every backward that the first layer's input needs no gradient
            warnings.filterwarnings("ignore", message="Full backward hook is firing")
            try:
                for _ in range(steps_planned):
                    # Poisson sampling from the participant's own stream: each record
                    # joins the batch with probability q, unpredictably to anyone else
                    chosen = torch.from_numpy(stream.bernoulli(q, n)).nonzero().view(-1)
                    optimizer.zero_grad()
                    loss_fn(private(x[chosen]), y[chosen]).backward()
                    optimizer.step()
            finally:
                private._close()  # remove Opacus' hooks from the shared pool model
        self.noise_samples += optimizer.noise_samples
        self.ledger.record(self.pid, sigma=grid.effective_multiplier, q=q, steps=steps_planned)
        return TrainReport(samples=n, steps=steps_planned)

    def report(self) -> dict[str, Any]:
        acc = self.ledger.account(self.pid)
        return {
            "epsilon": self.epsilon(),
            "delta": self.config.delta,
            "sampler_delta": sampler_delta(self.noise_samples),
            "steps": acc.steps,
            "sample_rate": acc.history[-1][1] if acc.history else None,
            "noise_multiplier": acc.history[-1][0] if acc.history else None,
            "iterations": acc.iterations,
            "rounds_skipped_for_budget": acc.skipped,
            "budget": self.config.epsilon_max,
            "budget_exhausted": acc.skipped > 0,
            "noise_source": (
                NOISE_SOURCE_REPRODUCIBLE if self.noise_reproducible else NOISE_SOURCE_SECURE
            ),
        }

    def state_dict(self) -> dict[str, Any]:
        """The ledger and calibration (never the stream's key: a resumed participant
        draws a fresh key from OS entropy)."""
        return {
            "ledger": self.ledger.state_dict(),
            "sigma": self._sigma,
            "noise_samples": self.noise_samples,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.ledger.load_state_dict(state.get("ledger", {}))
        sigma = state.get("sigma")
        self._sigma = None if sigma is None else float(sigma)
        self.noise_samples = int(state.get("noise_samples", 0))


class DPTrainer:
    """The in-process LocalTrainer: routes each participant to its own ParticipantDP."""

    def __init__(
        self, config: PrivacyConfig, *, records: Mapping[str, int], planned_rounds: int
    ) -> None:
        self.config = config
        self.participants = {
            pid: ParticipantDP(pid, config, records=n, planned_rounds=planned_rounds)
            for pid, n in records.items()
        }

    @property
    def noise_reproducible(self) -> bool:
        return not self.config.secure_rng

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
        return self.participants[participant].train(
            model=model, x=x, y=y, settings=settings, seed=seed
        )

    def epsilon(self, pid: str) -> float:
        return self.participants[pid].epsilon()

    def epsilons(self) -> dict[str, float]:
        return {pid: p.epsilon() for pid, p in self.participants.items()}

    def privacy_spent(self) -> dict[str, float] | None:
        return {pid: round(eps, 6) for pid, eps in self.epsilons().items()}

    def worst_epsilon(self) -> float:
        return max(self.epsilons().values(), default=0.0)

    def median_epsilon(self) -> float:
        return statistics.median(self.epsilons().values()) if self.participants else 0.0

    def report(self) -> dict[str, dict[str, Any]]:
        return {pid: p.report() for pid, p in self.participants.items()}

    def state_dict(self) -> dict[str, Any]:
        return {"participants": {pid: p.state_dict() for pid, p in self.participants.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for pid, pstate in (state.get("participants") or {}).items():
            if pid in self.participants:
                self.participants[pid].load_state_dict(pstate)
