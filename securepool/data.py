"""Datasets that work offline (scikit-learn's bundled ones) and their partitioning.

The coordinator may keep a held-out test set (S401 in ``holdout`` mode); the rest is
split across participants, IID or Dirichlet(alpha) non-IID by label, and each
participant keeps a local train/test split of its own share.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import NDArray
from sklearn.datasets import load_breast_cancer, load_digits

from crypto.errors import ConfigError
from securepool.config import DataSection, Dataset, Partition, RunConfig, participant_ids
from securepool.preprocessing import Preprocessing


@dataclass(frozen=True)
class LocalData:
    """One participant's records: a train split and a local test split."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor

    @property
    def n_train(self) -> int:
        return int(self.x_train.shape[0])


@dataclass(frozen=True)
class FederatedData:
    participants: dict[str, LocalData]
    x_holdout: torch.Tensor
    y_holdout: torch.Tensor
    n_features: int
    n_classes: int
    preprocessing: Preprocessing | None = None


def preprocessing_of(dataset: Dataset) -> Preprocessing:
    """The fixed scaling rule agreed up front (it goes into the pool's manifest)."""
    if dataset is Dataset.DIGITS:
        return Preprocessing("identity", (16.0,) * 64)  # pixel intensities are 0..16
    raw = load_breast_cancer().data  # every feature is non-negative; log scale tames them
    return Preprocessing("log1p", tuple(float(m) for m in np.maximum(np.log1p(raw).max(0), 1e-12)))


def load_arrays(dataset: Dataset) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """Features scaled by :func:`preprocessing_of`."""
    bunch = load_digits() if dataset is Dataset.DIGITS else load_breast_cancer()
    x = preprocessing_of(dataset).apply(bunch.data)
    return x, bunch.target.astype(np.int64)


def _dirichlet_split(
    y: NDArray[np.int64], n: int, alpha: float, rng: np.random.Generator
) -> list[NDArray[np.int64]]:
    parts: list[list[int]] = [[] for _ in range(n)]
    for label in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == label))
        props = rng.dirichlet(np.full(n, alpha))
        cuts = (np.cumsum(props)[:-1] * len(idx)).astype(int)
        for p, chunk in enumerate(np.split(idx, cuts)):
            parts[p].extend(chunk.tolist())
    return [np.array(sorted(p), dtype=np.int64) for p in parts]


def split_hint(section: DataSection, *, records: int) -> str:
    """What would give every participant ``min_records`` of ``records`` (only true advice:
    alpha only shapes a Dirichlet split, and min_records cannot go below its minimum 2)."""
    most = records // section.min_records
    fixes = [f"at most {most} participants" if most >= 3 else "a larger dataset"]
    if section.partition is Partition.DIRICHLET:
        fixes = [
            "fewer participants",
            f"a larger alpha than {section.alpha:g} (more even shares)",
        ]
    if section.min_records > 2:
        fixes.append(f"a smaller min_records (at least 2, now {section.min_records})")
    return "use " + (", ".join(fixes[:-1]) + " or " + fixes[-1] if len(fixes) > 1 else fixes[0])


def partition(section: DataSection, *, seed: int) -> FederatedData:
    """Split the dataset; raise ConfigError if a participant gets too few records."""
    x, y = load_arrays(section.dataset)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xDA7A]))
    order = rng.permutation(len(y))
    n_hold = int(round(section.holdout_fraction * len(y)))
    hold, rest = order[:n_hold], order[n_hold:]
    n = section.participants
    if section.partition is Partition.IID:
        shares = [np.sort(s) for s in np.array_split(rng.permutation(rest), n)]
    else:
        local = _dirichlet_split(y[rest], n, section.alpha, rng)
        shares = [rest[s] for s in local]
    ids = participant_ids(n)
    small = [
        f"{pid} has {len(s)} records"
        for pid, s in zip(ids, shares, strict=True)
        if len(s) < section.min_records
    ]
    if small:
        raise ConfigError(
            [
                f"data: {len(small)} participant(s) below min_records={section.min_records} "
                f"({'; '.join(small[:5])}{'; ...' if len(small) > 5 else ''}); "
                + split_hint(section, records=len(rest))
            ]
        )
    out: dict[str, LocalData] = {}
    for pid, share in zip(ids, shares, strict=True):
        share = rng.permutation(share)
        n_test = max(1, int(round(section.local_test_fraction * len(share))))
        te, tr = share[:n_test], share[n_test:]
        out[pid] = LocalData(
            torch.from_numpy(x[tr]),
            torch.from_numpy(y[tr]),
            torch.from_numpy(x[te]),
            torch.from_numpy(y[te]),
        )
    return FederatedData(
        participants=out,
        x_holdout=torch.from_numpy(x[hold]),
        y_holdout=torch.from_numpy(y[hold]),
        n_features=x.shape[1],
        n_classes=int(y.max()) + 1,
        preprocessing=preprocessing_of(section.dataset),
    )


def federation(cfg: RunConfig) -> FederatedData:
    """The run's public split of a built-in dataset, with the audit's canaries inserted
    in their hosts' training data (``[audit] canaries``): what every demo node and the
    in-process runtime take their records from."""
    from securepool.audit.canaries import insert_canaries

    data = partition(cfg.data, seed=cfg.run.seed)
    return insert_canaries(data, cfg.audit.canaries, seed=cfg.run.seed)
