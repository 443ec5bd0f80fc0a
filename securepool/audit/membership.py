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

AUC, TPR at 1% and 0.1% FPR with 95% Clopper–Pearson intervals, whether the non-member
set can resolve the rate at all, and the epsilon lower bound those rates imply
(:func:`securepool.audit.stats.epsilon_from_rates`). The threshold is picked on the
same non-members the FPR is measured on, and members are not drawn independently at
random as in the DP game, so the bound is an empirical indication; the canary audit
is the one with a proof behind it.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from securepool.audit.inputs import AuditInputs
from securepool.audit.stats import auc, roc, tpr_at_fpr
from securepool.audit.targets import (
    AuditData,
    auditor_data,
    fresh_model,
    logit_confidence,
    logits,
    losses,
    released_model,
)
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


def _attack_summary(
    members: NDArray[np.float64], non_members: NDArray[np.float64], *, delta: float
) -> dict[str, Any]:
    fpr, tpr = roc(members, non_members)
    keep = np.unique(np.linspace(0, len(fpr) - 1, min(len(fpr), 400)).astype(int))
    return {
        "auc": auc(members, non_members),
        "at_fpr": [tpr_at_fpr(members, non_members, a, delta=delta).to_json() for a in FPRS],
        "roc": {"fpr": fpr[keep].tolist(), "tpr": tpr[keep].tolist()},
    }


def _shadow_stats(
    run: AuditInputs,
    model_id: str,
    ad: AuditData,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    n_shadows: int,
    epochs: int,
    tick: Callable[[], None],
) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """Confidence of every record under every shadow, and which shadows held it."""
    t = run.config.training
    settings = TrainSettings(epochs=epochs, batch_size=t.batch_size, lr=t.lr, momentum=t.momentum)
    rng = np.random.default_rng(np.random.SeedSequence([run.config.run.seed, 0x11AA, n_shadows]))
    n = len(y)
    conf = np.empty((n_shadows, n))
    inside = np.zeros((n_shadows, n), dtype=bool)
    # each record IN exactly half the shadows (balanced), in a random pattern
    for i in range(n):
        inside[rng.permutation(n_shadows)[: n_shadows // 2], i] = True
    yn = y.numpy()
    for s in range(n_shadows):
        model = fresh_model(run, model_id, ad.data, seed=int(rng.integers(2**31)))
        idx = torch.from_numpy(np.flatnonzero(inside[s]))
        PlainTrainer().train(
            participant=f"shadow{s}",
            model=model,
            x=x[idx],
            y=y[idx],
            settings=settings,
            seed=int(rng.integers(2**31)),
        )
        conf[s] = logit_confidence(logits(model, x), yn)
        tick()
    return conf, inside


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
    run: AuditInputs, *, quick: bool, tick: Callable[[], None] = lambda: None
) -> dict[str, Any]:
    """The membership section of audit.json, one entry per released model."""
    ad = auditor_data(run)
    delta = run.config.privacy.delta
    n_m, n_n = len(ad.y_members), len(ad.y_non_members)
    notes = []
    from securepool.audit.stats import resolvable

    for a in FPRS:
        if not resolvable(n_n, a):
            notes.append(
                f"{n_n} non-members cannot resolve an FPR of {a:g}: with no false positive "
                f"the 95% upper bound is {1 - 0.05 ** (1 / n_n):.4f}; about {int(3 / a)} "
                "non-members are needed. That row reports the TPR but no epsilon bound."
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
    models: dict[str, Any] = {}
    for mid in sorted(run.pool):
        target = released_model(run, mid, ad.data)
        z = logits(target, x)
        score_loss = -losses(z, yn)
        epochs = min(
            run.config.training.epochs * participations(run, mid),
            MAX_SHADOW_EPOCHS,
        )
        conf, inside = _shadow_stats(
            run, mid, ad, x, y, n_shadows=n_shadows, epochs=epochs, tick=tick
        )
        score_lira = lira_scores(logit_confidence(z, yn), conf, inside)
        models[mid] = {
            "shadow_models": n_shadows,
            "shadow_epochs": epochs,
            "loss_threshold": _attack_summary(score_loss[:n_m], score_loss[n_m:], delta=delta),
            "lira": _attack_summary(score_lira[:n_m], score_lira[n_m:], delta=delta),
        }
    return {
        "members": n_m,
        "non_members": n_n,
        "member_set": "participants' training records (rebuilt from the config's partition)",
        "non_member_set": "participants' local test splits (not the coordinator's holdout)",
        "accountant_epsilon": run.summary.get("worst_case_epsilon")
        if run.config.privacy.enabled
        else None,
        "models": models,
        "notes": notes,
    }
