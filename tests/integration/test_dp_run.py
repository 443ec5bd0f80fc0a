"""A whole DP run with the default secure noise: what summary, manifest and metrics say."""

from __future__ import annotations

import json
from pathlib import Path

from securepool.runner import resume_job, start_job

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


class Crash(Exception):
    pass


def test_a_resumed_run_keeps_each_participants_epsilon_ledger(tmp_path: Path) -> None:
    """The in-process nodes' ledgers go into every checkpoint and come back on resume:
    a run interrupted after iteration 1 ends with the epsilon of an uninterrupted one
    (plaintext, seeded beacon and replayable noise: the same participants train the
    same steps), never with only what it spent after the restart."""
    extra = 'secure_rng = false\n[assignment]\nbeacon = "seeded-insecure"\n'
    extra += '[aggregation]\nmode = "plaintext"\n'
    text = CONFIG.format(extra=extra).replace("max_iterations = 2", "max_iterations = 3")
    text = text.replace("error_range = [0.0, 0.5]", "error_range = [0.0, 0.0001]")
    cfg = tmp_path / "dp.toml"
    cfg.write_text(text)
    straight = start_job(cfg, tmp_path / "straight")

    def crash_after_1(record: object) -> None:
        if record.iteration == 1:  # type: ignore[attr-defined]
            raise Crash()

    out = tmp_path / "crashed"
    try:
        start_job(cfg, out, on_iteration=crash_after_1)
    except Crash:
        pass
    else:
        raise AssertionError("the run was not interrupted")
    state = json.loads((out / "checkpoint" / "state.json").read_text())
    saved = state["components"]["nodes"]
    assert sorted(saved) == [f"p{i:02d}" for i in range(6)]
    spent = {pid: s["privacy"]["ledger"] for pid, s in saved.items()}
    assert all(spent.values())  # every node's ledger is in the checkpoint
    before = {pid: r["epsilon"] for pid, r in state["components"]["trainer"]["reports"].items()}
    assert before and all(eps > 0 for eps in before.values())

    resumed = resume_job(out)
    assert resumed["iterations"] == straight["iterations"] == 3
    final = {pid: r["epsilon"] for pid, r in resumed["privacy"].items()}
    assert all(final[pid] > before[pid] for pid in before)
    assert final == {pid: r["epsilon"] for pid, r in straight["privacy"].items()}
