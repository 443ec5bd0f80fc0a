"""sweep.csv: one row per run and repeat, written atomically; read back for the plots."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from securepool.outputs import write_atomic
from securepool.sweep.runs import COLUMNS_AFTER_SETTINGS


def write_csv(path: Path, keys: Sequence[str], rows: Sequence[dict[str, Any]]) -> None:
    """Columns: the grid keys in ``--grid`` order, then :data:`COLUMNS_AFTER_SETTINGS`.

    Missing values (no accepted model, no DP epsilon) are empty cells.
    """
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=[*keys, *COLUMNS_AFTER_SETTINGS], lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in r.items()})
    write_atomic(path, buf.getvalue().encode("utf-8"))


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))
