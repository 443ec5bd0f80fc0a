"""``securepool bench demo``: the digits demo's iterations per second, against another tree.

    securepool bench demo --against ../base --repeats 3

Runs ``--config`` (default ``examples/digits.toml``, the job ``make demo`` runs) whole,
``--repeats`` times from this source tree and, with ``--against TREE``, as many times from
TREE (e.g. a ``git worktree`` of an earlier commit), interleaved (ours, theirs, ours, ...)
so both see the same load. Every run is a child process (``PYTHONPATH`` set to its tree)
that calls that tree's ``securepool.runner.start_job``; its speed is read from the run
itself: iterations per second of the loop (the iterations in ``metrics.jsonl`` over the
sum of their ``seconds``, so interpreter start-up, the data split and P5 are left out).
The demo's beacon is random, so the number of iterations varies from run to run: the
per-iteration rate, not the wall time, is what compares. Prints one JSON object: per tree
every run's iterations, rate and best accepted accuracy, the medians, the ratio of this
tree's median rate to TREE's, and the load average before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from securepool.bench.trees import run_in_tree

#: run in the child process: one whole job with that tree's runner
CHILD = """
import json, sys
from pathlib import Path
from securepool.runner import start_job
summary = start_job(Path(sys.argv[1]), Path(sys.argv[2]))
lines = (Path(sys.argv[2]) / "metrics.jsonl").read_text().splitlines()
seconds = [float(json.loads(ln)["seconds"]) for ln in lines]
print(json.dumps({"iterations": len(seconds), "seconds": sum(seconds),
                  "best_accuracy": summary.get("best_accuracy")}))
"""

HERE = Path(__file__).resolve().parents[2]


def one_run(tree: Path, config: Path) -> dict[str, Any]:
    """One whole job of ``config`` from source tree ``tree`` (a child process)."""
    with tempfile.TemporaryDirectory(prefix="securepool-bench-demo-") as tmp:
        args = [str(config.resolve()), str(Path(tmp) / "run")]
        got = run_in_tree(tree, CHILD, args, cwd=Path(tmp))
    got["iterations_per_s"] = got["iterations"] / got["seconds"] if got["seconds"] else None
    return got


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="securepool bench demo", description=__doc__)
    p.add_argument("--config", type=Path, default=HERE / "examples" / "digits.toml")
    p.add_argument("--against", type=Path, help="another source tree to compare with")
    p.add_argument("--repeats", type=int, default=3, help="runs per tree (>= 1)")
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error("--repeats must be >= 1")
    if not args.config.is_file():
        p.error(f"--config {args.config}: no such file")
    trees = {"this": HERE} | ({"against": args.against} if args.against else {})
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in trees}
    load = os.getloadavg()
    for _ in range(args.repeats):
        for name, tree in trees.items():
            runs[name].append(one_run(tree, args.config))
    result: dict[str, Any] = {
        "bench": "demo",
        "config": str(args.config),
        "against": None if args.against is None else str(args.against),
        "repeats": args.repeats,
        "cpu_count": os.cpu_count(),
        "loadavg_before": load,
        "loadavg_after": os.getloadavg(),
    }
    for name, rows in runs.items():
        rates = [r["iterations_per_s"] for r in rows if r["iterations_per_s"]]
        result[name] = {
            "runs": rows,
            "median_iterations_per_s": statistics.median(rates) if rates else None,
            "median_iterations": statistics.median(r["iterations"] for r in rows),
        }
    if args.against:
        ours = result["this"]["median_iterations_per_s"]
        theirs = result["against"]["median_iterations_per_s"]
        result["rate_ratio_vs_against"] = ours / theirs if ours and theirs else None
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
