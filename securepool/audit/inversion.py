"""Gradient inversion audit: how much of its training records an update gives away.

The attacker is the coordinator. In plaintext mode it sees every participant's update;
in mask and HE modes only the weighted mean of its model group's updates. It knows the
global model it sent and the training settings (they are in the run's config). From
what it sees it reconstructs training inputs:

* **closed form** (models whose first layer is a ``Linear`` with bias: logreg, and the
  MLP's first layer). For one record and one SGD step, the update of weight row ``j``
  is ``-lr * d_j * x`` and that of bias ``j`` is ``-lr * d_j``, so ``dW[j] / db[j] = x``
  exactly. For several records every row gives a mixture of them, weighted by the
  records' ``d_j``; a row dominated by one record reveals that record. Every row with
  a non-zero bias update is a candidate.
* **optimisation** (DLG, Zhu et al. 2019, with the Inverting Gradients changes of
  Geiping et al. 2020: cosine distance between the dummy records' gradient and the
  observed update, a total-variation prior on images, Adam, pixels kept in [0, 1]) for
  the MLP and the CNN. The labels: for one record they are read off the last bias
  update (iDLG: the only positive entry of ``-lr * (p - onehot(y))``); for several
  records the attacker is *given* the true labels, which only makes it stronger (label
  counts are recoverable in practice, Wainakh et al. 2022), so a failure is not due to
  wrong labels.

Each is run on four views: one participant's update after one SGD step on one record;
the aggregate of a group of such updates (one record each: the mean of their
gradients); one participant's update after the run's real local training (epochs,
batch size, learning rate, momentum, and DP-SGD if the run uses it, through the trainer
a participant node runs, :func:`node_trainer`); and its group's aggregate of real
updates. A true record is *identified* when the nearest record of the whole dataset to
some reconstruction is that record.
MSE (features in [0, 1]) and SSIM (8x8 digits only) are those of each true record's
best reconstruction; ``mse_of_mean_image`` is the MSE of the dataset's mean record, the
score of an attacker who learnt nothing.

Verdicts (:func:`findings`) come from a stated test, not a rule of thumb: the *chance
rate* of a trial is K/N, the share of the N dataset records that are the nearest record
of some reconstruction; if the reconstructions said nothing about which records were in
the update, each true record would be one of those K with that probability. The
identified count is tested against it with a one-sided exact binomial test
(:func:`securepool.audit.stats.binomial_greater`; over several trials, against the mean
chance rate weighted by the trials' record counts). The exact null, drawing the true
records without replacement, is hypergeometric and has a thinner upper tail, so the
binomial p-value is conservative. A case "leaks" when Holm's procedure over all the
cases of the audit rejects at family-wise level :data:`ALPHA`. For image data each case
keeps a few true records beside their best reconstruction (``examples``) for the report.

Security: this measures leakage of *updates*; it shows what secure aggregation hides
(individual updates) and what it does not (the aggregate of a small group). It does
not model a malicious coordinator that sends crafted models (e.g. Fowl et al. 2022).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from securepool.audit.stats import binomial_greater, holm
from securepool.config import Dataset, ModelSpec, RunConfig
from securepool.data import FederatedData
from securepool.models import Architecture, build_spec_model, flatten, load_flat
from securepool.training import LocalTrainer, PlainTrainer, TrainSettings


@dataclass(frozen=True)
class Budget:
    """How hard the attacker tries (``quick`` for the audit, full for the benchmark)."""

    trials: int
    dlg_trials: int
    group_sizes: tuple[int, ...]
    dlg_iterations: int
    dlg_restarts: int
    real_training_cnn: bool


QUICK = Budget(
    trials=2,
    dlg_trials=1,
    group_sizes=(3,),
    dlg_iterations=150,
    dlg_restarts=1,
    real_training_cnn=False,
)
FULL = Budget(
    trials=5,
    dlg_trials=2,
    group_sizes=(2, 3, 5, 8, 16),
    dlg_iterations=300,
    dlg_restarts=1,
    real_training_cnn=True,
)

TV_WEIGHT = 1e-2
ALPHA = 0.05  # family-wise level of the "leaks" verdicts (Holm over the cases)
EXAMPLES = 6  # true records shown beside their reconstruction, per case (image data)
TEST = (
    "one-sided exact binomial test of the identified count against the chance rate K/N "
    "(K: dataset records that are the nearest record of some reconstruction, N: dataset "
    f"size), Holm-corrected over the cases at family-wise level {ALPHA}"
)


# --- what the coordinator sees ---------------------------------------------------------


def node_trainer(config: RunConfig, data: FederatedData) -> LocalTrainer:
    """The local training every participant node runs (``ParticipantNode._local_update``
    in :mod:`securepool.node.app`), with no privacy budget spent yet: plain SGD, or with
    ``[privacy]`` each participant's own :class:`~securepool.privacy.trainer.ParticipantDP`
    (built as the node builds it: the public schedule, the run's planned rounds), reached
    through :class:`~securepool.privacy.trainer.DPTrainer`, which only routes by id."""
    if not config.privacy.enabled:
        return PlainTrainer()
    from securepool.privacy.trainer import DPTrainer

    return DPTrainer(
        config.privacy,
        participants=list(data.participants),
        planned_rounds=config.convergence.max_iterations,
    )


def one_step_update(model: nn.Module, x: torch.Tensor, y: torch.Tensor, lr: float) -> np.ndarray:
    """The update of one plain SGD step on the records ``x``: ``-lr * grad(mean loss)``."""
    params = list(model.parameters())
    grads = torch.autograd.grad(F.cross_entropy(model(x), y), params)
    return (-lr * torch.cat([g.reshape(-1) for g in grads])).numpy()


def real_update(
    model: nn.Module,
    start: np.ndarray,
    trainer: LocalTrainer,
    *,
    pid: str,
    x: torch.Tensor,
    y: torch.Tensor,
    settings: TrainSettings,
    seed: int,
) -> np.ndarray | None:
    """The participant's update after the run's local training (None: it did not train)."""
    from securepool.models import layout_of

    layout = layout_of(model)
    load_flat(model, start, layout)
    report = trainer.train(participant=pid, model=model, x=x, y=y, settings=settings, seed=seed)
    update = None if report.skipped is not None else flatten(model) - start
    load_flat(model, start, layout)
    return update


def group_mean(updates: list[np.ndarray], weights: list[float]) -> np.ndarray:
    """What mask/HE mode reveals: the weighted sum over the weight (the FedAvg mean)."""
    total = np.zeros_like(updates[0], dtype=np.float64)
    for u, w in zip(updates, weights, strict=True):
        total += w * u
    return (total / sum(weights)).astype(np.float32)


# --- the attacks -----------------------------------------------------------------------


def closed_form(update: np.ndarray, model: nn.Module) -> np.ndarray:
    """Candidates ``dW[j] / db[j]`` of the first Linear layer, for every row with db != 0."""
    first = next(m for m in model.modules() if isinstance(m, nn.Linear))
    out_f, in_f = first.weight.shape
    w = update[: out_f * in_f].reshape(out_f, in_f)
    b = update[out_f * in_f : out_f * in_f + out_f]
    keep = np.abs(b) > 1e-9 * max(float(np.abs(b).max()), 1e-30)
    out: np.ndarray = (w[keep] / b[keep, None]).astype(np.float32)
    return out


def infer_label(update: np.ndarray, n_classes: int) -> int:
    """iDLG: one record's label is the only positive entry of the last bias update."""
    return int(np.argmax(update[-n_classes:]))


def _tv(x: torch.Tensor, side: int) -> torch.Tensor:
    img = x.view(-1, side, side)
    return (img[:, 1:, :] - img[:, :-1, :]).abs().mean() + (
        img[:, :, 1:] - img[:, :, :-1]
    ).abs().mean()


def dlg(
    model: nn.Module,
    update: np.ndarray,
    labels: torch.Tensor,
    *,
    n_features: int,
    image_side: int | None,
    iterations: int,
    restarts: int,
    seed: int,
) -> torch.Tensor:
    """Inverting Gradients: records whose gradient points along ``-update``.

    Returns the restart with the lowest final loss; shape ``(len(labels), n_features)``.
    """
    params = [p for p in model.parameters()]
    target = torch.from_numpy(-update.astype(np.float32))
    best, best_loss = None, float("inf")
    for r in range(restarts):
        gen = torch.Generator().manual_seed(seed * 1000 + r)
        x = torch.rand((len(labels), n_features), generator=gen).requires_grad_(True)
        opt = torch.optim.Adam([x], lr=0.1)
        sched = torch.optim.lr_scheduler.MultiStepLR(
            opt, milestones=[int(iterations * f) for f in (0.375, 0.625, 0.875)], gamma=0.1
        )
        loss_value = float("inf")
        for _ in range(iterations):
            opt.zero_grad()
            grads = torch.autograd.grad(
                F.cross_entropy(model(x), labels), params, create_graph=True
            )
            g = torch.cat([gr.reshape(-1) for gr in grads])
            loss = 1.0 - F.cosine_similarity(g, target, dim=0)
            if image_side is not None:
                loss = loss + TV_WEIGHT * _tv(x, image_side)
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
            sched.step()
            with torch.no_grad():
                x.clamp_(0.0, 1.0)
            loss_value = float(loss.detach())
        if best is None or loss_value < best_loss:
            best, best_loss = x.detach().clone(), loss_value
    if best is None:
        raise ValueError("restarts must be >= 1")
    return best


# --- scoring ---------------------------------------------------------------------------


def ssim(a: np.ndarray, b: np.ndarray, side: int) -> float:
    """SSIM of two images in [0, 1] with a 3x3 uniform window (8x8 images are tiny)."""
    from scipy.ndimage import uniform_filter

    x, y = a.reshape(side, side).astype(np.float64), b.reshape(side, side).astype(np.float64)
    c1, c2 = 0.01**2, 0.03**2
    mx, my = uniform_filter(x, 3), uniform_filter(y, 3)
    sxx = uniform_filter(x * x, 3) - mx * mx
    syy = uniform_filter(y * y, 3) - my * my
    sxy = uniform_filter(x * y, 3) - mx * my
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))
    return float(s.mean())


def score(
    recon: np.ndarray,
    truth: np.ndarray,
    dataset: np.ndarray,
    truth_idx: np.ndarray,
    side: int | None,
) -> dict[str, Any]:
    """Identified records, and each true record's best reconstruction's MSE and SSIM.

    ``by_chance`` scores the same reconstructions against a decoy set: as many records
    of the dataset, drawn at random from those not in the update (with replacement
    when there are fewer of those than true records). It is how many an
    attacker would "identify" in a set it knows nothing about (many reconstructions of a
    large update land near some record of any large set).
    """
    if len(recon) == 0:
        return {
            "identified": 0,
            "by_chance": 0,
            "chance_rate": 0.0,
            "mse": None,
            "ssim": None,
            "examples": [],
        }
    d2 = ((recon[:, None, :] - dataset[None, :, :]) ** 2).sum(-1)
    nearest = set(np.argmin(d2, axis=1).tolist())
    hit = [int(i) in nearest for i in truth_idx]
    identified = int(sum(hit))
    others = np.setdiff1d(np.arange(len(dataset)), truth_idx)
    # an update holding most of a small dataset leaves fewer outsiders than true records:
    # then the decoys are drawn with replacement (same expected count, same set size)
    decoy = (
        np.random.default_rng(len(truth_idx)).choice(
            others, size=len(truth_idx), replace=len(others) < len(truth_idx)
        )
        if len(others)
        else others
    )
    by_chance = int(sum(int(i) in nearest for i in decoy))
    mse = ((truth[:, None, :] - recon[None, :, :]) ** 2).mean(-1)
    best = np.argmin(mse, axis=1)
    out: dict[str, Any] = {
        "identified": identified,
        "by_chance": by_chance,
        # the chance that a record, picked at random from the dataset, is hit
        "chance_rate": len(nearest) / len(dataset),
        "mse": float(np.mean(mse[np.arange(len(truth)), best])),
        "ssim": None,
        # a few true records and their best reconstruction, for the report's pictures
        "examples": [
            (truth[i], recon[best[i]], bool(hit[i])) for i in range(min(EXAMPLES, len(truth)))
        ],
    }
    if side is not None:
        out["ssim"] = float(
            np.mean([ssim(truth[i], recon[best[i]], side) for i in range(len(truth))])
        )
    return out


# --- the audit -------------------------------------------------------------------------


@dataclass
class _Audit:
    """The audit's fixed inputs, and the cases measured so far."""

    config: RunConfig
    data: FederatedData
    budget: Budget
    side: int | None
    dataset: np.ndarray  # every record: each participant's train then test, then holdout
    offsets: dict[str, int]  # where each participant's records start in ``dataset``
    cases: list[dict[str, Any]]

    @classmethod
    def of(cls, config: RunConfig, data: FederatedData, budget: Budget) -> _Audit:
        side = int(round(data.n_features**0.5)) if config.data.dataset is Dataset.DIGITS else None
        parts, offsets, pos = [], {}, 0
        for pid, d in data.participants.items():
            offsets[pid] = pos
            parts += [d.x_train.numpy(), d.x_test.numpy()]
            pos += len(d.x_train) + len(d.x_test)
        dataset = np.concatenate([*parts, data.x_holdout.numpy()])
        return cls(config, data, budget, side, dataset, offsets, [])

    def attack(
        self, method: str, model: nn.Module, update: np.ndarray, labels: torch.Tensor, seed: int
    ) -> np.ndarray:
        if method == "closed_form":
            return closed_form(update, model)
        return dlg(
            model,
            update,
            labels,
            n_features=self.data.n_features,
            image_side=self.side,
            iterations=self.budget.dlg_iterations,
            restarts=self.budget.dlg_restarts,
            seed=seed,
        ).numpy()

    def add(
        self,
        spec: ModelSpec,
        method: str,
        *,
        participants: int,
        training: str,
        results: list[dict[str, Any]],
        truths: list[np.ndarray],
        t0: float,
        extra: dict[str, Any] | None = None,
    ) -> None:
        n_true = sum(len(t) for t in truths)
        mses = [r["mse"] for r in results if r["mse"] is not None]
        ssims = [r["ssim"] for r in results if r["ssim"] is not None]
        mean_image = self.dataset.mean(axis=0)
        found = int(sum(r["identified"] for r in results))
        # chance rates weighted by each trial's true records: the expected count by chance
        expected = float(
            sum(r["chance_rate"] * len(t) for r, t in zip(results, truths, strict=True))
        )
        examples = [e for r in results for e in r["examples"]][:EXAMPLES]
        self.cases.append(
            {
                "model": spec.id,
                "arch": spec.arch.value,
                "method": method,
                "view": (
                    "one participant's update"
                    if participants == 1
                    else f"aggregate of {participants} participants"
                ),
                "training": training,
                "participants_in_update": participants,
                "records_in_update": int(n_true / max(len(truths), 1)),
                "trials": len(results),
                "identified": found,
                "true_records": n_true,
                "identified_rate": found / max(n_true, 1),
                "identified_by_chance": int(sum(r["by_chance"] for r in results)),
                "chance_rate": expected / max(n_true, 1),
                "expected_by_chance": expected,
                "p_value": binomial_greater(found, n_true, expected / max(n_true, 1)),
                "mse": float(np.mean(mses)) if mses else None,
                "ssim": float(np.mean(ssims)) if ssims else None,
                "mse_of_mean_image": float(
                    np.mean([((t - mean_image) ** 2).mean() for t in truths]) if truths else 0.0
                ),
                "seconds": round(time.perf_counter() - t0, 3),
                **(extra or {}),
                **(
                    {
                        "examples": {
                            "image_side": self.side,
                            "true": [np.round(e[0], 3).tolist() for e in examples],
                            "rebuilt": [
                                np.round(np.clip(e[1], 0.0, 1.0), 3).tolist() for e in examples
                            ],
                            "identified": [e[2] for e in examples],
                        }
                    }
                    if self.side is not None
                    else {}
                ),
            }
        )

    def one_step(self, spec: ModelSpec, model: nn.Module, methods: list[str], m: int) -> None:
        """m participants, one record each, one SGD step; the coordinator sees their mean."""
        pids = sorted(self.data.participants)
        lr = self.config.training.lr
        for method in methods:
            t0 = time.perf_counter()
            results, truths, label_ok = [], [], 0
            trials = self.budget.dlg_trials if method == "dlg" else self.budget.trials
            for t in range(trials):
                members = [pids[(t * m + k) % len(pids)] for k in range(m)]
                rec = t % min(self.data.participants[p].n_train for p in members)
                xs = torch.stack([self.data.participants[p].x_train[rec] for p in members])
                ys = torch.stack([self.data.participants[p].y_train[rec] for p in members])
                update = one_step_update(model, xs, ys, lr)
                labels = ys
                if m == 1:
                    labels = torch.tensor([infer_label(update, self.data.n_classes)])
                    label_ok += int(int(labels[0]) == int(ys[0]))
                recon = self.attack(method, model, update, labels, seed=t)
                idx = np.array([self.offsets[p] + rec for p in members])
                results.append(score(recon, xs.numpy(), self.dataset, idx, self.side))
                truths.append(xs.numpy())
            extra = {"labels_inferred_correctly": label_ok} if m == 1 else None
            self.add(
                spec,
                method,
                participants=m,
                training="one SGD step on one record each",
                results=results,
                truths=truths,
                t0=t0,
                extra=extra,
            )

    def real_training(
        self, spec: ModelSpec, model: nn.Module, methods: list[str], parts: int
    ) -> None:
        """The nodes' own local training by ``parts`` participants, weighted mean."""
        from securepool.node.app import training_seed

        pids = sorted(self.data.participants)
        settings = self.config.training.settings()
        dp = "DP-SGD" if self.config.privacy.enabled else "no DP"
        training = (
            f"local training: {settings.epochs} epoch(s), batch {settings.batch_size}, "
            f"lr {settings.lr}, momentum {settings.momentum}, {dp}"
        )
        start = flatten(model)
        for method in methods:
            trainer = node_trainer(self.config, self.data)  # no budget spent yet
            t0 = time.perf_counter()
            results, truths = [], []
            # DLG over a whole local dataset (60-400 unknown records) is the costly case
            trials = 1 if method == "dlg" else self.budget.trials
            for t in range(trials):
                members = [pids[(t * parts + k) % len(pids)] for k in range(parts)]
                ups, ws = [], []
                for k, p in enumerate(members):
                    d = self.data.participants[p]
                    u = real_update(
                        model,
                        start,
                        trainer,
                        pid=p,
                        x=d.x_train,
                        y=d.y_train,
                        settings=settings,
                        # the seed the k-th member of a group trains with in iteration t + 1
                        seed=training_seed(self.config.run.seed, t + 1, k),
                    )
                    if u is not None:
                        ups.append(u)
                        ws.append(float(d.n_train))
                if not ups:
                    continue
                xs = torch.cat([self.data.participants[p].x_train for p in members])
                ys = torch.cat([self.data.participants[p].y_train for p in members])
                recon = self.attack(method, model, group_mean(ups, ws), ys, seed=t)
                idx = np.concatenate(
                    [
                        self.offsets[p] + np.arange(self.data.participants[p].n_train)
                        for p in members
                    ]
                )
                results.append(score(recon, xs.numpy(), self.dataset, idx, self.side))
                truths.append(xs.numpy())
            self.add(
                spec,
                method,
                participants=parts,
                training=training,
                results=results,
                truths=truths,
                t0=t0,
            )


def inversion_audit(
    *, config: RunConfig, data: FederatedData, quick: bool = False
) -> dict[str, Any]:
    """Reconstruct training records from updates and aggregates of the run's pool models.

    ``data`` is the run's federated data (rebuilt deterministically from the config).
    Returns a JSON-serialisable report: one entry per (model, method, view, training)
    with the trials, records identified (and by chance), the test's p-value and verdict,
    MSE and SSIM, and findings in plain words read off those numbers (:func:`findings`).
    ``quick`` is the audit's budget (<= 30 s on 2 cores for the demo); the full budget is
    ``securepool bench inversion``.

    Security: the attacker is the coordinator with the run's global model and settings;
    see the module docstring for what it is given (labels for several records).
    """
    budget = QUICK if quick else FULL
    started = time.perf_counter()
    audit = _Audit.of(config, data, budget)
    n = len(data.participants)
    for spec in config.pool.models:
        model = build_spec_model(spec, n_features=data.n_features, n_classes=data.n_classes)
        methods = ["closed_form"] if spec.arch in (Architecture.LOGREG, Architecture.MLP) else []
        if spec.arch is not Architecture.LOGREG:
            methods.append("dlg")
        for m in (1, *budget.group_sizes):
            if m <= n:
                audit.one_step(spec, model, methods, m)
        if spec.arch is not Architecture.CNN or budget.real_training_cnn:
            for parts in (1, config.assignment.min_group_size):
                audit.real_training(spec, model, methods, parts)
    return {
        "quick": quick,
        "dataset": config.data.dataset.value,
        "attacker": (
            "the coordinator: sees each update in plaintext mode, only the group's weighted "
            "mean in mask/HE mode; knows the global model and the training settings; is "
            "given the true labels when an update holds several records"
        ),
        "identified_means": (
            "the nearest record of the whole dataset to some reconstruction is a true one"
        ),
        "test": TEST,
        "alpha": ALPHA,
        "findings": findings(audit.cases),
        "cases": audit.cases,
        "seconds": round(time.perf_counter() - started, 3),
    }


def verdicts(cases: list[dict[str, Any]], *, alpha: float = ALPHA) -> list[str]:
    """Each case's verdict (also written into the case as ``verdict`` and
    ``significant``): Holm over every case's p-value at family-wise level ``alpha``;
    a significant case with at least half its records identified "leaks its records"."""
    reject = holm([c["p_value"] for c in cases], alpha=alpha)
    out = []
    for c, r in zip(cases, reject, strict=True):
        if r and c["identified_rate"] >= 0.5:
            verdict = "leaks its records"
        elif r:
            verdict = "leaks some records, above chance"
        else:
            verdict = "inversion fails: not above chance"
        c["significant"], c["verdict"] = r, verdict
        out.append(verdict)
    return out


def findings(cases: list[dict[str, Any]], *, alpha: float = ALPHA) -> list[str]:
    """Plain-language statements, each read off the measured cases and the test."""
    out = []
    for c, verdict in zip(cases, verdicts(cases, alpha=alpha), strict=True):
        out.append(
            f"{c['model']} ({c['method']}), {c['view']}, {c['training']}: "
            f"{c['identified']}/{c['true_records']} records identified, "
            f"{c['expected_by_chance']:.3g} expected by chance (p = {c['p_value']:.2g}; "
            f"{verdict})" + (f", SSIM {c['ssim']:.2f}" if c["ssim"] is not None else "")
        )
    return out
