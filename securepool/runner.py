"""Run a whole job: config -> data -> loop (S401–S406) -> P5 -> shared pool on disk.

Bad input is found before anything is written: the config, the output path, the data
split and every component are checked first (all problems listed at once), and only then
is the run directory started (:mod:`securepool.rundir`: built beside ``--out`` and renamed
into place at its first committed checkpoint, so a run that fails or is interrupted
before that leaves nothing behind). Every iteration is committed to the run manifest;
:func:`resume_job` verifies the directory and continues from the last commit.
"""

from __future__ import annotations

import hashlib
import json
import logging
import signal
import statistics
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

from crypto.errors import ConfigError
from protocols.aggregation import AggregationMode
from securepool.acceptance import Candidate, decide
from securepool.config import RunConfig, Runtime, parse_config, parse_toml, read_config_text
from securepool.coordinator.launch import InProcessNodes
from securepool.coordinator.loop import PoolCoordinator, Progress
from securepool.coordinator.records import IterationRecord
from securepool.data import federation, preprocessing_of, table_schema
from securepool.evaluation import TestResult
from securepool.rundir import GLOBALS, RunDir, RunDirError
from securepool.runtime.driver import Driver
from securepool.runtime.recording import TranscriptRecorder

CONFIG_NAME = "config.toml"

log = logging.getLogger("securepool.runner")

INSECURE_BANNER = (
    "INSECURE BASELINE: aggregation.mode = 'plaintext' lets the coordinator see every "
    "participant's update. Use 'mask' or 'he' for secure aggregation."
)
REPRODUCIBLE_NOISE_BANNER = (
    "INSECURE DP NOISE: privacy.secure_rng = false draws the DP noise and batch sampling "
    "from the run seed, so anyone holding config.toml can replay and subtract it: the "
    "reported epsilon is NOT a guarantee against them. Experiments only."
)


def dp_noise_reproducible(cfg: RunConfig) -> bool:
    """True when DP is on and its noise can be replayed from the config."""
    return cfg.privacy.enabled and not cfg.privacy.secure_rng


def prepare(
    config_text: str,
    config_path: Path,
    *,
    out: Path | None = None,
    driver: Driver | None = None,
    durable: Mapping[str, Any] | None = None,
) -> tuple[RunConfig, PoolCoordinator, InProcessNodes | None]:
    """Validate everything a run needs; raises ConfigError before any output exists.

    Every runtime runs the same :class:`PoolCoordinator` and the same nodes; only the
    transport differs. ``"inprocess"`` (the default) builds the nodes in this process
    (returned, so that their durable state goes into every checkpoint; ``durable``
    restores it on ``--resume``); ``"multiprocess"`` starts one process per node (state
    in ``nodes_dir(out)``) when the coordinator runs; ``"flower"`` runs over ``driver``
    (the ServerApp's: see :mod:`securepool.coordinator.flower`)."""
    cfg = parse_config(parse_toml(config_text, config_path))
    import torch

    torch.set_num_threads(cfg.run.torch_threads)
    if cfg.run.runtime is Runtime.FLOWER:
        if driver is None:
            raise ConfigError(
                [
                    "run.runtime = 'flower' runs inside Flower's ServerApp: start it with "
                    "`flwr run` (README, 'Deploy across agencies'), not `securepool run`"
                ]
            )
        from securepool.coordinator.launch import flower_coordinator

        return cfg, flower_coordinator(cfg, driver, timeout=cfg.run.stage_timeout), None
    check_components(cfg)
    if cfg.run.runtime is Runtime.MULTIPROCESS:
        from securepool.coordinator.launch import multiprocess_coordinator

        coordinator = multiprocess_coordinator(
            cfg, config_text, out or Path("."), timeout=cfg.run.stage_timeout
        )
        return cfg, coordinator, None
    from securepool.coordinator.launch import inprocess_coordinator

    coordinator, nodes = inprocess_coordinator(cfg, durable=durable)
    return cfg, coordinator, nodes


def check_components(cfg: RunConfig) -> None:
    """What the nodes would refuse at their first stage, found before anything is
    written (every problem at once): a participant's share below ``data.min_records``,
    a custom model's factory that cannot be imported or called or gives the wrong shape
    (:func:`securepool.models.custom_model`), a custom model too large for this
    machine's memory, models DP-SGD cannot train, a DP budget the smallest participant's
    records cannot meet (built-in data: its split is public)."""
    from securepool.architecture import Architecture
    from securepool.models import build_spec_model

    data = federation(cfg)  # ConfigError when a share is too small, in a few milliseconds
    problems: list[str] = []
    models: dict[str, Any] = {}
    custom: dict[int, int] = {}
    for i, m in enumerate(cfg.pool.models):
        if m.arch is not Architecture.CUSTOM and not cfg.privacy.enabled:
            continue
        try:
            model = build_spec_model(m, n_features=data.n_features, n_classes=data.n_classes)
        except ConfigError as exc:
            problems += [f"pool.models[{i}] ({m.id}): {p}" for p in exc.problems]
            continue
        models[m.id] = model
        if m.arch is Architecture.CUSTOM:
            custom[i] = sum(p.numel() for p in model.parameters())
    if custom or cfg.data.declared_shape() is None:  # sizes known once built / read
        from securepool.sizes import size_problems

        problems += size_problems(cfg, custom=custom, shape=(data.n_features, data.n_classes))
    if cfg.privacy.enabled:
        from securepool.privacy.trainer import validate_models

        problems += validate_models(models)
        smallest = min(d.n_train for d in data.participants.values())
        problems += cfg.privacy.problems_for_data(min_records=smallest)
    if problems:
        raise ConfigError(problems)


def start_job(
    config_path: Path,
    out: Path,
    *,
    on_iteration: Callable[[IterationRecord], None] = lambda r: None,
    driver: Driver | None = None,
    progress: Progress | None = None,
    on_ready: Callable[[RunConfig], None] = lambda cfg: None,
    config_text: str | None = None,
) -> dict[str, Any]:
    """A fresh run into ``out``; ConfigError (every problem at once) before any write.

    ``on_ready`` is called once every check has passed, just before the run directory
    is created and the first iteration starts (the command line shows its progress
    display from there, never before a refusal). ``config_text``: the config itself
    (the Python API's TOML string or dict), ``config_path`` then only names it in
    messages; None reads ``config_path``."""
    text = read_config_text(config_path) if config_text is None else config_text
    problems = RunDir.out_problems(out)
    try:
        cfg, coordinator, nodes = prepare(text, config_path, out=out, driver=driver)
    except ConfigError as exc:
        raise ConfigError([*problems, *exc.problems]) from None
    if problems:
        if nodes is not None:
            nodes.close()
        raise ConfigError(problems)
    rd: RunDir | None = None
    try:
        on_ready(cfg)
        _log_start(cfg, out, resumed_from=None)
        with _signals_deferred():  # `rd` is known to the handler below once it exists
            rd = RunDir.create(out, text)
        return _drive(
            cfg,
            coordinator,
            nodes,
            rd,
            elapsed=0.0,
            on_iteration=on_iteration,
            progress=progress,
        )
    except BaseException:
        if rd is None:
            if nodes is not None:
                nodes.close()
            coordinator.close()
        else:
            rd.abandon()  # nothing stays unless a checkpoint was committed to `out`
        raise


@contextmanager
def _signals_deferred() -> Iterator[None]:
    """SIGINT and SIGTERM wait until the end of the block (main thread, POSIX): an
    interruption never falls between creating a directory and recording that it exists."""
    block = {signal.SIGINT, signal.SIGTERM}
    if threading.current_thread() is not threading.main_thread() or not hasattr(
        signal, "pthread_sigmask"
    ):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, block)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def resume_job(
    out: Path,
    *,
    on_iteration: Callable[[IterationRecord], None] = lambda r: None,
    driver: Driver | None = None,
    progress: Progress | None = None,
    on_ready: Callable[[RunConfig], None] = lambda cfg: None,
) -> dict[str, Any]:
    """Verify ``out`` against its manifest and continue from its last committed iteration
    (``on_ready`` as in :func:`start_job`)."""
    rd, info = RunDir.open(out)
    state: dict[str, Any] | None = None
    globals_: dict[str, Any] = {}
    if info.has_checkpoint:
        state, globals_ = info.checkpoint()
    durable = None if state is None else state["components"].get("nodes")
    cfg, coordinator, nodes = prepare(
        read_config_text(info.config_path),
        info.config_path,
        out=out,
        driver=driver,
        durable=durable,
    )
    elapsed = 0.0
    if state is not None:
        expected = {m: v.shape for m, v in coordinator.state.globals.items()}
        found = {m: v.shape for m, v in globals_.items()}
        if found != expected:
            if nodes is not None:
                nodes.close()
            raise RunDirError(
                out / GLOBALS,
                f"holds models {sorted(found)} that do not match config.toml's pool "
                f"{sorted(expected)} (names or sizes)",
            )
        coordinator.state.iteration = int(state["iteration"])
        coordinator.state.globals = globals_
        coordinator.state.converged = bool(state["converged"])
        coordinator.state.test = {m: TestResult(**r) for m, r in state["test"].items()}
        coordinator.load_component_states(state["components"])
        elapsed = float(state["elapsed_s"])
    on_ready(cfg)
    _log_start(cfg, out, resumed_from=coordinator.state.iteration)
    return _drive(
        cfg, coordinator, nodes, rd, elapsed=elapsed, on_iteration=on_iteration, progress=progress
    )


def _log_start(cfg: RunConfig, out: Path, *, resumed_from: int | None) -> None:
    """What the library says as a run starts (the CLI says it on its console)."""
    if cfg.aggregation.mode is AggregationMode.PLAINTEXT:
        log.warning(INSECURE_BANNER)
    if dp_noise_reproducible(cfg):
        log.warning(REPRODUCIBLE_NOISE_BANNER)
    how = "run" if resumed_from is None else f"resuming from iteration {resumed_from}"
    log.info(
        "%s into %s: runtime %s, aggregation %s, %d participants, models %s",
        how,
        out,
        cfg.run.runtime.value,
        cfg.aggregation.mode.value,
        cfg.data.participants,
        ", ".join(m.id for m in cfg.pool.models),
    )


def _log_iteration(record: IterationRecord, cap: int) -> None:
    errors = " ".join(f"{m} {e:.3f}" for m, e in record.test_errors.items())
    groups = " ".join(f"{g.model_id}:{len(g.members)}" for g in record.groups)
    log.info(
        "iteration %d/%d: test error %s | groups %s%s",
        record.iteration,
        cap,
        errors,
        groups,
        " | converged" if record.converged else "",
    )
    for g in record.groups:
        if g.status != "aggregated":
            log.warning("iteration %d: model %s: %s", record.iteration, g.model_id, g.status)
        for pid, why in g.excluded.items():
            log.warning(
                "iteration %d: model %s: %s excluded: %s", record.iteration, g.model_id, pid, why
            )


def _drive(
    cfg: RunConfig,
    coordinator: PoolCoordinator,
    nodes: InProcessNodes | None,
    rd: RunDir,
    *,
    elapsed: float,
    on_iteration: Callable[[IterationRecord], None],
    progress: Progress | None,
) -> dict[str, Any]:
    started = time.perf_counter()
    recorder = (
        TranscriptRecorder(keep_payloads=cfg.run.transcript_payloads)
        if cfg.run.record_transcripts
        else None
    )
    coordinator.wrap_driver = None if recorder is None else recorder.wrap
    coordinator.progress = progress

    def after_iteration(record: IterationRecord) -> None:
        components = coordinator.component_states()
        if nodes is not None:  # the in-process nodes' ledgers and counters
            components["nodes"] = nodes.durable_states()
        rd.commit_iteration(
            metrics_line=record.to_json(),
            state={
                "iteration": coordinator.state.iteration,
                "converged": coordinator.state.converged,
                "test": {m: asdict(r) for m, r in coordinator.state.test.items()},
                "components": components,
                "elapsed_s": elapsed + time.perf_counter() - started,
            },
            globals_=coordinator.state.globals,
        )
        _log_iteration(record, cfg.convergence.max_iterations)
        on_iteration(record)

    try:
        state = coordinator.run(on_iteration=after_iteration)
    finally:
        coordinator.close()  # stop the node processes
        if nodes is not None:
            nodes.close()
    if recorder is not None:
        # appended per session: a resumed run adds its part to the earlier one
        recorder.append_to(rd.work / "transcripts")
    wall = elapsed + time.perf_counter() - started
    return finish(cfg, coordinator, rd, wall_time=wall, stop_reason=state.stop_reason or "")


def _history(rd: RunDir) -> dict[str, Any]:
    """Aborted groups and excluded participants over the whole run (metrics.jsonl)."""
    aborted: list[dict[str, Any]] = []
    excluded: dict[str, list[dict[str, Any]]] = {}
    path = rd.work / "metrics.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    for ln in lines:
        rec = json.loads(ln)
        for g in rec["groups"]:
            if g["status"] != "aggregated":
                aborted.append(
                    {"iteration": rec["iteration"], "model": g["model"], "reason": g["status"]}
                )
            for pid, why in g["excluded"].items():
                excluded.setdefault(pid, []).append(
                    {"iteration": rec["iteration"], "model": g["model"], "reason": why}
                )
    return {"aborted_groups": aborted, "excluded": dict(sorted(excluded.items()))}


def finish(
    cfg: RunConfig,
    loop: PoolCoordinator,
    rd: RunDir,
    *,
    wall_time: float,
    stop_reason: str,
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
    reproducible_noise = dp_noise_reproducible(cfg)
    config_sha = hashlib.sha256((rd.work / CONFIG_NAME).read_bytes()).hexdigest()
    # dataset-wide and public: the same for the in-process data and the split nodes
    preprocessing = preprocessing_of(cfg.data.dataset, n_features=loop.n_features)
    if loop.scaling is not None:  # data.scaling = "federated": the statistics round's
        preprocessing = preprocessing.then_standardise(loop.scaling)
    n_features, n_classes = loop.n_features, loop.n_classes
    manifest = {
        "converged": loop.state.converged,
        "status": "converged" if loop.state.converged else "not converged",
        "stop_reason": stop_reason,
        "iterations": loop.state.iteration,
        "aggregation": aggregation,
        "config_sha256": config_sha,
        "worst_case_epsilon": worst_eps,
        "dp_noise_reproducible": reproducible_noise,
        "dataset": cfg.data.dataset.value,
        "n_features": n_features,
        "n_classes": n_classes,
        "preprocessing": preprocessing.to_json(),
        # dataset = "csv": the columns a raw row holds and the classes' names, in order
        **({} if cfg.data.dataset.is_builtin else {"table": table_schema(cfg.data).to_json()}),
        "models": [
            {
                "id": d.model_id,
                "arch": specs[d.model_id].arch.value,
                "seed": specs[d.model_id].seed,
                **(
                    {"hidden": specs[d.model_id].hidden_units}
                    if specs[d.model_id].hidden_units is not None
                    else {}
                ),
                # custom: load_pool rebuilds the module with the same factory
                **({"factory": specs[d.model_id].factory} if specs[d.model_id].factory else {}),
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
    rd.write_pool(
        manifest=manifest, weights={d.model_id: loop.state.globals[d.model_id] for d in kept}
    )
    history = _history(rd)
    eps = [float(r["epsilon"]) for r in (privacy_report or {}).values()]
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
        "dp_noise_reproducible": reproducible_noise,
        "median_epsilon": statistics.median(eps) if eps else None,
        "aborted_groups": history["aborted_groups"],
        "excluded": history["excluded"],
        "wall_time_s": round(wall_time, 3),
    }
    rd.finish(summary)
    log.log(
        logging.INFO if loop.state.converged else logging.WARNING,
        "finished after %d iterations (%s): pool %s, best accuracy %s",
        loop.state.iteration,
        stop_reason or ("converged" if loop.state.converged else "not converged"),
        ", ".join(summary["pool"]) or "empty (no model passed acceptance)",
        "n/a" if summary["best_accuracy"] is None else f"{summary['best_accuracy']:.3f}",
    )
    return summary


def _attack_report(cfg: RunConfig, loop: PoolCoordinator) -> dict[str, Any] | None:
    """Who the config made malicious and, for the backdoors, the trigger's success on
    the coordinator's held-out set (none in federated evaluation: it holds no records)."""
    if not cfg.attack.enabled:
        return None
    from securepool.node.attacker import malicious_ids

    report: dict[str, Any] = {
        "kind": cfg.attack.kind.value,
        "malicious": sorted(malicious_ids(cfg)),
    }
    holdout = loop.holdout
    from securepool.attacks import BACKDOOR_KINDS

    if cfg.attack.kind in BACKDOOR_KINDS and holdout is not None:
        from securepool.attacks import backdoor_success
        from securepool.models import load_flat

        success = {}
        for mid, model in loop.models.items():
            load_flat(model, loop.state.globals[mid], loop.layouts[mid])
            success[mid] = backdoor_success(model, *holdout)
        report["backdoor_success"] = success
    return report
