from __future__ import annotations

import hashlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crypto.errors import ConfigError
from securepool.assignment import (
    AssignmentError,
    assign,
    assign_from_seed,
    assignment_rng,
    pool_digest,
)


@settings(deadline=None, max_examples=200)
@given(
    n_models=st.integers(1, 6),
    n_participants=st.integers(3, 60),
    min_group=st.integers(3, 8),
    participation=st.floats(0.1, 1.0),
    seed=st.integers(0, 2**32 - 1),
)
def test_assignment_invariants(
    n_models: int, n_participants: int, min_group: int, participation: float, seed: int
) -> None:
    models = [f"m{i}" for i in range(n_models)]
    people = [f"p{i}" for i in range(n_participants)]
    kwargs = dict(
        models=models,
        participants=people,
        min_group_size=min_group,
        min_models=1,
        max_models=0,
        participation=participation,
    )
    if n_participants < min_group:
        with pytest.raises(AssignmentError):
            assign(**kwargs, rng=np.random.default_rng(seed))  # type: ignore[arg-type]
        return
    a = assign(**kwargs, rng=np.random.default_rng(seed))  # type: ignore[arg-type]
    assert 1 <= len(a.groups) <= n_models
    members = [p for g in a.groups.values() for p in g]
    assert len(members) == len(set(members)), "a participant is in two groups"
    assert set(members) <= set(people)
    assert all(len(g) >= min_group for g in a.groups.values())
    assert set(a.groups) <= set(models)
    # same seed, same assignment
    again = assign(**kwargs, rng=np.random.default_rng(seed))  # type: ignore[arg-type]
    assert again == a


def test_selection_and_assignment_are_random() -> None:
    models = ["a", "b", "c"]
    people = [f"p{i}" for i in range(30)]
    seen_sets = set()
    for seed in range(40):
        a = assign(
            models=models,
            participants=people,
            min_group_size=3,
            min_models=1,
            max_models=0,
            participation=1.0,
            rng=np.random.default_rng(seed),
        )
        seen_sets.add(a.selected)
    assert len(seen_sets) >= 4  # several different model subsets get selected


def test_too_few_for_min_models() -> None:
    with pytest.raises(AssignmentError, match="cannot form 2 group"):
        assign(
            models=["a", "b"],
            participants=["p1", "p2", "p3", "p4", "p5"],
            min_group_size=3,
            min_models=2,
            max_models=0,
            participation=1.0,
            rng=np.random.default_rng(0),
        )


def test_group_of_one_is_refused() -> None:
    with pytest.raises(AssignmentError):
        assign(
            models=["a"],
            participants=["p1", "p2"],
            min_group_size=1,
            min_models=1,
            max_models=0,
            participation=1.0,
            rng=np.random.default_rng(0),
        )


def _from_seed(seed: bytes, people: list[str]) -> dict[str, tuple[str, ...]]:
    return assign_from_seed(
        seed,
        people,
        models=["a", "b", "c"],
        min_group_size=3,
        min_models=1,
        max_models=0,
        participation=1.0,
    ).groups


def test_assignment_from_the_joint_seed_is_a_function_of_seed_and_revealers_only() -> None:
    people = [f"p{i:02d}" for i in range(20)]
    seed = hashlib.sha256(b"joint").digest()
    a = _from_seed(seed, people)
    # the order the coordinator lists revealers in cannot change the groups
    assert _from_seed(seed, list(reversed(people))) == a
    # other seeds give other assignments (the seed, not the config, decides)
    others = {
        tuple(sorted(_from_seed(hashlib.sha256(b"%d" % i).digest(), people).items()))
        for i in range(20)
    }
    assert len(others) >= 15
    # one withholder changes the population, and the groups are re-dealt over the rest
    fewer = _from_seed(seed, people[1:])
    assert all("p00" not in g for g in fewer.values())
    with pytest.raises(ConfigError, match="32 bytes"):
        assignment_rng(seed[:16])


def test_pool_digest_binds_iteration_ids_and_weights() -> None:
    g = {"a": np.zeros(4, np.float32), "b": np.ones(3, np.float32)}
    d = pool_digest(1, g)
    assert len(d) == 32 and d == pool_digest(1, dict(reversed(g.items())))
    assert d != pool_digest(2, g)
    assert d != pool_digest(1, {**g, "b": np.array([1, 1, 1.0000001], np.float32)})
    assert d != pool_digest(1, {"c": g["a"], "b": g["b"]})
