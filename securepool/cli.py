"""``securepool`` command line: run a job, look at it, use its pool, or bench a component.

    securepool run CONFIG.toml --out DIR
    securepool run --resume DIR
    securepool show RUN_DIR
    securepool predict POOL_DIR INPUT.{csv,npz}
    securepool sweep CONFIG.toml --grid KEY=V1,V2 --repeats R --out DIR
    securepool keygen --out KEYFILE
    securepool audit RUN_DIR --out REPORT_DIR [--quick] [--workers N] [--builtin-records]
    securepool bench NAME [ARGS...]      (securepool bench --help lists them)

Exit codes: 0 success, 1 the run finished without converging, 2 bad input (every
problem on its own line, nothing written), 3 an internal error (a bug: one line, and
``--traceback`` shows it in full), 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from crypto.errors import ConfigError, SecurePoolError

#: name -> what it measures (the first docstring line of securepool/bench/NAME.py)
BENCHES = {
    "run": "whole jobs per aggregation mode: wall time, iterations, accuracy",
    "secagg": "one SecAgg+ session: client and server time, bytes, vs plaintext",
    "mask_binding": "mask-mode binding (issue 13): participant, coordinator, auditor cost",
    "he": "one HE (CKKS) session vs raw TenSEAL: encryption, summing, decryption",
    "he_binding": "HE binding of the trust check: fold, auditor and bytes vs plain HE",
    "dp": "DP-SGD epoch: plain SGD vs Opacus default noise vs secure discrete noise",
    "summary_leakage": "what the sealed summaries leak: reconstruction from a sketch",
    "prg": "mask expansion (AES-CTR / ChaCha20) throughput, encoding and Shamir",
    "beacon": "the S403 commit-reveal beacon: per-participant and coordinator time, bytes",
    "inversion": "gradient inversion of updates and aggregates (closed form, DLG)",
    "audit": "securepool audit of the demo run: wall time per check, headline results",
    "runtime": "Driver exchanges: in-process vs Flower simulation (Ray) or a local deployment",
    "node_imports": "what a Flower ClientApp imports per message: node factories vs eager",
    "scale": "the real pool per iteration vs n: in-process vs Flower simulation (Ray)",
    "demo": "the digits demo's iterations per second, against another source tree",
}

INTERRUPTED = "interrupted; resume with `securepool run --resume {out}`"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="securepool", description=__doc__.splitlines()[0])
    p.add_argument("--traceback", action="store_true", help="show internal errors in full")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the random model pool on a config")
    run.add_argument("config", nargs="?", type=Path, help="run configuration (TOML)")
    run.add_argument("--out", type=Path, help="output directory (must not exist or be empty)")
    run.add_argument("--resume", type=Path, metavar="DIR", help="continue a run from DIR")
    run.add_argument("--quiet", action="store_true", help="no progress display")
    show = sub.add_parser("show", help="a readable summary of a run directory (verified)")
    show.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    predict = sub.add_parser(
        "predict", help="per-model predictions and the ensemble vote of a shared pool"
    )
    predict.add_argument("pool_dir", type=Path, metavar="POOL_DIR", help="run or pool directory")
    predict.add_argument("input", type=Path, metavar="INPUT", help=".csv or .npz of raw features")
    keygen = sub.add_parser("keygen", help="create a node's identity key file (mode 0600)")
    keygen.add_argument("--out", type=Path, required=True, metavar="KEYFILE")
    audit = sub.add_parser("audit", help="privacy audit of a finished run directory")
    audit.add_argument("run_dir", type=Path, help="a run's output directory")
    audit.add_argument("--out", type=Path, required=True, help="report directory (new or empty)")
    audit.add_argument("--quick", action="store_true", help="fewer shadow models (smoke runs)")
    audit.add_argument(
        "--workers", type=int, default=0, help="shadow-model processes (0: per core)"
    )
    audit.add_argument("--quiet", action="store_true", help="no progress display")
    audit.add_argument(
        "--builtin-records",
        action="store_true",
        help="a deployed run whose nodes trained on the built-in partition (a demo): "
        "measure membership, canaries and inversion anyway",
    )
    bench = sub.add_parser("bench", help="benchmarks (print JSON)", add_help=False)
    bench.add_argument("name", nargs="?", help=f"one of: {', '.join(BENCHES)}")
    bench.add_argument("args", nargs=argparse.REMAINDER)
    sweep = sub.add_parser("sweep", help="a grid of runs in parallel (csv + plots)", add_help=False)
    sweep.add_argument("args", nargs=argparse.REMAINDER)
    return p


def _bench_help(console: Console) -> int:
    console.print("usage: securepool bench NAME [ARGS...]   (NAME --help for its options)")
    console.print("benchmarks (each prints one JSON object):", highlight=False)
    for name, what in BENCHES.items():
        console.print(f"  {name:<16} {escape(what)}", highlight=False, soft_wrap=True)
    return 0


class _Job:
    """Which directory a run writes, so that Ctrl-C can say how to resume it."""

    out: Path | None = None


def _run(args: argparse.Namespace, console: Console, job: _Job) -> int:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    from securepool.config import load_config

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
    # the fast checks first (no torch yet): the config and the output path, listed together
    done = 0  # iterations committed before this session
    if args.resume is not None:
        from securepool.rundir import verify_run_dir

        job.out = args.resume
        info = verify_run_dir(args.resume, repair=True)  # the file at fault, before anything
        cfg = load_config(info.config_path)
        done = info.iteration
    else:
        from securepool.rundir import RunDir

        job.out = args.out
        out_problems = RunDir.out_problems(args.out)
        try:
            cfg = load_config(args.config)
        except ConfigError as exc:
            raise ConfigError([*out_problems, *exc.problems]) from None
        if out_problems:
            raise ConfigError(out_problems)

    from securepool.coordinator.records import IterationRecord
    from securepool.runner import (
        INSECURE_BANNER,
        REPRODUCIBLE_NOISE_BANNER,
        dp_noise_reproducible,
        resume_job,
        start_job,
    )
    from securepool.show import render_summary

    progress = Progress(
        TextColumn("[bold]iteration"),
        MofNCompleteColumn(),
        BarColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.description}", markup=False),
        console=console,
        disable=args.quiet,
        transient=False,
    )
    task = progress.add_task("", total=None)
    current = {"iteration": done}

    def stage(name: str, answered: int, asked: int) -> None:
        """Life inside an iteration: which stage, how many nodes have answered."""
        progress.update(
            task,
            description=f"iteration {current['iteration'] + 1}: {name} {answered}/{asked} nodes",
        )

    def show(record: IterationRecord) -> None:
        current["iteration"] = record.iteration
        groups = " ".join(f"{g.model_id}:{len(g.members)}" for g in record.groups)
        aborted = [g.model_id for g in record.groups if g.status.startswith("aborted")]
        errs = " ".join(f"{m} {e:.3f}" for m, e in record.test_errors.items())
        progress.update(
            task, completed=record.iteration, description=f"groups {groups} | err {errs}"
        )
        if not args.quiet:
            flag = f" [red]aborted {escape(','.join(aborted))}[/red]" if aborted else ""
            done = " [green]converged[/green]" if record.converged else ""
            progress.console.print(
                escape(f"it {record.iteration:3d} | groups {groups} | test error {errs}")
                + flag
                + done,
                highlight=False,
            )

    progress.update(task, total=cfg.convergence.max_iterations)
    if cfg.aggregation.mode.value == "plaintext":
        console.print(f"[bold yellow]{escape(INSECURE_BANNER)}[/bold yellow]")
    if dp_noise_reproducible(cfg):
        console.print(f"[bold yellow]{escape(REPRODUCIBLE_NOISE_BANNER)}[/bold yellow]")
    with progress:
        if args.resume is not None:
            summary = resume_job(args.resume, on_iteration=show, progress=stage)
        else:
            summary = start_job(args.config, args.out, on_iteration=show, progress=stage)
    render_summary(console, summary, job.out)
    return 0 if summary["converged"] else 1


def _show(args: argparse.Namespace, console: Console) -> int:
    from securepool.rundir import verify_run_dir
    from securepool.show import show_run

    show_run(console, verify_run_dir(args.run_dir))
    return 0


def _predict(args: argparse.Namespace, console: Console, err: Console) -> int:
    from securepool.pool import load_pool
    from securepool.predict import predict_table, read_input

    pool = load_pool(args.pool_dir)
    if not pool.models:
        raise ConfigError([f"{pool.path}: the pool holds no model (none passed acceptance)"])
    x = read_input(args.input, n_features=pool.n_features)
    if not pool.converged:
        err.print(
            "[bold yellow]warning:[/bold yellow] "
            + escape(f"this pool did not converge ({pool.manifest.get('stop_reason', '')})"),
            highlight=False,
        )
    sys.stdout.write(predict_table(pool, x))
    return 0


def _error(err: Console, text: str) -> None:
    err.print(f"[bold red]error:[/bold red] {escape(text)}", highlight=False, soft_wrap=True)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    console = Console(stderr=False)
    err = Console(stderr=True)
    if argv[:1] == ["bench"] and (len(argv) == 1 or argv[1] in ("-h", "--help")):
        return _bench_help(console)
    sweep = argv[:1] == ["sweep"]  # its own parser (REMAINDER would refuse a leading --help)
    args = None if sweep else _parser().parse_args(argv)
    job = _Job()
    try:
        if args is None:
            from securepool.sweep.command import main as sweep_main

            return sweep_main(argv[1:])
        if args.command == "bench":
            if args.name not in BENCHES:
                raise ConfigError([f"unknown benchmark {args.name!r}; known: {', '.join(BENCHES)}"])
            module = importlib.import_module(f"securepool.bench.{args.name}")
            return int(module.main(list(args.args)))
        if args.command == "keygen":
            from securepool.node.keys import keygen, public_path

            public = keygen(args.out)
            console.print(f"identity key: {args.out} (0600); public key {public.hex()}")
            console.print(f"public key file for the PKI: {public_path(args.out)}")
            return 0
        if args.command == "audit":
            from securepool.audit.command import main as audit_main

            return audit_main(
                args.run_dir,
                args.out,
                quick=args.quick,
                workers=args.workers,
                console=console,
                quiet=args.quiet,
                builtin_records=args.builtin_records,
            )
        if args.command == "show":
            return _show(args, console)
        if args.command == "predict":
            return _predict(args, console, err)
        return _run(args, console, job)
    except KeyboardInterrupt:
        out = job.out
        if out is not None and (out / "run.json").is_file():
            err.print(escape(INTERRUPTED.format(out=out)), highlight=False, soft_wrap=True)
        else:
            where = f" ({out} was left as it was)" if out is not None else ""
            err.print(
                escape(f"interrupted before the first checkpoint; nothing was kept{where}"),
                highlight=False,
                soft_wrap=True,
            )
        return 130
    except ConfigError as exc:
        for p in exc.problems:
            _error(err, p)
        return 2
    except SecurePoolError as exc:
        _error(err, f"{type(exc).__name__}: {exc}")
        return 2
    except OSError as exc:  # a path that cannot be written, a full disk
        where = f"{exc.filename}: " if exc.filename else ""
        _error(err, f"{where}{exc.strerror or exc}")
        return 2
    except Exception as exc:
        if args is None or args.traceback:
            raise
        _error(
            err,
            f"internal error (a bug): {type(exc).__name__}: {exc}; "
            "rerun with `securepool --traceback ...` for the details",
        )
        return 3


if __name__ == "__main__":
    raise SystemExit(main())
