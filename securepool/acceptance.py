"""P5: confidence-region acceptance and the elimination rule of the shared pool.

A converged global model is *acceptable* when the Clopper–Pearson upper bound of its
test error, at the configured confidence, is within ``max_error_bound``. The
elimination rule then (1) drops near-duplicates — a model whose parameter vector lies
within ``duplicate_distance`` (relative L2) of a better accepted model of the same
architecture — and (2) keeps the ``keep_best`` lowest-error models (0 keeps all).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from securepool.config import AcceptanceSection
from securepool.evaluation import TestResult, clopper_pearson_upper


@dataclass(frozen=True)
class Candidate:
    model_id: str
    arch: str
    result: TestResult
    params: NDArray[np.float32]


@dataclass(frozen=True)
class Decision:
    model_id: str
    test_error: float
    error_bound: float
    accepted: bool
    eliminated: bool
    reason: str


def decide(candidates: Mapping[str, Candidate], rule: AcceptanceSection) -> dict[str, Decision]:
    """Apply acceptance then elimination; every candidate gets a decision with a reason."""
    bounds = {
        mid: clopper_pearson_upper(c.result.errors, c.result.total, confidence=rule.confidence)
        for mid, c in candidates.items()
    }
    accepted = [mid for mid in candidates if bounds[mid] <= rule.max_error_bound]
    accepted.sort(key=lambda m: (candidates[m].result.error_rate, bounds[m], m))
    decisions: dict[str, Decision] = {}
    for mid, c in candidates.items():
        if mid not in accepted:
            decisions[mid] = Decision(
                mid,
                c.result.error_rate,
                bounds[mid],
                False,
                False,
                f"error bound {bounds[mid]:.4f} > {rule.max_error_bound} "
                f"at confidence {rule.confidence}",
            )
    kept: list[str] = []
    for mid in accepted:
        c = candidates[mid]
        dup_of = next(
            (
                k
                for k in kept
                if candidates[k].arch == c.arch
                and rule.duplicate_distance > 0
                and relative_distance(c.params, candidates[k].params) < rule.duplicate_distance
            ),
            None,
        )
        if dup_of is not None:
            reason = f"near-duplicate of {dup_of} (relative L2 < {rule.duplicate_distance})"
        elif rule.keep_best and len(kept) >= rule.keep_best:
            reason = f"not among the {rule.keep_best} best"
        else:
            kept.append(mid)
            decisions[mid] = Decision(
                mid, c.result.error_rate, bounds[mid], True, False, "accepted and kept"
            )
            continue
        decisions[mid] = Decision(mid, c.result.error_rate, bounds[mid], True, True, reason)
    return decisions


def relative_distance(a: NDArray[np.float32], b: NDArray[np.float32]) -> float:
    if a.shape != b.shape:
        return float("inf")
    denom = max(float(np.linalg.norm(b)), 1e-12)
    return float(np.linalg.norm(a.astype(np.float64) - b) / denom)
