"""The ``[privacy]`` section of a run configuration."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum


class Mechanism(str, Enum):
    """Where the DP-SGD noise is added (``privacy.mechanism``)."""

    #: each participant adds the full noise to its own update (local DP-SGD)
    LOCAL = "local"
    #: a group's members add shares of the noise inside the masked sum, one SGD step per
    #: secure sum (mask mode; :mod:`securepool.privacy.distributed`)
    DISTRIBUTED = "distributed"


class GradSampleMode(str, Enum):
    HOOKS = "hooks"
    FUNCTORCH = "functorch"
    EW = "ew"


@dataclass(frozen=True)
class UserLevelConfig:
    """The keys of the removed ``[privacy.user_level]`` table, kept only so that a config
    that still has them is refused with the reason instead of "unknown key"."""

    enabled: bool | None = None
    clip: float | None = None
    noise_multiplier: float | None = None


REMOVED_USER_LEVEL = (
    "privacy.user_level is not supported: user-level DP on the aggregate (distributed "
    "discrete Gaussian noise inside secure aggregation) is not implemented, and the "
    "section used to be accepted and ignored; remove it. Record-level DP-SGD "
    "([privacy] enabled = true) is what this version provides."
)
REMOVED_POISSON = (
    "privacy.poisson_sampling was removed: batches are always Poisson-sampled, from the "
    "participant's own CSPRNG, because the accountant's epsilon assumes Poisson sampling; "
    "remove the key."
)


def _finite_positive(name: str, value: float | None) -> list[str]:
    if value is None or (math.isfinite(value) and value > 0):
        return []
    return [f"{name} must be a finite number > 0, got {value}"]


@dataclass(frozen=True)
class PrivacyConfig:
    """Record-level DP-SGD for every participant.

    ``secure_rng = true`` (the default): each participant draws its Poisson batches and
    its discrete Gaussian noise from its own AES-256-CTR stream keyed from os.urandom
    (:mod:`securepool.privacy.noise`). ``false`` keys that stream from the run seed so
    that a run replays bit for bit; then anyone with the config can replay the noise,
    and the run is labelled ``dp_noise_reproducible: true`` (experiments only).

    Give either ``noise_multiplier`` or ``target_epsilon`` (the whole run's epsilon per
    participant, calibrated for ``planned_rounds`` participations; 0 means
    ``convergence.max_iterations``, the worst case of taking part every iteration).
    ``epsilon_max`` is a hard budget: a participant that would exceed it stops training.

    ``mechanism``: ``"local"`` (each participant noises its own update) or
    ``"distributed"`` (mask mode: the group takes every DP-SGD step together, each
    member adding a share of the noise inside the secure sum, so the group's sum carries
    the noise of one participant instead of one per member; the same sigma, the same
    epsilon per participant; :mod:`securepool.privacy.distributed`).

    The local schedule is public and the same for every participant, so that nothing a
    participant sends depends on its record count except through the noised gradients:
    each local step Poisson-samples every record with probability ``sample_rate``; a
    participation runs ``steps`` steps (0: ``ceil(training.epochs / sample_rate)``, that
    many epochs in expectation); the noised gradient sum of a step is divided by
    ``training.batch_size`` (a public constant, never the batch drawn), so set it near
    ``sample_rate`` x a typical participant's record count. The noise multiplier is
    calibrated from these public values only. The accountant's epsilon then bounds
    adding or removing one record of a participant (:mod:`.accounting`).
    """

    enabled: bool = False
    noise_multiplier: float | None = None
    target_epsilon: float | None = None
    delta: float = 1e-5
    max_grad_norm: float = 1.0
    poisson_sampling: bool | None = None  # removed: refused with REMOVED_POISSON
    secure_rng: bool = True
    epsilon_max: float | None = None
    planned_rounds: int = 0
    sample_rate: float = 0.25
    steps: int = 0
    grad_sample_mode: GradSampleMode = GradSampleMode.HOOKS
    mechanism: Mechanism = Mechanism.LOCAL
    user_level: UserLevelConfig = field(default_factory=UserLevelConfig)

    def problems(self) -> list[str]:
        out = []
        if self.user_level != UserLevelConfig():
            out.append(REMOVED_USER_LEVEL)
        if self.poisson_sampling is not None:
            out.append(REMOVED_POISSON)
        if self.noise_multiplier is not None and self.target_epsilon is not None:
            out.append("give noise_multiplier or target_epsilon, not both")
        if self.enabled and self.noise_multiplier is None and self.target_epsilon is None:
            out.append("enabled = true needs noise_multiplier or target_epsilon")
        out += _finite_positive("noise_multiplier", self.noise_multiplier)
        out += _finite_positive("target_epsilon", self.target_epsilon)
        if not (0 < self.delta < 1):  # written so that NaN fails
            out.append(f"delta must be in (0, 1), got {self.delta}")
        out += _finite_positive("max_grad_norm", self.max_grad_norm)
        if self.epsilon_max is not None and not (
            math.isfinite(self.epsilon_max) and self.epsilon_max > 0
        ):
            out.append(
                "epsilon_max must be a finite number > 0 (a budget already spent at start), "
                f"got {self.epsilon_max}"
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
        if not (0 < self.sample_rate <= 1):  # written so that NaN fails
            out.append(
                f"sample_rate must be in (0, 1] (each record's chance to join a local "
                f"step's batch), got {self.sample_rate}"
            )
        if self.steps < 0:
            out.append(
                f"steps must be >= 0 (0: ceil(training.epochs / sample_rate)), got {self.steps}"
            )
        return out

    def local_steps(self, epochs: int) -> int:
        """DP-SGD steps per participation: ``steps``, or ``ceil(epochs / sample_rate)``
        (public: the same for every participant, whatever its record count)."""
        if self.steps:
            return self.steps
        return max(1, math.ceil(epochs / self.sample_rate - 1e-9))

    def problems_for_data(self, *, min_records: int) -> list[str]:
        """delta must be below 1/records of the smallest participant."""
        if self.enabled and self.delta >= 1.0 / max(min_records, 1):
            return [
                f"privacy.delta {self.delta} >= 1/records of the smallest participant "
                f"({min_records} records): it would allow leaking a whole record"
            ]
        return []
