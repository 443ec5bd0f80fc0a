"""``securepool`` command line: ``run`` a job, or ``bench`` a component.

    securepool run CONFIG.toml --out DIR
    securepool run --resume DIR
    securepool bench NAME [ARGS...]      (e.g. secagg, he, dp, prg)

Exit codes: 0 success, 1 the run finished without converging, 2 bad input.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from crypto.errors import ConfigError, SecurePoolError

BENCHES = ("run", "secagg", "he", "dp", "summary_leakage", "prg", "runtime")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="securepool", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the random model pool on a config")
    run.add_argument("config", nargs="?", type=Path, help="run configuration (TOML)")
    run.add_argument("--out", type=Path, help="output directory (must not exist or be empty)")
    run.add_argument("--resume", type=Path, metavar="DIR", help="continue a run from DIR")
    run.add_argument("--quiet", action="store_true", help="no progress display")
    bench = sub.add_parser("bench", help="benchmarks (print JSON)", add_help=False)
    bench.add_argument("name", help=f"one of: {', '.join(BENCHES)}")
    bench.add_argument("args", nargs=argparse.REMAINDER)
    return p


def _run(args: argparse.Namespace, console: Console) -> int:
    from securepool.loop import IterationRecord
    from securepool.runner import (
        INSECURE_BANNER,
        REPRODUCIBLE_NOISE_BANNER,
        dp_noise_reproducible,
        resume_job,
        start_job,
    )

    problems = []
    if args.resume is None:
        if args.config is None:
            problems.append("a CONFIG file is required (or --resume DIR)")
        if args.out is None:
            problems.append("--out DIR is required")
    elif args.config is not None or args.out is not None:
        problems.append("--resume DIR takes neither CONFIG nor --out: it reuses DIR's config")
    if problems:
        raise ConfigError(problems)

    progress = Progress(
        TextColumn("[bold]iteration"),
        MofNCompleteColumn(),
        BarColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
        console=console,
        disable=args.quiet,
        transient=False,
    )
    task = progress.add_task("", total=None)

    def show(record: IterationRecord) -> None:
        groups = " ".join(f"{g.model_id}:{len(g.members)}" for g in record.groups)
        aborted = [g.model_id for g in record.groups if g.status.startswith("aborted")]
        errs = " ".join(f"{m} {e:.3f}" for m, e in record.test_errors.items())
        progress.update(
            task, completed=record.iteration, description=f"groups {groups} | err {errs}"
        )
        if not args.quiet:
            flag = f" [red]aborted {','.join(aborted)}[/red]" if aborted else ""
            done = " [green]converged[/green]" if record.converged else ""
            progress.console.print(
                f"it {record.iteration:3d} | groups {groups} | test error {errs}{flag}{done}",
                highlight=False,
            )

    with progress:
        if args.resume is not None:
            summary = resume_job(args.resume, on_iteration=show)
            out = args.resume
        else:
            from securepool.config import load_config

            cfg = load_config(args.config)
            progress.update(task, total=cfg.convergence.max_iterations)
            if cfg.aggregation.mode.value == "plaintext":
                console.print(f"[bold yellow]{INSECURE_BANNER}[/bold yellow]")
            if dp_noise_reproducible(cfg):
                console.print(f"[bold yellow]{REPRODUCIBLE_NOISE_BANNER}[/bold yellow]")
            summary = start_job(args.config, args.out, on_iteration=show)
            out = args.out
    console.print(
        f"{summary['stop_reason']} after {summary['iterations']} iteration(s), "
        f"{summary['wall_time_s']:.1f} s"
    )
    for mid, m in summary["models"].items():
        state = (
            "kept" if mid in summary["pool"] else ("eliminated" if m["accepted"] else "rejected")
        )
        console.print(
            f"  {mid:<10} accuracy {m['test_accuracy']:.4f}  error bound {m['error_bound']:.4f}  "
            f"{state}: {m['reason']}"
        )
    console.print(f"shared pool: {out / 'pool' / 'manifest.json'}")
    return 0 if summary["converged"] else 1


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    console = Console(stderr=False)
    err = Console(stderr=True)
    args = _parser().parse_args(argv)
    try:
        if args.command == "bench":
            if args.name not in BENCHES:
                raise ConfigError([f"unknown benchmark {args.name!r}; known: {', '.join(BENCHES)}"])
            module = importlib.import_module(f"securepool.bench.{args.name}")
            return int(module.main(list(args.args)))
        return _run(args, console)
    except ConfigError as exc:
        err.print(f"[bold red]error:[/bold red] {exc}", highlight=False)
        return 2
    except SecurePoolError as exc:
        err.print(f"[bold red]error:[/bold red] {type(exc).__name__}: {exc}", highlight=False)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
