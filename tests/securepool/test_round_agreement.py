"""securepool.node.agreement: the quorum rule every role computes, and the bound on what
a coordinator's choice of outcome can reach over the real assignment."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest

from crypto.errors import MessageError, SecurityViolation
from protocols.quorum import log2_choices
from securepool.assignment import assign_from_seed
from securepool.node.agreement import (
    QuorumRule,
    assignment_bound,
    model_hash,
    models_context,
    session_name,
    session_parts,
    universe_of,
)


def test_the_universe_is_the_pki_without_the_auditor() -> None:
    registry = {"p02": b"k", "auditor": b"a", "p01": b"k"}
    assert universe_of(registry) == ("p01", "p02")
    rule = QuorumRule.of(
        {f"p{i:02d}": b"k" for i in range(12)}, corrupt_fraction=0.2, left_out_fraction=0.25
    )
    assert (rule.corrupt, rule.quorum, rule.left_out) == (3, 8, 3)
    rule.check_left_out(["p00", "p01", "p02"], who="p05")
    with pytest.raises(SecurityViolation, match="leaves out 4 of 12"):
        rule.check_left_out(["p00", "p01", "p02", "p03"], who="p05")


def test_session_names_round_trip_and_others_are_typed_errors() -> None:
    assert session_parts(session_name(7, "mlp")) == (7, "mlp")
    for bad in ("it7/mlp", "it0007", "x0007/mlp", "it0007/m lp", "it0007/mlp/x"):
        with pytest.raises(MessageError):
            session_parts(bad)


def test_the_models_context_binds_every_model_and_its_hash() -> None:
    a, b = np.zeros(4, np.float32), np.ones(4, np.float32)
    ctx = models_context([("lr", model_hash(a)), ("mlp", model_hash(b))])
    assert ctx == models_context([("mlp", model_hash(b)), ("lr", model_hash(a))])
    assert ctx != models_context([("lr", model_hash(b)), ("mlp", model_hash(a))])
    assert ctx != models_context([("lr", model_hash(a))])


def _short_group_rate(n: int, corrupt: int, trials: int) -> float:
    """P[some group has fewer than 3 honest members] over uniform seeds, with the real
    assignment (3 models, every participant active), colluders fixed in advance."""
    people = [f"p{i:02d}" for i in range(n)]
    bad = set(people[:corrupt])
    short = 0
    for _ in range(trials):
        groups = assign_from_seed(
            os.urandom(32),
            people,
            models=["a", "b", "c"],
            min_group_size=3,
            min_models=1,
            max_models=3,
            participation=1.0,
        ).groups
        short += any(sum(p not in bad for p in g) < 3 for g in groups.values())
    return short / trials


@pytest.mark.parametrize(("n", "corrupt"), [(12, 3), (20, 4), (30, 6)])
def test_the_single_seed_probability_bounds_the_real_assignment(n: int, corrupt: int) -> None:
    """Monte Carlo over the real assign_from_seed: the rate never exceeds the bound (a
    union bound over groups and the worst number of groups), within 4 sigma."""
    trials = 1500
    log2_single, bound = assignment_bound(
        universe=n, corrupt=corrupt, left_out=0, min_group_size=3, models=3
    )
    rate = _short_group_rate(n, corrupt, trials)
    p = 2.0**log2_single
    assert rate <= p + 4 * math.sqrt(p * (1 - p) / trials) + 1e-9, (rate, p)
    assert bound == min(1.0, 2.0 ** (log2_choices(n, corrupt, 0) + log2_single))


def test_omissions_only_widen_the_coordinators_reach() -> None:
    last = -math.inf
    for w in range(0, 30, 5):
        single, _ = assignment_bound(
            universe=100, corrupt=20, left_out=w, min_group_size=3, models=3
        )
        assert single >= last  # fewer honest revealers: short groups more likely
        last = single
    # no omission tolerated, large N: a bound that means something
    _, at_500 = assignment_bound(universe=500, corrupt=100, left_out=0, min_group_size=3, models=3)
    assert 0 < at_500 < 1e-30
    with pytest.raises(SecurityViolation):
        assignment_bound(universe=4, corrupt=1, left_out=2, min_group_size=3, models=3)
