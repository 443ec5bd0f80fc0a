"""What a run did, for people: the end-of-run report and ``securepool show RUN_DIR``.

Every message is escaped before it reaches rich, so text such as ``[[pool.models]]``
prints as written instead of being read as markup.
"""

from __future__ import annotations

import statistics
from collections import Counter
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from securepool.rundir import RunDirInfo


def _line(console: Console, text: str, style: str | None = None) -> None:
    body = escape(text)
    console.print(f"[{style}]{body}[/{style}]" if style else body, highlight=False, soft_wrap=True)


def render_summary(console: Console, summary: dict[str, Any], out: Path) -> None:
    """The end of a run: models, privacy spent, trust marks, aborted groups, the pool."""
    _line(
        console,
        f"{summary['stop_reason']} after {summary['iterations']} iteration(s), "
        f"{summary['wall_time_s']:.1f} s",
        None if summary["converged"] else "bold yellow",
    )
    _line(
        console,
        f"aggregation: {summary['aggregation']['mode']}"
        + (" (INSECURE baseline)" if summary["aggregation"]["insecure_baseline"] else ""),
    )
    _line(console, "models:")
    for mid, m in summary["models"].items():
        state = (
            "kept" if mid in summary["pool"] else ("eliminated" if m["accepted"] else "rejected")
        )
        _line(
            console,
            f"  {mid:<10} accuracy {m['test_accuracy']:.4f}  error bound {m['error_bound']:.4f}  "
            f"{state}: {m['reason']}",
        )
    _privacy(console, summary)
    _trust(console, summary)
    _groups(console, summary.get("aborted_groups", []), summary.get("excluded", {}))
    pool = out / "pool" / "manifest.json"
    if summary["converged"]:
        _line(console, f"shared pool: {pool} ({len(summary['pool'])} model(s))")
    else:
        _line(
            console,
            f"NOT CONVERGED: the pool in {pool} is marked converged = false "
            f"({len(summary['pool'])} model(s) passed acceptance anyway)",
            "bold yellow",
        )


def _privacy(console: Console, summary: dict[str, Any]) -> None:
    report = summary.get("privacy")
    if not report:
        _line(console, "privacy: DP off (no differential-privacy guarantee for the records)")
        return
    eps = [float(r["epsilon"]) for r in report.values()]
    delta = next(iter(report.values()))["delta"]
    hit = sorted(p for p, r in report.items() if r.get("budget_exhausted"))
    _line(
        console,
        f"privacy: DP-SGD, epsilon per participant worst {max(eps):.3f}, median "
        f"{statistics.median(eps):.3f} (delta {delta:g})"
        + (f"; budget reached by {', '.join(hit)}" if hit else ""),
    )


def _trust(console: Console, summary: dict[str, Any]) -> None:
    trust = summary.get("trust")
    if not trust:
        _line(console, "trust check: off")
        return
    flags = trust.get("flags", [])
    marks = trust.get("marks", [])
    if not flags:
        _line(console, "trust check: no participant flagged")
        return
    counts = Counter(f["participant"] for f in flags)
    _line(
        console,
        f"trust check: {len(counts)} participant(s) flagged: "
        + ", ".join(f"{p} ({n}x)" for p, n in sorted(counts.items())),
    )
    last_reason = {f["participant"]: f["reason"] for f in flags}
    for p in sorted({m["participant"] for m in marks}):
        m = next(x for x in marks if x["participant"] == p)
        _line(
            console,
            f"  marked untrusted: {p} at iteration {m['iteration']} ({m.get('strikes', 1)} "
            f"strike(s)); last reason: {last_reason.get(p, m['reason'])}",
        )


def _groups(console: Console, aborted: list[dict[str, Any]], excluded: dict[str, Any]) -> None:
    if aborted:
        _line(console, f"aborted groups: {len(aborted)}")
        for a in aborted[:10]:
            _line(console, f"  iteration {a['iteration']} {a['model']}: {a['reason']}")
        if len(aborted) > 10:
            _line(console, f"  ... and {len(aborted) - 10} more (metrics.jsonl)")
    else:
        _line(console, "aborted groups: none")
    if excluded:
        _line(console, f"participants left out of an aggregate: {len(excluded)}")
        for pid, events in list(excluded.items())[:10]:
            reasons = Counter(e["reason"].split(":")[0] for e in events)
            _line(
                console,
                f"  {pid}: {len(events)}x ("
                + "; ".join(f"{r} x{n}" for r, n in reasons.most_common())
                + ")",
            )
        if len(excluded) > 10:
            _line(console, f"  ... and {len(excluded) - 10} more (summary.json)")


def show_run(console: Console, info: RunDirInfo) -> None:
    """``securepool show``: a verified run directory, finished or not."""
    import tomllib

    cfg = tomllib.loads(info.config_path.read_text(encoding="utf-8"))
    data = cfg.get("data", {})
    models = [m.get("id", "?") for m in cfg.get("pool", {}).get("models", [])]
    _line(console, f"run directory {info.path} ({info.format}, verified)", "bold")
    _line(
        console,
        f"config: dataset {data.get('dataset', 'digits')}, "
        f"{data.get('participants', 20)} participants, models {', '.join(models)}, "
        f"config sha256 {info.config_sha256[:16]}",
    )
    summary = info.summary()
    if summary is not None:
        render_summary(console, summary, info.path)
        return
    metrics = info.metrics()
    _line(console, f"in progress or interrupted: {info.iteration} iteration(s) committed", "yellow")
    if metrics:
        last = metrics[-1]
        errs = ", ".join(f"{m} {e:.3f}" for m, e in last["test_errors"].items())
        _line(console, f"last test errors: {errs}")
    aborted = [
        {"iteration": r["iteration"], "model": g["model"], "reason": g["status"]}
        for r in metrics
        for g in r["groups"]
        if g["status"] != "aggregated"
    ]
    excluded: dict[str, list[dict[str, Any]]] = {}
    for r in metrics:
        for g in r["groups"]:
            for pid, why in g["excluded"].items():
                excluded.setdefault(pid, []).append({"reason": why})
    _groups(console, aborted, dict(sorted(excluded.items())))
    _line(console, f"continue it with: securepool run --resume {info.path}")
