"""``securepool bench agencies``: the agencies example per mode vs central, the statistics round.

    securepool bench agencies --modes mask,he,plaintext --repeats 2 --sizes 4,20,100

Three measurements (issue 24), every one a real run:

1. ``runs``: the agencies example (``examples/agencies/config.toml``: wine, four agency
   CSV files in raw units) per aggregation mode, ``--repeats`` times, once with
   ``data.scaling = "federated"`` (the statistics round, the example's default) and once
   with ``"fixed"`` (raw units, the behaviour before issue 24), interleaved. Each run goes
   through the Python API as a user's would (:func:`securepool.run` on the example's
   config, then :func:`securepool.load_pool` on its run directory): iterations,
   converged, wall time, and the accuracy of each released model and of the pool's vote
   on the RAW rows of ``examples/agencies/holdout.csv`` (the labels compared as the file
   holds them), the best of them the "best accepted model".
2. ``central``: a model of the same spec per ``[[pool.models]]`` entry, trained with the
   same training settings (:class:`~securepool.training.PlainTrainer`, the run's seed) on
   the POOLED training records of the four agencies (each agency's local train split as
   the run makes it, :func:`securepool.data.local_split` with the run's seed and
   ``local_test_fraction``), standardised by the pooled mean and standard deviation, and
   tested on the raw holdout rows standardised the same way. Epochs: as many as a
   participant of the federated runs trained that model in all, on average
   (``training.epochs`` x the iterations in which it was in the model's group, from
   ``metrics.jsonl``, averaged over the agencies and over the federated-scaling runs of
   every mode), rounded, at least one; per mode as well. The same model trained on the
   raw, unscaled records is reported beside it.
3. ``statistics_round``: per ``--sizes`` n, the coordinator's seconds in
   :func:`securepool.coordinator.scaling.agree_scaling` (in-process runtime: the nodes'
   work runs inside the same exchanges) and the bytes each participant sent and received
   in it (a counting wrapper of the coordinator's driver), against the seconds and bytes
   of the same run's training iterations that follow (``--iterations``, mask mode).
   n = 4 is the agencies example itself; any other n is built-in digits (64 inputs) with
   n participants (``examples/digits.toml``'s pool and training) and
   ``data.scaling = "federated"``.

Before the runs, this process builds one torch optimizer (``torch_first_optimizer_s``):
torch imports ``torch._dynamo`` on the first, once per process, which would otherwise be
charged to whichever run comes first. Prints one JSON object, with the load average
before and after every measurement.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import os
import statistics
import sys
import tempfile
import time
import tomllib
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from securepool.bench.run import with_overrides
from securepool.runtime.driver import Driver, ObservingDriver

HERE = Path(__file__).resolve().parents[2]
EXAMPLE = HERE / "examples" / "agencies"
DIGITS = HERE / "examples" / "digits.toml"
MODES = ("mask", "he", "plaintext")
SCALINGS = ("federated", "fixed")


# --- the example's config and its held-out rows ------------------------------------


def example_table() -> dict[str, Any]:
    """The example's config with its file paths made absolute (the bench may run from
    any directory)."""
    table = tomllib.loads((EXAMPLE / "config.toml").read_text(encoding="utf-8"))
    return with_overrides(
        table,
        {
            "data.path": str(HERE / table["data"]["path"]),
            "evaluation.holdout": str(HERE / table["evaluation"]["holdout"]),
        },
    )


def raw_holdout(table: Mapping[str, Any]) -> tuple[np.ndarray, list[str], list[str]]:
    """The holdout file's raw feature rows (columns in the file's order), its labels as
    written, and the feature columns' names."""
    label = table["data"]["label"]
    with Path(table["evaluation"]["holdout"]).open(newline="", encoding="utf-8-sig") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        raise RuntimeError("the example's holdout file holds no rows")
    features = [c for c in rows[0] if c != label]
    x = np.array([[float(r[c]) for c in features] for r in rows], dtype=np.float64)
    return x, [r[label] for r in rows], features


def _accuracy(predicted: Any, labels: list[str]) -> float:
    return float(np.mean([str(p) == t for p, t in zip(predicted, labels, strict=True)]))


# --- 1. the example per mode and scaling -------------------------------------------


def _epochs_per_participant(run: Path, epochs: int, *, agencies: int) -> dict[str, float]:
    """Per model: the epochs an agency trained it in all, on average over the run's
    ``agencies`` (its metrics.jsonl: the groups' members per iteration)."""
    members: Counter[str] = Counter()
    models: set[str] = set()
    for line in (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines():
        rec = json.loads(line)
        for group in rec["groups"]:
            members[group["model"]] += len(group["members"])
            models.add(group["model"])
        models.update(rec["test_errors"])
    return {m: epochs * members[m] / max(agencies, 1) for m in sorted(models)}


def agency_run(
    table: dict[str, Any], *, mode: str, scaling: str, max_iterations: int | None
) -> dict[str, Any]:
    """One whole run of the example through the Python API, its pool tested on the raw
    holdout rows through :func:`securepool.load_pool`."""
    import securepool

    overrides: dict[str, Any] = {"aggregation.mode": mode, "data.scaling": scaling}
    if max_iterations is not None:
        overrides["convergence.max_iterations"] = max_iterations
    config = with_overrides(table, overrides)
    x, labels, _ = raw_holdout(table)
    load = os.getloadavg()
    row: dict[str, Any] = {"mode": mode, "scaling": scaling, "loadavg_before": load}
    with tempfile.TemporaryDirectory(prefix="securepool-bench-agencies-") as tmp:
        out = Path(tmp) / "run"
        start = time.perf_counter()
        try:
            summary = securepool.run(config, out=out)
        except Exception as exc:  # reported; the other runs are still measured
            row["error"] = f"{type(exc).__name__}: {exc}"[:500]
            row["loadavg_after"] = os.getloadavg()
            return row
        wall = time.perf_counter() - start
        pool = securepool.load_pool(out)
        per_model = {mid: _accuracy(m.predict(x), labels) for mid, m in pool.models.items()}
        best = max(per_model, key=lambda m: per_model[m]) if per_model else None
        row |= {
            "iterations": summary["iterations"],
            "converged": summary["converged"],
            "stop_reason": summary["stop_reason"],
            "wall_s": round(wall, 3),
            "run_wall_time_s": summary["wall_time_s"],
            "accepted": list(summary["accepted"]),
            "pool": list(pool.models),
            "best_model": best,
            "best_accuracy_raw": None if best is None else per_model[best],
            "pool_vote_accuracy_raw": _accuracy(pool.predict(x), labels) if per_model else None,
            "model_accuracy_raw": per_model,
            "coordinator_best_accuracy": summary["best_accuracy"],
            # the coordinator's own test of each released model (its holdout, scaled)
            "coordinator_model_accuracy": {
                mid: summary["models"][mid]["test_accuracy"] for mid in pool.models
            },
            # every model's last test error, released or not (the fixed runs' "before")
            "coordinator_test_error": {
                mid: model["test_error"] for mid, model in summary["models"].items()
            },
            "epochs_per_participant": _epochs_per_participant(
                out,
                int(config["training"]["epochs"]),
                agencies=len(list(Path(config["data"]["path"]).glob("*.csv"))),
            ),
            "loadavg_after": os.getloadavg(),
        }
    return row


def warm_up() -> float:
    """Seconds of this process's first torch optimizer: torch imports ``torch._dynamo``
    then (seconds on a loaded machine), once per process, which would otherwise land
    in whichever run comes first."""
    import torch

    start = time.perf_counter()
    torch.optim.SGD(torch.nn.Linear(1, 1).parameters(), lr=0.1)
    return time.perf_counter() - start


def _median(values: list[Any]) -> float | None:
    nums = [float(v) for v in values if isinstance(v, int | float) and math.isfinite(v)]
    return statistics.median(nums) if nums else None


def summarise_runs(rows: list[dict[str, Any]], modes: list[str]) -> dict[str, Any]:
    """Per mode and scaling: the runs' figures side by side, and their medians."""
    out: dict[str, Any] = {}
    for mode in modes:
        out[mode] = {}
        for scaling in SCALINGS:
            runs = [r for r in rows if r["mode"] == mode and r["scaling"] == scaling]
            ok = [r for r in runs if "error" not in r]
            out[mode][scaling] = {
                "runs": len(runs),
                "errors": [r["error"] for r in runs if "error" in r],
                "iterations": [r["iterations"] for r in ok],
                "converged": [r["converged"] for r in ok],
                "best_model": [r["best_model"] for r in ok],
                "best_accuracy_raw": [r["best_accuracy_raw"] for r in ok],
                "pool_vote_accuracy_raw": [r["pool_vote_accuracy_raw"] for r in ok],
                "wall_s": [r["wall_s"] for r in ok],
                "median_iterations": _median([r["iterations"] for r in ok]),
                "median_best_accuracy_raw": _median([r["best_accuracy_raw"] for r in ok]),
                "median_wall_s": _median([r["wall_s"] for r in ok]),
            }
    return out


# --- 2. the central baseline --------------------------------------------------------


def _central_epochs(rows: list[dict[str, Any]], model: str) -> float | None:
    got = [
        r["epochs_per_participant"][model]
        for r in rows
        if r["scaling"] == "federated" and "error" not in r
    ]
    return statistics.fmean(got) if got else None


def central(table: dict[str, Any], rows: list[dict[str, Any]], modes: list[str]) -> dict[str, Any]:
    """The central baseline of every pool model (see the module docstring, 2.)."""
    import torch

    from securepool.config import parse_config
    from securepool.data import local_split, read_agencies
    from securepool.models import build_spec_model
    from securepool.training import PlainTrainer

    cfg = parse_config(table)
    schema, tables = read_agencies(cfg.data)
    splits = [
        local_split(x, y, fraction=cfg.data.local_test_fraction, seed=cfg.run.seed)
        for _, (x, y) in sorted(tables.items())
    ]
    x_train = torch.cat([s.x_train for s in splits]).double().numpy()
    y_train = torch.cat([s.y_train for s in splits])
    mean = x_train.mean(axis=0)
    std = x_train.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    x_raw, labels, features = raw_holdout(table)
    if tuple(features) != schema.columns:
        raise RuntimeError(f"holdout columns {features} are not the agencies' {schema.columns}")
    classes = np.asarray(schema.classes)
    torch.set_num_threads(cfg.run.torch_threads)

    def trained(spec: Any, epochs: int, *, standardise: bool) -> float | None:
        model = build_spec_model(spec, n_features=len(mean), n_classes=len(classes))
        shift, div = (mean, std) if standardise else (0.0, 1.0)
        xt = torch.from_numpy(((x_train - shift) / div).astype(np.float32))
        settings = dataclasses.replace(cfg.training.settings(), epochs=epochs)
        PlainTrainer().train(
            participant="central",
            model=model,
            x=xt,
            y=y_train,
            settings=settings,
            seed=cfg.run.seed,
        )
        model.eval()
        with torch.no_grad():
            xh = torch.from_numpy(((x_raw - shift) / div).astype(np.float32))
            out = model(xh)
        if not torch.isfinite(out).all():
            return None  # diverged: no prediction to score
        return _accuracy(classes[out.argmax(dim=1).numpy()], labels)

    models: dict[str, Any] = {}
    for spec in cfg.pool.models:
        avg = _central_epochs(rows, spec.id)
        epochs = max(1, round(avg)) if avg is not None else cfg.training.epochs
        by_mode: dict[str, Any] = {}
        for mode in modes:
            m_avg = _central_epochs([r for r in rows if r["mode"] == mode], spec.id)
            if m_avg is None:
                continue
            m_epochs = max(1, round(m_avg))
            by_mode[mode] = {
                "epochs": m_epochs,
                "accuracy_raw_holdout": trained(spec, m_epochs, standardise=True),
            }
        models[spec.id] = {
            "arch": spec.arch.value,
            "hidden": spec.hidden,
            "epochs": epochs,
            "mean_federated_epochs_per_participant": avg,
            "accuracy_raw_holdout": trained(spec, epochs, standardise=True),
            "accuracy_unscaled_training": trained(spec, epochs, standardise=False),
            "by_mode": by_mode,
        }
    return {
        "train_records": int(x_train.shape[0]),
        "holdout_records": len(labels),
        "training": {
            "batch_size": cfg.training.batch_size,
            "lr": cfg.training.lr,
            "momentum": cfg.training.momentum,
            "seed": cfg.run.seed,
        },
        "epochs_rule": (
            "training.epochs x the iterations an agency was in the model's group, averaged "
            "over the agencies and the federated-scaling runs (all modes; by_mode: that "
            "mode's), rounded, at least 1"
        ),
        "models": models,
    }


# --- 3. the statistics round's cost -------------------------------------------------


class CountingDriver(ObservingDriver):
    """The coordinator's driver, counting the bytes it sends to and gets from each node
    and its round trips; it changes nothing it carries."""

    def __init__(self, inner: Driver) -> None:
        super().__init__(inner)
        self.sent: Counter[str] = Counter()
        self.received: Counter[str] = Counter()
        self.exchanges = 0

    def observe(
        self, stage: str, batch: Mapping[str, bytes], replies: Mapping[str, bytes | None]
    ) -> None:
        self.exchanges += 1
        for node, payload in batch.items():
            self.sent[node] += len(payload)
        for node, raw in replies.items():
            if raw is not None:
                self.received[node] += len(raw)

    def snapshot(self) -> tuple[Counter[str], Counter[str], int]:
        return Counter(self.sent), Counter(self.received), self.exchanges


def _traffic(
    after: tuple[Counter[str], Counter[str], int],
    before: tuple[Counter[str], Counter[str], int],
    participants: tuple[str, ...],
) -> dict[str, Any]:
    """Bytes per participant (sent + received, the participant's view) between two
    snapshots, and the round trips."""
    sent, received = after[0] - before[0], after[1] - before[1]
    per = [sent[p] + received[p] for p in participants]
    return {
        "round_trips": after[2] - before[2],
        "bytes_per_participant_mean": statistics.fmean(per) if per else 0.0,
        "bytes_per_participant_max": max(per, default=0),
        "bytes_per_participant_min": min(per, default=0),
        "participant_received_mean": statistics.fmean([sent[p] for p in participants])
        if participants
        else 0.0,
        "participant_sent_mean": statistics.fmean([received[p] for p in participants])
        if participants
        else 0.0,
    }


def stats_table(n: int, *, iterations: int) -> tuple[str, dict[str, Any]]:
    """(what it is, the config) of the statistics-round measurement at ``n``."""
    agencies = len(list((EXAMPLE / "data").glob("*.csv")))
    if n == agencies:
        table = example_table()
        what = f"the agencies example ({n} agencies, 13 inputs)"
    else:
        table = with_overrides(
            tomllib.loads(DIGITS.read_text(encoding="utf-8")), {"data.participants": n}
        )
        what = f"digits, {n} participants (64 inputs)"
    table = with_overrides(
        table,
        {
            "aggregation.mode": "mask",
            "data.scaling": "federated",
            "convergence.max_iterations": iterations,
        },
    )
    return what, table


def statistics_round(n: int, *, iterations: int) -> dict[str, Any]:
    """The statistics round's seconds and bytes at ``n``, against the training
    iterations of the same run (see the module docstring, 3.)."""
    from securepool.coordinator.scaling import agree_scaling
    from securepool.runner import prepare
    from securepool.sweep.grid import dump_toml

    what, table = stats_table(n, iterations=iterations)
    load = os.getloadavg()
    _cfg, coord, nodes = prepare(dump_toml(table), Path("<bench agencies>"))
    counters: list[CountingDriver] = []

    def wrap(driver: Driver) -> Driver:
        counters.append(CountingDriver(driver))
        return counters[-1]

    coord.wrap_driver = wrap
    iters: list[dict[str, Any]] = []
    try:
        coord.connect()
        counter = counters[0]
        participants = coord.participants
        before = counter.snapshot()
        start = time.perf_counter()
        scaling = agree_scaling(coord)
        seconds = time.perf_counter() - start
        traffic = _traffic(counter.snapshot(), before, participants)
        # hand the agreed scaling to the loop as a resumed run's checkpoint would
        coord.load_component_states({"scaling": scaling.to_json()})
        mark = [counter.snapshot()]

        def on_iteration(record: Any) -> None:
            snap = counter.snapshot()
            iters.append({"seconds": record.seconds, **_traffic(snap, mark[0], participants)})
            mark[0] = snap

        coord.run(on_iteration=on_iteration)
    finally:
        coord.close()
        if nodes is not None:
            nodes.close()
    first = iters[0]["seconds"] if iters else None
    steady = _median([it["seconds"] for it in iters[1:]]) if len(iters) > 1 else first
    train_bytes = _median([it["bytes_per_participant_mean"] for it in iters])
    return {
        "n": n,
        "what": what,
        "participants": len(participants),
        "agree_scaling_s": round(seconds, 4),
        **traffic,
        "training_iterations": [
            {k: (round(v, 4) if isinstance(v, float) else v) for k, v in it.items()} for it in iters
        ],
        "iteration_s_first": first,
        "iteration_s_steady": steady,
        "ratio_vs_first_iteration": seconds / first if first else None,
        "ratio_vs_steady_iteration": seconds / steady if steady else None,
        "bytes_ratio_vs_iteration": traffic["bytes_per_participant_mean"] / train_bytes
        if train_bytes
        else None,
        "loadavg_before": load,
        "loadavg_after": os.getloadavg(),
    }


# --- the command --------------------------------------------------------------------


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="securepool bench agencies",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--modes", default=",".join(MODES), help="aggregation modes, comma-separated")
    p.add_argument("--repeats", type=int, default=2, help="runs per mode and scaling (>= 1)")
    p.add_argument(
        "--sizes", default="4,20,100", help="participants of the statistics-round measurement"
    )
    p.add_argument(
        "--iterations",
        type=int,
        default=2,
        help="training iterations after the statistics round (the baseline), >= 1",
    )
    p.add_argument(
        "--max-iterations",
        type=int,
        default=None,
        help="cap the example's convergence.max_iterations (default: the example's own)",
    )
    args = p.parse_args(argv)
    modes = [m for m in args.modes.split(",") if m]
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        p.error(f"--modes: one or more of {', '.join(MODES)}, got {args.modes!r}")
    try:
        sizes = _ints(args.sizes)
    except ValueError:
        p.error(f"--sizes: comma-separated integers, got {args.sizes!r}")
    if any(n < 3 for n in sizes):
        p.error("--sizes: every n must be >= 3")
    if args.repeats < 1:
        p.error("--repeats must be >= 1")
    if args.iterations < 1:
        p.error("--iterations must be >= 1")
    if args.max_iterations is not None and args.max_iterations < 1:
        p.error("--max-iterations must be >= 1")
    table = example_table()
    load = os.getloadavg()
    first_optimizer = warm_up()
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    for _ in range(args.repeats):
        for mode in modes:
            for scaling in SCALINGS:
                rows.append(
                    agency_run(
                        table, mode=mode, scaling=scaling, max_iterations=args.max_iterations
                    )
                )
    central_load = os.getloadavg()
    baseline = central(table, rows, modes)
    baseline["loadavg_before"] = central_load
    baseline["loadavg_after"] = os.getloadavg()
    result: dict[str, Any] = {
        "bench": "agencies",
        "config": str(EXAMPLE / "config.toml"),
        "modes": modes,
        "repeats": args.repeats,
        "max_iterations": args.max_iterations,
        "cpu_count": os.cpu_count(),
        "loadavg_before": load,
        "torch_first_optimizer_s": round(first_optimizer, 3),
        "summary": summarise_runs(rows, modes),
        "central": baseline,
        "statistics_round": [statistics_round(n, iterations=args.iterations) for n in sizes],
        "runs": rows,
        "wall_s": round(time.perf_counter() - started, 1),
        "loadavg_after": os.getloadavg(),
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
