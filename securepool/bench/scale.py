"""``securepool bench scale``: the real pool per iteration vs n, in-process vs Flower simulation.

    securepool bench scale --nodes 20,50,100,200 --iterations 3 --plot benchmarks/scale.png
    securepool bench scale --nodes 20,100 --runtimes inprocess --against ../base

For each n, the same pool config (digits, mask mode, ``--models`` logreg models, one
epoch, DP off, the commit-reveal beacon) runs ``--iterations`` iterations on each
runtime, one after the other in this process, and the time of each iteration is taken
from the run itself (``metrics.jsonl`` / the coordinator's iteration record):

- ``inprocess``: ``run.runtime = "inprocess"``, the default: the coordinator
  (:class:`~securepool.coordinator.loop.PoolCoordinator`) over
  :class:`~securepool.runtime.inprocess.InProcessDriver` with n participant nodes built in
  this process (keys and sessions in memory);
- ``driver``: the same coordinator and nodes, each node with its own state directory
  (:func:`~securepool.coordinator.launch.demo_nodes`: the identity key file, the ledger and
  the per-stage session snapshots a node that Flower rebuilds per message keeps), no
  transport;
- ``simulation``: ``run.runtime = "flower"`` on Flower's simulation engine (Ray, loopback
  only): the ServerApp's coordinator :func:`securepool.coordinator.flower.run_pool` and
  n simulated ClientApps whose NodeApps :func:`securepool.node.serve.simulated_participant`
  builds per message from the directory this bench prepares (run config, PKI and one
  state directory per node with an identity key from
  :func:`securepool.node.keys.keygen`).

``--against TREE`` also runs ``inprocess`` from another source tree (e.g. a ``git
worktree`` of an earlier commit) in a child process with ``PYTHONPATH=TREE``, interleaved
with this tree's for every n, and reports the ratio of this tree's steady state to that
tree's (``ratio_vs_against``): the before/after of a change in one run, on one load.

Steady state is the median over iterations 2.. (iteration 1 also connects the nodes and
draws the first beacon). Prints one JSON object: per n and runtime the per-iteration
seconds, the steady-state median, the ratios against ``inprocess`` measured in the same
run, the simulation's whole wall time (Ray start and stop included), the largest
difference between the final pools of the runtimes, and the load average before and
after each measurement. ``--plot`` writes a PNG (matplotlib, Agg) of seconds per
iteration vs n.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

RUNTIMES = ("inprocess", "driver", "simulation")

CONFIG = """\
[run]
seed = 5
runtime = "{runtime}"
{registry}
stage_timeout = {stage_timeout}
[data]
dataset = "digits"
participants = {n}
min_records = 2
[{models}
[assignment]
min_group_size = 3
min_models = 1
max_models = 1
[training]
epochs = 1
batch_size = 16
lr = 0.3
[evaluation]
mode = "holdout"
[convergence]
error_range = [0.0, 0.0001]
max_iterations = {iterations}
[aggregation]
mode = "mask"
"""


def config_text(
    n: int, *, runtime: str, iterations: int, models: int, registry: Path | None = None
) -> str:
    """The bench's pool config for ``n`` participants on ``runtime``."""
    pool = "\n[".join(
        f'[pool.models]]\nid = "lr{i}"\narch = "logreg"\nseed = {i + 1}' for i in range(models)
    )
    return CONFIG.format(
        runtime=runtime,
        registry=f'registry = "{registry}"' if registry else "",
        stage_timeout=600.0,
        n=n,
        models=pool,
        iterations=iterations,
    )


def _steady(seconds: list[float]) -> float:
    return statistics.median(seconds[1:] if len(seconds) > 1 else seconds)


def _pool(out: Path) -> dict[str, np.ndarray]:
    from securepool.rundir import GLOBALS

    with np.load(out / GLOBALS) as npz:
        return {m: npz[m] for m in npz.files}


def _metrics_seconds(out: Path) -> list[float]:
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [float(json.loads(line)["seconds"]) for line in lines]


def run_inprocess(n: int, tmp: Path, *, iterations: int, models: int) -> dict[str, Any]:
    from securepool.runner import start_job

    cfg = tmp / "inprocess.toml"
    cfg.write_text(config_text(n, runtime="inprocess", iterations=iterations, models=models))
    out = tmp / "inprocess-run"
    start = time.perf_counter()
    start_job(cfg, out)
    wall = time.perf_counter() - start
    return {"seconds": _metrics_seconds(out), "wall_s": wall, "pool": _pool(out)}


def run_driver(n: int, tmp: Path, *, iterations: int, models: int) -> dict[str, Any]:
    from securepool.config import parse_config, parse_toml
    from securepool.coordinator.launch import demo_nodes, inprocess_split

    text = config_text(n, runtime="inprocess", iterations=iterations, models=models)
    cfg = parse_config(parse_toml(text, tmp / "driver.toml"))
    root = tmp / "driver-nodes"
    coord = inprocess_split(cfg, demo_nodes(cfg, text, root), root)
    seconds: list[float] = []
    start = time.perf_counter()
    coord.run(on_iteration=lambda r: seconds.append(r.seconds))
    wall = time.perf_counter() - start
    return {"seconds": seconds, "wall_s": wall, "pool": dict(coord.state.globals)}


#: run in a child process over another source tree (``--against``): its run_inprocess
AGAINST_CODE = """
import json, sys
from pathlib import Path
import numpy as np
from securepool.bench.scale import run_inprocess
n, tmp, iterations, models = int(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
got = run_inprocess(n, tmp, iterations=iterations, models=models)
np.savez(tmp / "against-pool.npz", **got["pool"])
print(json.dumps({"seconds": got["seconds"], "wall_s": got["wall_s"]}))
"""


def run_against(
    tree: Path, n: int, tmp: Path, *, iterations: int, models: int
) -> dict[str, Any]:
    """``inprocess`` from source tree ``tree`` (a child process, ``PYTHONPATH=tree``)."""
    from securepool.bench.trees import run_in_tree

    args = [str(n), str(tmp), str(iterations), str(models)]
    got = run_in_tree(tree, AGAINST_CODE, args, cwd=tmp)
    with np.load(tmp / "against-pool.npz") as npz:
        got["pool"] = {m: npz[m] for m in npz.files}
    return got


def prepare_simulation(n: int, root: Path, *, iterations: int, models: int) -> Path:
    """The directory ``sim-node-root``: run config, PKI, one state dir and key per node."""
    from securepool.config import participant_ids
    from securepool.node.keys import keygen, public_path
    from securepool.node.serve import KEY_NAME, SIM_CONFIG, SIM_NODES, SIM_REGISTRY

    registry = root / SIM_REGISTRY
    registry.mkdir(parents=True)
    for pid in participant_ids(n):
        key = root / SIM_NODES / pid / KEY_NAME
        keygen(key)
        (registry / f"{pid}.pub").write_bytes(public_path(key).read_bytes())
    config = root / SIM_CONFIG
    config.write_text(
        config_text(n, runtime="flower", iterations=iterations, models=models, registry=registry)
    )
    return config


def run_simulation_pool(
    n: int, tmp: Path, *, iterations: int, models: int, cpus_per_node: float
) -> dict[str, Any]:
    from securepool.config import participant_ids
    from securepool.runtime.simulation import run_simulation

    root = (tmp / "sim").resolve()
    config = prepare_simulation(n, root, iterations=iterations, models=models)
    out = root / "run"
    start = time.perf_counter()
    run_simulation(
        names=participant_ids(n),
        factory="securepool.node.serve:simulated_participant",
        coordinator="securepool.coordinator.flower:run_pool",
        coordinator_args=f"run {config} {out}",
        cpus_per_node=cpus_per_node,
        node_root=str(root),
    )
    wall = time.perf_counter() - start
    if not (out / "summary.json").exists():
        raise RuntimeError(f"the simulated pool of {n} nodes did not finish (no summary)")
    return {"seconds": _metrics_seconds(out), "wall_s": wall, "pool": _pool(out)}


def measure(
    n: int,
    runtimes: list[str],
    *,
    iterations: int,
    models: int,
    cpus_per_node: float,
    against: Path | None = None,
) -> dict[str, Any]:
    row: dict[str, Any] = {"n": n}
    pools: dict[str, dict[str, np.ndarray]] = {}
    order = list(runtimes) + (["against"] if against is not None else [])
    for runtime in order:
        load = os.getloadavg()
        with tempfile.TemporaryDirectory(prefix=f"securepool-scale-{runtime}-") as tmp:
            try:
                if runtime == "against":
                    assert against is not None
                    got = run_against(
                        against, n, Path(tmp), iterations=iterations, models=models
                    )
                elif runtime == "inprocess":
                    got = run_inprocess(n, Path(tmp), iterations=iterations, models=models)
                elif runtime == "driver":
                    got = run_driver(n, Path(tmp), iterations=iterations, models=models)
                else:
                    got = run_simulation_pool(
                        n,
                        Path(tmp),
                        iterations=iterations,
                        models=models,
                        cpus_per_node=cpus_per_node,
                    )
            except Exception as exc:  # reported, and the other runtimes still measured
                row[runtime] = {"error": f"{type(exc).__name__}: {exc}"[:500], "loadavg": load}
                continue
        pools[runtime] = got.pop("pool")
        row[runtime] = {
            "iteration_s": [round(s, 3) for s in got["seconds"]],
            "steady_s": _steady(got["seconds"]),
            "wall_s": round(got["wall_s"], 2),
            "loadavg_before": load,
            "loadavg_after": os.getloadavg(),
        }
    base = row.get("inprocess", {}).get("steady_s")
    for runtime in order:
        if base and "steady_s" in row[runtime]:
            row[runtime]["ratio_vs_inprocess"] = row[runtime]["steady_s"] / base
    theirs = row.get("against", {}).get("steady_s")
    if against is not None and theirs:
        row["against_tree"] = str(against)
        for runtime in runtimes:
            if "steady_s" in row[runtime]:
                row[runtime]["ratio_vs_against"] = row[runtime]["steady_s"] / theirs
    if "inprocess" in pools:
        row["max_abs_pool_diff_vs_inprocess"] = {
            r: max(float(np.abs(p[m] - pools["inprocess"][m]).max()) for m in p)
            for r, p in pools.items()
            if r != "inprocess" and set(p) == set(pools["inprocess"])
        }
    return row


def plot(rows: list[dict[str, Any]], path: Path, *, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    labels = {
        "inprocess": "in-process (coordinator + nodes, memory)",
        "driver": "in-process, nodes with state files",
        "against": "in-process, --against tree",
        "simulation": "Flower simulation (Ray, 2 CPUs)",
    }
    for runtime, label in labels.items():
        pts = [(r["n"], r[runtime]["steady_s"]) for r in rows if "steady_s" in r.get(runtime, {})]
        if pts:
            xs, ys = zip(*pts, strict=True)
            ax.plot(xs, ys, marker="o", label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("participants n")
    ax.set_ylabel("seconds per iteration (median, iteration 2+)")
    ax.set_title(title, fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_title(result: dict[str, Any]) -> str:
    return (
        f"mask mode, digits, {result['models']} logreg model(s), {result['cpu_count']} cores; "
        f"load {result['loadavg_before'][0]:.1f} at start, {result['loadavg_after'][0]:.1f} at end"
    )


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="securepool bench scale", description=__doc__)
    p.add_argument("--nodes", default="20,50,100,200", help="comma-separated n")
    p.add_argument("--iterations", type=int, default=3, help="pool iterations per run (>= 2)")
    p.add_argument("--models", type=int, default=1, help="logreg models in the pool")
    p.add_argument("--runtimes", default=",".join(RUNTIMES), help=f"subset of {RUNTIMES}")
    p.add_argument("--cpus-per-node", type=float, default=1.0, help="Ray CPUs per ClientApp")
    p.add_argument("--plot", type=Path, help="write a PNG of seconds per iteration vs n")
    p.add_argument("--json", type=Path, help="also write the JSON result to this file")
    p.add_argument("--replot", type=Path, help="only redraw --plot from this JSON result")
    p.add_argument(
        "--against",
        type=Path,
        help="also run inprocess from this source tree (e.g. a worktree of an older commit)",
    )
    args = p.parse_args(argv)
    if args.replot:
        if not args.plot:
            p.error("--replot needs --plot")
        old = json.loads(args.replot.read_text())
        plot(old["rows"], args.plot, title=plot_title(old))
        return 0
    ns = [int(x) for x in args.nodes.split(",")]
    runtimes = [r for r in args.runtimes.split(",") if r]
    bad = [r for r in runtimes if r not in RUNTIMES]
    if bad or args.iterations < 2 or args.models < 1 or any(n < 3 for n in ns):
        p.error(f"runtimes in {RUNTIMES}, --iterations >= 2, --models >= 1, n >= 3 (got {bad})")
    load = os.getloadavg()
    start = time.perf_counter()
    rows = []
    for n in ns:
        rows.append(
            measure(
                n,
                runtimes,
                iterations=args.iterations,
                models=args.models,
                cpus_per_node=args.cpus_per_node,
                against=args.against,
            )
        )
        print(json.dumps(rows[-1]), flush=True)  # progress, one row per n
    result = {
        "bench": "scale",
        "mode": "mask",
        "iterations": args.iterations,
        "models": args.models,
        "against": None if args.against is None else str(args.against),
        "cpu_count": os.cpu_count(),
        "loadavg_before": load,
        "loadavg_after": os.getloadavg(),
        "total_s": round(time.perf_counter() - start, 1),
        "rows": rows,
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    if args.plot:
        plot(
            rows,
            args.plot,
            title=plot_title(result),
        )
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv[1:]))
