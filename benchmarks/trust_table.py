"""Render trust_sweep.py JSON rows as the Markdown table of benchmarks/RESULTS.md.

    .venv/bin/python benchmarks/trust_table.py benchmarks/trust_sweep.json [more.json ...]

One row per run, in file order; ``strength`` is shown when a file swept it ("default"
for 0), backdoor success when the attack reported it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def cell(value: Any, digits: int = 2) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def strength(row: dict[str, Any]) -> str:
    s = row.get("strength")
    return "default" if not s else f"{s:g}"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("files", nargs="+", type=Path)
    args = p.parse_args()
    rows = [r for f in args.files for r in json.loads(f.read_text())]
    print(
        "| partition | mode | attack | strength | defence | best accuracy | clean accuracy "
        "| participant TPR | participant FPR | per-update TPR | per-update FPR | backdoor success |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        attack = r["attack"]
        print(
            f"| {r['partition']} | {r['mode']} | {attack} | "
            f"{strength(r) if attack != 'none' else '—'} | {r['defence']} | "
            f"{cell(r['best_model_accuracy'], 4)} | {cell(r.get('clean_accuracy'), 4)} | "
            f"{cell(r['participant_tpr'])} | {cell(r['participant_fpr'])} | "
            f"{cell(r['tpr'])} | {cell(r['fpr'])} | {cell(r.get('backdoor_success'))} |"
        )


if __name__ == "__main__":
    main()
