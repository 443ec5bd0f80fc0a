"""P1/P2/S403: random selection of models and random assignment of participants.

Each iteration selects between ``min_models`` and ``max_models`` base models uniformly
at random and deals the active participants out to them at random, so that every
selected model's group has at least ``min_group_size`` members: a group of one would
make its "aggregate" that participant's own update. Reproducible from (seed, iteration).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from crypto.errors import ConfigError


class AssignmentError(ConfigError):
    """Too few eligible participants to form even one group of the minimum size."""


@dataclass(frozen=True)
class Assignment:
    """Model id -> the participants assigned to train it this iteration."""

    groups: dict[str, tuple[str, ...]]

    @property
    def selected(self) -> tuple[str, ...]:
        return tuple(self.groups)


def assign(
    *,
    models: Sequence[str],
    participants: Sequence[str],
    min_group_size: int,
    min_models: int,
    max_models: int,
    participation: float,
    rng: np.random.Generator,
) -> Assignment:
    """Select models and deal participants out to them at random.

    ``participants`` are the eligible ones (not excluded, budget left). Raises
    :class:`AssignmentError` when not even ``min_models`` groups of ``min_group_size``
    can be formed.
    """
    if min_group_size < 3:
        raise AssignmentError([f"min_group_size must be >= 3, got {min_group_size}"])
    n_active = int(len(participants) * participation)
    # never fewer actives than one full group, when the eligible set allows it
    n_active = min(len(participants), max(n_active, min_group_size))
    capacity = n_active // min_group_size
    upper = min(max_models or len(models), len(models), capacity)
    if upper < min_models:
        raise AssignmentError(
            [
                f"{len(participants)} eligible participants cannot form {min_models} group(s) "
                f"of at least {min_group_size}"
            ]
        )
    k = int(rng.integers(min_models, upper + 1))
    chosen = sorted(rng.choice(len(models), size=k, replace=False).tolist())
    active = [participants[i] for i in rng.choice(len(participants), size=n_active, replace=False)]
    # the first k*min_group_size go round-robin to guarantee the minimum, the rest at random
    slots = [i % k for i in range(k * min_group_size)]
    slots += rng.integers(0, k, size=n_active - len(slots)).tolist()
    slots = rng.permutation(slots).tolist()
    groups: dict[str, list[str]] = {models[c]: [] for c in chosen}
    for pid, slot in zip(active, slots, strict=True):
        groups[models[chosen[slot]]].append(pid)
    return Assignment({m: tuple(sorted(g)) for m, g in groups.items()})
