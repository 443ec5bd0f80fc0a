"""Progress inside an iteration (README: the command line shows the stage in progress and
how many nodes have answered it): every runtime's Driver reports each reply as it arrives."""

from __future__ import annotations

from pathlib import Path

import pytest

from securepool.runner import start_job

CONFIG = """
[run]
seed = 1
runtime = "{runtime}"
[data]
participants = 4
[[pool.models]]
id = "lr"
arch = "logreg"
[assignment]
max_models = 1
beacon = "seeded-insecure"
[convergence]
max_iterations = 1
[acceptance]
max_error_bound = 1.0
"""


@pytest.mark.parametrize("runtime", ["inprocess", "multiprocess"])
def test_every_stage_reports_each_node_as_it_answers(tmp_path: Path, runtime: str) -> None:
    (tmp_path / "c.toml").write_text(CONFIG.format(runtime=runtime))
    seen: list[tuple[str, int, int]] = []
    start_job(tmp_path / "c.toml", tmp_path / "run", progress=lambda *e: seen.append(e))
    stages = [s for s, _, _ in seen]
    assert {"hello", "beacon/start", "beacon/commits", "train", "secagg/unmask"} <= set(stages)
    train = [(k, n) for s, k, n in seen if s == "train"]
    # sent (0 of 4), each of the 4 replies as it arrives, then the usable replies
    assert train == [(0, 4), (1, 4), (2, 4), (3, 4), (4, 4), (4, 4)]
    assert all(0 <= k <= n for _, k, n in seen)
