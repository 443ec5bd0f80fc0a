"""Write the agencies example's tables from scikit-learn's wine data (run once; seeded).

    python examples/agencies/make_agencies.py

The 178 wines (13 chemical measurements in their raw units, three cultivars) are
shuffled; 36 go to the coordinator's own test set (``holdout.csv``) and the rest to four
agencies, ``data/agency1.csv`` .. ``data/agency4.csv``, with a Dirichlet(alpha = 1)
skew of the cultivars across the agencies (every agency keeps at least 20 wines). The
label column ``cultivar`` holds the class names ``class_0`` .. ``class_2``. Running it
again writes the same bytes.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from sklearn.datasets import load_wine

HERE = Path(__file__).resolve().parent
SEED = 2024
AGENCIES = 4
HOLDOUT = 36
ALPHA = 1.0
MIN_RECORDS = 20


def skewed_shares(y: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    """Row indices per agency: each class spread by its own Dirichlet(ALPHA) draw, drawn
    again until every agency holds MIN_RECORDS rows."""
    while True:
        parts: list[list[int]] = [[] for _ in range(AGENCIES)]
        for label in np.unique(y):
            idx = rng.permutation(np.flatnonzero(y == label))
            cuts = (np.cumsum(rng.dirichlet(np.full(AGENCIES, ALPHA)))[:-1] * len(idx)).astype(int)
            for a, chunk in enumerate(np.split(idx, cuts)):
                parts[a] += chunk.tolist()
        if min(len(p) for p in parts) >= MIN_RECORDS:
            return [np.array(sorted(p)) for p in parts]


def write(path: Path, x: np.ndarray, labels: list[str], names: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as f:
        out = csv.writer(f, lineterminator="\n")
        out.writerow([*names, "cultivar"])
        for row, label in zip(x, labels, strict=True):
            out.writerow([f"{v:g}" for v in row] + [label])


def main() -> None:
    wine = load_wine()
    x, y = wine.data, wine.target
    names = [str(n) for n in wine.feature_names]
    classes = [str(c) for c in wine.target_names]
    rng = np.random.default_rng(SEED)
    order = rng.permutation(len(y))
    hold, rest = order[:HOLDOUT], np.sort(order[HOLDOUT:])
    write(HERE / "holdout.csv", x[hold], [classes[i] for i in y[hold]], names)
    for a, share in enumerate(skewed_shares(y[rest], rng), start=1):
        rows = rest[share]
        write(HERE / "data" / f"agency{a}.csv", x[rows], [classes[i] for i in y[rows]], names)


if __name__ == "__main__":
    main()
