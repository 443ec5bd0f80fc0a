"""Canary audit in one training run (Steinke, Nasr, Jagielski, NeurIPS 2023).

Run side (:func:`insert_canaries`, called where the run's data is prepared when
``[audit] canaries = m``): m canaries from a pool of their own, records of no dataset
(every feature uniform in [0, 1], the range both built-in datasets are scaled to, and a
uniformly random label), each included with probability 1/2 in the training split of a
participant drawn at random. They are not copies of holdout records: those carried the
holdout's own inputs with wrong labels into training, which lowered the accuracy the
holdout measures, and capped m at the holdout's size, hence the bound m canaries can
certify at all. Everything is a deterministic function of the run seed, so the auditor
rebuilds the same canaries and coin flips from the config; the run writes nothing
about them.

Audit side (:func:`canary_audit`): each released model scores every canary by the loss
of its canary label; the r/2 lowest-loss canaries are guessed IN and the r/2 highest
OUT. Under epsilon-DP the number of correct guesses is stochastically dominated by
Binomial(r, e^eps / (1 + e^eps)) (the paper's Theorem 3.1, delta = 0), so the largest
epsilon whose tail at the observed count is below beta is rejected: that is the lower
bound at 95% confidence. The same bound with every guess correct is the best that m
canaries can certify at all (the audit's power; :func:`canaries_needed` is the m that
would certify a given epsilon). Several r and several models are tried, so beta is
divided among them (Bonferroni) and the headline, the maximum, holds at 95%.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from scipy import optimize, stats

from securepool.audit.config import MAX_CANARIES
from securepool.audit.stats import power_verdict
from securepool.data import FederatedData, LocalData

GUESS_FRACTIONS = (0.1, 0.2, 0.5, 1.0)
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Canaries:
    x: torch.Tensor  # (m, features)
    y: torch.Tensor  # (m,) the wrong labels they carry
    included: NDArray[np.bool_]  # the coin flips: which canaries went into training
    host: tuple[str, ...]  # the participant each canary was given to (if included)


def make_canaries(data: FederatedData, m: int, *, seed: int) -> Canaries:
    """The canaries of a run with seed ``seed``; the same on the run and audit sides.

    Their own pool: uniform random inputs in [0, 1]^features with uniform random labels,
    drawn from the seed alone (no record of the dataset, the holdout included, is used).
    """
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xCA4A, 2]))
    x = rng.random((m, data.n_features), dtype=np.float32)
    labels = rng.integers(0, data.n_classes, size=m)
    included = rng.random(m) < 0.5
    pids = sorted(data.participants)
    host = tuple(pids[i] for i in rng.integers(0, len(pids), size=m))
    return Canaries(
        torch.from_numpy(x),
        torch.from_numpy(labels.astype(np.int64)),
        included,
        host,
    )


def insert_canaries(data: FederatedData, m: int, *, seed: int) -> FederatedData:
    """``data`` with the included canaries appended to their hosts' training splits."""
    if m == 0:
        return data
    c = make_canaries(data, m, seed=seed)
    parts = dict(data.participants)
    for pid in sorted(set(c.host)):
        sel = torch.from_numpy(
            np.flatnonzero(c.included & (np.asarray(c.host) == pid)).astype(np.int64)
        )
        if len(sel) == 0:
            continue
        d = parts[pid]
        parts[pid] = LocalData(
            torch.cat([d.x_train, c.x[sel]]), torch.cat([d.y_train, c.y[sel]]), d.x_test, d.y_test
        )
    return replace(data, participants=parts)


def _tail(r: int, v: int, eps: float) -> float:
    p = math.exp(eps) / (1.0 + math.exp(eps))
    return float(stats.binom.sf(v - 1, r, p))


def epsilon_lower_bound(r: int, v: int, *, beta: float) -> float:
    """Largest eps with P[Binomial(r, e^eps/(1+e^eps)) >= v] <= beta (0 if none)."""
    if r == 0 or _tail(r, v, 0.0) > beta:
        return 0.0
    hi = 1.0
    while _tail(r, v, hi) <= beta:
        hi *= 2.0
        if hi > 1e3:
            return hi
    return float(optimize.brentq(lambda e: _tail(r, v, e) - beta, 0.0, hi, xtol=1e-6))


def guesses(scores: NDArray[np.float64], r: int) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Indices guessed IN (the r/2 highest scores) and OUT (the r/2 lowest)."""
    order = np.argsort(-scores, kind="stable")
    half = r // 2
    return order[:half], order[len(order) - half :] if half else order[:0]


def score_guesses(
    scores: NDArray[np.float64], included: NDArray[np.bool_], rs: Sequence[int], *, beta: float
) -> list[dict[str, Any]]:
    rows = []
    for r in rs:
        g_in, g_out = guesses(scores, r)
        correct = int(included[g_in].sum() + (~included[g_out]).sum())
        n = len(g_in) + len(g_out)
        rows.append(
            {
                "guesses": n,
                "correct": correct,
                "epsilon_lower_bound": epsilon_lower_bound(n, correct, beta=beta),
                "best_possible": epsilon_lower_bound(n, n, beta=beta),
            }
        )
    return rows


def guess_counts(m: int) -> list[int]:
    return sorted({max(2, 2 * int(round(f * m / 2))) for f in GUESS_FRACTIONS if m >= 2})


def design_beta(m: int, n_models: int) -> float:
    """Each test's error rate: 5% split over every guess count and model (Bonferroni)."""
    return (1.0 - CONFIDENCE) / max(1, len(guess_counts(m)) * max(1, n_models))


def canary_power(m: int, n_models: int) -> float:
    """The best bound m canaries can certify: every one of the most guesses right."""
    if m < 2:
        return 0.0
    r = max(guess_counts(m))
    return epsilon_lower_bound(r, r, beta=design_beta(m, n_models))


def canaries_needed(epsilon: float, n_models: int) -> int | None:
    """The fewest canaries whose power exceeds ``epsilon`` (None: more than MAX_CANARIES).

    Power grows like log(m): about 300 canaries certify epsilon 4 for three models, and
    epsilon 8 needs over 10,000.
    """
    if canary_power(MAX_CANARIES, n_models) <= epsilon:
        return None
    lo, hi = 2, MAX_CANARIES
    while lo < hi:  # power is non-decreasing in m up to rounding; bisect on it
        mid = (lo + hi) // 2
        if canary_power(mid, n_models) > epsilon:
            hi = mid
        else:
            lo = mid + 1
    return lo


def canary_audit(run: Any) -> dict[str, Any]:
    """The canary section of audit.json (``run`` is an AuditInputs)."""
    from securepool.audit.targets import auditor_data, logits, losses, released_model

    m = run.config.audit.canaries
    if m == 0:
        return {
            "enabled": False,
            "note": "the run had no canaries; set [audit] canaries = m in the run config "
            f"(up to {MAX_CANARIES}; about 300 certify epsilon 4 with three models) to get a "
            "one-run epsilon lower bound",
        }
    ad = auditor_data(run)
    c = make_canaries(ad.data, m, seed=run.config.run.seed)
    rs = guess_counts(m)
    tests = max(1, len(rs) * max(1, len(run.pool)))
    beta = design_beta(m, len(run.pool))
    models = {}
    for mid in sorted(run.pool):
        z = logits(released_model(run, mid, ad.data), c.x)
        scores = -losses(z, c.y.numpy())
        rows = score_guesses(scores, c.included, rs, beta=beta)
        best = max(rows, key=lambda row: row["epsilon_lower_bound"])
        models[mid] = {"by_guesses": rows, "epsilon_lower_bound": best["epsilon_lower_bound"]}
    accountant = run.summary.get("worst_case_epsilon") if run.config.privacy.enabled else None
    bound = max((v["epsilon_lower_bound"] for v in models.values()), default=0.0)
    return {
        "enabled": True,
        "canaries": m,
        "canary_pool": "uniform random inputs in [0, 1] with uniform random labels, drawn "
        "from the run seed (no dataset record, the holdout included)",
        "included": int(c.included.sum()),
        "confidence": CONFIDENCE,
        "correction": "bonferroni",
        "bonferroni_tests": tests,
        "epsilon_lower_bound": bound,
        "best_possible_with_m": canary_power(m, len(run.pool)),
        "accountant_epsilon": accountant,
        **power_fields(bound, m, len(run.pool), accountant),
        "models": models,
        "note": "pure-epsilon bound (delta = 0); with delta > 0 the paper's Theorem 5.2 "
        "gives a slightly lower bound",
    }


def power_fields(bound: float, m: int, n_models: int, accountant: float | None) -> dict[str, Any]:
    """The canary section's power line: the design's best bound against the accountant's
    epsilon, the verdict, and how many canaries a design able to refute it would need."""
    power = canary_power(m, n_models)
    verdict, statement = power_verdict(bound, power, accountant)
    needed = None if accountant is None else canaries_needed(accountant, n_models)
    if verdict == "no power":
        statement += (
            f" About {needed} canaries would certify more than {accountant:.3g}."
            if needed is not None
            else f" Even {MAX_CANARIES} canaries could not certify {accountant:.3g}."
        )
    return {
        "power": power,
        "verdict": verdict,
        "statement": statement,
        "canaries_needed_for_accountant_epsilon": needed,
    }
