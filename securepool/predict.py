"""``securepool predict POOL_DIR INPUT.{csv,npz}``: per-model predictions and the vote.

Input rows hold the *raw* features of the dataset the pool was trained on (for
breast_cancer the 30 measurements as scikit-learn gives them, for digits the 64 pixel
intensities 0..16); the pool's own preprocessing is applied. A CSV may start with one
header line; an NPZ holds one 2-D array (named ``x`` if there are several).
Output (stdout, CSV): ``row,<one column per model>,vote``.
"""

from __future__ import annotations

import csv
import io
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from crypto.errors import ConfigError


def read_input(path: Path, *, n_features: int) -> NDArray[np.float64]:
    """The rows of ``path`` as floats; ConfigError (one line, naming the file) otherwise."""
    if not path.is_file():
        raise ConfigError([f"input file not found: {path}"])
    suffix = path.suffix.lower()
    if suffix == ".npz":
        x = _read_npz(path)
    elif suffix == ".csv":
        x = _read_csv(path)
    else:
        raise ConfigError([f"{path}: input must be a .csv or .npz file"])
    if x.ndim != 2 or x.shape[0] == 0:
        raise ConfigError([f"{path}: expected a table of rows, got shape {x.shape}"])
    if x.shape[1] != n_features:
        raise ConfigError(
            [f"{path}: rows have {x.shape[1]} columns, the pool's models take {n_features}"]
        )
    if not np.all(np.isfinite(x)):
        raise ConfigError([f"{path}: holds NaN or infinite values"])
    return x


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


def _read_csv(path: Path) -> NDArray[np.float64]:
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError([f"{path}: not a text (UTF-8) CSV file"]) from None
    rows = [r for r in csv.reader(io.StringIO(text)) if r and any(c.strip() for c in r)]
    if rows and not _numeric(rows[0]):
        rows = rows[1:]  # a header line
    out: list[list[float]] = []
    for i, r in enumerate(rows, start=1):
        if not _numeric(r):
            raise ConfigError([f"{path}: data row {i} is not all numbers: {r[:5]}"])
        out.append([float(c) for c in r])
    widths = {len(r) for r in out}
    if len(widths) > 1:
        raise ConfigError([f"{path}: rows have different numbers of columns {sorted(widths)}"])
    return np.asarray(out, dtype=np.float64).reshape(len(out), -1)


def _numeric(row: list[str]) -> bool:
    try:
        [float(c) for c in row]
    except ValueError:
        return False
    return True


def predict_table(pool: Any, x: NDArray[np.float64]) -> str:
    """CSV text: row number, each model's predicted class, the ensemble vote."""
    per_model = pool.predict(x)
    vote = pool.vote(x)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["row", *per_model, "vote"])
    for i in range(x.shape[0]):
        w.writerow([i, *(int(p[i]) for p in per_model.values()), int(vote[i])])
    return buf.getvalue()
