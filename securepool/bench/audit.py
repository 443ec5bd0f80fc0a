"""``securepool bench audit``: how long the audit of a run takes, beside the run itself.

    securepool bench audit --config examples/digits.toml --repeats 3 [--quick] [--workers N]
        [--set audit.canaries=300]

Runs the config once (its wall time is the baseline, measured in the same process),
then audits the run directory ``--repeats`` times (each into a fresh report directory,
shadow models included). Prints one JSON object: the run's wall time, the audit's
median wall time and per-stage medians, their ratio to the run, the shadow models
trained, and the load average before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any

from securepool.audit.command import audit_run, write_audit
from securepool.bench.run import _dump_toml, with_overrides
from securepool.runner import start_job


def _headline(audit: dict[str, Any]) -> dict[str, Any]:
    """The figures a reader quotes: AUCs, TPR at each FPR, the epsilon bounds."""
    mem = {
        mid: {
            attack: {
                "auc": round(e[attack]["auc"], 4),
                "tpr_at_fpr": {
                    str(r["target_fpr"]): [round(r["tpr"], 4), r["resolvable"]]
                    for r in e[attack]["at_fpr"]
                },
            }
            for attack in ("loss_threshold", "lira")
        }
        for mid, e in audit["membership"]["models"].items()
    }
    return {
        "non_members": audit["membership"]["non_members"],
        "membership": mem,
        "empirical_vs_accountant": audit["empirical_vs_accountant"],
    }


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="securepool bench audit")
    p.add_argument("--config", type=Path, default=Path("examples/digits.toml"))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="the audit's --quick mode")
    p.add_argument("--workers", type=int, default=0, help="the audit's --workers (0: per core)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value (TOML syntax), e.g. audit.canaries=300",
    )
    args = p.parse_args(argv)
    load_before = os.getloadavg()
    table = tomllib.loads(args.config.read_text(encoding="utf-8"))
    extra = {k: tomllib.loads(f"v = {v}")["v"] for k, v in (s.split("=", 1) for s in args.set)}
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "config.toml"
        config.write_text(_dump_toml(with_overrides(table, extra)), encoding="utf-8")
        run = Path(tmp) / "run"
        start = time.perf_counter()
        start_job(config, run)
        run_s = time.perf_counter() - start
        walls: list[float] = []
        stages: dict[str, list[float]] = {}
        last: dict[str, Any] = {}
        for i in range(args.repeats):
            start = time.perf_counter()
            last = audit_run(run, quick=args.quick, workers=args.workers)
            write_audit(Path(tmp) / f"report{i}", last)
            walls.append(time.perf_counter() - start)
            for k, v in last["timings_s"].items():
                stages.setdefault(k, []).append(v)
    audit_s = statistics.median(walls)
    out = {
        "config": str(args.config),
        "overrides": extra,
        "quick": args.quick,
        "workers": args.workers or os.cpu_count(),
        "repeats": args.repeats,
        "run_wall_s": round(run_s, 3),
        "audit_wall_s_median": round(audit_s, 3),
        "audit_wall_s_all": [round(w, 3) for w in walls],
        "audit_over_run": round(audit_s / run_s, 2),
        "stage_s_median": {k: round(statistics.median(v), 3) for k, v in stages.items()},
        "shadow_models": sum(m["shadow_models"] for m in last["membership"]["models"].values()),
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "cpus": os.cpu_count(),
        "results": _headline(last),
    }
    print(json.dumps(out, indent=2))
    return 0
