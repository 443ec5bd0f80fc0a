"""P1/P2/S403: random selection of models and random assignment of participants.

Each iteration selects between ``min_models`` and ``max_models`` base models uniformly
at random and deals the active participants out to them at random, so that every
selected model's group has at least ``min_group_size`` members: a group of one would
make its "aggregate" that participant's own update.

The randomness is the iteration's **joint seed** from the commit-reveal beacon
(:mod:`protocols.beacon`), not the config seed: :func:`assign_from_seed` is the one
deterministic function from (joint seed, revealers) to groups that the coordinator
announces and every participant recomputes (and refuses if they differ).
:func:`pool_digest` is the pool state the beacon binds the seed to.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from crypto.encoding import bind
from crypto.errors import ConfigError

if TYPE_CHECKING:
    from securepool.config import RunConfig


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


def assignment_rng(joint_seed: bytes) -> np.random.Generator:
    """The generator the assignment draws from: PCG64 keyed by the 32-byte joint seed.

    Not a secret: the seed is public once revealed; what matters is that nobody could
    choose it (the beacon) and that everyone expands it the same way.
    """
    if not isinstance(joint_seed, bytes) or len(joint_seed) != 32:
        raise ConfigError(["the assignment's joint seed must be 32 bytes"])
    words = np.frombuffer(joint_seed, dtype=">u4").astype(np.uint32)
    return np.random.default_rng(np.random.SeedSequence(words.tolist()))


def assign_from_seed(
    joint_seed: bytes,
    participants: Sequence[str],
    *,
    models: Sequence[str],
    min_group_size: int,
    min_models: int,
    max_models: int,
    participation: float,
) -> Assignment:
    """:func:`assign` over the sorted ``participants`` with :func:`assignment_rng`.

    Deterministic in its arguments, so a participant that knows the joint seed, the
    revealers and the agreed settings recomputes exactly the groups the coordinator must
    announce.
    """
    return assign(
        models=list(models),
        participants=sorted(participants),
        min_group_size=min_group_size,
        min_models=min_models,
        max_models=max_models,
        participation=participation,
        rng=assignment_rng(joint_seed),
    )


def pool_digest(iteration: int, globals_: Mapping[str, NDArray[np.float32]]) -> bytes:
    """SHA-256 over the iteration and every global model's id and float32 bytes."""
    fields: list[bytes | str | int] = [iteration]
    for mid in sorted(globals_):
        vec = np.ascontiguousarray(globals_[mid], dtype="<f4")
        fields += [mid, hashlib.sha256(vec.tobytes()).digest()]
    return hashlib.sha256(bind(b"securepool/pool-state/v1", *fields)).digest()


def groups_for(
    cfg: RunConfig, joint_seed: bytes, members: Sequence[str]
) -> dict[str, tuple[str, ...]]:
    """S403 as every role computes it: :func:`assign_from_seed` with the run's agreed
    ``[assignment]`` settings over the run's pool. The coordinator announces these
    groups; each participant recomputes them and refuses any others."""
    a = cfg.assignment
    return assign_from_seed(
        joint_seed,
        members,
        models=[m.id for m in cfg.pool.models],
        min_group_size=a.min_group_size,
        min_models=a.min_models,
        max_models=a.max_models,
        participation=a.participation,
    ).groups
