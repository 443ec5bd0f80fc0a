"""The ``[privacy]`` section of a run configuration."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


class GradSampleMode(str, Enum):
    HOOKS = "hooks"
    FUNCTORCH = "functorch"
    EW = "ew"


@dataclass(frozen=True)
class UserLevelConfig:
    """DP-FedAvg style noise on each update, shared out across the group."""

    enabled: bool = False
    clip: float = 1.0  # L2 bound of one participant's update
    noise_multiplier: float = 1.0  # std of the group's total noise / clip

    def problems(self) -> list[str]:
        out = []
        if self.clip <= 0:
            out.append(f"user_level.clip must be > 0, got {self.clip}")
        if self.noise_multiplier < 0:
            out.append(f"user_level.noise_multiplier must be >= 0, got {self.noise_multiplier}")
        return out


@dataclass(frozen=True)
class PrivacyConfig:
    """Record-level DP-SGD for every participant, and optional user-level noise.

    Give either ``noise_multiplier`` or ``target_epsilon`` (the whole run's epsilon per
    participant, calibrated for ``planned_rounds`` participations; 0 means
    ``convergence.max_iterations``, the worst case of taking part every iteration).
    ``epsilon_max`` is a hard budget: a participant that would exceed it stops training.
    """

    enabled: bool = False
    noise_multiplier: float | None = None
    target_epsilon: float | None = None
    delta: float = 1e-5
    max_grad_norm: float = 1.0
    poisson_sampling: bool = True
    secure_rng: bool = True
    epsilon_max: float | None = None
    planned_rounds: int = 0
    grad_sample_mode: GradSampleMode = GradSampleMode.HOOKS
    user_level: UserLevelConfig = field(default_factory=UserLevelConfig)

    def problems(self) -> list[str]:
        out = []
        if self.noise_multiplier is not None and self.target_epsilon is not None:
            out.append("give noise_multiplier or target_epsilon, not both")
        if self.enabled and self.noise_multiplier is None and self.target_epsilon is None:
            out.append("enabled = true needs noise_multiplier or target_epsilon")
        if self.noise_multiplier is not None and self.noise_multiplier <= 0:
            out.append(f"noise_multiplier must be > 0, got {self.noise_multiplier}")
        if self.target_epsilon is not None and self.target_epsilon <= 0:
            out.append(f"target_epsilon must be > 0, got {self.target_epsilon}")
        if not 0 < self.delta < 1:
            out.append(f"delta must be in (0, 1), got {self.delta}")
        if self.max_grad_norm <= 0:
            out.append(f"max_grad_norm must be > 0, got {self.max_grad_norm}")
        if self.epsilon_max is not None and self.epsilon_max <= 0:
            out.append(
                f"epsilon_max must be > 0 (a budget already spent at start), got {self.epsilon_max}"
            )
        if (
            self.target_epsilon is not None
            and self.epsilon_max is not None
            and self.target_epsilon > self.epsilon_max
        ):
            out.append(
                f"target_epsilon {self.target_epsilon} exceeds the budget "
                f"epsilon_max {self.epsilon_max}"
            )
        if self.planned_rounds < 0:
            out.append(f"planned_rounds must be >= 0, got {self.planned_rounds}")
        if self.enabled and self.secure_rng:
            try:
                import torchcsprng  # noqa: F401
            except ImportError:
                out.append(
                    "secure_rng = true needs the torchcsprng package (Opacus' secure mode), which "
                    "is not installed; set secure_rng = false to accept a non-cryptographic noise "
                    "RNG (experiments only: see threat_model.md)"
                )
        return out

    def problems_for_data(self, *, min_records: int) -> list[str]:
        """delta must be below 1/records of the smallest participant."""
        if self.enabled and self.delta >= 1.0 / max(min_records, 1):
            return [
                f"privacy.delta {self.delta} >= 1/records of the smallest participant "
                f"({min_records} records): it would allow leaking a whole record"
            ]
        return []
