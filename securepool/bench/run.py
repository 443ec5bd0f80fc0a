"""``securepool bench run``: whole jobs per aggregation mode, timed, with their accuracy.

    securepool bench run --config examples/digits.toml --modes plaintext,mask,he --repeats 3

Prints one JSON object: per mode the median wall time of the run (the loop, P5 and the
pool written; not interpreter start-up), iterations, converged, best accepted accuracy,
and the ratios against the first mode (the baseline measured in the same process).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any

from securepool.runner import start_job


def _dump_toml(table: dict[str, Any]) -> str:
    """Tiny TOML writer for the config shapes SecurePool uses."""

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return repr(v)

    lines: list[str] = []

    def emit(prefix: str, tbl: dict[str, Any]) -> None:
        scalars = {
            k: v
            for k, v in tbl.items()
            if not isinstance(v, dict)
            and not (isinstance(v, list) and v and isinstance(v[0], dict))
        }
        if prefix and scalars:
            lines.append(f"[{prefix}]")
        for k, v in scalars.items():
            lines.append(f"{k} = {value(v)}")
        for k, v in tbl.items():
            name = f"{prefix}.{k}" if prefix else k
            if isinstance(v, dict):
                emit(name, v)
            elif isinstance(v, list) and v and isinstance(v[0], dict):
                for item in v:
                    lines.append(f"[[{name}]]")
                    lines.extend(f"{ik} = {value(iv)}" for ik, iv in item.items())

    emit("", table)
    return "\n".join(lines) + "\n"


def with_overrides(table: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Copy of ``table`` with dotted-key overrides, e.g. {"aggregation.mode": "mask"}."""
    out: dict[str, Any] = json.loads(json.dumps(table))
    for dotted, v in overrides.items():
        node = out
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = v
    return out


def run_once(table: dict[str, Any]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "config.toml"
        cfg.write_text(_dump_toml(table))
        start = time.perf_counter()
        summary = start_job(cfg, Path(tmp) / "run")
        wall = time.perf_counter() - start
    return {
        "wall_s": wall,
        "iterations": summary["iterations"],
        "converged": summary["converged"],
        "best_accuracy": summary["best_accuracy"],
        "best_model_accuracy": max(m["test_accuracy"] for m in summary["models"].values()),
        "worst_case_epsilon": summary["worst_case_epsilon"],
    }


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="securepool bench run")
    p.add_argument("--config", type=Path, default=Path("examples/digits.toml"))
    p.add_argument("--modes", default="plaintext", help="comma-separated aggregation modes")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value (TOML syntax), e.g. training.epochs=3",
    )
    p.add_argument("--json", action="store_true", help="(output is always JSON)")
    args = p.parse_args(argv)
    table = tomllib.loads(args.config.read_text(encoding="utf-8"))
    extra = {k: tomllib.loads(f"v = {v}")["v"] for k, v in (s.split("=", 1) for s in args.set)}
    results: dict[str, Any] = {}
    for mode in args.modes.split(","):
        runs = [
            run_once(with_overrides(table, {**extra, "aggregation.mode": mode}))
            for _ in range(args.repeats)
        ]
        results[mode] = {
            "wall_s_median": statistics.median(r["wall_s"] for r in runs),
            "iterations": [r["iterations"] for r in runs],
            "converged": [r["converged"] for r in runs],
            "best_accuracy": [r["best_accuracy"] for r in runs],
            "best_model_accuracy": [r["best_model_accuracy"] for r in runs],
            "worst_case_epsilon": [r["worst_case_epsilon"] for r in runs],
        }
    base = next(iter(results.values()))
    for r in results.values():
        r["wall_ratio_vs_first"] = r["wall_s_median"] / base["wall_s_median"]
    print(
        json.dumps(
            {
                "config": str(args.config),
                "repeats": args.repeats,
                "overrides": extra,
                "modes": results,
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv[1:]))
