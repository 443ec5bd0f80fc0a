"""Statistics the audits share: ROC, AUC, Clopper–Pearson intervals, DP bounds from rates.

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
        }


def tpr_at_fpr(
    members: NDArray[np.float64],
    non_members: NDArray[np.float64],
    target_fpr: float,
    *,
    delta: float,
) -> RateAtFPR:
    """TPR at the threshold that lets through at most ``target_fpr`` of the non-members.

    The epsilon bound combines a 95% Clopper–Pearson lower bound on the TPR with a 95%
    upper bound on the FPR (so about 90% jointly); it is None when the non-member set is
    too small to resolve ``target_fpr``.
    """
    n_neg = len(non_members)
    srt = np.sort(non_members)[::-1]
    allowed = int(math.floor(target_fpr * n_neg))  # false positives allowed
    # threshold strictly above the (allowed+1)-th largest non-member score
    thr = float(np.nextafter(srt[allowed], np.inf)) if allowed < n_neg else float(srt[-1])
    tp = int(np.sum(members >= thr))
    fp = int(np.sum(non_members >= thr))
    ok = resolvable(n_neg, target_fpr)
    tpr_ci = clopper_pearson(tp, len(members))
    fpr_ci = clopper_pearson(fp, n_neg)
    eps = epsilon_from_rates(tpr_ci[0], fpr_ci[1], delta=delta) if ok else None
    return RateAtFPR(target_fpr, thr, tp / len(members), tpr_ci, fp / n_neg, fpr_ci, ok, eps)
