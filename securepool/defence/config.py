"""The ``[defence]`` section: clean tuning of every aggregated model (issue 22, item 5)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DefenceConfig:
    """Clean tuning (:mod:`securepool.defence.tuning`): after each group's aggregate is
    added to its global model, the coordinator runs ``tuning_steps`` steps of SGD with
    weight decay on ``tuning_fraction`` of its held-out set; the rest of the held-out set
    tests the models (S401/S405, P5 acceptance). ``tuning_steps = 0``: off."""

    tuning_steps: int = 0
    tuning_fraction: float = 0.5
    tuning_lr: float = 0.1
    tuning_weight_decay: float = 0.07
    tuning_batch_size: int = 32

    @property
    def enabled(self) -> bool:
        return self.tuning_steps > 0

    def problems(self) -> list[str]:
        from securepool.config_loader import check_float

        out = []
        if self.tuning_steps < 0:
            out.append(f"tuning_steps must be >= 0 (0: off), got {self.tuning_steps}")
        out += check_float("tuning_fraction", self.tuning_fraction, gt=0, lt=1)
        out += check_float("tuning_lr", self.tuning_lr, gt=0)
        out += check_float("tuning_weight_decay", self.tuning_weight_decay, ge=0)
        if self.tuning_batch_size < 1:
            out.append(f"tuning_batch_size must be >= 1, got {self.tuning_batch_size}")
        return out
