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

The same repeats also measure the beacon quorum (:mod:`protocols.quorum`) on each
round's real outcome, with the run's default settings (``RunConfig()``:
``corrupt_fraction`` 0.2, ``max_left_out`` 0.25, ``min_group_size`` 3) over a universe
of the ``n`` participants; every participant endorses its own
:meth:`~protocols.beacon.BeaconResult.statement` (context:
:func:`~securepool.node.agreement.models_context` of one model hash per announced
group), the coordinator files the endorsements and certifies
(:class:`~securepool.coordinator.agreement.RoundAgreement`), and every participant
verifies the certificate. Medians over repeats (of the median over participants):

- ``endorse_ms``: one participant builds its statement and signs its endorsement, as
  the node does after it accepts the outcome (the quorum rule from the PKI, the
  statement, the max_left_out check, :meth:`~protocols.quorum.Endorsement.sign`, hex);
- ``verify_certificate_ms``: one participant checks the relayed certificate
  (:func:`~protocols.quorum.verify_certificate`: one Ed25519 verification per signer
  in it, ``certificate_signers``: the collector certifies with the first ``q``
  endorsements of the digest, by id) with no shared
  :class:`~crypto.signing.VerifiedSignatures`, what a node in its own process pays;
  ``verify_certificate_shared_ms``: the mean per participant when all ``n`` share one
  memo (the in-process runtime: the first verifies, the rest look up);
- ``collect_ms``: the coordinator's :class:`RoundAgreement`: its own statement, the
  ``n`` train replies' endorsements filed (:meth:`~protocols.quorum.QuorumCollector.add`,
  each signature verified) and the certificate built;
- ``auditor_accept_ms``: the key holder's check of statement + certificate in HE mode
  (:meth:`~securepool.node.agreement.CertifiedOutcomes.accept`: decode, digest, one
  verification per signer; median of 5 checks per round);
- ``quorum_vs_round`` = (``endorse_ms`` + ``verify_certificate_ms``) / ``participant_ms``:
  what the quorum adds to a participant's beacon work, both measured in the same run;
- bytes: ``endorsement_bytes_sent_per_participant`` (the endorsement as the node sends
  it: hex in its train reply's JSON metadata, i.e. twice its bytes plus the
  ``"endorsement"`` key and separators), ``certificate_bytes_received_per_participant``
  (the certificate, ``certificate_signers`` signatures in it),
  ``quorum_wire_extra_bytes_per_participant`` (what carrying
  it adds on top in mask mode, where it leads the single-stage SecAgg+ keys request:
  that request and its reply become bundles, with the node's acknowledgement; the
  stage name the transport frames is not counted), ``coordinator_quorum_bytes_in`` (n
  endorsements), ``coordinator_quorum_bytes_out`` (the certificate to every group
  member, mask mode), ``statement_bytes`` and ``auditor_quorum_bytes_received`` (HE
  mode: statement + certificate as the auditor is sent them, per relay: before its
  fold with the trust check on, and before its decrypt);
- the quorum's sizes: ``N`` (the universe, = n), ``f`` (corrupt budget), ``q`` (quorum,
  ``floor((N + f) / 2) + 1``), ``w`` (max left out); the settings themselves are the
  top-level ``quorum_settings``;
- the omission bound (:func:`~protocols.quorum.log2_choices`,
  :func:`~protocols.quorum.omission_bound`, ``min_honest`` = ``min_group_size``):
  ``log2_choices``; ``omission_bound`` at a representative group: the demo's three
  models dealt over the fewest revealers an endorsable outcome keeps, ``m = N - w``:
  ``omission_groups`` = min(3, m // min_group_size) groups of ``omission_group_size`` =
  m // omission_groups (about N/3 less the omissions; the demo's assignment also draws
  fewer models, and each group's size is random above the floor); and
  ``omission_bound_min_group_size`` for a group of exactly ``min_group_size``, the
  smallest the assignment forms. These two are exact, not rounded;
- the same over the assignment's own draw of group sizes
  (:func:`securepool.node.agreement.assignment_bound`, the worst number of groups):
  ``log2_p_short_group_one_seed`` (log2 P[some group has fewer than ``min_group_size``
  honest members] under one uniform seed, all f colluders among the N - w revealers)
  and ``assignment_bound`` (that times the choices, capped at 1); and with
  ``max_left_out = 0`` (``*_w0``): what a run that tolerates no missing reveal gets.

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
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from crypto.signing import IdentityKey, VerifiedSignatures
from protocols.beacon import BeaconCoordinator, BeaconParticipant, BeaconResult
from protocols.quorum import (
    Endorsement,
    QuorumCertificate,
    log2_choices,
    omission_bound,
    verify_certificate,
)
from securepool.assignment import assign, assign_from_seed
from securepool.config import RunConfig
from securepool.coordinator.agreement import RoundAgreement, round_models
from securepool.node.agreement import (
    CertifiedOutcomes,
    QuorumRule,
    assignment_bound,
    models_context,
)
from securepool.node.wire import NodeStage, Reply, encode_bundle, pack_list

MODELS = ("logreg", "mlp", "cnn")
#: the largest train reply the coordinator files an endorsement from (it is far smaller)
_REPLY_LIMIT = 1 << 20
#: the auditor's check is timed this many times per round (one key holder: one sample)
_AUDITOR_TIMES = 5


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


@dataclass(frozen=True)
class Round:
    """One beacon round: its figures, each participant's result, the coordinator's."""

    figures: dict[str, float]
    participants: dict[str, BeaconResult]
    coordinator: BeaconResult


def one_round(
    n: int, keys: dict[str, IdentityKey], iteration: int, *, shared: bool = False
) -> Round:
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
    accepted = {}
    for pid, cl in clients.items():
        t = time.perf_counter()
        accepted[pid] = cl.on_outcome(outcome, assign=_assign)
        own[pid] += time.perf_counter() - t
    round_s = time.perf_counter() - t0
    if result.withheld:
        raise RuntimeError(f"benchmark round dropped {sorted(result.withheld)}")
    sent = len(next(iter(commits.values()))) + len(next(iter(reveals.values())))
    received = len(start) + len(clist) + len(outcome)
    figures = {
        "round_s": round_s,
        "participant_ms": statistics.median(own.values()) * 1e3,
        "coordinator_ms": coord_s * 1e3,
        "bytes_sent_per_participant": float(sent),
        "bytes_received_per_participant": float(received),
        "coordinator_bytes_out": float(n * received),
        "coordinator_bytes_in": float(n * sent),
    }
    return Round(figures, accepted, result)


def quorum_round(cfg: RunConfig, keys: Mapping[str, IdentityKey], rnd: Round) -> dict[str, float]:
    """The beacon quorum on one round's real outcome: every participant endorses the
    statement of the result it accepted, the coordinator certifies, every participant
    (and the HE auditor) checks the certificate; times and bytes as in the docstring."""
    registry = {pid: k.public_bytes() for pid, k in keys.items()}
    gamma, omit = cfg.aggregation.mask.corrupt_fraction, cfg.assignment.max_left_out
    # one model hash per announced group, as the TrainRequest lists them (not timed)
    models = round_models(
        {mid: np.full(64, i, np.float32) for i, mid in enumerate(sorted(rnd.coordinator.groups))}
    )
    endorse: dict[str, float] = {}
    endorsed: dict[str, tuple[int, bytes]] = {}
    replies: dict[str, bytes] = {}
    for pid, result in rnd.participants.items():
        t = time.perf_counter()
        rule = QuorumRule.of(registry, corrupt_fraction=gamma, left_out_fraction=omit)
        statement = result.statement(universe=rule.universe, context=models_context(models))
        rule.check_left_out(statement.left_out, who=pid)
        endorsement = Endorsement.sign(keys[pid], participant=pid, statement=statement)
        hexed = endorsement.to_bytes().hex()
        endorse[pid] = time.perf_counter() - t
        endorsed[pid] = (statement.round, endorsement.digest)
        replies[pid] = Reply(True, meta={"selected": False, "endorsement": hexed}).to_bytes()
    unendorsed = len(Reply(True, meta={"selected": False}).to_bytes())
    sent = statistics.median(len(raw) - unendorsed for raw in replies.values())

    t = time.perf_counter()
    agreement = RoundAgreement(cfg, registry, rnd.coordinator, models)
    for pid, raw in replies.items():
        agreement.file(pid, raw, limit=_REPLY_LIMIT)
    cert, why_not = agreement.certificate()
    collect_s = time.perf_counter() - t
    if cert is None:
        raise RuntimeError(f"benchmark round not certified: {why_not}")
    rule = agreement.rule

    full = QuorumCertificate.from_bytes(cert)

    def check(round_: int, digest: bytes, memo: VerifiedSignatures | None) -> None:
        """One participant's check of the certificate, as its node makes it."""
        own_rule = QuorumRule.of(registry, corrupt_fraction=gamma, left_out_fraction=omit)
        verify_certificate(
            cert,
            round_=round_,
            digest=digest,
            registry=registry,
            universe=own_rule.universe,
            quorum=own_rule.quorum,
            verified=memo,
        )

    verify: dict[str, float] = {}
    for pid, (round_, digest) in endorsed.items():
        t = time.perf_counter()
        check(round_, digest, None)
        verify[pid] = time.perf_counter() - t
    memo = VerifiedSignatures()
    t = time.perf_counter()
    for round_, digest in endorsed.values():
        check(round_, digest, memo)
    shared_s = (time.perf_counter() - t) / len(endorsed)

    statement_bytes = agreement.statement.to_bytes()
    auditor = []
    for _ in range(_AUDITOR_TIMES):
        t = time.perf_counter()
        CertifiedOutcomes().accept(statement_bytes, cert, registry=registry, corrupt_fraction=gamma)
        auditor.append(time.perf_counter() - t)

    # mask mode: the certificate leads SECAGG_KEYS, a single-stage request otherwise, so
    # both the request and the reply become bundles (the body and reply cancel out)
    stage = NodeStage.SECAGG_KEYS.value
    lead = len(encode_bundle([(NodeStage.BEACON_QUORUM.value, cert), (stage, b"")]))
    replied = len(Reply(True, pack_list([Reply(True).to_bytes(), b""])).to_bytes())
    members = sum(len(g) for g in rnd.coordinator.groups.values())
    return {
        "endorse_ms": statistics.median(endorse.values()) * 1e3,
        "verify_certificate_ms": statistics.median(verify.values()) * 1e3,
        "verify_certificate_shared_ms": shared_s * 1e3,
        "collect_ms": collect_s * 1e3,
        "auditor_accept_ms": statistics.median(auditor) * 1e3,
        "endorsement_bytes_sent_per_participant": float(sent),
        "certificate_bytes_received_per_participant": float(len(cert)),
        "certificate_signers": float(len(full.signatures)),
        "quorum_wire_extra_bytes_per_participant": float(lead - len(cert) + replied),
        "coordinator_quorum_bytes_in": float(len(replies) * sent),
        "coordinator_quorum_bytes_out": float(members * len(cert)),
        "statement_bytes": float(len(statement_bytes)),
        "auditor_quorum_bytes_received": float(len(pack_list([statement_bytes, cert]))),
    }


def quorum_sizes(cfg: RunConfig, registry: Mapping[str, bytes]) -> dict[str, float | int]:
    """N, f, q, w and the omission bound of the participants of ``registry`` under
    ``cfg``'s settings (see the module docstring for the group sizes)."""
    rule = QuorumRule.of(
        registry,
        corrupt_fraction=cfg.aggregation.mask.corrupt_fraction,
        left_out_fraction=cfg.assignment.max_left_out,
    )
    big_n, f, w = len(rule.universe), rule.corrupt, rule.left_out
    floor = cfg.assignment.min_group_size
    kept = big_n - w
    groups = max(1, min(len(MODELS), kept // floor))
    size = kept // groups

    def bound(group_size: int) -> float:
        return omission_bound(
            universe=big_n,
            corrupt=f,
            left_out=w,
            group_size=group_size,
            groups=groups,
            min_honest=floor,
        )

    def drawn(left_out: int) -> tuple[float, float]:
        return assignment_bound(
            universe=big_n,
            corrupt=f,
            left_out=left_out,
            min_group_size=floor,
            models=len(MODELS),
            min_models=cfg.assignment.min_models,
            max_models=cfg.assignment.max_models,
        )

    single, whole = drawn(w)
    single_0, whole_0 = drawn(0)
    return {
        "N": big_n,
        "f": f,
        "q": rule.quorum,
        "w": w,
        "log2_choices": round(log2_choices(big_n, f, w), 4),
        "omission_groups": groups,
        "omission_group_size": size,
        "omission_bound": bound(size),
        "omission_bound_min_group_size": bound(floor),
        "log2_p_short_group_one_seed": round(single, 4),
        "assignment_bound": whole,
        "log2_p_short_group_one_seed_w0": round(single_0, 4),
        "log2_choices_w0": round(log2_choices(big_n, f, 0), 4),
        "assignment_bound_w0": whole_0,
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


def measure(n: int, repeats: int) -> dict[str, float | int]:
    cfg = RunConfig()  # the defaults: corrupt_fraction 0.2, max_left_out 0.25
    keys = {f"p{i:03d}": IdentityKey.generate() for i in range(n)}
    rows = []
    shared = []
    base = []
    for r in range(repeats):
        rnd = one_round(n, keys, iteration=r + 1)
        rows.append({**rnd.figures, **quorum_round(cfg, keys, rnd)})
        shared.append(one_round(n, keys, iteration=r + 1, shared=True).figures["round_s"])
        base.append(baseline_ms(n, r + 1))
    out = {k: statistics.median(row[k] for row in rows) for k in rows[0]}
    out["round_shared_verifications_s"] = statistics.median(shared)
    out["baseline_assign_ms"] = statistics.median(base)
    out["round_vs_baseline"] = out["round_s"] * 1e3 / out["baseline_assign_ms"]
    quorum_ms = out["endorse_ms"] + out["verify_certificate_ms"]
    out["quorum_vs_round"] = quorum_ms / out["participant_ms"]
    registry = {pid: k.public_bytes() for pid, k in keys.items()}
    return {**{k: round(v, 4) for k, v in out.items()}, **quorum_sizes(cfg, registry)}


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
    cfg = RunConfig()
    out = {
        "bench": "beacon",
        "repeats": args.repeats,
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "quorum_settings": {
            "corrupt_fraction": cfg.aggregation.mask.corrupt_fraction,
            "max_left_out": cfg.assignment.max_left_out,
            "min_group_size": cfg.assignment.min_group_size,
        },
        "results": {str(n): measure(n, args.repeats) for n in args.n},
    }
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
