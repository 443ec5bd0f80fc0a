"""The audit's statistics against closed forms: intervals, AUC, DP bounds from rates."""

from __future__ import annotations

import math

import numpy as np
import pytest

from securepool.audit.canaries import epsilon_lower_bound, guess_counts, guesses
from securepool.audit.stats import (
    auc,
    clopper_pearson,
    epsilon_from_rates,
    resolvable,
    tpr_at_fpr,
)


@pytest.mark.parametrize("n", [10, 100, 1000])
def test_clopper_pearson_with_no_successes_has_the_closed_form_bound(n: int) -> None:
    lo, hi = clopper_pearson(0, n)
    assert lo == 0.0
    assert hi == pytest.approx(1 - 0.025 ** (1 / n), rel=1e-9)
    lo, hi = clopper_pearson(n, n)
    assert hi == 1.0 and lo == pytest.approx(0.025 ** (1 / n), rel=1e-9)


def test_auc_extremes() -> None:
    a = np.array([3.0, 4.0, 5.0])
    assert auc(a, a - 10) == 1.0
    assert auc(a - 10, a) == 0.0
    assert auc(a, a.copy()) == 0.5


def test_resolvable_needs_about_three_over_rate_negatives() -> None:
    assert resolvable(300, 0.01) and not resolvable(280, 0.01)
    assert resolvable(3000, 0.001) and not resolvable(2900, 0.001)
    assert not resolvable(0, 0.5)


def test_epsilon_from_rates_is_the_tighter_of_the_two_dp_inequalities() -> None:
    assert epsilon_from_rates(0.5, 0.05, delta=0.0) == pytest.approx(math.log(10))
    assert epsilon_from_rates(0.99, 0.5, delta=0.0) == pytest.approx(math.log(0.5 / 0.01))
    assert epsilon_from_rates(0.1, 0.1, delta=0.0) == 0.0  # chance: nothing shown
    assert epsilon_from_rates(0.5, 0.05, delta=0.5) == 0.0  # delta absorbs it


def test_tpr_at_fpr_respects_the_target_on_the_non_members() -> None:
    rng = np.random.default_rng(0)
    non = rng.normal(size=1000)
    mem = rng.normal(loc=3.0, size=1000)
    r = tpr_at_fpr(mem, non, 0.01, delta=1e-5)
    assert r.fpr <= 0.01 and r.resolvable
    assert r.tpr > 0.5 and r.epsilon_lower_bound is not None and r.epsilon_lower_bound > 2
    same = tpr_at_fpr(rng.normal(size=1000), non, 0.1, delta=1e-5)
    assert same.epsilon_lower_bound == 0.0  # no separation, no bound


@pytest.mark.parametrize("r", [10, 100, 1000])
def test_canary_bound_with_every_guess_right_is_the_closed_form(r: int) -> None:
    beta = 0.05
    p = beta ** (1 / r)  # P[Binomial(r, p) = r] = p^r = beta
    assert epsilon_lower_bound(r, r, beta=beta) == pytest.approx(math.log(p / (1 - p)), rel=1e-4)


def test_canary_bound_at_chance_is_zero_and_grows_with_correct_guesses() -> None:
    assert epsilon_lower_bound(100, 50, beta=0.05) == 0.0
    bounds = [epsilon_lower_bound(100, v, beta=0.05) for v in (60, 70, 80, 90, 100)]
    assert bounds == sorted(bounds) and bounds[0] < bounds[-1]


def test_guesses_take_the_extremes() -> None:
    scores = np.array([0.1, 5.0, 3.0, -2.0, 0.0, 4.0])
    g_in, g_out = guesses(scores, 4)
    assert sorted(g_in.tolist()) == [1, 5] and sorted(g_out.tolist()) == [3, 4]
    assert guess_counts(1000) == [100, 200, 500, 1000]
