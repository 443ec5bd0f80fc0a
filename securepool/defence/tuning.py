"""Clean tuning: the coordinator's defence against a backdoor inside the honest spread.

A participant that trains on triggered records and sends its update unboosted (issue 22,
item 5) sends an update of honest size and direction everywhere except along features
the clean data never uses (the trigger's pixels): no rule that compares updates can tell
it from an honest one, and in ``mask`` and ``he`` mode nobody but the participant ever
sees it alone. What it adds to the aggregate is 1/|group| of its update, every iteration
it is drawn into a group, and nothing takes it out again: honest updates carry (almost)
no gradient along those features.

After the coordinator adds a group's aggregate to the global model (S404), it trains that
model for ``tuning_steps`` steps of SGD with weight decay on a fixed part of its own
held-out records (the *tuning split*, drawn once from the run seed; fine-tuning on clean
data after Liu et al. 2018, "Fine-pruning"). The clean loss's gradient keeps every weight
the task needs, and the decay shrinks the ones it does not, which is where the
trigger's mapping lives; each iteration thus forgets a fixed share of what the backdoor
added (with the defaults about 30% along features the clean data never activates). It
works on the aggregate alone, so in every aggregation mode and runtime alike; it learns
nothing about any participant. The rest of the held-out set (never tuned on) tests the
models (S401/S405, P5 acceptance), so acceptance is not judged on data the models were
tuned on.
"""

from __future__ import annotations

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from crypto.errors import ConfigError
from securepool.defence.config import DefenceConfig
from securepool.defence.pruning import column_scale, input_use, prune_inputs
from securepool.models import Layout, flatten, load_flat

#: domain separation of the tuning split's and the batches' draws from the run seed
SPLIT_LABEL = 0x7E5E
STEP_LABEL = 0x7E5F


class CleanTuning:
    """The clean (tuning) split of the coordinator's held-out set, and the step applied
    to every aggregated model: the tuning and/or the input pruning ``cfg`` turns on.

    Build it with :meth:`split`, which also returns the part left for testing.
    """

    def __init__(self, cfg: DefenceConfig, x: torch.Tensor, y: torch.Tensor, *, seed: int) -> None:
        self.cfg = cfg
        self.x, self.y = x, y
        self.seed = seed

    @classmethod
    def split(
        cls, cfg: DefenceConfig, holdout: tuple[torch.Tensor, torch.Tensor], *, seed: int
    ) -> tuple[CleanTuning, tuple[torch.Tensor, torch.Tensor]]:
        """(the tuning, the held-out records left for testing): ``cfg.tuning_fraction``
        of ``holdout``, drawn from ``seed``, tunes; ConfigError if either part would be
        empty."""
        x, y = holdout
        n = int(y.shape[0])
        k = int(round(cfg.tuning_fraction * n))
        if not 0 < k < n:
            raise ConfigError(
                [
                    f"defence.tuning_fraction = {cfg.tuning_fraction:g} of the coordinator's "
                    f"{n} held-out records leaves {k} to tune on and {n - k} to test on; "
                    "both must be at least 1 (a larger data.holdout_fraction helps)"
                ]
            )
        rng = np.random.default_rng(np.random.SeedSequence([seed, SPLIT_LABEL]))
        order = torch.from_numpy(rng.permutation(n))
        tune, test = order[:k], order[k:]
        return cls(cfg, x[tune], y[tune], seed=seed), (x[test], y[test])

    @property
    def records(self) -> int:
        """How many held-out records tune (and so do not test)."""
        return int(self.y.shape[0])

    def apply(
        self,
        model: nn.Module,
        layout: Layout,
        params: NDArray[np.float32],
        *,
        iteration: int,
        model_index: int,
    ) -> NDArray[np.float32]:
        """``params`` after ``tuning_steps`` steps of SGD (weight decay
        ``tuning_weight_decay``) on the tuning split, then (``prune = true``) with the
        inputs that split does not use cut (:mod:`securepool.defence.pruning`);
        ``model`` is only the scratch module the vector is loaded into. Deterministic:
        the batches are drawn from the run seed, ``iteration`` and ``model_index``."""
        c = self.cfg
        load_flat(model, params, layout)
        if c.tuning_steps > 0:
            self._tune(model, iteration=iteration, model_index=model_index)
        if c.prune:
            prune_inputs(model, column_scale(input_use(self.x), c.prune_threshold))
        return flatten(model)

    def _tune(self, model: nn.Module, *, iteration: int, model_index: int) -> None:
        c = self.cfg
        words = np.random.SeedSequence([self.seed, STEP_LABEL, iteration, model_index])
        gen = torch.Generator().manual_seed(int(words.generate_state(1, np.uint64)[0] >> 1))
        opt = torch.optim.SGD(
            model.parameters(), lr=c.tuning_lr, weight_decay=c.tuning_weight_decay
        )
        loss_fn = nn.CrossEntropyLoss()
        model.train()
        n, batch = self.records, min(c.tuning_batch_size, self.records)
        for _ in range(c.tuning_steps):
            idx = torch.randint(0, n, (batch,), generator=gen)
            opt.zero_grad()
            loss_fn(model(self.x[idx]), self.y[idx]).backward()
            opt.step()
        model.eval()
