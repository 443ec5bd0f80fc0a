"""One run of a sweep: where it lives, whether it is finished, and its csv row.

A sweep directory holds ``configs/<cell>-r<k>.toml`` (the exact config of each run)
and ``runs/<cell>-r<k>/`` (the run's own output directory, see
:mod:`securepool.outputs`). A run is *finished* only when :func:`verify` accepts it:
its summary.json parses and has every field a row needs, its config.toml is
byte-for-byte the config this sweep would give it, its pool manifest names that
config's sha256 and the same iteration count, every pool weights file matches its
sha256, and every participant's transcript is there. Anything else is half-written and
is redone from scratch.

Bytes sent per participant come from the run's transcripts (the sweep turns on
``run.record_transcripts``): the sum of the sizes of every protocol message the
participant's node sent to the coordinator (every reply, bundles counted part by part:
masked inputs or ciphertexts, key advertisements, encrypted shares, unmasking shares,
sealed summaries, beacon commits and reveals), as they crossed the wire: the transcript
is recorded at the coordinator's Driver in every runtime. Messages the coordinator or
auditor send are not counted.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crypto.errors import ConfigError
from securepool.sweep.grid import Cell, dump_toml, format_value


@dataclass(frozen=True)
class RunSpec:
    """One run: a cell and its repeat number (repeat k runs with ``run.seed + k``)."""

    cell: Cell
    repeat: int
    config_text: str

    @property
    def name(self) -> str:
        return f"{self.cell.name}-r{self.repeat}"


def run_specs(cells: list[Cell], repeats: int) -> list[RunSpec]:
    out = []
    for cell in cells:
        for k in range(repeats):
            table = json.loads(json.dumps(cell.table))
            run = table.setdefault("run", {})
            run["seed"] = int(run.get("seed", 0)) + k
            run["record_transcripts"] = True
            out.append(RunSpec(cell, k, dump_toml(table)))
    return out


SUMMARY_FIELDS = ("iterations", "converged", "models", "best_accuracy", "wall_time_s")


def verify(run_dir: Path, config_text: str) -> str | None:
    """None when ``run_dir`` is a finished run of ``config_text``; else what is wrong.

    The run directory's own manifest check (:func:`securepool.rundir.verify_run_dir`:
    every file's sha256, the pool's weights) plus what a sweep adds: the run is
    finished, its config is byte for byte this cell's, its summary has every column's
    field, and its transcripts (the bytes-sent counter) are there."""
    from securepool.rundir import verify_run_dir

    if not (run_dir / "summary.json").is_file():
        return "no summary.json"
    try:
        info = verify_run_dir(run_dir)
        summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
        config = (run_dir / "config.toml").read_bytes()
    except ConfigError as exc:
        return f"does not verify: {'; '.join(exc.problems)}"
    except (OSError, ValueError) as exc:
        return f"unreadable: {exc}"
    if not info.finished:
        return "not finished"
    missing = [f for f in SUMMARY_FIELDS if f not in summary]
    if missing:
        return f"summary.json lacks {', '.join(missing)}"
    if config != config_text.encode("utf-8"):
        return "config.toml differs from this sweep's config for the run"
    if not (run_dir / "transcripts").is_dir():
        return "no transcripts"
    return None


def bytes_sent(run_dir: Path, participants: list[str]) -> dict[str, int]:
    """Total bytes each participant's role sent, from its transcript."""
    out = {}
    for pid in participants:
        total = 0
        path = run_dir / "transcripts" / f"{pid}.jsonl"
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    entry = json.loads(line)
                    if entry["direction"] == "sent":
                        total += int(entry["bytes"])
        out[pid] = total
    return out


COLUMNS_AFTER_SETTINGS = (
    "repeat",
    "seed",
    "aggregation_mode",
    "dp",
    "best_accepted_accuracy",
    "best_model_accuracy",
    "accepted_models",
    "worst_epsilon",
    "iterations",
    "converged",
    "wall_time_s",
    "bytes_sent_per_participant",
    "bytes_sent_max_participant",
    "run_dir",
)


def row(spec: RunSpec, run_dir: Path) -> dict[str, Any]:
    """The csv row of a finished run (``verify`` accepted it)."""
    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    cfg = spec.cell.config
    sent = bytes_sent(run_dir, cfg.data.ids())
    eps = summary.get("worst_case_epsilon")
    out: dict[str, Any] = {k: format_value(v) for k, v in spec.cell.settings}
    out.update(
        {
            "repeat": spec.repeat,
            "seed": cfg.run.seed + spec.repeat,
            "aggregation_mode": cfg.aggregation.mode.value,
            "dp": cfg.privacy.enabled,
            "best_accepted_accuracy": summary["best_accuracy"],
            "best_model_accuracy": max(
                (m["test_accuracy"] for m in summary["models"].values()), default=None
            ),
            "accepted_models": len(summary.get("accepted", [])),
            "worst_epsilon": eps if cfg.privacy.enabled else None,
            "iterations": summary["iterations"],
            "converged": summary["converged"],
            "wall_time_s": summary["wall_time_s"],
            "bytes_sent_per_participant": statistics.mean(sent.values()) if sent else 0,
            "bytes_sent_max_participant": max(sent.values(), default=0),
            "run_dir": f"runs/{spec.name}",
        }
    )
    return out
