"""The sweep's plots (PNG): accuracy vs epsilon per aggregation mode, accuracy vs cost.

Each point is one cell of the grid: the mean over its repeats, error bars one standard
deviation (none with a single repeat). Accuracy is the best *accepted* model's; a cell
where some repeat accepted no model is drawn with an ``x`` and uses that repeat's best
model instead, so it is visible rather than silently dropped. Runs without DP have no
epsilon: they sit at the right edge, at a tick labelled "no DP".
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

MODE_COLOURS = {"plaintext": "tab:gray", "mask": "tab:blue", "he": "tab:orange"}


def _stats(values: Sequence[float]) -> tuple[float, float]:
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def cell_points(rows: Sequence[dict[str, Any]], keys: Sequence[str]) -> list[dict[str, Any]]:
    """Rows grouped by cell: mean/std of accuracy, epsilon, bytes and wall time."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(tuple(r[k] for k in keys), []).append(r)
    points = []
    for settings, rs in groups.items():
        acc = [
            r["best_accepted_accuracy"]
            if r["best_accepted_accuracy"] is not None
            else r["best_model_accuracy"]
            for r in rs
        ]
        eps = [r["worst_epsilon"] for r in rs if r["worst_epsilon"] is not None]
        points.append(
            {
                "settings": dict(zip(keys, settings, strict=True)),
                "mode": rs[0]["aggregation_mode"],
                "repeats": len(rs),
                "none_accepted": any(r["best_accepted_accuracy"] is None for r in rs),
                "acc": _stats(acc),
                "eps": _stats(eps) if len(eps) == len(rs) else None,
                "bytes": _stats([float(r["bytes_sent_per_participant"]) for r in rs]),
                "wall": _stats([float(r["wall_time_s"]) for r in rs]),
            }
        )
    return points


def _label(point: dict[str, Any], vary: Sequence[str]) -> str:
    return ", ".join(f"{k.rsplit('.', 1)[-1]}={point['settings'][k]}" for k in vary)


def plot_accuracy_vs_epsilon(points: Sequence[dict[str, Any]], path: Path) -> None:
    finite = [p["eps"][0] for p in points if p["eps"] is not None]
    no_dp_x = (max(finite) * 2.0) if finite else 1.0
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for mode in sorted({p["mode"] for p in points}):
        ps = sorted(
            (p for p in points if p["mode"] == mode),
            key=lambda p: p["eps"][0] if p["eps"] else math.inf,
        )
        xs = [p["eps"][0] if p["eps"] else no_dp_x for p in ps]
        xerr = [p["eps"][1] if p["eps"] else 0.0 for p in ps]
        colour = MODE_COLOURS.get(mode)
        ax.errorbar(
            xs,
            [p["acc"][0] for p in ps],
            yerr=[p["acc"][1] for p in ps],
            xerr=xerr,
            fmt="-o",
            capsize=3,
            color=colour,
            label=mode,
            alpha=0.85,
        )
        flagged = [(x, p["acc"][0]) for x, p in zip(xs, ps, strict=True) if p["none_accepted"]]
        if flagged:
            ax.plot(*zip(*flagged, strict=True), "x", color="red", markersize=10)
    if any(p["none_accepted"] for p in points):
        ax.plot([], [], "x", color="red", label="a repeat accepted no model")
    if finite:
        ax.set_xscale("log")
    ticks = sorted(set(finite))
    if any(p["eps"] is None for p in points):
        ticks.append(no_dp_x)
    ax.set_xticks(ticks)
    ax.set_xticklabels([f"{t:.3g}" if t != no_dp_x else "no DP" for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel("worst participant's epsilon (mean over repeats)")
    ax.set_ylabel("best accepted model's accuracy")
    ax.set_title("accuracy vs epsilon per aggregation mode")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_accuracy_vs_cost(
    points: Sequence[dict[str, Any]], path: Path, *, vary: Sequence[str]
) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), sharey=True)
    for ax, key, scale, xlabel in (
        (axes[0], "bytes", 1e-6, "MB sent per participant (whole run)"),
        (axes[1], "wall", 1.0, "wall time of the run (s)"),
    ):
        for mode in sorted({p["mode"] for p in points}):
            ps = [p for p in points if p["mode"] == mode]
            ax.errorbar(
                [p[key][0] * scale for p in ps],
                [p["acc"][0] for p in ps],
                yerr=[p["acc"][1] for p in ps],
                xerr=[p[key][1] * scale for p in ps],
                fmt="o",
                capsize=3,
                color=MODE_COLOURS.get(mode),
                label=mode,
            )
            if len(vary) and len(ps) <= 12:
                for p in ps:
                    ax.annotate(
                        _label(p, vary),
                        (p[key][0] * scale, p["acc"][0]),
                        fontsize=6,
                        xytext=(3, 3),
                        textcoords="offset points",
                    )
        ax.set_xscale("log")
        ax.set_xlabel(xlabel + " (log)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("best accepted model's accuracy")
    axes[0].legend(fontsize=8)
    fig.suptitle("accuracy vs cost (mean ± sd over repeats)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
