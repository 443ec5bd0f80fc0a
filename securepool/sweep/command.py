"""``securepool sweep``: a grid of whole runs in parallel, as one csv and two plots.

    securepool sweep CONFIG.toml --grid KEY=V1,V2 [--grid ...] --repeats R --out DIR
                     [--workers W] [--quiet]

Every combination of the ``--grid`` values (see :mod:`securepool.sweep.grid`) is a
cell; every cell runs ``R`` times, repeat ``k`` with ``run.seed + k`` (so repeats differ
in the data split, the assignment and the training noise). Runs go to worker processes
(:mod:`securepool.sweep.worker`) and land in ``DIR/runs/<cell>-r<k>/``. Output:

    DIR/sweep.json                 the base config, grid and repeats of the last call
    DIR/configs/<cell>-r<k>.toml   the exact config of every run
    DIR/runs/<cell>-r<k>/          every run's output directory
    DIR/sweep.csv                  one row per run (columns: securepool.sweep.runs)
    DIR/accuracy_vs_epsilon.png, DIR/accuracy_vs_cost.png

A repeated sweep skips the runs that are finished (:func:`securepool.sweep.runs.verify`)
and redoes any other from scratch, so an interrupted sweep resumes where it stopped.
Bad grid keys or values: every problem is listed, exit 2, nothing is written.
Exit 1 when some run failed (its traceback is in ``DIR/runs/.<name>.error.txt``).
"""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing as mp
import os
import queue as queue_mod
import tomllib
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from crypto.errors import ConfigError
from securepool.outputs import write_atomic, write_json
from securepool.sweep.grid import parse_axes, plan
from securepool.sweep.plots import cell_points, plot_accuracy_vs_cost, plot_accuracy_vs_epsilon
from securepool.sweep.runs import RunSpec, row, run_specs, verify
from securepool.sweep.table import write_csv
from securepool.sweep.worker import init_worker, run_one

#: keys the sweep sets itself: a grid over them would be silently overridden
RESERVED = {"run.record_transcripts": "the sweep records transcripts to measure bytes sent"}
SWEEP_FORMAT = "securepool-sweep/1"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="securepool sweep", description="a grid of whole runs in parallel: sweep.csv and plots"
    )
    p.add_argument("config", type=Path, help="base run configuration (TOML)")
    p.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="KEY=V1,V2",
        help="a dotted config key and its values (TOML); repeat for more axes",
    )
    p.add_argument("--repeats", type=int, default=1, help="runs per cell (seed + k)")
    p.add_argument("--out", type=Path, required=True, help="sweep directory (resumable)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="worker processes")
    p.add_argument("--quiet", action="store_true", help="no progress display")
    return p


def _base_table(path: Path) -> tuple[dict[str, Any], str]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"config file not found: {path}"]) from None
    except OSError as exc:
        raise ConfigError([f"cannot read config file {path}: {exc}"]) from None
    try:
        return tomllib.loads(text), text
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: not valid TOML: {exc}"]) from None


def prepare(args: argparse.Namespace) -> tuple[list[str], list[RunSpec]]:
    """Validate everything; raise ConfigError listing every problem. Writes nothing."""
    problems: list[str] = []
    if args.repeats < 1:
        problems.append(f"--repeats must be >= 1, got {args.repeats}")
    if args.workers < 1:
        problems.append(f"--workers must be >= 1, got {args.workers}")
    if not args.grid:
        problems.append("at least one --grid KEY=V1,V2 is needed")
    axes, grid_problems = parse_axes(args.grid)
    problems += grid_problems
    for axis in axes:
        if axis.key in RESERVED:
            problems.append(f"--grid {axis.key}: not sweepable ({RESERVED[axis.key]})")
    out: Path = args.out
    if out.exists() and (
        not out.is_dir() or (any(out.iterdir()) and not (out / "sweep.json").is_file())
    ):
        problems.append(f"--out {out} exists and is not a sweep directory (no sweep.json)")
    try:
        base, _ = _base_table(args.config)
    except ConfigError as exc:
        raise ConfigError([*problems, *exc.problems]) from None
    try:
        cells = plan(base, [a for a in axes if a.key not in RESERVED])
    except ConfigError as exc:
        problems += exc.problems
    if problems:
        raise ConfigError(problems)
    return [a.key for a in axes], run_specs(cells, args.repeats)


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    console = Console()
    keys, specs = prepare(args)
    out: Path = args.out
    _, base_text = _base_table(args.config)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    (out / "configs").mkdir(exist_ok=True)
    write_json(
        out / "sweep.json",
        {
            "format": SWEEP_FORMAT,
            "config": str(args.config),
            "config_sha256": hashlib.sha256(base_text.encode()).hexdigest(),
            "grid": args.grid,
            "repeats": args.repeats,
            "runs": [s.name for s in specs],
        },
    )
    rows: dict[str, dict[str, Any]] = {}
    pending: list[RunSpec] = []
    for spec in specs:
        cfg_path = out / "configs" / f"{spec.name}.toml"
        if not cfg_path.is_file() or cfg_path.read_text(encoding="utf-8") != spec.config_text:
            write_atomic(cfg_path, spec.config_text.encode("utf-8"))
        if verify(out / "runs" / spec.name, spec.config_text) is None:
            rows[spec.name] = row(spec, out / "runs" / spec.name)
        else:
            pending.append(spec)
    console.print(
        f"sweep: {len(specs)} run(s) = {len(specs) // args.repeats} cell(s) x {args.repeats} "
        f"repeat(s); {len(rows)} finished already, {len(pending)} to run on "
        f"{min(args.workers, max(len(pending), 1))} worker(s)"
    )
    failures = _run_pending(out, pending, workers=args.workers, quiet=args.quiet, console=console)
    by_name = {s.name: s for s in specs}
    for spec in pending:
        if spec.name not in failures:
            problem = verify(out / "runs" / spec.name, spec.config_text)
            if problem is None:
                rows[spec.name] = row(by_name[spec.name], out / "runs" / spec.name)
            else:
                failures[spec.name] = f"finished but does not verify: {problem}"
    _write_outputs(out, keys, specs, rows)
    console.print(f"sweep.csv: {out / 'sweep.csv'} ({len(rows)} row(s))")
    for name, message in sorted(failures.items()):
        console.print(f"[bold red]failed[/bold red] {name}: {message}", highlight=False)
    return 1 if failures else 0


def _write_outputs(
    out: Path, keys: list[str], specs: list[RunSpec], rows: dict[str, dict[str, Any]]
) -> None:
    ordered = [rows[s.name] for s in specs if s.name in rows]
    write_csv(out / "sweep.csv", keys, ordered)
    if ordered:
        points = cell_points(ordered, keys)
        vary = [k for k in keys if k != "aggregation.mode"]
        plot_accuracy_vs_epsilon(points, out / "accuracy_vs_epsilon.png")
        plot_accuracy_vs_cost(points, out / "accuracy_vs_cost.png", vary=vary)


def _run_pending(
    out: Path, pending: list[RunSpec], *, workers: int, quiet: bool, console: Console
) -> dict[str, str]:
    if not pending:
        return {}
    ctx = mp.get_context("spawn")
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=quiet,
    )
    with progress:
        q = ctx.Queue()
        jobs = [
            (s.name, str(out / "configs" / f"{s.name}.toml"), str(out / "runs" / s.name))
            for s in pending
        ]
        overall = progress.add_task("[bold]runs", total=len(jobs))
        active: dict[str, TaskID] = {}
        with ctx.Pool(min(workers, len(jobs)), initializer=init_worker, initargs=(q,)) as pool:
            result = pool.map_async(run_one, jobs, chunksize=1)
            # the queue only drives the display; which runs failed comes from the results
            while not result.ready() or not q.empty():
                try:
                    kind, name, value = q.get(timeout=0.2)
                except queue_mod.Empty:
                    continue
                if kind == "start":
                    active[name] = progress.add_task(f"  {name}", total=value)
                elif kind == "iteration" and name in active:
                    progress.update(active[name], completed=value)
                else:
                    if name in active:
                        progress.remove_task(active.pop(name))
                    progress.advance(overall)
                    if kind == "failed":
                        progress.console.print(f"[red]failed[/red] {name}: {value}")
            failures = {name: error for name, error in result.get() if error is not None}
    return failures
