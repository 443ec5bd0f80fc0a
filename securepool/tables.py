"""Agency records from files: one table per agency, columns found by name.

``[data] dataset = "csv"`` reads tables with a header row: a CSV file (UTF-8, an
optional byte-order mark, quoted fields as the :mod:`csv` module reads them) or an NPZ
file whose arrays are the columns (``np.savez(f, alcohol=..., cultivar=...)``). The
:class:`TableSchema` says which column is the label, which are the features (in
order), which features are categorical (one-hot encoded over a declared vocabulary)
and the classes (agreed up front: declared, or the sorted union of every agency's
labels). The same reader serves the in-process runtime (:func:`securepool.data.
federation`), a split node's records file (:func:`securepool.node.records.
load_records`) and the coordinator's holdout file, so every runtime reads an agency's
file into the same numbers.

The numbers are the files' own; the scaling the models see is agreed afterwards
(``data.scaling``, :mod:`securepool.scaling_round`) and recorded in the pool's manifest.

Every problem of every file is collected before anything is returned, each naming the
file, the line (``record`` for NPZ) and the column; :func:`read_tables` raises them
together as one :class:`~crypto.errors.ConfigError`.
"""

from __future__ import annotations

import csv
import math
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from crypto.errors import ConfigError

#: the suffixes of an agency's table file
TABLE_SUFFIXES = (".csv", ".npz")
#: problems listed per file before the rest are counted
MAX_PROBLEMS_PER_FILE = 20


@dataclass(frozen=True)
class TableSchema:
    """The columns every agency's table agrees on, and the classes."""

    label: str
    features: tuple[str, ...]
    categorical: Mapping[str, tuple[str, ...]]
    classes: tuple[str, ...]

    @property
    def columns(self) -> tuple[str, ...]:
        """The model's input columns: a numeric feature as named, a categorical one as
        ``NAME=value`` per value of its vocabulary, in the order of ``features``."""
        out: list[str] = []
        for name in self.features:
            vocab = self.categorical.get(name)
            out += [name] if vocab is None else [f"{name}={v}" for v in vocab]
        return tuple(out)

    @property
    def shape(self) -> tuple[int, int]:
        """(model inputs, classes)."""
        return len(self.columns), len(self.classes)

    @classmethod
    def from_json(cls, obj: Any) -> TableSchema:
        """A manifest's ``table`` (ValueError when malformed)."""
        try:
            categorical = {str(k): tuple(map(str, v)) for k, v in obj["categorical"].items()}
            schema = cls(
                str(obj["label"]),
                tuple(map(str, obj["features"])),
                categorical,
                tuple(map(str, obj["classes"])),
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"a table schema without {exc}") from None
        if "columns" in obj and list(schema.columns) != list(obj["columns"]):
            raise ValueError("the table's columns are not its features' encoding")
        return schema

    def to_json(self) -> dict[str, Any]:
        """What the pool's manifest records: enough to encode a raw row and to name a
        predicted class."""
        return {
            "label": self.label,
            "features": list(self.features),
            "categorical": {k: list(v) for k, v in self.categorical.items()},
            "classes": list(self.classes),
            "columns": list(self.columns),
        }


@dataclass(frozen=True)
class RawTable:
    """One file's cells as read, before any check of their values."""

    path: Path
    header: tuple[str, ...]
    rows: tuple[tuple[int, tuple[str, ...]], ...]  # (line or record number, cells)
    unit: str  # "line" (CSV) or "record" (NPZ)


def read_raw(path: Path) -> tuple[RawTable | None, list[str]]:
    """The file's header and cells, or None and why not (a CSV or NPZ file)."""
    suffix = path.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        return None, [f"{path}: a table must be a .csv or .npz file, not {suffix or 'no suffix'!r}"]
    if not path.is_file():
        return None, [f"{path}: no such file"]
    return _read_npz(path) if suffix == ".npz" else _read_csv(path)


def _read_csv(path: Path) -> tuple[RawTable | None, list[str]]:
    header: tuple[str, ...] | None = None
    rows: list[tuple[int, tuple[str, ...]]] = []
    line = 0
    try:
        with path.open(encoding="utf-8-sig", newline="") as f:
            reader = csv.reader(f)
            for cells in reader:
                line = reader.line_num
                if not cells or (len(cells) == 1 and not cells[0].strip()):
                    continue  # an empty line
                if header is None:
                    header = tuple(c.strip() for c in cells)
                else:
                    rows.append((line, tuple(cells)))
    except UnicodeDecodeError as exc:
        return None, [f"{path}: not UTF-8 text (invalid byte at offset {exc.start})"]
    except csv.Error as exc:
        return None, [f"{path}, line {line + 1}: not readable as CSV ({exc})"]
    except OSError as exc:
        return None, [f"{path}: cannot be read ({exc.strerror or exc})"]
    if header is None:
        return None, [f"{path}: empty (a header row of column names is needed)"]
    problems = _header_problems(path, header)
    return (None if problems else RawTable(path, header, tuple(rows), "line")), problems


def _read_npz(path: Path) -> tuple[RawTable | None, list[str]]:
    try:
        with np.load(path, allow_pickle=False) as z:
            columns = {name: np.asarray(z[name]) for name in z.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        return None, [f"{path}: not a readable NPZ file of columns ({exc})"]
    bad = [n for n, a in columns.items() if a.ndim != 1 or a.dtype.kind not in "biufU"]
    lengths = {len(a) for a in columns.values() if a.ndim == 1}
    problems = [
        f"{path}: array {n!r} is not a 1-d column of numbers or strings "
        f"({columns[n].dtype} {columns[n].shape})"
        for n in bad
    ]
    if len(lengths) > 1:
        problems.append(f"{path}: its columns have different lengths {sorted(lengths)}")
    header = tuple(columns)
    problems += _header_problems(path, header) if columns else [f"{path}: holds no array"]
    if problems:
        return None, problems
    n = lengths.pop() if lengths else 0
    text = [[_cell(v) for v in a.tolist()] for a in columns.values()]
    rows = tuple((i + 1, tuple(col[i] for col in text)) for i in range(n))
    return RawTable(path, header, rows, "record"), []


def _cell(value: object) -> str:
    """An NPZ value as the text a CSV cell would hold (a float as its exact repr)."""
    return repr(value) if isinstance(value, float) else str(value)


def _header_problems(path: Path, header: Sequence[str]) -> list[str]:
    out = []
    empty = [i + 1 for i, h in enumerate(header) if not h]
    if empty:
        out.append(f"{path}: header column(s) {empty} have no name")
    dupes = sorted({h for h in header if h and header.count(h) > 1})
    if dupes:
        out.append(f"{path}: header names {', '.join(map(repr, dupes))} more than once")
    return out


def class_order(labels: set[str]) -> tuple[str, ...]:
    """The agreed order of the classes when none is declared: numerically if every label
    is a number (so "2" comes before "10"), else as strings."""
    try:
        keyed = sorted((float(v), v) for v in labels)
    except ValueError:
        return tuple(sorted(labels))
    return tuple(v for _, v in keyed)


def infer_schema(
    tables: Mapping[str, RawTable],
    *,
    label: str,
    features: tuple[str, ...],
    categorical: Mapping[str, tuple[str, ...]],
    classes: tuple[str, ...],
) -> tuple[TableSchema | None, list[str]]:
    """The schema the agencies' tables agree on, completed from their headers and labels
    where the config leaves it open (``features`` empty: every column but the label, as
    the first table orders them, and every table must have the same columns; ``classes``
    empty: the sorted union of the labels)."""
    if not tables:
        return None, []
    problems: list[str] = []
    first = tables[min(tables)]
    if not features:
        features = tuple(h for h in first.header if h != label)
        wanted = set(first.header)
        for t in tables.values():
            missing, extra = wanted - set(t.header), set(t.header) - wanted
            if missing or extra:
                problems.append(
                    f"{t.path}: its columns differ from {first.path.name}'s (data.features "
                    f"is not set, so every file must have the same columns): "
                    + "; ".join(
                        f"{what} {', '.join(map(repr, sorted(cols)))}"
                        for what, cols in (("missing", missing), ("extra", extra))
                        if cols
                    )
                )
    if not features:
        problems.append(f"{first.path}: no feature column besides the label {label!r}")
    for t in tables.values():
        absent = [c for c in (label, *features) if c not in t.header]
        if absent:
            problems.append(
                f"{t.path}: no column {', '.join(map(repr, absent))} "
                f"(its header: {', '.join(t.header)})"
            )
    unknown = sorted(set(categorical) - set(features))
    if unknown:
        problems.append(
            f"data.categorical names {', '.join(map(repr, unknown))}, not a feature column"
        )
    if problems:
        return None, problems
    if not classes:
        seen: set[str] = set()
        for t in tables.values():
            at = t.header.index(label)
            seen.update(
                cells[at].strip()
                for _, cells in t.rows
                if len(cells) == len(t.header) and cells[at].strip()
            )
        classes = class_order(seen)
        if len(classes) < 2:
            return None, [
                f"data.label {label!r}: the files hold {len(classes)} class(es) "
                f"{list(classes)}; at least 2 are needed"
            ]
    return TableSchema(label, tuple(features), dict(categorical), tuple(classes)), []


def encode(
    table: RawTable, schema: TableSchema, *, min_records: int
) -> tuple[NDArray[np.float32], NDArray[np.int64], list[str]]:
    """The table's model inputs (records x ``schema.columns``) and class indices; every
    problem found, each naming the file, line and column (then the arrays are empty)."""
    x, y, problems = _encode(table, schema, labelled=True)
    if len(table.rows) < min_records:
        problems.append(
            f"{table.path}: {len(table.rows)} record(s), fewer than data.min_records = "
            f"{min_records}"
        )
    if problems:
        return (*_empty(schema), _capped(table.path, problems))
    return x.astype(np.float32), y, []


def encode_features(table: RawTable, schema: TableSchema) -> tuple[NDArray[np.float64], list[str]]:
    """Raw rows to predict on: the model inputs (rows x ``schema.columns``, float64 so
    that the caller's range checks see the values as written) of a table holding the
    feature columns by name (categories as their values; a label column, if any, is
    not read); every problem named by file, line and column, as :func:`encode` does."""
    x, _y, problems = _encode(table, schema, labelled=False)
    if not table.rows:
        problems.append(f"{table.path}: a header and no rows")
    return (x, []) if not problems else (x[:0], _capped(table.path, problems))


def rows_table(rows: Sequence[Sequence[object]], header: Sequence[str], *, source: str) -> RawTable:
    """In-memory rows (a DataFrame's, a list's) as a table whose cells are their text
    (a float as its exact repr), so :func:`encode_features` reads them like a file's;
    ``source`` names them in problems (its row numbers count from 0)."""
    cells = tuple((i, tuple(_cell(v) for v in row)) for i, row in enumerate(rows))
    return RawTable(Path(source), tuple(str(h) for h in header), cells, "row")


def _encode(
    table: RawTable, schema: TableSchema, *, labelled: bool
) -> tuple[NDArray[np.float64], NDArray[np.int64], list[str]]:
    path, header = table.path, table.header
    named = (schema.label, *schema.features) if labelled else schema.features
    absent = [c for c in named if c not in header]
    if absent:
        return (
            np.zeros((0, len(schema.columns))),
            np.zeros(0, np.int64),
            [f"{path}: no column {', '.join(map(repr, absent))} (its header: {', '.join(header)})"],
        )
    at = {name: header.index(name) for name in named}
    class_index = {c: i for i, c in enumerate(schema.classes)}
    vocab_index = {k: {v: i for i, v in enumerate(vs)} for k, vs in schema.categorical.items()}
    width = len(schema.columns)
    x = np.zeros((len(table.rows), width), dtype=np.float64)
    y = np.zeros(len(table.rows), dtype=np.int64)
    problems: list[str] = []

    def where(line: int, name: str) -> str:
        return f"{path}, {table.unit} {line}, column {at[name] + 1} ({name!r})"

    for r, (line, cells) in enumerate(table.rows):
        if len(cells) != len(header):
            problems.append(
                f"{path}, {table.unit} {line}: {len(cells)} fields, the header has {len(header)}"
            )
            continue
        value = cells[at[schema.label]].strip() if labelled else None
        if value is None:
            pass
        elif not value:
            problems.append(f"{where(line, schema.label)}: missing label")
        elif value not in class_index:
            problems.append(
                f"{where(line, schema.label)}: unknown label {value!r} "
                f"(classes: {', '.join(schema.classes)})"
            )
        else:
            y[r] = class_index[value]
        col = 0
        for name in schema.features:
            cell = cells[at[name]].strip()
            vocab = vocab_index.get(name)
            if vocab is not None:
                if not cell:
                    problems.append(f"{where(line, name)}: missing value")
                elif cell not in vocab:
                    problems.append(
                        f"{where(line, name)}: unknown category {cell!r} "
                        f"(data.categorical.{name}: {', '.join(schema.categorical[name])})"
                    )
                else:
                    x[r, col + vocab[cell]] = 1.0
                col += len(vocab)
                continue
            if not cell:
                problems.append(f"{where(line, name)}: missing value")
            else:
                try:
                    number = float(cell)
                except ValueError:
                    number = math.nan
                    problems.append(f"{where(line, name)}: {cell[:40]!r} is not a number")
                else:
                    if not math.isfinite(number):
                        problems.append(f"{where(line, name)}: {cell!r} is not a finite number")
                x[r, col] = number
            col += 1
    return x, y, problems


def _empty(schema: TableSchema) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    return np.zeros((0, len(schema.columns)), np.float32), np.zeros(0, np.int64)


def _capped(path: Path, problems: list[str]) -> list[str]:
    if len(problems) <= MAX_PROBLEMS_PER_FILE:
        return problems
    rest = len(problems) - MAX_PROBLEMS_PER_FILE
    return [*problems[:MAX_PROBLEMS_PER_FILE], f"{path}: ... and {rest} more problem(s)"]


def read_tables(
    files: Mapping[str, Path],
    *,
    label: str,
    features: tuple[str, ...],
    categorical: Mapping[str, tuple[str, ...]],
    classes: tuple[str, ...],
    min_records: int,
    holdout: Path | None = None,
) -> tuple[TableSchema, dict[str, tuple[NDArray[np.float32], NDArray[np.int64]]]]:
    """Read every agency's table (``files``: participant id -> file) and the holdout
    file (``holdout``, stored under the key ``""``; min_records does not apply to it);
    ConfigError listing every problem of every file at once."""
    problems: list[str] = []
    raw: dict[str, RawTable] = {}
    for pid, path in sorted(files.items()):
        table, found = read_raw(path)
        problems += found
        if table is not None:
            raw[pid] = table
    hold: RawTable | None = None
    if holdout is not None:
        hold, found = read_raw(holdout)
        problems += [f"evaluation.holdout: {p}" for p in found]
    schema, found = infer_schema(
        raw, label=label, features=features, categorical=categorical, classes=classes
    )
    problems += found
    if schema is None:
        raise ConfigError(problems or ["data: no agency table could be read"])
    out: dict[str, tuple[NDArray[np.float32], NDArray[np.int64]]] = {}
    for pid, table in raw.items():
        x, y, found = encode(table, schema, min_records=min_records)
        problems += found
        out[pid] = (x, y)
    if hold is not None:
        x, y, found = encode(hold, schema, min_records=1)
        problems += [f"evaluation.holdout: {p}" for p in found]
        out[""] = (x, y)
    if problems:
        raise ConfigError(problems)
    return schema, out


def declared_schema(
    *,
    label: str,
    features: tuple[str, ...],
    categorical: Mapping[str, tuple[str, ...]],
    classes: tuple[str, ...],
) -> TableSchema:
    """The schema a config declares in full (a deployment: no node sees another's file);
    ConfigError if ``features`` or ``classes`` is left to the files."""
    missing = [k for k, v in (("features", features), ("classes", classes)) if not v]
    if missing:
        raise ConfigError(
            [
                f"data.{' and data.'.join(missing)} must be declared when no data.path holds "
                "every agency's file: each node reads only its own records, and every node "
                "and the coordinator must agree on the model's inputs and classes first"
            ]
        )
    return TableSchema(label, features, dict(categorical), classes)
