"""``securepool bench secagg``: one SecAgg+ session on synthetic vectors, timed per role.

    securepool bench secagg --n 100 --d 100000 --dropout 0.1 --repeats 3 --json

One session is ``n`` SecAggClients and a SecAggServer driven by
:func:`securepool.bench.sessions.masked_session` (the state machines the nodes and the
coordinator run, in the loop's order, no transport).
Participants drop at a random stage with probability ``--dropout``. Prints one JSON
object (consistency_threshold: the signers of one survivor list every client needs
before it unmasks, see protocols/secagg/graph.py): client_s_median is the median over
clients of one client's total work (keys,
shares, masking, replies); server_s the coordinator's work (parsing, relaying, the
unmasking step); plaintext_sum_s the same-run baseline of summing the same float32
vectors with numpy; max_abs_error against the exact weighted sum, next to the bound of
one quantisation step per contributor. Medians over ``--repeats`` sessions.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import numpy as np

from crypto.errors import ConfigError, SecurePoolError
from crypto.signing import IdentityKey
from protocols.aggregation import ClientInput
from protocols.secagg.graph import session_parameters
from protocols.secagg.settings import MaskSettings
from securepool.bench.sessions import DROP_STAGES, RoleClock, masked_session

#: the smallest group SecAgg+ runs (the run's assignment.min_group_size floor)
MIN_N = 3


def one_session(
    n: int, d: int, dropout: float, settings: MaskSettings, rng: np.random.Generator
) -> dict[str, float | int | bool | str]:
    vectors = {f"p{i:04d}": rng.uniform(-1, 1, d).astype(np.float32) for i in range(n)}
    inputs = {p: ClientInput(v, weight=1.0) for p, v in vectors.items()}
    dropped = [p for p in vectors if rng.random() < dropout]
    drops = {p: DROP_STAGES[int(rng.integers(0, 4))] for p in dropped}
    start = time.perf_counter()
    total = np.zeros(d, dtype=np.float64)
    for v in vectors.values():
        total += v
    plain_s = time.perf_counter() - start
    # identity keys exist before the session (the PKI), not timed
    identities = {p: IdentityKey.generate() for p in vectors}
    clock = RoleClock()
    try:
        result = masked_session(
            inputs,
            session="bench",
            settings=settings,
            identities=identities,
            drops=drops,
            clock=clock,
        )
    except SecurePoolError as exc:  # too few survivors, or an agreed degree clients refuse
        return {
            "aborted": True,
            "reason": f"{len(dropped)} of {n} dropped: {exc}",
            "server_s": clock.server,
            "plaintext_sum_s": plain_s,
        }
    exact = np.zeros(d, dtype=np.float64)
    for p in result.contributors:
        exact += vectors[p]
    upload = [b for p, b in result.upload_bytes.items() if p in result.contributors]
    return {
        "aborted": False,
        "client_s_median": statistics.median(clock.clients.values()),
        "server_s": clock.server,
        "plaintext_sum_s": plain_s,
        "upload_bytes_per_client": statistics.median(upload),
        "max_abs_error": float(np.abs(result.weighted_sum - exact).max()),
        "contributors": len(result.contributors),
    }


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="securepool bench secagg")
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--d", type=int, default=100_000)
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--degree", type=int, default=0, help="0: chosen per Bell et al.")
    p.add_argument("--bits", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="(output is always JSON)")
    args = p.parse_args(argv)
    problems = []
    if args.n < MIN_N:
        problems.append(
            f"--n must be >= {MIN_N} (a SecAgg+ group has at least {MIN_N} members, as "
            f"assignment.min_group_size), got {args.n}"
        )
    if args.d < 1:
        problems.append(f"--d must be >= 1, got {args.d}")
    if args.repeats < 1:
        problems.append(f"--repeats must be >= 1, got {args.repeats}")
    if not 0 <= args.dropout < 1:
        problems.append(f"--dropout must be in [0, 1), got {args.dropout}")
    if problems:
        raise ConfigError(problems)
    settings = MaskSettings(
        bits=args.bits,
        clip=1.0,
        max_weight=1.0,
        expected_dropout=max(args.dropout, 0.01),
        degree=args.degree,
    )
    try:
        params = session_parameters(
            args.n,
            dropout=settings.expected_dropout,
            corrupt=settings.corrupt_fraction,
            degree=settings.degree,
        )
        k, t, big_t = params.degree, params.threshold, params.consistency
    except SecurePoolError:  # an agreed degree below the security bound: clients refuse
        k = min(args.degree, args.n - 1)
        t, big_t = k // 2 + 1, None
    rng = np.random.default_rng(args.seed)
    runs = [one_session(args.n, args.d, args.dropout, settings, rng) for _ in range(args.repeats)]
    ok = [r for r in runs if not r["aborted"]]
    reasons = [str(r["reason"]) for r in runs if r["aborted"]]
    if not ok:
        # nothing was measured: an error that says why, not a JSON object of nulls
        print(
            f"error: every one of the {len(runs)} session(s) aborted, nothing was measured "
            f"(n = {args.n}, --dropout {args.dropout}: too few survivors for threshold {t}"
            f"{f' / consistency {big_t}' if big_t else ''}); first: {reasons[0]}; use a "
            "larger --n, a smaller --dropout or more --repeats",
            file=sys.stderr,
        )
        return 1

    def med(key: str) -> float | None:
        vals = [float(r[key]) for r in ok]
        return statistics.median(vals) if vals else None

    from crypto.fixedpoint import spec_for

    step = spec_for(bits=args.bits, clip=1.0, n_summands=args.n).step
    server_s = med("server_s")
    plain_s = statistics.median(float(r["plaintext_sum_s"]) for r in runs)
    out = {
        "n": args.n,
        "d": args.d,
        "dropout": args.dropout,
        "degree": k,
        "threshold": t,
        "consistency_threshold": big_t,
        "repeats": args.repeats,
        "aborted": len(reasons),
        "abort_reasons": reasons,
        "client_s_median": med("client_s_median"),
        "server_s": server_s,
        "plaintext_sum_s": plain_s,
        "server_over_plaintext": server_s / plain_s if server_s else None,
        "upload_bytes_per_client": med("upload_bytes_per_client"),
        "upload_bytes_per_param": (med("upload_bytes_per_client") or 0) / args.d,
        "max_abs_error": max((float(r["max_abs_error"]) for r in ok), default=None),
        "error_bound_one_step_per_contributor": step * args.n,
        "quantisation_step": step,
    }
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
