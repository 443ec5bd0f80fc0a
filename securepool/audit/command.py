"""``securepool audit RUN_DIR --out REPORT_DIR``: every check, one report.

The run directory is verified first (:func:`securepool.audit.inputs.load_run`); a bad
one raises :class:`securepool.rundir.RunDirError` (a ConfigError, exit 2) before
anything is written. The report is built in a temporary directory beside REPORT_DIR
and renamed into place at the end, so an interrupted or failed audit leaves nothing.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from crypto.errors import ConfigError, SecurePoolError
from securepool.audit.inputs import AuditInputs, load_run, own_module

AUDIT_FORMAT = "securepool-audit/1"
# the sections of audit.json; threat_model.md names them as [audit: CHECK]
CHECKS = ("dp", "membership", "canaries", "transcripts", "inversion")


#: why the record-based sections are skipped for a deployed run (see audit_run)
RECORDS_UNKNOWN = (
    "not measured: this is a deployed run (run.runtime = 'flower'), whose records are the "
    "agencies' own and are not in the coordinator's run directory; audit at the agency, "
    "or pass --builtin-records if every node trained on its built-in partition (a demo "
    "deployment)"
)


def records_known(run: AuditInputs, *, builtin_records: bool) -> bool:
    """Whether the audit can rebuild every participant's records from the config: always
    for the in-process and multiprocess runtimes (built-in data, partitioned from the
    config), for a deployed run only when the caller says its nodes used that partition."""
    from securepool.config import Runtime

    return run.config.run.runtime is not Runtime.FLOWER or builtin_records


def _inversion(run: AuditInputs, *, quick: bool) -> dict[str, Any]:
    inversion = own_module("securepool.audit.inversion")
    if inversion is None:
        return {
            "skipped": "gradient inversion audit not available in this installation "
            "(securepool/audit/inversion.py is missing); nothing was measured"
        }
    from securepool.audit.targets import auditor_data

    try:
        # the run's federated data, rebuilt from the config (without the canaries)
        data = auditor_data(run).data
        result: dict[str, Any] = inversion.inversion_audit(
            config=run.config, data=data, quick=quick
        )
    except SecurePoolError as exc:
        return {"skipped": f"gradient inversion audit failed: {type(exc).__name__}: {exc}"}
    return result


def _json_default(v: Any) -> Any:
    """bytes (e.g. a PNG from the inversion section) as a base64 data: URI."""
    if isinstance(v, bytes):
        kind = "image/png" if v.startswith(b"\x89PNG") else "application/octet-stream"
        return f"data:{kind};base64,{base64.b64encode(v).decode()}"
    raise TypeError(f"{type(v).__name__} is not JSON serialisable")


def _check_out(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError([f"report directory {out} already exists and is not empty"])


def audit_run(
    run_dir: Path,
    *,
    quick: bool = False,
    workers: int = 1,
    builtin_records: bool = False,
    on_stage: Callable[[str, int | None], None] = lambda name, total: None,
    tick: Callable[[], None] = lambda: None,
) -> dict[str, Any]:
    """Run every check on ``run_dir`` and return audit.json's content (writes nothing).

    ``workers`` processes train the shadow models (0: one per CPU core; 1: in this
    process). Results do not depend on it. The membership, canary and inversion checks
    need every participant's records: for a deployed run (``run.runtime = "flower"``)
    they are skipped, with the reason, unless ``builtin_records`` says its nodes trained
    on the built-in partition.
    """
    from securepool.audit.canaries import canary_audit
    from securepool.audit.dp import dp_audit
    from securepool.audit.membership import SHADOWS_FULL, SHADOWS_QUICK, membership_audit
    from securepool.audit.transcripts import transcript_audit

    on_stage("verifying the run directory", 1)
    run = load_run(run_dir)
    import torch

    torch.set_num_threads(run.config.run.torch_threads)
    tick()
    timings: dict[str, float] = {}
    audit: dict[str, Any] = {
        "format": AUDIT_FORMAT,
        "run_dir": str(run_dir),
        "mode": "quick" if quick else "full",
        "config_sha256": run.manifest["config_sha256"],
        "aggregation": run.manifest["aggregation"],
        "iterations": run.summary["iterations"],
        "pool": sorted(run.pool),
    }
    known = records_known(run, builtin_records=builtin_records)
    shadows = (SHADOWS_QUICK if quick else SHADOWS_FULL) * len(run.pool) if known else 0
    stages: list[tuple[str, str, int, Callable[[], dict[str, Any]]]] = [
        ("dp", "DP accounting", 1, lambda: dp_audit(run)),
        (
            "membership",
            "membership inference (shadow models)",
            shadows,
            lambda: membership_audit(
                run, quick=quick, workers=workers or os.cpu_count() or 1, tick=tick
            )
            if known
            else {"skipped": RECORDS_UNKNOWN, "models": {}},
        ),
        (
            "canaries",
            "canary audit",
            1,
            lambda: canary_audit(run) if known else {"enabled": False, "note": RECORDS_UNKNOWN},
        ),
        ("transcripts", "transcripts and group sizes", 1, lambda: transcript_audit(run)),
        (
            "inversion",
            "gradient inversion",
            1,
            lambda: _inversion(run, quick=quick) if known else {"skipped": RECORDS_UNKNOWN},
        ),
    ]
    for key, label, total, fn in stages:
        on_stage(label, total)
        start = time.perf_counter()
        audit[key] = fn()
        timings[key] = round(time.perf_counter() - start, 3)
        if key != "membership":
            tick()
    audit["empirical_vs_accountant"] = empirical_vs_accountant(audit)
    audit["timings_s"] = timings
    return audit


def empirical_vs_accountant(audit: dict[str, Any]) -> dict[str, Any]:
    """The empirical bounds beside the accountant's epsilon, with each check's power.

    The membership bound is the section's headline: the maximum of its row bounds, each
    Bonferroni-corrected, so it holds at 95% (``membership_correction``). The canary
    bound divides its error rate the same way. ``power`` is, per check, the best bound
    its design could certify, the verdict and the sentence the report prints
    (:func:`securepool.audit.stats.power_verdict`).
    """
    mem = audit["membership"].get("headline") or {}
    can = audit["canaries"]
    power: dict[str, Any] = {}
    if mem:
        power["membership"] = {k: mem[k] for k in ("power", "verdict", "statement")}
    if can.get("enabled"):
        power["canaries"] = {k: can[k] for k in ("power", "verdict", "statement")}
    return {
        "accountant_epsilon": audit["dp"]["worst_epsilon"],
        "membership_epsilon_lower_bound": mem.get("epsilon_lower_bound"),
        "membership_correction": (f"bonferroni over {mem['family_size']} bounds" if mem else None),
        "canary_epsilon_lower_bound": can.get("epsilon_lower_bound"),
        "canary_best_possible": can.get("best_possible_with_m"),
        "canary_correction": (
            f"bonferroni over {can['bonferroni_tests']} tests" if can.get("enabled") else None
        ),
        "power": power,
    }


def write_audit(out: Path, audit: dict[str, Any]) -> None:
    """Write audit.json + reports into a temp dir beside ``out``, then rename it."""
    from securepool.audit.report import write_report

    _check_out(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        (tmp / "audit.json").write_text(
            json.dumps(audit, indent=2, sort_keys=True, default=_json_default) + "\n",
            encoding="utf-8",
        )
        write_report(tmp, audit)
        if out.exists():
            out.rmdir()  # empty (checked above)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def main(
    run_dir: Path,
    out: Path,
    *,
    quick: bool,
    workers: int,
    console: Console,
    quiet: bool,
    builtin_records: bool = False,
) -> int:
    """The CLI entry: 0 on success; bad input raises ConfigError (the CLI exits 2)."""
    _check_out(out)
    if workers < 0:
        raise ConfigError([f"--workers must be >= 0, got {workers}"])
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=quiet,
    )
    current: list[Any] = []

    def on_stage(name: str, total: int | None) -> None:
        if current:
            progress.update(current[-1], completed=progress.tasks[-1].total)
        current.append(progress.add_task(name, total=total))

    def tick() -> None:
        if current:
            progress.advance(current[-1])

    with progress:
        audit = audit_run(
            run_dir,
            quick=quick,
            workers=workers,
            builtin_records=builtin_records,
            on_stage=on_stage,
            tick=tick,
        )
    write_audit(out, audit)
    ev = audit["empirical_vs_accountant"]
    console.print(
        f"accountant epsilon {ev['accountant_epsilon']}, membership lower bound "
        f"{ev['membership_epsilon_lower_bound']} (95%, Bonferroni), canary lower bound "
        f"{ev['canary_epsilon_lower_bound']}"
    )
    for check, p in ev["power"].items():
        console.print(f"{check}: {p['statement']}", highlight=False)
    for w in audit["dp"]["warnings"]:
        console.print(f"[bold yellow]warning:[/bold yellow] {w}", highlight=False)
    console.print(f"report: {out / 'report.html'} (and audit.json, report.md)")
    return 0
