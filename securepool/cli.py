"""``securepool`` command line: run a job, look at it, use its pool, or bench a component.

    securepool run CONFIG.toml --out DIR
    securepool run --resume DIR
    securepool show RUN_DIR
    securepool predict POOL_DIR INPUT.{csv,npz} [--proba] [--output FILE] [--factory F]
    securepool sweep CONFIG.toml --grid KEY=V1,V2 --repeats R --out DIR
    securepool keygen --out KEYFILE
    securepool audit RUN_DIR --out REPORT_DIR [--quick] [--workers N] [--builtin-records]
    securepool bench NAME [ARGS...]      (securepool bench --help lists them)
    securepool --version

Exit codes: 0 success, 1 the run finished without converging, 2 bad input (every
problem on its own line, nothing written), 3 an internal error (a bug: one line, and
``--traceback`` shows it in full), 130 interrupted (Ctrl-C), 143 terminated (SIGTERM:
``kill``, ``timeout``, ``docker stop``; stopped the same way as Ctrl-C).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape
from rich.text import Text

if TYPE_CHECKING:
    from securepool.coordinator.records import IterationRecord

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
    "agencies": "the agencies example per mode vs a central model; the statistics round",
}

INTERRUPTED = "{how}; resume with `securepool run --resume {out}`"

#: path arguments (parsed as text, so that an empty one is refused, not read as ".")
PATH_ARGS = {
    "config": "CONFIG",
    "out": "--out",
    "resume": "--resume",
    "run_dir": "RUN_DIR",
    "pool_dir": "POOL_DIR",
    "input": "INPUT",
    "output": "--output",
}


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, ``timeout``, ``docker stop``): stops a command as Ctrl-C does."""


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """While inside, SIGTERM raises :class:`Terminated` in the main thread (once: a second
    SIGTERM during the clean-up is ignored); the previous handler is restored after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    seen: list[int] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        if not seen:
            seen.append(signum)
            raise Terminated

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="securepool", description=__doc__.splitlines()[0])
    p.add_argument("--traceback", action="store_true", help="show internal errors in full")
    p.add_argument(
        "--version", action="version", version=f"securepool {_version()}", help="show the version"
    )
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the random model pool on a config")
    run.add_argument("config", nargs="?", help="run configuration (TOML)")
    run.add_argument("--out", help="output directory (must not exist or be empty)")
    run.add_argument("--resume", metavar="DIR", help="continue a run from DIR")
    run.add_argument("--quiet", action="store_true", help="no progress display")
    show = sub.add_parser("show", help="a readable summary of a run directory (verified)")
    show.add_argument("run_dir", metavar="RUN_DIR")
    predict = sub.add_parser(
        "predict", help="per-model predictions and the ensemble vote of a shared pool"
    )
    predict.add_argument("pool_dir", metavar="POOL_DIR", help="run or pool directory")
    predict.add_argument("input", metavar="INPUT", help=".csv or .npz of raw features")
    predict.add_argument(
        "--proba",
        action="store_true",
        help="also each model's class probabilities and the pool's mean (default: classes only)",
    )
    predict.add_argument(
        "--output",
        metavar="FILE",
        help="write the CSV table to FILE (replaced if it exists) instead of stdout",
    )
    predict.add_argument(
        "--factory",
        action="append",
        default=[],
        metavar="PACKAGE.MODULE:FUNCTION",
        help="a custom model's factory you trust this pool to import and call (repeatable)",
    )
    keygen = sub.add_parser("keygen", help="create a node's identity key file (mode 0600)")
    keygen.add_argument("--out", required=True, metavar="KEYFILE")
    node = sub.add_parser("node", help="an agency's node as its own long-lived service")
    node_sub = node.add_subparsers(dest="node_command", required=True)
    node_serve = node_sub.add_parser(
        "serve", help="hold the node's keys, records and state; answer its relay's socket"
    )
    node_serve.add_argument("--config", required=True, metavar="NODE.toml")
    audit = sub.add_parser("audit", help="privacy audit of a finished run directory")
    audit.add_argument("run_dir", help="a run's output directory")
    audit.add_argument("--out", required=True, help="report directory (new or empty)")
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
    sub.add_parser(
        "proxy",
        help="the SuperLink's control plane for the coordinator's addresses only",
        add_help=False,
    )
    sweep.add_argument("args", nargs=argparse.REMAINDER)
    return p


def _version() -> str:
    """The installed package's version (importlib.metadata)."""
    from securepool import _version

    return _version()


def _bench_help(console: Console) -> int:
    console.print("usage: securepool bench NAME [ARGS...]   (NAME --help for its options)")
    console.print("benchmarks (each prints one JSON object):", highlight=False)
    for name, what in BENCHES.items():
        console.print(f"  {name:<16} {escape(what)}", highlight=False, soft_wrap=True)
    return 0


class _Job:
    """Which directory a run writes, so that Ctrl-C can say how to resume it."""

    out: Path | None = None


def _paths(args: argparse.Namespace) -> None:
    """The path arguments as Paths; an empty one is bad input (it would mean ".")."""
    problems = []
    for name, flag in PATH_ARGS.items():
        value = getattr(args, name, None)
        if isinstance(value, str):
            if not value.strip():
                problems.append(f"{flag} is empty: name a path")
            else:
                setattr(args, name, Path(value))
    if problems:
        raise ConfigError(problems)


def iteration_lines(record: IterationRecord, width: int) -> list[Text]:
    """:meth:`IterationRecord.lines`, aborted groups in red and convergence in green."""
    lines = record.lines(width)
    out = []
    for line in lines:
        text = Text(line)
        text.highlight_regex(r"aborted \S+", "red")
        text.highlight_regex(r"converged$", "green")
        out.append(text)
    return out


def _run(args: argparse.Namespace, console: Console, job: _Job) -> int:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    from securepool.config import RunConfig, load_config

    problems = []
    if args.resume is None:
        if args.config is None:  # the config first: --out means nothing without it
            raise ConfigError(
                [
                    "a CONFIG file is required: `securepool run CONFIG.toml --out DIR` "
                    "(or `securepool run --resume DIR` to continue a run)"
                ]
            )
        if args.out is None:
            problems.append("--out DIR is required: a new (or empty) directory for the run")
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
        load_config(info.config_path)
        done = info.iteration
    else:
        from securepool.rundir import RunDir

        job.out = args.out
        out_problems = RunDir.out_problems(args.out)
        try:
            load_config(args.config)
        except ConfigError as exc:
            raise ConfigError([*out_problems, *exc.problems]) from None
        if out_problems:
            raise ConfigError(out_problems)

    from securepool.runner import (
        INSECURE_BANNER,
        REPRODUCIBLE_NOISE_BANNER,
        dp_noise_reproducible,
        resume_job,
        start_job,
    )
    from securepool.show import render_summary

    # a live display on a terminal only: piped into a log, a bar is a line cut short
    progress = Progress(
        TextColumn("[bold]iteration"),
        MofNCompleteColumn(),
        BarColumn(bar_width=20),
        TimeElapsedColumn(),
        TextColumn("{task.description}", markup=False),
        console=console,
        disable=args.quiet or not console.is_terminal,
        transient=False,
    )
    task = progress.add_task("", total=None)

    def stage(name: str, answered: int, asked: int) -> None:
        """Life inside an iteration: which stage, how many nodes have answered."""
        progress.update(task, description=f"{name} {answered}/{asked} nodes")

    def show(record: IterationRecord) -> None:
        progress.update(task, completed=record.iteration, description="")
        if not args.quiet:
            for line in iteration_lines(record, progress.console.width):
                progress.console.print(line, highlight=False, soft_wrap=True)

    def ready(cfg: RunConfig) -> None:
        """Every check passed: the banners, then the progress display."""
        if cfg.aggregation.mode.value == "plaintext":
            console.print(f"[bold yellow]{escape(INSECURE_BANNER)}[/bold yellow]")
        if dp_noise_reproducible(cfg):
            console.print(f"[bold yellow]{escape(REPRODUCIBLE_NOISE_BANNER)}[/bold yellow]")
        progress.update(task, total=cfg.convergence.max_iterations, completed=done)
        progress.start()

    try:
        if args.resume is not None:
            summary = resume_job(args.resume, on_iteration=show, progress=stage, on_ready=ready)
        else:
            summary = start_job(
                args.config, args.out, on_iteration=show, progress=stage, on_ready=ready
            )
    finally:
        progress.stop()
    render_summary(console, summary, job.out)
    return 0 if summary["converged"] else 1


def _show(args: argparse.Namespace, console: Console) -> int:
    from securepool.rundir import verify_run_dir
    from securepool.show import show_run

    show_run(console, verify_run_dir(args.run_dir))
    return 0


def _predict(args: argparse.Namespace, console: Console, err: Console) -> int:
    from securepool.outputs import write_atomic
    from securepool.pool import load_pool
    from securepool.predict import predict_table, read_input, read_table_input

    if args.output is not None:
        if args.output.is_dir():
            raise ConfigError([f"--output {args.output} is a directory: name a file"])
        if not args.output.parent.is_dir():
            raise ConfigError([f"--output {args.output}: no directory {args.output.parent}"])
    pool = load_pool(args.pool_dir, factories=args.factory)
    if not pool.models:
        raise ConfigError([f"{pool.path}: the pool holds no model (none passed acceptance)"])
    schema = pool.reader.schema
    x = (
        None
        if schema is None
        else read_table_input(args.input, schema, preprocessing=pool.preprocessing)
    )
    if x is None:
        x = read_input(args.input, n_features=pool.n_features, preprocessing=pool.preprocessing)
    if not pool.converged:
        err.print(
            "[bold yellow]warning:[/bold yellow] "
            + escape(f"this pool did not converge ({pool.manifest.get('stop_reason', '')})"),
            highlight=False,
        )
    table = predict_table(pool, x, proba=args.proba)
    if args.output is None:
        sys.stdout.write(table)
    else:
        write_atomic(args.output, table.encode("utf-8"))
        console.print(
            escape(f"{x.shape[0]} row(s) predicted: {args.output}"), highlight=False, soft_wrap=True
        )
    return 0


def _error(err: Console, text: str) -> None:
    err.print(f"[bold red]error:[/bold red] {escape(text)}", highlight=False, soft_wrap=True)


def _quiet_library_log() -> None:
    root = logging.getLogger("securepool")
    if not any(isinstance(h, logging.NullHandler) for h in root.handlers):
        root.addHandler(logging.NullHandler())


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    with _sigterm_as_interrupt():
        return _main(argv)


def _main(argv: list[str]) -> int:
    console = Console(stderr=False)
    err = Console(stderr=True)
    # the command says everything on its console: the library's log records (the same
    # banners and iterations) are not shown a second time by Python's fallback handler
    # (`node serve` and `proxy` configure logging themselves: their records still show)
    _quiet_library_log()
    if argv[:1] == ["bench"] and (len(argv) == 1 or argv[1] in ("-h", "--help")):
        return _bench_help(console)
    if argv[:1] == ["proxy"]:  # the SuperLink's control-plane proxy (its own parser)
        from securepool.runtime.control_proxy import main as proxy_main

        return proxy_main(argv[1:])
    sweep = argv[:1] == ["sweep"]  # its own parser (REMAINDER would refuse a leading --help)
    args: argparse.Namespace | None = None
    job = _Job()
    try:
        args = None if sweep else _parser().parse_args(argv)
        if args is None:
            from securepool.sweep.command import main as sweep_main

            return sweep_main(argv[1:])
        if args.command == "bench":
            if args.name not in BENCHES:
                raise ConfigError([f"unknown benchmark {args.name!r}; known: {', '.join(BENCHES)}"])
            module = importlib.import_module(f"securepool.bench.{args.name}")
            return int(module.main(list(args.args)))
        _paths(args)
        if args.command == "keygen":
            from securepool.node.keys import keygen, public_path

            public = keygen(args.out)
            console.print(f"identity key: {args.out} (0600); public key {public.hex()}")
            console.print(f"public key file for the PKI: {public_path(args.out)}")
            return 0
        if args.command == "node":
            from securepool.node.service import serve

            logging.basicConfig(
                level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s"
            )
            serve(Path(args.config))
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
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (Terminated)
        terminated = isinstance(exc, Terminated)
        how, code = ("terminated (SIGTERM)", 143) if terminated else ("interrupted", 130)
        out = job.out
        if out is not None and (out / "run.json").is_file():
            line = INTERRUPTED.format(how=how, out=out)
        elif out is not None:
            line = f"{how} before the first checkpoint; nothing was kept ({out} was left as it was)"
        else:
            line = f"{how}; nothing was kept"
        err.print(escape(line), highlight=False, soft_wrap=True)
        return code
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
