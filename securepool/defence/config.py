"""The ``[defence]`` section: clean tuning and input pruning of every aggregated model
(issue 22, item 5)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DefenceConfig:
    """What the coordinator does to each group's aggregated model, on its *clean split*
    (``tuning_fraction`` of its held-out set, drawn once from the run seed; the rest of
    the held-out set tests the models, S401/S405, P5 acceptance):

    * clean tuning (:mod:`securepool.defence.tuning`): ``tuning_steps`` steps of SGD with
      weight decay on the clean split; ``tuning_steps = 0``: off;
    * input pruning (:mod:`securepool.defence.pruning`, ``prune = true``): the weight
      column of each input feature of a model's first linear layer is scaled by the
      feature's use on the clean split relative to ``prune_threshold`` x the most-used
      feature's (a feature the clean split never uses: zeroed; one used at least that
      much: kept as it is). Models whose first layer is not linear on the inputs (the
      cnn) are left unpruned.

    Tuning (when on) runs first, then pruning."""

    tuning_steps: int = 0
    tuning_fraction: float = 0.5
    tuning_lr: float = 0.1
    tuning_weight_decay: float = 0.07
    tuning_batch_size: int = 32
    prune: bool = False
    prune_threshold: float = 0.3

    @property
    def enabled(self) -> bool:
        """Does the coordinator act on its aggregates (so take a clean split)?"""
        return self.tuning_steps > 0 or self.prune

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
        out += check_float("prune_threshold", self.prune_threshold, gt=0, le=1)
        return out
