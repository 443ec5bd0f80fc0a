"""The audit's statistics against closed forms and known answers: intervals, AUC, DP bounds
from rates, the corrected headline (simulated), power, and the inversion test."""

from __future__ import annotations

import math

import numpy as np
import pytest

from securepool.audit.canaries import (
    canaries_needed,
    canary_power,
    design_beta,
    epsilon_lower_bound,
    guess_counts,
    guesses,
    power_fields,
    score_guesses,
)
from securepool.audit.stats import (
    auc,
    binomial_greater,
    bonferroni_confidence,
    clopper_pearson,
    epsilon_from_rates,
    holm,
    membership_power,
    power_verdict,
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


# --- the membership headline: Bonferroni over the family, and its power ---------------


def _laplace_audit(
    rng: np.random.Generator, eps: float, n_pos: int, n_neg: int, *, family: int
) -> tuple[float, float]:
    """(uncorrected max, corrected max) of the family's row bounds, one simulated audit
    of a mechanism that is exactly eps-DP and tight in the tail: member scores
    Laplace(eps, 1), non-member scores Laplace(0, 1), so TPR = e^eps FPR at every
    threshold above eps. The family is 3 models x 2 attacks x the resolvable FPRs, each
    attack on fresh scores."""
    from securepool.audit.membership import FPRS

    plain, corrected = 0.0, 0.0
    for _ in range(3 * 2):
        mem, non = rng.laplace(eps, 1.0, n_pos), rng.laplace(0.0, 1.0, n_neg)
        for a in FPRS:
            r = tpr_at_fpr(mem, non, a, delta=1e-5, family=family)
            if r.epsilon_lower_bound is not None and r.epsilon_lower_bound_corrected is not None:
                plain = max(plain, r.epsilon_lower_bound)
                corrected = max(corrected, r.epsilon_lower_bound_corrected)
    return plain, corrected


def test_corrected_headline_holds_its_nominal_error_rate_in_simulation() -> None:
    """300 seeded audits of a 1.5-DP mechanism with the digits audit's set sizes: the
    maximum of the uncorrected row bounds exceeds the true epsilon more often than the
    nominal 5% (the issue's finding), the Bonferroni-corrected headline does not."""
    from securepool.audit.membership import family_size

    eps, n_pos, n_neg, sims = 1.5, 1400, 400, 300
    family = family_size(3, n_neg)
    assert family == 12  # 0.1 and 0.01 resolvable with 400 non-members, 0.001 not
    rng = np.random.default_rng(20240523)
    runs = [_laplace_audit(rng, eps, n_pos, n_neg, family=family) for _ in range(sims)]
    plain_err = sum(p > eps for p, _ in runs) / sims
    corrected_err = sum(c > eps for _, c in runs) / sims
    assert plain_err > 0.05, plain_err
    assert corrected_err <= 0.05, corrected_err
    assert corrected_err < plain_err


def test_bonferroni_confidence_splits_the_error_rate() -> None:
    assert bonferroni_confidence(1) == pytest.approx(0.95)
    assert bonferroni_confidence(18) == pytest.approx(1 - 0.05 / 18)
    assert bonferroni_confidence(0) == pytest.approx(0.95)


def test_membership_power_is_a_perfect_attacks_headline() -> None:
    """A perfect attack's corrected row bound: equal to what tpr_at_fpr reports for
    perfectly separated scores, and to the closed form (at 10% FPR with 280 non-members
    the FNR side binds: 1 - FPR <= e^eps FNR, FNR's upper bound set by the members)."""
    from scipy import stats as st

    from securepool.audit.membership import FPRS, family_size

    n_pos, n_neg = 1400, 280  # the digits demo's sizes: only 10% FPR is resolvable
    family = family_size(3, n_neg)
    assert family == 6
    power = membership_power(n_pos, n_neg, FPRS, delta=1e-5, family=family)
    mem, non = np.linspace(10, 11, n_pos), np.linspace(0, 1, n_neg)
    row = tpr_at_fpr(mem, non, 0.1, delta=1e-5, family=family)
    assert power == pytest.approx(row.epsilon_lower_bound_corrected)
    tail = 0.05 / family / 2
    fnr_hi = 1 - tail ** (1 / n_pos)
    fpr_hi = float(st.beta.ppf(1 - tail, 28 + 1, n_neg - 28))
    assert power == pytest.approx(math.log((1 - 1e-5 - fpr_hi) / fnr_hi), rel=1e-6)
    # the overfit test run's 90 + 90 records cannot certify 3
    small = membership_power(90, 90, FPRS, delta=1e-5, family=family_size(1, 90))
    assert small is not None and power is not None and small < 3 < power
    assert membership_power(n_pos, 2, FPRS, delta=1e-5, family=0) is None


def test_power_verdicts_on_known_cases() -> None:
    verdict, sentence = power_verdict(0.4, 2.2, 4.0)
    assert verdict == "no power"
    assert "cannot certify epsilon above 2.2" in sentence
    assert "a run with no DP would also pass" in sentence
    assert power_verdict(0.4, 5.4, 4.0)[0] == "consistent"
    assert power_verdict(4.5, 5.4, 4.0)[0] == "violation"
    assert power_verdict(None, None, 1.0)[0] == "no power"
    assert power_verdict(1.2, 3.0, None)[0] == "no claim"


# --- the canary audit's power: a no-DP overfit run fails, a DP run passes --------------


def _canary_bound(scores: np.ndarray, included: np.ndarray, n_models: int) -> float:
    m = len(scores)
    rows = score_guesses(scores, included, guess_counts(m), beta=design_beta(m, n_models))
    return float(max(r["epsilon_lower_bound"] for r in rows))


def test_a_no_dp_overfit_run_fails_a_power_capable_canary_audit() -> None:
    """Synthetic canary scores (negated losses). A memorising model without DP: included
    canaries at loss ~0, the others at chance loss. With 1000 canaries (power 5.4 > 4)
    the audit refutes a claimed epsilon of 4; with 100 (power 3.1) the same perfect
    attack cannot, and the audit says so instead of passing silently."""
    rng = np.random.default_rng(7)
    for m, want in ((1000, "violation"), (100, "no power")):
        included = rng.random(m) < 0.5
        scores = np.where(included, -rng.exponential(0.01, m), -rng.exponential(2.3, m) - 0.5)
        bound = _canary_bound(scores, included, 1)
        fields = power_fields(bound, m, 1, 4.0)
        assert fields["verdict"] == want, (m, bound, fields)
        assert 0 < bound <= canary_power(m, 1)
    assert canary_power(1000, 1) > 4 > canary_power(100, 1)
    assert (
        "About 242 canaries would certify more than 4"
        in power_fields(1.0, 100, 1, 4.0)["statement"]
    )


def test_an_epsilon_dp_run_passes_a_power_capable_canary_audit() -> None:
    """Canary scores from an exactly 1-DP mechanism (randomised response on inclusion:
    the score says "in" with probability e/(1+e) when in, 1/(1+e) when out), 1000
    canaries (power 5.4): in each of 20 seeded runs the bound stays at most 1, and the
    audit, able to refute a claim of 1 or of 4, finds the run consistent with both."""
    rng = np.random.default_rng(11)
    eps, m = 1.0, 1000
    p_right = math.exp(eps) / (1 + math.exp(eps))
    for _ in range(20):
        included = rng.random(m) < 0.5
        says_in = np.where(rng.random(m) < p_right, included, ~included)
        scores = says_in.astype(np.float64) + rng.random(m) * 1e-3  # ties broken at random
        bound = _canary_bound(scores, included, 1)
        assert bound <= eps
        assert power_fields(bound, m, 1, 4.0)["verdict"] == "consistent"
        assert power_fields(bound, m, 1, eps)["verdict"] == "consistent"


def test_canaries_needed_is_the_smallest_design_with_power() -> None:
    for eps in (1.0, 2.0, 4.0):
        m = canaries_needed(eps, 3)
        assert m is not None and canary_power(m, 3) > eps
    assert canaries_needed(4.0, 3) == 302
    assert canaries_needed(9.0, 1) is None  # more than MAX_CANARIES


# --- the inversion verdicts: one-sided binomial test, Holm over cases --------------------


def test_binomial_test_on_the_issues_two_examples() -> None:
    """5 of 58 identified against a chance rate of 1/58, and 113 of 690 against 91/690
    (the decoy counts the old rule compared with "2 x chance + 2": it called the first a
    leak and the second a failure). One-sided exact binomial p-values: 0.0033 and 0.0092,
    both below 0.05: each, on its own, is evidence of leakage at the 5% level."""
    from scipy import stats as st

    p1 = binomial_greater(5, 58, 1 / 58)
    p2 = binomial_greater(113, 690, 91 / 690)
    assert p1 == pytest.approx(0.0032706, rel=1e-4)
    assert p2 == pytest.approx(0.0091669, rel=1e-4)
    assert p1 == pytest.approx(float(st.binom.sf(4, 58, 1 / 58)), rel=1e-9)
    assert holm([p1, p2], alpha=0.05) == [True, True]
    assert binomial_greater(1, 58, 1 / 58) > 0.5  # one of 58 at chance 1/58: nothing
    assert binomial_greater(0, 10, 0.1) == 1.0 and binomial_greater(3, 3, 0.0) == 0.0


def test_holm_steps_down() -> None:
    assert holm([0.01, 0.04, 0.03], alpha=0.05) == [True, False, False]
    assert holm([0.01, 0.02, 0.03], alpha=0.05) == [True, True, True]
    assert holm([0.2], alpha=0.05) == [False]
    assert holm([], alpha=0.05) == []


def test_inversion_verdicts_hold_their_level_when_reconstructions_are_noise() -> None:
    """Under the null (reconstructions independent of the update's records) the binomial
    test against K/N rejects at most 5% of the time: 400 seeded trials of random
    reconstructions scored against a random dataset."""
    from securepool.audit.inversion import score

    rng = np.random.default_rng(3)
    rejected = 0
    trials = 400
    for _ in range(trials):
        dataset = rng.random((300, 8)).astype(np.float32)
        idx = rng.choice(300, size=20, replace=False)
        recon = rng.random((30, 8)).astype(np.float32)
        r = score(recon, dataset[idx], dataset, idx, None)
        rejected += binomial_greater(r["identified"], 20, r["chance_rate"]) <= 0.05
    assert rejected / trials <= 0.05, rejected / trials
