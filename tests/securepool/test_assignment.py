from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from securepool.assignment import AssignmentError, assign


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
