"""Benchmark of the S403 beacon: one commit + reveal round per iteration.

    .venv/bin/python -m securepool.bench.beacon --n 20 100 --repeats 15

For each group size ``n`` it runs, ``repeats`` times, one whole beacon iteration with
``n`` participants in-process (each with its own identity key and beacon client) and
the digits demo's assignment settings (3 models, ``min_group_size`` 3): BeaconStart,
n signed commitments, the commit list, n reveals, the outcome, and every participant's
checks (n signature verifications each, the joint seed, the recomputed assignment).

Prints one JSON object per ``n``: medians over repeats of

- ``round_s``: the whole round, all roles serially on one core, every participant
  verifying every signature itself (what a deployment pays in total, spread over the
  nodes); ``round_shared_verifications_s``: the same with one
  :class:`~protocols.beacon.VerifiedSignatures` shared by the participants (what the
  in-process runtime pays per iteration);
- ``participant_ms``: one participant's own work (commit, check the list, reveal,
  check the outcome), median over participants;
- ``coordinator_ms``: the coordinator's work (checks, lists, outcome);
- ``baseline_assign_ms``: the old S403, one ``assign`` from a seeded numpy generator,
  timed in the same repeats, and ``round_vs_baseline`` = round_s / baseline;

and the bytes on the wire: per participant sent (commit + reveal) and received (start,
commit list, outcome), and the coordinator's total (every broadcast to every
recipient). No timing figure is asserted by the tests (it is a benchmark).

    .venv/bin/python -m securepool.bench.beacon --demo examples/digits.toml --repeats 3

instead runs the whole demo (``start_job``: the coordinator loop over in-process nodes,
``run.runtime = "inprocess"``) ``repeats`` times and reports, per run, the wall time, the
iterations, and the seconds spent inside the beacon's state machines: the coordinator's
(:class:`~protocols.beacon.BeaconCoordinator`: start, the commits, the commit list, the
reveals, the outcome) and every participant node's
(:class:`~protocols.beacon.BeaconParticipant`: commit, check the list and reveal, check
the outcome and recompute the groups), wherever the loop runs them (in mask and HE mode
the next iteration's beacon rides on this one's stages); the transport between them is
not counted. ``beacon_share`` = beacon seconds / wall time is measured inside the same
run, so it is far less sensitive to machine load than comparing two runs' wall times.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from crypto.signing import IdentityKey, VerifiedSignatures
from protocols.beacon import BeaconCoordinator, BeaconParticipant
from securepool.assignment import assign, assign_from_seed

MODELS = ("logreg", "mlp", "cnn")


def _assign(seed: bytes, members: Sequence[str]) -> dict[str, tuple[str, ...]]:
    return assign_from_seed(
        seed,
        members,
        models=MODELS,
        min_group_size=3,
        min_models=1,
        max_models=3,
        participation=1.0,
    ).groups


def one_round(
    n: int, keys: dict[str, IdentityKey], iteration: int, *, shared: bool = False
) -> dict[str, float]:
    registry = {pid: k.public_bytes() for pid, k in keys.items()}
    verified = VerifiedSignatures() if shared else None
    clients = {
        pid: BeaconParticipant(pid, identity=k, registry=registry, verified=verified)
        for pid, k in keys.items()
    }
    own = dict.fromkeys(keys, 0.0)
    coord_s = 0.0
    t0 = time.perf_counter()
    c = BeaconCoordinator(registry)
    digest = hashlib.sha256(b"pool %d" % iteration).digest()
    t = time.perf_counter()
    start = c.start(iteration=iteration, pool_digest=digest, invited=list(keys))
    coord_s += time.perf_counter() - t
    commits = {}
    for pid, cl in clients.items():
        t = time.perf_counter()
        commits[pid] = cl.on_start(start)
        own[pid] += time.perf_counter() - t
    t = time.perf_counter()
    for pid, raw in commits.items():
        c.receive_commit(pid, raw)
    clist = c.commit_list()
    coord_s += time.perf_counter() - t
    reveals = {}
    for pid, cl in clients.items():
        t = time.perf_counter()
        reveals[pid] = cl.on_commits(clist)
        own[pid] += time.perf_counter() - t
    t = time.perf_counter()
    for pid, raw in reveals.items():
        c.receive_reveal(pid, raw)
    outcome, result = c.finish(assign=_assign)
    coord_s += time.perf_counter() - t
    for pid, cl in clients.items():
        t = time.perf_counter()
        cl.on_outcome(outcome, assign=_assign)
        own[pid] += time.perf_counter() - t
    round_s = time.perf_counter() - t0
    if result.withheld:
        raise RuntimeError(f"benchmark round dropped {sorted(result.withheld)}")
    sent = len(next(iter(commits.values()))) + len(next(iter(reveals.values())))
    received = len(start) + len(clist) + len(outcome)
    return {
        "round_s": round_s,
        "participant_ms": statistics.median(own.values()) * 1e3,
        "coordinator_ms": coord_s * 1e3,
        "bytes_sent_per_participant": float(sent),
        "bytes_received_per_participant": float(received),
        "coordinator_bytes_out": float(n * received),
        "coordinator_bytes_in": float(n * sent),
    }


def baseline_ms(n: int, iteration: int) -> float:
    """The old S403: assign from np.random.default_rng(SeedSequence([seed, it, 0xA55]))."""
    people = [f"p{i:03d}" for i in range(n)]
    t = time.perf_counter()
    assign(
        models=list(MODELS),
        participants=people,
        min_group_size=3,
        min_models=1,
        max_models=3,
        participation=1.0,
        rng=np.random.default_rng(np.random.SeedSequence([7, iteration, 0xA55])),
    )
    return (time.perf_counter() - t) * 1e3


def measure(n: int, repeats: int) -> dict[str, float]:
    keys = {f"p{i:03d}": IdentityKey.generate() for i in range(n)}
    rows = []
    shared = []
    base = []
    for r in range(repeats):
        rows.append(one_round(n, keys, iteration=r + 1))
        shared.append(one_round(n, keys, iteration=r + 1, shared=True)["round_s"])
        base.append(baseline_ms(n, r + 1))
    out = {k: statistics.median(row[k] for row in rows) for k in rows[0]}
    out["round_shared_verifications_s"] = statistics.median(shared)
    out["baseline_assign_ms"] = statistics.median(base)
    out["round_vs_baseline"] = out["round_s"] * 1e3 / out["baseline_assign_ms"]
    return {k: round(v, 4) for k, v in out.items()}


#: the beacon's steps timed inside whole runs: the coordinator's and each participant's
BEACON_STEPS: tuple[tuple[type, str], ...] = (
    (BeaconCoordinator, "start"),
    (BeaconCoordinator, "receive_commit"),
    (BeaconCoordinator, "commit_list"),
    (BeaconCoordinator, "receive_reveal"),
    (BeaconCoordinator, "finish"),
    (BeaconParticipant, "on_start"),
    (BeaconParticipant, "on_commits"),
    (BeaconParticipant, "on_outcome"),
)


@contextlib.contextmanager
def beacon_timer(spent: list[float]) -> Iterator[None]:
    """While open, every call of :data:`BEACON_STEPS` adds its wall time to ``spent[0]``
    (a step called inside another is counted once, in the outer one)."""
    depth = [0]

    def timed(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            depth[0] += 1
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                depth[0] -= 1
                if depth[0] == 0:
                    spent[0] += time.perf_counter() - t

        return wrapper

    originals = [(cls, name, cls.__dict__[name]) for cls, name in BEACON_STEPS]
    for cls, name, fn in originals:
        setattr(cls, name, timed(fn))
    try:
        yield
    finally:
        for cls, name, fn in originals:
            setattr(cls, name, fn)


def demo(config: str, repeats: int) -> dict[str, object]:
    """Whole runs of ``config`` with the time inside the beacon's state machines
    accumulated (:func:`beacon_timer`)."""
    import tempfile
    from pathlib import Path

    from securepool.runner import start_job

    spent = [0.0]
    runs: list[dict[str, Any]] = []
    with beacon_timer(spent):
        for _ in range(repeats):
            spent[0] = 0.0
            with tempfile.TemporaryDirectory() as tmp:
                t = time.perf_counter()
                summary = start_job(Path(config), Path(tmp) / "run")
                wall = time.perf_counter() - t
            runs.append(
                {
                    "wall_s": round(wall, 3),
                    "iterations": summary["iterations"],
                    "converged": summary["converged"],
                    "best_accuracy": summary["best_accuracy"],
                    "beacon_s": round(spent[0], 4),
                    "beacon_share": round(spent[0] / wall, 5),
                }
            )
    return {
        "runs": runs,
        "median_wall_s": statistics.median(r["wall_s"] for r in runs),
        "median_beacon_share": statistics.median(r["beacon_share"] for r in runs),
        "median_beacon_ms_per_iteration": round(
            statistics.median(1e3 * r["beacon_s"] / r["iterations"] for r in runs),
            3,
        ),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="securepool.bench.beacon", description=__doc__)
    ap.add_argument("--n", type=int, nargs="+", default=[20, 100])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--demo", metavar="CONFIG", help="time the beacon inside whole runs")
    args = ap.parse_args(argv)
    if args.demo:
        print(json.dumps({"bench": "beacon-demo", **demo(args.demo, args.repeats)}, indent=2))
        return 0
    out = {
        "bench": "beacon",
        "repeats": args.repeats,
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "results": {str(n): measure(n, args.repeats) for n in args.n},
    }
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
