"""Membership inference against the released pool: loss threshold and LiRA.

Members are the participants' training records, non-members their local test splits
(never the coordinator's holdout, which steers convergence and acceptance). Two
attacks per released model:

* loss threshold (Yeom et al. 2018): score = -loss of the true label;
* LiRA, online with a global variance (Carlini et al., S&P 2022): the auditor trains
  shadow models of the same architecture on random halves of the records it holds
  (members and non-members alike, each record in about half the shadows), fits a
  Gaussian to the logit-scaled confidence of each record with it IN and OUT, and
  scores the released model's confidence by the likelihood ratio.

AUC, TPR at 10%, 1% and 0.1% FPR with 95% Clopper–Pearson intervals, whether the
non-member set can resolve the rate at all, and the epsilon lower bound those rates imply
(:func:`securepool.audit.stats.epsilon_from_rates`). The headline is the maximum of the
family of row bounds (models x attacks x resolvable rates), each taken at the
Bonferroni-corrected confidence 1 - 0.05/family, so that the maximum holds at 95%; its
power is the headline a perfect attack would get with these set sizes
(:func:`securepool.audit.stats.membership_power`). Members are not drawn independently
at random as in the DP game, so the bound is an empirical indication; the canary audit
is the one with a proof behind it.
"""

from __future__ import annotations

import multiprocessing
import statistics
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from securepool.audit.inputs import AuditInputs
from securepool.audit.stats import (
    CONFIDENCE,
    auc,
    bonferroni_confidence,
    membership_power,
    power_verdict,
    resolvable,
    roc,
    tpr_at_fpr,
)
from securepool.audit.targets import (
    AuditData,
    auditor_data,
    logit_confidence,
    logits,
    losses,
    released_model,
)
from securepool.models import Architecture, build_model
from securepool.training import PlainTrainer, TrainSettings

FPRS = (0.1, 0.01, 0.001)
SHADOWS_FULL = 16
SHADOWS_QUICK = 4
MAX_SHADOW_EPOCHS = 20


def participations(run: AuditInputs, model_id: str) -> int:
    """Median number of aggregated rounds a participant trained ``model_id`` in (>= 1)."""
    counts: dict[str, int] = {}
    for m in run.metrics:
        for g in m.get("groups", []):
            if g.get("model") == model_id and g.get("status") == "aggregated":
                for pid in g.get("members", []):
                    counts[pid] = counts.get(pid, 0) + 1
    return max(1, int(statistics.median(counts.values()))) if counts else 1


def family_size(n_models: int, n_non_members: int) -> int:
    """How many row bounds the headline is the maximum of: every released model, both
    attacks, every target FPR the non-member set can resolve (fixed before any score is
    seen, so the correction is valid)."""
    return n_models * 2 * sum(resolvable(n_non_members, a) for a in FPRS)


def _attack_summary(
    members: NDArray[np.float64], non_members: NDArray[np.float64], *, delta: float, family: int
) -> dict[str, Any]:
    fpr, tpr = roc(members, non_members)
    keep = np.unique(np.linspace(0, len(fpr) - 1, min(len(fpr), 400)).astype(int))
    return {
        "auc": auc(members, non_members),
        "at_fpr": [
            tpr_at_fpr(members, non_members, a, delta=delta, family=family).to_json() for a in FPRS
        ],
        "roc": {"fpr": fpr[keep].tolist(), "tpr": tpr[keep].tolist()},
    }


@dataclass(frozen=True)
class ShadowJob:
    """One shadow model to train: everything a worker process needs besides the records."""

    arch: str
    hidden: int
    n_features: int
    n_classes: int
    model_seed: int
    train_seed: int
    members: NDArray[np.int64]  # indices into the auditor's records
    settings: TrainSettings
    factory: str = ""  # a custom model's "package.module:function"


_RECORDS: tuple[torch.Tensor, torch.Tensor] | None = None


def _init_worker(x: NDArray[np.float32], y: NDArray[np.int64], threads: int) -> None:
    """Numpy arrays, not tensors: pickling a tensor for another process moves its storage
    into shared memory, which would pull it from under numpy views in this one."""
    global _RECORDS
    torch.set_num_threads(threads)
    _RECORDS = (torch.from_numpy(np.array(x)), torch.from_numpy(np.array(y)))


def train_shadow(job: ShadowJob) -> NDArray[np.float64]:
    """Train one shadow on its half; return every record's logit-scaled confidence."""
    if _RECORDS is None:
        raise RuntimeError("train_shadow runs in a worker set up by _init_worker")
    x, y = _RECORDS
    model = build_model(
        Architecture(job.arch),
        n_features=job.n_features,
        n_classes=job.n_classes,
        seed=job.model_seed,
        hidden=job.hidden,
        factory=job.factory,
    )
    idx = torch.from_numpy(job.members)
    PlainTrainer().train(
        participant="shadow",
        model=model,
        x=x[idx],
        y=y[idx],
        settings=job.settings,
        seed=job.train_seed,
    )
    return logit_confidence(logits(model, x), y.numpy())


def shadow_jobs(
    run: AuditInputs, model_id: str, ad: AuditData, n_records: int, *, n_shadows: int, epochs: int
) -> tuple[list[ShadowJob], NDArray[np.bool_]]:
    """The shadows of one model; each record is IN exactly half of them, at random."""
    t = run.config.training
    settings = TrainSettings(epochs=epochs, batch_size=t.batch_size, lr=t.lr, momentum=t.momentum)
    spec = run.pool_specs()[model_id]
    rng = np.random.default_rng(
        np.random.SeedSequence([run.config.run.seed, 0x11AA, n_shadows, *model_id.encode()])
    )
    inside = np.zeros((n_shadows, n_records), dtype=bool)
    for i in range(n_records):
        inside[rng.permutation(n_shadows)[: n_shadows // 2], i] = True
    jobs = [
        ShadowJob(
            arch=str(spec["arch"]),
            hidden=int(spec.get("hidden", 64)),
            n_features=ad.data.n_features,
            n_classes=ad.data.n_classes,
            model_seed=int(rng.integers(2**31)),
            train_seed=int(rng.integers(2**31)),
            members=np.flatnonzero(inside[s]).astype(np.int64),
            settings=settings,
            factory=str(spec.get("factory", "")),
        )
        for s in range(n_shadows)
    ]
    return jobs, inside


def run_shadows(
    jobs: list[ShadowJob],
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    workers: int,
    threads: int,
    tick: Callable[[], None],
) -> list[NDArray[np.float64]]:
    """Train every job, in ``workers`` processes (1: in this process); results in order."""
    out: list[NDArray[np.float64] | None] = [None] * len(jobs)
    records = (x.numpy().copy(), y.numpy().copy(), threads)
    if workers <= 1:
        _init_worker(*records)
        for i, job in enumerate(jobs):
            out[i] = train_shadow(job)
            tick()
    else:
        ctx = multiprocessing.get_context("spawn")  # no fork after torch has started
        with ProcessPoolExecutor(
            max_workers=workers, mp_context=ctx, initializer=_init_worker, initargs=records
        ) as pool:
            futures = {pool.submit(train_shadow, job): i for i, job in enumerate(jobs)}
            for fut in as_completed(futures):
                out[futures[fut]] = fut.result()
                tick()
    return [o for o in out if o is not None]


def lira_scores(
    target_conf: NDArray[np.float64], conf: NDArray[np.float64], inside: NDArray[np.bool_]
) -> NDArray[np.float64]:
    """Log-likelihood ratio IN vs OUT per record (per-record means, global variances)."""
    inn = np.where(inside, conf, np.nan)
    outside = np.where(~inside, conf, np.nan)
    mu_in = np.nanmean(inn, axis=0)
    mu_out = np.nanmean(outside, axis=0)
    sd_in = float(np.nanstd(inn - mu_in)) + 1e-6
    sd_out = float(np.nanstd(outside - mu_out)) + 1e-6
    ll_in = -0.5 * ((target_conf - mu_in) / sd_in) ** 2 - np.log(sd_in)
    ll_out = -0.5 * ((target_conf - mu_out) / sd_out) ** 2 - np.log(sd_out)
    ratio: NDArray[np.float64] = ll_in - ll_out
    return ratio


def membership_audit(
    run: AuditInputs,
    *,
    quick: bool,
    workers: int = 1,
    tick: Callable[[], None] = lambda: None,
) -> dict[str, Any]:
    """The membership section of audit.json, one entry per released model."""
    ad = auditor_data(run)
    delta = run.config.privacy.delta
    n_m, n_n = len(ad.y_members), len(ad.y_non_members)
    notes = []
    for a in FPRS:
        if not resolvable(n_n, a):
            notes.append(
                f"{n_n} non-members cannot resolve an FPR of {a:g}: with no false positive "
                f"the 95% upper bound is {1 - 0.05 ** (1 / n_n):.4f}; about {int(3 / a)} "
                "non-members are needed. That row reports the TPR but no epsilon bound."
            )
    family = family_size(len(run.pool), n_n)
    notes.append(
        f"The headline is the largest of {family} row bounds (models x attacks x resolvable "
        f"FPRs), each at {bonferroni_confidence(family):.4g} confidence (Bonferroni), so it "
        f"holds at {CONFIDENCE:.0%}; the per-row 'eps lb' columns are each at 95% on their "
        "own and their maximum is not a 95% bound."
    )
    notes.append(
        "Members are not drawn at random as in the DP game: the epsilon bounds here are an "
        "empirical indication; the canary audit's bound is the one with a proof behind it."
    )
    if run.config.privacy.enabled:
        notes.append(
            "Shadow models are trained without DP (the attack's calibration only; a weaker "
            "calibration can only lower the measured rates, never make the bound unsound)."
        )
    x = torch.cat([ad.x_members, ad.x_non_members])
    y = torch.cat([ad.y_members, ad.y_non_members])
    yn = y.numpy()
    n_shadows = SHADOWS_QUICK if quick else SHADOWS_FULL
    plans: dict[str, tuple[int, NDArray[np.bool_], slice]] = {}
    jobs: list[ShadowJob] = []
    for mid in sorted(run.pool):
        epochs = min(run.config.training.epochs * participations(run, mid), MAX_SHADOW_EPOCHS)
        mine, inside = shadow_jobs(run, mid, ad, len(y), n_shadows=n_shadows, epochs=epochs)
        plans[mid] = (epochs, inside, slice(len(jobs), len(jobs) + len(mine)))
        jobs += mine
    confs = run_shadows(
        jobs, x, y, workers=workers, threads=run.config.run.torch_threads, tick=tick
    )
    models: dict[str, Any] = {}
    for mid, (epochs, inside, part) in plans.items():
        z = logits(released_model(run, mid, ad.data), x)
        score_loss = -losses(z, yn)
        conf = np.stack(confs[part])
        score_lira = lira_scores(logit_confidence(z, yn), conf, inside)
        models[mid] = {
            "shadow_models": n_shadows,
            "shadow_epochs": epochs,
            "loss_threshold": _attack_summary(
                score_loss[:n_m], score_loss[n_m:], delta=delta, family=family
            ),
            "lira": _attack_summary(score_lira[:n_m], score_lira[n_m:], delta=delta, family=family),
        }
    accountant = run.summary.get("worst_case_epsilon") if run.config.privacy.enabled else None
    return {
        "members": n_m,
        "non_members": n_n,
        "member_set": "participants' training records, rebuilt from the config's partition",
        "non_member_set": "participants' local test splits, not the coordinator's holdout",
        "accountant_epsilon": accountant,
        "headline": headline(models, n_m, n_n, delta=delta, accountant=accountant),
        "models": models,
        "notes": notes,
    }


def headline(
    models: dict[str, Any],
    n_members: int,
    n_non_members: int,
    *,
    delta: float,
    accountant: float | None,
) -> dict[str, Any]:
    """The section's one number: the largest Bonferroni-corrected row bound, its power
    (the best a perfect attack could certify with these set sizes) and the verdict
    against the accountant's epsilon (:func:`securepool.audit.stats.power_verdict`)."""
    family = family_size(len(models), n_non_members)
    bounds = [
        r["epsilon_lower_bound_corrected"]
        for e in models.values()
        for attack in ("loss_threshold", "lira")
        for r in e[attack]["at_fpr"]
        if r["epsilon_lower_bound_corrected"] is not None
    ]
    bound = max(bounds) if bounds else None
    power = membership_power(n_members, n_non_members, FPRS, delta=delta, family=family)
    verdict, statement = power_verdict(bound, power, accountant)
    return {
        "epsilon_lower_bound": bound,
        "correction": "bonferroni",
        "family_size": family,
        "confidence": CONFIDENCE,
        "per_bound_confidence": bonferroni_confidence(family),
        "power": power,
        "accountant_epsilon": accountant,
        "verdict": verdict,
        "statement": statement,
    }
