"""Statistics the audits share: ROC, AUC, Clopper–Pearson intervals, DP bounds from rates,
the family-wise correction of a headline bound, an audit's power, and the one-sided
binomial test the inversion verdicts use.

Pure numpy/scipy; no torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import stats


def clopper_pearson(k: int, n: int, *, confidence: float = 0.95) -> tuple[float, float]:
    """Exact two-sided interval for a binomial rate k/n."""
    if n <= 0:
        return (0.0, 1.0)
    a = 1.0 - confidence
    lo = 0.0 if k == 0 else float(stats.beta.ppf(a / 2, k, n - k + 1))
    hi = 1.0 if k == n else float(stats.beta.ppf(1 - a / 2, k + 1, n - k))
    return (lo, hi)


def auc(members: NDArray[np.float64], non_members: NDArray[np.float64]) -> float:
    """P[score(member) > score(non-member)] (ties count 1/2): the Mann–Whitney AUC."""
    allv = np.concatenate([members, non_members])
    ranks = stats.rankdata(allv)
    r_m = float(ranks[: len(members)].sum())
    n_m, n_n = len(members), len(non_members)
    return (r_m - n_m * (n_m + 1) / 2) / (n_m * n_n)


def roc(
    members: NDArray[np.float64], non_members: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """(fpr, tpr) over every threshold, for a plot."""
    thresholds = np.unique(np.concatenate([members, non_members]))[::-1]
    tpr = np.array([np.mean(members >= t) for t in thresholds])
    fpr = np.array([np.mean(non_members >= t) for t in thresholds])
    return np.concatenate([[0.0], fpr, [1.0]]), np.concatenate([[0.0], tpr, [1.0]])


def resolvable(n_negatives: int, rate: float, *, confidence: float = 0.95) -> bool:
    """Can ``n_negatives`` resolve a false-positive rate of ``rate``?

    With zero false positives the upper confidence bound on the FPR is
    1 - (1 - confidence)^(1/n) (about 3/n at 95%); a rate below that bound cannot be
    told apart from zero, so at least about 3/rate negatives are needed.
    """
    if n_negatives <= 0:
        return False
    return bool(1.0 - (1.0 - confidence) ** (1.0 / n_negatives) <= rate)


def epsilon_from_rates(tpr_low: float, fpr_high: float, *, delta: float) -> float:
    """The smallest epsilon an (epsilon, delta)-DP mechanism needs to allow these rates.

    Any test against (epsilon, delta)-DP satisfies TPR <= e^eps FPR + delta and
    1 - FPR <= e^eps (1 - TPR) + delta (Kairouz et al. 2015). Pass a lower confidence
    bound of the TPR and an upper one of the FPR to get a bound at that confidence.
    """
    cands = [0.0]
    if fpr_high > 0 and tpr_low - delta > 0:
        cands.append(math.log((tpr_low - delta) / fpr_high))
    fnr_high = 1.0 - tpr_low
    if fnr_high > 0 and 1.0 - delta - fpr_high > 0:
        cands.append(math.log((1.0 - delta - fpr_high) / fnr_high))
    return max(cands)


#: the family-wise confidence of every headline bound the audit reports
CONFIDENCE = 0.95


def bonferroni_confidence(family: int, *, confidence: float = CONFIDENCE) -> float:
    """The confidence each of ``family`` bounds needs so that all of them hold at once
    with probability ``confidence`` (Bonferroni: the error rate is split evenly), which
    makes the maximum of the family a bound at ``confidence``."""
    return 1.0 - (1.0 - confidence) / max(1, family)


@dataclass(frozen=True)
class RateAtFPR:
    target_fpr: float
    threshold: float
    tpr: float
    tpr_ci: tuple[float, float]
    fpr: float
    fpr_ci: tuple[float, float]
    resolvable: bool
    epsilon_lower_bound: float | None
    epsilon_lower_bound_corrected: float | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "target_fpr": self.target_fpr,
            "threshold": self.threshold,
            "tpr": self.tpr,
            "tpr_ci95": list(self.tpr_ci),
            "fpr": self.fpr,
            "fpr_ci95": list(self.fpr_ci),
            "resolvable": self.resolvable,
            "epsilon_lower_bound": self.epsilon_lower_bound,
            "epsilon_lower_bound_corrected": self.epsilon_lower_bound_corrected,
        }


def _bound_at(tp: int, n_pos: int, fp: int, n_neg: int, *, delta: float, conf: float) -> float:
    """The epsilon bound of one row: each side of the two Clopper–Pearson intervals at
    ``conf`` fails with probability (1 - conf)/2, so the bound fails with at most 1 - conf."""
    tpr_lo = clopper_pearson(tp, n_pos, confidence=conf)[0]
    fpr_hi = clopper_pearson(fp, n_neg, confidence=conf)[1]
    return epsilon_from_rates(tpr_lo, fpr_hi, delta=delta)


def tpr_at_fpr(
    members: NDArray[np.float64],
    non_members: NDArray[np.float64],
    target_fpr: float,
    *,
    delta: float,
    family: int = 1,
) -> RateAtFPR:
    """TPR at the threshold that lets through at most ``target_fpr`` of the non-members.

    ``epsilon_lower_bound`` combines a 95% Clopper–Pearson lower bound on the TPR with a
    95% upper bound on the FPR (each side of a two-sided 95% interval errs with 2.5%, so
    the row's bound errs with at most 5%). ``epsilon_lower_bound_corrected`` is the same
    bound at :func:`bonferroni_confidence` ``(family)``: the maximum over a family of
    ``family`` such rows errs with at most 5%. Both are None when the non-member set is
    too small to resolve ``target_fpr``. The FPR interval is exact although the threshold
    is picked on the same non-members: the true FPR at a threshold just above the
    (k+1)-th largest of n non-member scores is Beta(k+1, n-k) distributed, whose
    quantiles are the Clopper–Pearson upper bounds for k of n.
    """
    n_neg = len(non_members)
    srt = np.sort(non_members)[::-1]
    allowed = int(math.floor(target_fpr * n_neg))  # false positives allowed
    # threshold strictly above the (allowed+1)-th largest non-member score
    thr = float(np.nextafter(srt[allowed], np.inf)) if allowed < n_neg else float(srt[-1])
    tp = int(np.sum(members >= thr))
    fp = int(np.sum(non_members >= thr))
    ok = resolvable(n_neg, target_fpr)
    n_pos = len(members)
    tpr_ci = clopper_pearson(tp, n_pos)
    fpr_ci = clopper_pearson(fp, n_neg)
    eps = epsilon_from_rates(tpr_ci[0], fpr_ci[1], delta=delta) if ok else None
    corrected = (
        _bound_at(tp, n_pos, fp, n_neg, delta=delta, conf=bonferroni_confidence(family))
        if ok
        else None
    )
    return RateAtFPR(target_fpr, thr, tp / n_pos, tpr_ci, fp / n_neg, fpr_ci, ok, eps, corrected)


def membership_power(
    n_members: int,
    n_non_members: int,
    target_fprs: tuple[float, ...],
    *,
    delta: float,
    family: int,
) -> float | None:
    """The largest headline bound the membership design could certify at all: that of a
    perfect attack (every member scored above every non-member), at the corrected
    confidence. At target FPR ``a`` the threshold still lets ``floor(a * n)`` non-members
    through and a TPR of 1 has a Clopper–Pearson lower bound below 1, so both
    inequalities of :func:`epsilon_from_rates` are capped by the set sizes whatever the
    attack. None when no target FPR is resolvable (the design certifies nothing)."""
    bounds = [
        _bound_at(
            n_members,
            n_members,
            int(math.floor(a * n_non_members)),
            n_non_members,
            delta=delta,
            conf=bonferroni_confidence(family),
        )
        for a in target_fprs
        if resolvable(n_non_members, a)
    ]
    return max(bounds) if bounds else None


def power_verdict(
    lower_bound: float | None, power: float | None, accountant: float | None
) -> tuple[str, str]:
    """(verdict, sentence) for one empirical check against the accountant's epsilon.

    * ``violation``: the certified lower bound exceeds the accountant's epsilon;
    * ``no power``: the best bound the design could certify is at most the accountant's
      epsilon, so passing says nothing (a run with no DP at all would pass too);
    * ``consistent``: the design could have certified more than the accountant's
      epsilon and did not;
    * ``no claim``: DP off, nothing to compare (the bound is what the models show).
    """
    lb = 0.0 if lower_bound is None else lower_bound
    cap = "nothing" if power is None else f"epsilon above {power:.3g}"
    if accountant is None:
        return (
            "no claim",
            f"DP is off, so there is no accountant epsilon to test; the released models "
            f"certify epsilon >= {lb:.3g}, and this design cannot certify {cap}.",
        )
    if lb > accountant:
        return (
            "violation",
            f"VIOLATION: the certified lower bound {lb:.3g} exceeds the accountant's "
            f"epsilon {accountant:.3g}.",
        )
    if power is None or power <= accountant:
        return (
            "no power",
            f"This audit cannot certify {cap}: it cannot detect a violation of the "
            f"accountant's epsilon {accountant:.3g}, and a run with no DP would also pass.",
        )
    return (
        "consistent",
        f"Consistent: the design could certify up to {power:.3g}, above the accountant's "
        f"epsilon {accountant:.3g}, and the certified bound is {lb:.3g}.",
    )


def binomial_greater(k: int, n: int, p0: float) -> float:
    """One-sided exact binomial test: P[Binomial(n, p0) >= k] (1.0 when n = 0)."""
    if n <= 0 or k <= 0:
        return 1.0
    if p0 <= 0.0:
        return 0.0
    if p0 >= 1.0:
        return 1.0
    return float(stats.binomtest(k, n, p0, alternative="greater").pvalue)


def holm(pvalues: list[float], *, alpha: float) -> list[bool]:
    """Holm's step-down rejections at family-wise level ``alpha`` (in input order)."""
    order = sorted(range(len(pvalues)), key=lambda i: pvalues[i])
    reject = [False] * len(pvalues)
    m = len(pvalues)
    for rank, i in enumerate(order):
        if pvalues[i] > alpha / (m - rank):
            break
        reject[i] = True
    return reject
