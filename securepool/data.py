"""The run's data: scikit-learn's bundled datasets (offline) and their partitioning, or
the agencies' own tables (``dataset = "csv"``, read by :mod:`securepool.tables`).

Built-in: the coordinator may keep a held-out test set (S401 in ``holdout`` mode); the
rest is split across participants, IID or Dirichlet(alpha) non-IID by label. Tables:
each agency's file is its share, and the coordinator's test set is its own file
(``evaluation.holdout``). Each participant keeps a local train/test split of its share
(:func:`local_split`: the same for a split node reading its records file).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from numpy.typing import NDArray
from sklearn.datasets import load_breast_cancer, load_digits

from crypto.errors import ConfigError
from securepool.config import (
    DataSection,
    Dataset,
    EvaluationMode,
    Partition,
    RunConfig,
    agency_files,
    participant_ids,
)
from securepool.preprocessing import Preprocessing

if TYPE_CHECKING:
    from securepool.tables import TableSchema


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
    schema: TableSchema | None = None  # dataset = "csv": the agencies' columns and classes


def preprocessing_of(dataset: Dataset, *, n_features: int = 0) -> Preprocessing:
    """The fixed scaling rule agreed up front (it goes into the pool's manifest).

    ``csv``: none, written as the identity with divisor 1 for each of ``n_features``
    model inputs: the features are used as given, so the pool takes raw rows as they are."""
    if dataset is Dataset.CSV:
        return Preprocessing("identity", (1.0,) * n_features)
    if dataset is Dataset.DIGITS:
        return Preprocessing("identity", (16.0,) * 64)  # pixel intensities are 0..16
    raw = load_breast_cancer().data  # every feature is non-negative; log scale tames them
    return Preprocessing("log1p", tuple(float(m) for m in np.maximum(np.log1p(raw).max(0), 1e-12)))


def load_arrays(dataset: Dataset) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """A built-in dataset's features scaled by :func:`preprocessing_of`."""
    if not dataset.is_builtin:
        raise ConfigError([f"dataset = {dataset.value!r} is read from files, not built in"])
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


def local_split(
    x: NDArray[np.float32], y: NDArray[np.int64], *, fraction: float, seed: int
) -> LocalData:
    """One agency's records as its train split and its local test split (``fraction`` of
    them, at least one, and at least one left to train on), seeded by the run: a split
    node reading its records file and the in-process runtime reading the same file keep
    the same records apart."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x10CA1]))
    order = rng.permutation(x.shape[0])
    n_test = min(max(1, int(round(fraction * x.shape[0]))), max(1, x.shape[0] - 1))
    te, tr = order[:n_test], order[n_test:]
    return LocalData(
        torch.from_numpy(np.ascontiguousarray(x[tr], dtype=np.float32)),
        torch.from_numpy(np.ascontiguousarray(y[tr], dtype=np.int64)),
        torch.from_numpy(np.ascontiguousarray(x[te], dtype=np.float32)),
        torch.from_numpy(np.ascontiguousarray(y[te], dtype=np.int64)),
    )


def read_agencies(
    section: DataSection, *, holdout: str = ""
) -> tuple[TableSchema, dict[str, tuple[NDArray[np.float32], NDArray[np.int64]]]]:
    """Every agency's table under ``section.path`` (and the coordinator's ``holdout``
    file, under the key ``""``), checked against the schema; ConfigError listing every
    problem of every file at once."""
    from securepool.tables import read_tables

    files, problems = agency_files(Path(section.path))
    if problems:
        raise ConfigError(problems)
    return read_tables(
        files,
        label=section.label,
        features=section.features,
        categorical=section.categorical,
        classes=section.classes,
        min_records=section.min_records,
        holdout=Path(holdout) if holdout else None,
    )


def table_schema(section: DataSection) -> TableSchema:
    """The agencies' schema: as declared, else completed from the files under
    ``section.path`` (their headers and labels)."""
    from securepool.tables import declared_schema

    if (section.features and section.classes) or not section.path:
        return declared_schema(
            label=section.label,
            features=section.features,
            categorical=section.categorical,
            classes=section.classes,
        )
    return read_agencies(section)[0]


def numeric_inputs(section: DataSection, *, n_features: int) -> NDArray[np.bool_]:
    """Which model inputs the federated scaling standardises: every input of a built-in
    dataset, a csv's numeric features (not the one-hot columns of a categorical one)."""
    if section.dataset.is_builtin:
        return np.ones(n_features, dtype=bool)
    schema = table_schema(section)
    flags = [
        flag
        for name in schema.features
        for flag in (
            [True] if name not in schema.categorical else [False] * len(schema.categorical[name])
        )
    ]
    if len(flags) != n_features:
        raise ConfigError([f"the table's {len(flags)} inputs are not the model's {n_features}"])
    return np.asarray(flags, dtype=bool)


def data_shape(section: DataSection) -> tuple[int, int]:
    """(model inputs, classes): a built-in dataset's, or the agencies' tables'."""
    return section.declared_shape() or table_schema(section).shape


def table_holdout(cfg: RunConfig) -> tuple[int, int, tuple[torch.Tensor, torch.Tensor] | None]:
    """(model inputs, classes, the coordinator's holdout file's records or None in
    federated evaluation) of a csv run: what a split runtime's coordinator reads (its
    own file only, when the schema is declared)."""
    from securepool.tables import encode, read_raw

    schema = table_schema(cfg.data)
    n_features, n_classes = schema.shape
    if cfg.evaluation.mode is not EvaluationMode.HOLDOUT:
        return n_features, n_classes, None
    table, problems = read_raw(Path(cfg.evaluation.holdout))
    if table is not None:
        x, y, problems = encode(table, schema, min_records=1)
    if problems:
        raise ConfigError([f"evaluation.holdout: {p}" for p in problems])
    return n_features, n_classes, (torch.from_numpy(x), torch.from_numpy(y))


def table_federation(cfg: RunConfig) -> FederatedData:
    """The agencies' own tables as the run's participants (ids: the file names), with
    the coordinator's holdout file as its test set (empty in federated evaluation)."""
    holdout = cfg.evaluation.holdout if cfg.evaluation.mode is EvaluationMode.HOLDOUT else ""
    schema, tables = read_agencies(cfg.data, holdout=holdout)
    n_features, n_classes = schema.shape
    x_hold, y_hold = tables.pop("", (np.zeros((0, n_features), np.float32), np.zeros(0, np.int64)))
    return FederatedData(
        participants={
            pid: local_split(x, y, fraction=cfg.data.local_test_fraction, seed=cfg.run.seed)
            for pid, (x, y) in sorted(tables.items())
        },
        x_holdout=torch.from_numpy(x_hold),
        y_holdout=torch.from_numpy(y_hold),
        n_features=n_features,
        n_classes=n_classes,
        preprocessing=preprocessing_of(Dataset.CSV, n_features=n_features),
        schema=schema,
    )


def partition(section: DataSection, *, seed: int) -> FederatedData:
    """Split a built-in dataset; raise ConfigError if a participant gets too few records."""
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
    """The run's public split of a built-in dataset, or the agencies' tables under
    ``data.path`` (:func:`table_federation`), with the audit's canaries inserted in their
    hosts' training data (``[audit] canaries``): what every demo node and the in-process
    runtime take their records from."""
    from securepool.audit.canaries import insert_canaries

    if cfg.data.dataset is Dataset.CSV:
        data = table_federation(cfg)
    else:
        data = partition(cfg.data, seed=cfg.run.seed)
    return insert_canaries(data, cfg.audit.canaries, seed=cfg.run.seed)
