"""``securepool predict POOL_DIR INPUT.{csv,npz}``: per-model predictions and the vote.

Input rows hold the *raw* features of the dataset the pool was trained on (for
breast_cancer the 30 measurements as scikit-learn gives them, for digits the 64 pixel
intensities 0..16); the pool's own preprocessing is applied. A CSV may start with one
header line; an NPZ holds one 2-D array (named ``x`` if there are several). A pool of
agency tables (dataset = "csv") also reads a file like the agencies' own: a header
naming the feature columns, categories as their values (:func:`read_table_input`).
Output (stdout, or ``--output FILE``; CSV): ``row,<one column per model>,vote``, and with
``--proba`` each model's class probabilities and the pool's mean (:func:`predict_table`).
"""

from __future__ import annotations

import csv
import io
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from crypto.errors import ConfigError
from securepool.preprocessing import Preprocessing

if TYPE_CHECKING:
    from securepool.tables import TableSchema

#: problems listed per file before "... and N more"
_SHOWN = 10
_FLOAT32_MAX = float(np.finfo(np.float32).max)


def read_input(
    path: Path, *, n_features: int, preprocessing: Preprocessing | None = None
) -> NDArray[np.float64]:
    """The rows of ``path`` as floats; ConfigError (naming the file) otherwise.

    Refused, each cell named (CSV: line and column, with its header name; NPZ:
    ``x[row, column]``): a value that is not finite (``nan``, ``inf``, ``1e999``) or
    beyond float32 (``1e300``), and, given the pool's ``preprocessing``, a value it
    cannot take (negative under ``log1p``) or that would not fit the models' float32
    inputs once scaled.
    An empty file, or a header with no rows, is refused too.
    """
    if not path.is_file():
        raise ConfigError([f"input file not found: {path}"])
    suffix = path.suffix.lower()
    if suffix == ".npz":
        x = _read_npz(path)
        where = _npz_cell(path)
    elif suffix == ".csv":
        x, lines, header = _read_csv(path)
        where = _csv_cell(path, lines, header)
    else:
        raise ConfigError([f"{path}: input must be a .csv or .npz file"])
    return check_rows(
        x, n_features=n_features, preprocessing=preprocessing, source=str(path), where=where
    )


def read_table_input(
    path: Path, schema: TableSchema, *, preprocessing: Preprocessing
) -> NDArray[np.float64] | None:
    """A pool of agency tables (dataset = "csv"): the rows of ``path`` read as the
    agencies' files are, when its header names every feature column (categories as
    their values, one-hot encoded over the manifest's vocabulary; a label column is not
    read); None when it does not (then it is read as the model's inputs by
    :func:`read_input`). ConfigError naming file, line and column otherwise."""
    from securepool.tables import encode_features, read_raw

    if not path.is_file():
        raise ConfigError([f"input file not found: {path}"])
    table, problems = read_raw(path)
    if table is None or not all(f in table.header for f in schema.features):
        return None
    x, problems = encode_features(table, schema)
    if problems:
        raise ConfigError(problems[:_SHOWN])
    names = schema.columns
    return check_rows(
        x,
        n_features=len(names),
        preprocessing=preprocessing,
        source=str(path),
        where=lambda r, c: f"{path}, {table.unit} {table.rows[r][0]} ({names[c]})",
    )


def check_rows(
    x: NDArray[np.float64],
    *,
    n_features: int,
    preprocessing: Preprocessing | None,
    source: str,
    where: Callable[[int, int], str],
) -> NDArray[np.float64]:
    """The checks of :func:`read_input` on rows already read (``source`` names them,
    ``where(row, column)`` names a cell): ``securepool predict`` and ``Pool.predict``
    refuse the same values with the same words."""
    if x.ndim != 2 or x.shape[0] == 0:
        raise ConfigError([f"{source}: expected a table of rows, got shape {x.shape}"])
    if x.shape[1] != n_features:
        raise ConfigError(
            [f"{source}: rows have {x.shape[1]} columns, the pool's models take {n_features}"]
        )
    bad = ~np.isfinite(x)
    problems = [
        f"{where(r, c)}: {float(x[r, c])!r} is not a finite number (NaN or infinite)"
        for r, c in np.argwhere(bad)
    ]
    huge = ~bad & (np.abs(np.where(bad, 0.0, x)) > _FLOAT32_MAX)
    problems += [
        f"{where(r, c)}: {float(x[r, c])!r} is too large: beyond float32, the models' number type"
        for r, c in np.argwhere(huge)
    ]
    bad |= huge
    if preprocessing is not None:
        clean = np.where(bad, 0.0, x)
        if preprocessing.transform == "log1p":
            negative = clean < 0
            problems += [
                f"{where(r, c)}: {float(x[r, c])!r} is negative; the pool's log1p preprocessing "
                "takes non-negative raw features"
                for r, c in np.argwhere(negative)
            ]
            clean = np.where(negative, 0.0, clean)
        with np.errstate(all="ignore"):
            try:
                scaled = preprocessing.apply(clean)
            except ValueError as exc:
                raise ConfigError([f"{source}: {exc}"]) from None
        problems += [
            f"{where(r, c)}: {float(x[r, c])!r} is too large: once scaled by the pool's "
            "preprocessing it does not fit the models' float32 inputs"
            for r, c in np.argwhere(~np.isfinite(scaled) & ~bad)
        ]
    if problems:
        more = len(problems) - _SHOWN
        raise ConfigError(
            problems[:_SHOWN] + ([f"{source}: ... and {more} more such values"] if more > 0 else [])
        )
    return x


def _npz_cell(path: Path) -> Callable[[int, int], str]:
    return lambda r, c: f"{path}: x[{r}, {c}]"


def _csv_cell(path: Path, lines: list[int], header: list[str] | None) -> Callable[[int, int], str]:
    def where(r: int, c: int) -> str:
        name = f" ({header[c]})" if header is not None and c < len(header) else ""
        return f"{path}: line {lines[r]}, column {c + 1}{name}"

    return where


def _read_npz(path: Path) -> NDArray[np.float64]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            names = list(npz.files)
            if not names:
                raise ConfigError([f"{path}: the .npz holds no array"])
            name = "x" if "x" in names else names[0]
            if len(names) > 1 and "x" not in names:
                raise ConfigError([f"{path}: several arrays ({', '.join(names)}); name one 'x'"])
            return np.asarray(npz[name], dtype=np.float64)
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise ConfigError([f"{path}: not a readable .npz file ({exc})"]) from None


def _read_csv(path: Path) -> tuple[NDArray[np.float64], list[int], list[str] | None]:
    """The rows, the file line each came from, and the header (if there is one)."""
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ConfigError([f"{path}: not a text (UTF-8) CSV file"]) from None
    reader = csv.reader(io.StringIO(text))
    rows: list[tuple[int, list[str]]] = []
    try:
        for r in reader:
            if r and any(c.strip() for c in r):
                rows.append((reader.line_num, r))
    except csv.Error as exc:
        raise ConfigError([f"{path}: line {reader.line_num}: not valid CSV ({exc})"]) from None
    if not rows:
        raise ConfigError([f"{path}: empty: no rows to predict"])
    header = None
    if not _numeric(rows[0][1]):
        header = [c.strip() for c in rows[0][1]]
        rows = rows[1:]  # a header line
        if not rows:
            raise ConfigError([f"{path}: a header line and no data rows to predict"])
    out: list[list[float]] = []
    for line, r in rows:
        if not _numeric(r):
            raise ConfigError([f"{path}: line {line} is not all numbers: {r[:5]}"])
        out.append([float(c) for c in r])
    widths = {len(r) for r in out}
    if len(widths) > 1:
        raise ConfigError([f"{path}: rows have different numbers of columns {sorted(widths)}"])
    return np.asarray(out, dtype=np.float64), [line for line, _ in rows], header


def _numeric(row: list[str]) -> bool:
    try:
        [float(c) for c in row]
    except ValueError:
        return False
    return True


def predict_table(pool: Any, x: NDArray[np.float64], *, proba: bool = False) -> str:
    """CSV text: row number (0-based), each model's predicted class, the ensemble vote;
    with ``proba`` also ``<model>_p<class>`` per model and class and ``pool_p<class>``,
    the mean over the models (6 significant digits)."""
    probs = pool.probabilities(x)
    per_model = {m: p.argmax(axis=1) for m, p in probs.items()}
    vote = pool.vote(x)
    classes = range(int(pool.n_classes))
    mean = np.mean(np.stack(list(probs.values())), axis=0) if probs else None
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    head = ["row", *per_model, "vote"]
    if proba:
        head += [f"{m}_p{k}" for m in probs for k in classes] + [f"pool_p{k}" for k in classes]
    w.writerow(head)
    for i in range(x.shape[0]):
        row: list[object] = [i, *(int(p[i]) for p in per_model.values()), int(vote[i])]
        if proba and mean is not None:
            row += [f"{float(p[i, k]):.6g}" for p in probs.values() for k in classes]
            row += [f"{float(mean[i, k]):.6g}" for k in classes]
        w.writerow(row)
    return buf.getvalue()
