"""securepool sweep end to end on a tiny grid: rows, bytes, plots, skip and resume."""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import pytest

from securepool.cli import main
from securepool.sweep.runs import bytes_sent

TINY = """
[run]
seed = 3
[data]
dataset = "digits"
participants = 6
[[pool.models]]
id = "logreg"
arch = "logreg"
seed = 1
[assignment]
min_group_size = 3
[training]
epochs = 1
batch_size = 32
lr = 0.5
[convergence]
max_iterations = 2
[acceptance]
max_error_bound = 1.0
[aggregation]
mode = "plaintext"
"""

pytestmark = pytest.mark.slow


def _sent_by_kind(run_dir: Path, pid: str) -> dict[str, int]:
    """The bytes ``pid`` sent, per message kind, from its transcript."""
    out: dict[str, int] = {}
    for line in (run_dir / "transcripts" / f"{pid}.jsonl").read_text().splitlines():
        entry = json.loads(line)
        if entry["direction"] == "sent":
            out[entry["kind"]] = out.get(entry["kind"], 0) + int(entry["bytes"])
    return out


def _sweep(cfg: Path, out: Path) -> int:
    return main(
        [
            "sweep",
            str(cfg),
            "--grid",
            "aggregation.mode=plaintext,mask",
            "--repeats",
            "2",
            "--out",
            str(out),
            "--workers",
            "2",
            "--quiet",
        ]
    )


def _rows(out: Path) -> list[dict[str, str]]:
    with (out / "sweep.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


def _mtimes(out: Path) -> dict[str, int]:
    return {
        p.name: (p / "summary.json").stat().st_mtime_ns
        for p in (out / "runs").iterdir()
        if (p / "summary.json").exists()
    }


def test_sweep_rows_plots_skip_and_resume(tmp_path: Path) -> None:
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(TINY)
    out = tmp_path / "sweep"
    assert _sweep(cfg, out) == 0
    rows = _rows(out)
    assert len(rows) == 4
    assert [r["aggregation.mode"] for r in rows] == ["plaintext", "plaintext", "mask", "mask"]
    assert [r["repeat"] for r in rows] == ["0", "1", "0", "1"]
    assert [r["seed"] for r in rows] == ["3", "4", "3", "4"]
    for r in rows:
        run_dir = out / r["run_dir"]
        summary = json.loads((run_dir / "summary.json").read_text())
        assert float(r["best_accepted_accuracy"]) == summary["best_accuracy"]
        assert int(r["iterations"]) == summary["iterations"] == 2
        assert r["worst_epsilon"] == ""  # no DP: no epsilon, not a made-up 0
        sent = bytes_sent(run_dir, [f"p{i:02d}" for i in range(6)])
        assert float(r["bytes_sent_per_participant"]) == sum(sent.values()) / 6
    # plaintext: each participant sends its float32 update of the 650-parameter logreg in
    # each of the 2 iterations, plus a small header with its endorsement of the round's
    # outcome (about 300 bytes: hex in the reply's metadata); and its greeting and beacon
    # commitments and reveals: the counter measures real messages
    plain = float(rows[0]["bytes_sent_per_participant"])
    uploads = _sent_by_kind(out / rows[0]["run_dir"], "p00")
    assert 2 * 650 * 4 <= uploads.pop("train:reply") < 2 * (650 * 4 + 400)
    assert set(uploads) == {"hello:reply", "beacon/start:reply", "beacon/commits:reply"}
    assert 2 * 650 * 4 < plain < 2 * 650 * 4 + 1800
    assert float(rows[2]["bytes_sent_per_participant"]) > plain  # masking sends keys/shares
    # the same seed gives the same model in both modes (the mask cancels)
    assert rows[0]["best_accepted_accuracy"] == rows[2]["best_accepted_accuracy"]
    for png in ("accuracy_vs_epsilon.png", "accuracy_vs_cost.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # a repeated sweep runs nothing again
    before = _mtimes(out)
    assert _sweep(cfg, out) == 0
    assert _mtimes(out) == before
    assert _rows(out) == rows

    # an interrupted sweep: one run killed mid-way (checkpoint, no summary), one whose
    # pool file was corrupted, one whose directory is gone; the fourth is left alone
    names = sorted(before)
    killed, corrupt, gone, kept = (out / "runs" / n for n in names)
    (killed / "summary.json").unlink()
    (corrupt / "pool" / "logreg.npy").write_bytes(b"tampered")
    shutil.rmtree(gone)
    os.utime(kept / "summary.json", ns=(1, 1))
    assert _sweep(cfg, out) == 0
    after = _mtimes(out)
    assert after[kept.name] == 1  # skipped
    for run in (killed, corrupt, gone):
        assert after[run.name] != before[run.name]  # redone from scratch
        assert (run / "pool" / "logreg.npy").read_bytes() != b"tampered"

    # the runs are deterministic: the redone rows equal the first ones but for wall time
    def strip(rs: list[dict[str, str]]) -> list[dict[str, str]]:
        return [{k: v for k, v in r.items() if k != "wall_time_s"} for r in rs]

    assert strip(_rows(out)) == strip(rows)
