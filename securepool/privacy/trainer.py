"""DP-SGD local training: each participant's own engine, ledger, randomness and budget.

:class:`ParticipantDP` is the participant's side of differential privacy and belongs to
the participant (a node in deployment): it holds its own :class:`PrivacyLedger`, its own
:class:`crypto.entropy.SecureStream` (keyed from ``os.urandom`` when it is made) and its
own ``epsilon_max``. It trains with Opacus' per-sample clipping, samples its batches by
Poisson sampling from that stream and adds discrete Gaussian noise from it
(:mod:`securepool.privacy.noise`). It refuses to train when its own ledger says the
round would exceed its budget: it does not take the coordinator's bookkeeping on trust.

Nothing it releases depends on its record count except through the noised gradients:
the sample rate, the number of steps and the noise multiplier come from the public
config (:class:`~securepool.privacy.config.PrivacyConfig`), the noised gradient sum is
divided by the public ``training.batch_size`` (dividing by the batch drawn, or by the
expected ``sample_rate * records``, would scale the noise by the record count), and its
report holds only those public values and the epsilon they give. Its ledger is
therefore the same for a participant with one record more or less, and the epsilon
bounds adding or removing one record (:mod:`securepool.privacy.accounting`).

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
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from opacus.accountants.utils import get_noise_multiplier
from opacus.grad_sample.utils import prepare_module
from opacus.validators import ModuleValidator
from torch import nn

from crypto.encoding import bind
from crypto.entropy import SecureStream
from crypto.errors import ConfigError
from protocols.secagg.stepped import NoiseFloor
from securepool.privacy.accounting import PrivacyLedger
from securepool.privacy.config import GradSampleMode, Mechanism, PrivacyConfig
from securepool.privacy.distributed import (
    ShareSpec,
    clipped_sum,
    log10_tau,
    noised_share,
    share_spec,
)
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


class ParticipantDP:
    """One participant's DP-SGD: its ledger, its private randomness, its budget."""

    def __init__(self, pid: str, config: PrivacyConfig, *, planned_rounds: int) -> None:
        self.pid = pid
        self.config = config
        self.planned_rounds = config.planned_rounds or planned_rounds
        self.ledger = PrivacyLedger(delta=config.delta)
        self.stream: SecureStream | None = SecureStream() if config.secure_rng else None
        self.noise_samples = 0
        self._sigma: float | None = None
        #: the largest log10 tau of a distributed share so far (securepool.privacy.distributed)
        self.log10_tau = -math.inf

    @property
    def noise_reproducible(self) -> bool:
        return not self.config.secure_rng

    def noise_multiplier(self, settings: TrainSettings) -> float:
        """The configured sigma, or the one that meets target_epsilon after the planned
        rounds (computed once, from the public schedule only: the same for every
        participant, whatever its record count)."""
        if self.config.noise_multiplier is not None:
            return self.config.noise_multiplier
        if self._sigma is None:
            if self.config.target_epsilon is None:
                raise ConfigError(["privacy: neither noise_multiplier nor target_epsilon set"])
            steps = self.planned_rounds * self.config.local_steps(settings.epochs)
            self._sigma = float(
                get_noise_multiplier(
                    target_epsilon=self.config.target_epsilon,
                    target_delta=self.config.delta,
                    sample_rate=self.config.sample_rate,
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
        q = cfg.sample_rate  # public: never derived from n
        steps_planned = cfg.local_steps(settings.epochs)
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
            # the noised sum is divided by this public constant, not by the batch drawn
            # nor by q * n: either would scale the released noise by the record count
            expected_batch_size=settings.batch_size,
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

    # --- privacy.mechanism = "distributed" (securepool.privacy.distributed) -----------

    def share_spec(
        self, *, settings: TrainSettings, dimension: int, floor: NoiseFloor
    ) -> ShareSpec:
        """This participant's noise share for a group with ``floor`` (public values only:
        every member and the coordinator's checks derive the same)."""
        return share_spec(
            noise_multiplier=self.noise_multiplier(settings),
            max_grad_norm=self.config.max_grad_norm,
            dimension=dimension,
            floor=floor,
        )

    def begin_distributed(self, spec: ShareSpec, *, settings: TrainSettings) -> str | None:
        """None, or why this participation is refused (the steps would exceed
        ``epsilon_max``). Records the planned steps in the ledger at once: they are
        spent when the group runs them, and a run of steps that stops early is
        over-counted, never under-counted."""
        cfg = self.config
        steps = cfg.local_steps(settings.epochs)
        planned = (spec.effective_multiplier, cfg.sample_rate, steps)
        if cfg.epsilon_max is not None:
            would = self.ledger.epsilon(self.pid, extra=planned)
            if would > cfg.epsilon_max:
                self.ledger.account(self.pid).skipped += 1
                return (
                    f"privacy budget: eps {self.epsilon():.3f} spent, {would:.3f} after "
                    f"this round > epsilon_max {cfg.epsilon_max}"
                )
        self.ledger.record(
            self.pid, sigma=spec.effective_multiplier, q=cfg.sample_rate, steps=steps
        )
        self.log10_tau = max(self.log10_tau, log10_tau(spec))
        return None

    def distributed_share(
        self,
        *,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        spec: ShareSpec,
        seed: int,
    ) -> NDArray[np.int64]:
        """One step's input: the clipped gradient sum over a Poisson sample, on the grid,
        plus this member's share of the noise (from its own stream)."""
        cfg = self.config
        stream = self._stream_for(seed)
        summed = clipped_sum(
            model,
            x,
            y,
            sample_rate=cfg.sample_rate,
            max_grad_norm=cfg.max_grad_norm,
            stream=stream,
            grad_sample_mode=GradSampleMode(cfg.grad_sample_mode).value,
        )
        self.noise_samples += summed.size
        return noised_share(summed, spec=spec, stream=stream)

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
            "mechanism": self.config.mechanism.value,
            **(
                {"distributed_log10_tau": self.log10_tau}
                if self.config.mechanism is Mechanism.DISTRIBUTED and self.log10_tau > -math.inf
                else {}
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
        self, config: PrivacyConfig, *, participants: Iterable[str], planned_rounds: int
    ) -> None:
        self.config = config
        self.participants = {
            pid: ParticipantDP(pid, config, planned_rounds=planned_rounds) for pid in participants
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
