"""Render trust_sweep.py JSON rows as the Markdown table of benchmarks/RESULTS.md.

    .venv/bin/python benchmarks/trust_table.py benchmarks/trust_sweep.json [more.json ...]
    .venv/bin/python benchmarks/trust_table.py --median FILE.json   # over --seeds repeats

One row per run, in file order; ``strength`` is shown when a file swept it ("default"
for 0), backdoor success when the attack reported it. With ``--median`` one row per
(partition, mode, attack, strength, defence): the median over its runs (seeds) of every
figure, the participant FPR's range, the honest flagged-iteration rate, and which rules
flagged honest (and malicious) updates, summed over the runs.
"""

from __future__ import annotations

import argparse
import json
import statistics
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


def median(rows: list[dict[str, Any]], key: str) -> float | None:
    vals = [r[key] for r in rows if r.get(key) is not None]
    return float(statistics.median(vals)) if vals else None


def rules(rows: list[dict[str, Any]], key: str) -> str:
    total: dict[str, int] = {}
    for r in rows:
        for rule, n in (r.get(key) or {}).items():
            total[rule] = total.get(rule, 0) + n
    return ", ".join(f"{k} {v}" for k, v in sorted(total.items(), key=lambda kv: -kv[1])) or "—"


def per_run(rows: list[dict[str, Any]]) -> None:
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


def medians(rows: list[dict[str, Any]]) -> None:
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for r in rows:
        key = (r["partition"], r["mode"], r["attack"], strength(r), r["defence"])
        groups.setdefault(key, []).append(r)
    print(
        "| partition | mode | attack | defence | runs | best accuracy | clean accuracy "
        "| participant TPR | participant FPR (range) | honest flagged iterations "
        "| backdoor success | rules flagging honest | rules flagging malicious |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for (part, mode, attack, _, defence), rs in groups.items():
        fprs = [r["participant_fpr"] for r in rs]
        print(
            f"| {part} | {mode} | {attack} | {defence} | {len(rs)} | "
            f"{cell(median(rs, 'best_model_accuracy'), 4)} | "
            f"{cell(median(rs, 'clean_accuracy'), 4)} | "
            f"{cell(median(rs, 'participant_tpr'))} | "
            f"{cell(median(rs, 'participant_fpr'))} ({min(fprs):.2f}–{max(fprs):.2f}) | "
            f"{cell(median(rs, 'honest_flagged_iteration_rate'), 3)} | "
            f"{cell(median(rs, 'backdoor_success'))} | "
            f"{rules(rs, 'honest_flag_rules')} | {rules(rs, 'malicious_flag_rules')} |"
        )


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("files", nargs="+", type=Path)
    p.add_argument("--median", action="store_true", help="one row per setting, over its seeds")
    args = p.parse_args()
    rows = [r for f in args.files for r in json.loads(f.read_text())]
    (medians if args.median else per_run)(rows)


if __name__ == "__main__":
    main()
