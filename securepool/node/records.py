"""A node's records: from its own file (CSV or NPZ) or, for demos, a built-in partition.

``dataset = "csv"``: the file is a table with a header row, read by name by
:mod:`securepool.tables` (the reader the in-process runtime uses for the same file:
``schema`` given). Built-in datasets' record files:

* ``.npz``: arrays ``x`` (n x features, float) and ``y`` (n, integer labels);
* ``.csv``: one record per line, comma-separated numbers, the label in the last column;
  an optional first line of column names is skipped.

Every problem found is reported at once as a :class:`~crypto.errors.ConfigError`
naming the file: wrong shape, non-finite features, a label outside ``0..n_classes-1``,
a feature count the run's models do not take, too few records.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from crypto.errors import ConfigError
from securepool.config import RunConfig
from securepool.data import LocalData, federation, local_split

if TYPE_CHECKING:
    from securepool.tables import TableSchema


def _read_npz(path: Path) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in ("x", "y") if k not in z.files]
            if missing:
                raise ConfigError([f"{path}: missing array(s) {', '.join(missing)} (need x, y)"])
            return np.asarray(z["x"], dtype=np.float64), np.asarray(z["y"], dtype=np.float64)
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise ConfigError([f"{path}: not a readable NPZ file: {exc}"]) from None


def _read_csv(path: Path) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    if lines and not _numeric(lines[0].split(",")[0]):
        lines = lines[1:]  # a header
    rows: list[list[float]] = []
    problems: list[str] = []
    for i, line in enumerate(lines, start=1):
        try:
            rows.append([float(v) for v in line.split(",")])
        except ValueError:
            problems.append(f"{path}: record {i} has a value that is not a number")
    widths = {len(r) for r in rows}
    if len(widths) > 1:
        problems.append(f"{path}: records have different numbers of columns {sorted(widths)}")
    if problems:
        raise ConfigError(problems[:10])
    if not rows or min(widths) < 2:
        raise ConfigError([f"{path}: needs records of at least one feature and a label"])
    table = np.array(rows, dtype=np.float64)
    return table[:, :-1], table[:, -1]


def _numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def load_records(
    path: Path,
    *,
    n_features: int,
    n_classes: int,
    local_test_fraction: float,
    min_records: int,
    seed: int,
    schema: TableSchema | None = None,
) -> LocalData:
    """Read and validate the node's record file; split off its local test set.

    ``schema`` (dataset = "csv"): the file is an agency table with these columns and
    classes, which must give ``n_features`` model inputs and ``n_classes`` classes."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError([f"records file {path} does not exist"])
    if schema is not None:
        return _table_records(
            path, schema, (n_features, n_classes), min_records, local_test_fraction, seed
        )
    suffix = path.suffix.lower()
    if suffix == ".npz":
        x, y = _read_npz(path)
    elif suffix == ".csv":
        x, y = _read_csv(path)
    else:
        raise ConfigError([f"{path}: records must be a .csv or .npz file, not {suffix!r}"])
    problems: list[str] = []
    if x.ndim != 2:
        problems.append(f"{path}: features must be a 2-d table, got {x.ndim} dimension(s)")
    if y.ndim != 1 or (x.ndim >= 1 and y.shape[0] != x.shape[0]):
        problems.append(f"{path}: labels must be one per record ({y.shape} vs {x.shape})")
    if problems:
        raise ConfigError(problems)
    if x.shape[1] != n_features:
        problems.append(
            f"{path}: {x.shape[1]} features per record, the run's models take {n_features}"
        )
    if not np.all(np.isfinite(x)):
        problems.append(f"{path}: features contain NaN or infinity")
    if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
        problems.append(f"{path}: labels must be integers")
    elif y.size and (y.min() < 0 or y.max() >= n_classes):
        problems.append(
            f"{path}: labels must be in 0..{n_classes - 1}, got {int(y.min())}..{int(y.max())}"
        )
    if x.shape[0] < min_records:
        problems.append(f"{path}: {x.shape[0]} records, below min_records={min_records}")
    if problems:
        raise ConfigError(problems)
    return local_split(
        x.astype(np.float32), y.astype(np.int64), fraction=local_test_fraction, seed=seed
    )


def _table_records(
    path: Path,
    schema: TableSchema,
    shape: tuple[int, int],
    min_records: int,
    fraction: float,
    seed: int,
) -> LocalData:
    from securepool.tables import encode, read_raw

    if schema.shape != shape:
        raise ConfigError(
            [f"{path}: the run's columns give {schema.shape} (inputs, classes), not {shape}"]
        )
    table, problems = read_raw(path)
    if table is None:
        raise ConfigError(problems)
    x, y, problems = encode(table, schema, min_records=min_records)
    if problems:
        raise ConfigError(problems)
    return local_split(x, y, fraction=fraction, seed=seed)


def builtin_partition(cfg: RunConfig, *, pid: str) -> LocalData:
    """DEMO ONLY: this node's share of the built-in dataset, by its partition id (or,
    dataset = "csv", its table under ``data.path``).

    Every demo node recomputes the whole public split (with the audit's canaries, in
    their hosts' data) and keeps its own share; a real agency loads its own file with
    :func:`load_records`.
    """
    data = federation(cfg)
    if pid not in data.participants:
        raise ConfigError([f"no partition {pid!r} in the built-in split"])
    return data.participants[pid]
