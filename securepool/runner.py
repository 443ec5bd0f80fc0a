"""Run a whole job: config -> data -> loop (S401–S406) -> P5 -> shared pool on disk.

Bad input is found before anything is written: the config, the data split and every
component are built first, and only then is the output directory created. A run writes
a checkpoint after every iteration; :func:`resume_job` continues from the last one.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from crypto.errors import ConfigError
from protocols.aggregation import AggregationMode, Router
from securepool.acceptance import Candidate, decide
from securepool.audit.canaries import insert_canaries
from securepool.config import RunConfig, load_config
from securepool.data import FederatedData, partition
from securepool.evaluation import TestResult
from securepool.loop import IterationRecord, RandomPoolLoop
from securepool.outputs import (
    append_metrics,
    load_checkpoint,
    save_checkpoint,
    truncate_metrics,
    write_json,
    write_pool,
)
from securepool.wiring import build_components

CONFIG_NAME = "config.toml"

INSECURE_BANNER = (
    "INSECURE BASELINE: aggregation.mode = 'plaintext' lets the coordinator see every "
    "participant's update. Use 'mask' or 'he' for secure aggregation."
)


def prepare(
    config_text: str, config_path: Path
) -> tuple[RunConfig, FederatedData, RandomPoolLoop, Router]:
    """Validate everything a run needs; raises ConfigError before any output exists."""
    import tomllib

    from securepool.config import parse_config

    try:
        table = tomllib.loads(config_text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{config_path}: not valid TOML: {exc}"]) from None
    cfg = parse_config(table)
    import torch

    torch.set_num_threads(cfg.run.torch_threads)
    data = partition(cfg.data, seed=cfg.run.seed)
    data = insert_canaries(data, cfg.audit.canaries, seed=cfg.run.seed)  # [audit] canaries
    parts = build_components(cfg, data)
    if parts.attack is not None:
        data = parts.attack.poison_data(data)
    loop = RandomPoolLoop(
        cfg,
        data,
        trainer=parts.trainer,
        aggregator=parts.aggregator,
        trust=parts.trust,
        attack=parts.attack,
    )
    return cfg, data, loop, parts.router


def start_job(
    config_path: Path,
    out: Path,
    *,
    on_iteration: Callable[[IterationRecord], None] = lambda r: None,
) -> dict[str, Any]:
    load_config(config_path)  # file-level problems first (missing file, TOML syntax)
    text = config_path.read_text(encoding="utf-8")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(
            [
                f"output directory {out} already exists and is not empty; use --resume {out}"
                " to continue it, or choose a new --out"
            ]
        )
    cfg, _, loop, router = prepare(text, config_path)
    out.mkdir(parents=True, exist_ok=True)
    (out / CONFIG_NAME).write_text(text, encoding="utf-8")
    return _drive(cfg, loop, router, out, elapsed=0.0, on_iteration=on_iteration)


def resume_job(
    out: Path, *, on_iteration: Callable[[IterationRecord], None] = lambda r: None
) -> dict[str, Any]:
    cfg_path = out / CONFIG_NAME
    if not cfg_path.is_file():
        raise ConfigError([f"{out} is not a run directory: {CONFIG_NAME} is missing"])
    cfg, _, loop, router = prepare(cfg_path.read_text(encoding="utf-8"), cfg_path)
    elapsed = 0.0
    if (out / "checkpoint" / "state.json").is_file():
        state, globals_ = load_checkpoint(out)
        if set(globals_) != set(loop.state.globals):
            raise ConfigError([f"checkpoint in {out} does not match its config's model pool"])
        loop.state.iteration = int(state["iteration"])
        loop.state.globals = globals_
        loop.state.converged = bool(state["converged"])
        loop.state.test = {m: TestResult(**r) for m, r in state["test"].items()}
        loop.load_component_states(state["components"])
        elapsed = float(state["elapsed_s"])
    truncate_metrics(out, loop.state.iteration)
    return _drive(cfg, loop, router, out, elapsed=elapsed, on_iteration=on_iteration)


def _drive(
    cfg: RunConfig,
    loop: RandomPoolLoop,
    router: Router,
    out: Path,
    *,
    elapsed: float,
    on_iteration: Callable[[IterationRecord], None],
) -> dict[str, Any]:
    started = time.perf_counter()

    def after_iteration(record: IterationRecord) -> None:
        append_metrics(out, record.to_json())
        save_checkpoint(
            out,
            state={
                "iteration": loop.state.iteration,
                "converged": loop.state.converged,
                "test": {m: asdict(r) for m, r in loop.state.test.items()},
                "components": loop.component_states(),
                "elapsed_s": elapsed + time.perf_counter() - started,
            },
            globals_=loop.state.globals,
        )
        on_iteration(record)

    state = loop.run(on_iteration=after_iteration)
    if router.transcripts:
        tdir = out / "transcripts"
        tdir.mkdir(exist_ok=True)
        for role, transcript in router.transcripts.items():
            # appended per session: a resumed run adds its part to the earlier one
            with (tdir / f"{role}.jsonl").open("a", encoding="utf-8") as fh:
                for e in transcript.entries:
                    fh.write(json.dumps({"role": role, **e.to_json()}) + "\n")
    wall = elapsed + time.perf_counter() - started
    return finish(cfg, loop, out, wall_time=wall, stop_reason=state.stop_reason or "")


def finish(
    cfg: RunConfig, loop: RandomPoolLoop, out: Path, *, wall_time: float, stop_reason: str
) -> dict[str, Any]:
    """P5 acceptance and elimination, then the shared pool and summary.json."""
    if not loop.state.test:
        loop.s401_evaluate()
    specs = {m.id: m for m in cfg.pool.models}
    candidates = {
        mid: Candidate(mid, specs[mid].arch.value, loop.state.test[mid], loop.state.globals[mid])
        for mid in specs
    }
    decisions = decide(candidates, cfg.acceptance)
    kept = [d for d in decisions.values() if d.accepted and not d.eliminated]
    insecure = cfg.aggregation.mode is AggregationMode.PLAINTEXT
    privacy = getattr(loop.trainer, "report", None)
    privacy_report = privacy() if callable(privacy) else None
    worst = getattr(loop.trainer, "worst_epsilon", None)
    worst_eps = worst() if callable(worst) else None
    aggregation = {"mode": cfg.aggregation.mode.value, "insecure_baseline": insecure}
    config_sha = hashlib.sha256((out / CONFIG_NAME).read_bytes()).hexdigest()
    manifest = {
        "format": "securepool-pool/1",
        "converged": loop.state.converged,
        "iterations": loop.state.iteration,
        "aggregation": aggregation,
        "config_sha256": config_sha,
        "worst_case_epsilon": worst_eps,
        "models": [
            {
                "id": d.model_id,
                "arch": specs[d.model_id].arch.value,
                "seed": specs[d.model_id].seed,
                "hidden": specs[d.model_id].hidden,
                "layout": {
                    "names": list(loop.layouts[d.model_id].names),
                    "shapes": [list(s) for s in loop.layouts[d.model_id].shapes],
                },
                "test_error": d.test_error,
                "error_bound": d.error_bound,
                "confidence": cfg.acceptance.confidence,
            }
            for d in kept
        ],
    }
    write_pool(
        out, manifest=manifest, weights={d.model_id: loop.state.globals[d.model_id] for d in kept}
    )
    summary: dict[str, Any] = {
        "iterations": loop.state.iteration,
        "converged": loop.state.converged,
        "stop_reason": stop_reason,
        "aggregation": aggregation,
        "models": {
            mid: {
                "test_error": d.test_error,
                "test_accuracy": 1.0 - d.test_error,
                "error_bound": d.error_bound,
                "accepted": d.accepted,
                "eliminated": d.eliminated,
                "reason": d.reason,
            }
            for mid, d in decisions.items()
        },
        "accepted": [d.model_id for d in decisions.values() if d.accepted],
        "eliminated": [d.model_id for d in decisions.values() if d.accepted and d.eliminated],
        "pool": [d.model_id for d in kept],
        "best_accuracy": max((1.0 - d.test_error for d in kept), default=None),
        "trust": loop.trust.report() if loop.trust is not None else None,
        "untrusted_participants": (
            loop.trust.report().get("untrusted", []) if loop.trust is not None else []
        ),
        "attack": _attack_report(cfg, loop),
        "privacy": privacy_report,
        "worst_case_epsilon": worst_eps,
        "wall_time_s": round(wall_time, 3),
    }
    write_json(out / "summary.json", summary)
    return summary


def _attack_report(cfg: RunConfig, loop: RandomPoolLoop) -> dict[str, Any] | None:
    if loop.attack is None:
        return None
    report: dict[str, Any] = {
        "kind": cfg.attack.kind.value,
        "malicious": sorted(loop.attack.malicious),
    }
    if cfg.attack.kind.value == "backdoor":
        from securepool.attacks import backdoor_success
        from securepool.models import load_flat

        success = {}
        for mid, model in loop.models.items():
            load_flat(model, loop.state.globals[mid], loop.layouts[mid])
            success[mid] = backdoor_success(model, loop.data.x_holdout, loop.data.y_holdout)
        report["backdoor_success"] = success
    return report
