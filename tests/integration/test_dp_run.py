"""A whole DP run with the default secure noise: what summary, manifest and metrics say."""

from __future__ import annotations

import json
from pathlib import Path

from securepool.runner import start_job

CONFIG = """
[run]
seed = 3
[data]
participants = 6
[[pool.models]]
id = "lr"
arch = "logreg"
seed = 1
[training]
epochs = 1
lr = 0.5
[convergence]
error_range = [0.0, 0.5]
max_iterations = 2
[acceptance]
max_error_bound = 0.9
[privacy]
enabled = true
noise_multiplier = 1.0
epsilon_max = 50.0
{extra}
"""


def _run(tmp_path: Path, name: str, extra: str = "") -> tuple[dict, dict, list[dict]]:
    cfg = tmp_path / f"{name}.toml"
    cfg.write_text(CONFIG.format(extra=extra))
    out = tmp_path / name
    summary = start_job(cfg, out)
    manifest = json.loads((out / "pool" / "manifest.json").read_text())
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return summary, manifest, metrics


def test_secure_noise_is_the_default_and_labelled(tmp_path: Path) -> None:
    summary, manifest, metrics = _run(tmp_path, "secure")
    assert summary["dp_noise_reproducible"] is False and manifest["dp_noise_reproducible"] is False
    assert all("os.urandom" in p["noise_source"] for p in summary["privacy"].values())
    # each iteration reports every participant's epsilon from its own ledger
    assert all(set(m["privacy"]["epsilon"]) == set(summary["privacy"]) for m in metrics)
    last = metrics[-1]["privacy"]["epsilon"]
    assert all(last[p] == round(summary["privacy"][p]["epsilon"], 6) for p in last)


def test_reproducible_noise_is_labelled_everywhere(tmp_path: Path) -> None:
    summary, manifest, _ = _run(tmp_path, "replay", "secure_rng = false")
    assert summary["dp_noise_reproducible"] is True and manifest["dp_noise_reproducible"] is True
    assert all("REPRODUCIBLE" in p["noise_source"] for p in summary["privacy"].values())
