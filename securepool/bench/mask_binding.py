"""Mask-mode binding (issue 13): participant, coordinator and auditor cost vs today's summary.

    securepool bench mask_binding --n 20 --d 650 1210 2442 6186 100000 --repeats 5

For each vector length d, ``--repeats`` pairs of SecAgg+ sessions of ``--n`` participants
on the same synthetic updates, interleaved so that both see the same machine load:

* ``today``: every participant seals a summary (norm + public count-sketch, HPKE) and
  the coordinator relays it to the auditor before the survivor list (no binding);
* ``bound``: the participant reports r = R e, p_ij and q (protocols/secagg/binding.py)
  after the survivor list, the auditor judges and signs the verdict that gates
  unmasking, then post-checks the revealed seeds.

Per participant: its total time (SecAgg+ client steps, plus sealing the summary today)
and its upload bytes; per group: the coordinator's time, the auditor's time and the bytes
between coordinator and auditor. Medians over the repeats (per-participant figures:
median over participants, then over repeats). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from protocols.aggregation import ClientInput, Router
from protocols.secagg.aggregator import MaskedAggregator, SessionTimer
from protocols.secagg.binding import JudgeRequest, PostCheck, PostCheckRequest
from protocols.secagg.messages import ConsistencySignature, decode_message
from protocols.secagg.settings import MaskSettings
from securepool.trust.check import SessionVet, TrustCheck
from securepool.trust.config import TrustConfig


class _Bytes(Router):
    """Counts the sealed reports on the wire."""

    def __init__(self) -> None:
        super().__init__()
        self.reports: list[int] = []

    def send(self, *, session: str, sender: str, receiver: str, kind: str, payload: bytes) -> bytes:
        if kind == "reply_to_survivor_list":
            msg = decode_message(payload, ConsistencySignature)
            self.reports.append(len(msg.sealed_report))
        return payload


class _TimedAudit:
    """A SessionVet whose auditor time and coordinator <-> auditor bytes are counted."""

    def __init__(self, inner: SessionVet) -> None:
        self.inner = inner
        self.seconds = 0.0
        self.bytes = 0

    def binding_keys(self) -> Any:
        return self.inner.binding_keys()

    def judge(self, request: JudgeRequest) -> tuple[bytes, bytes]:
        self.bytes += sum(len(b) for b in request.reports.values())
        self.bytes += sum(v.nbytes for v in request.projected.values())
        self.bytes += sum(len(p) + len(d) for p, d in request.digests.items())
        start = time.perf_counter()
        try:
            data, sig = self.inner.judge(request)
        finally:
            self.seconds += time.perf_counter() - start
        self.bytes += len(data) + len(sig)
        return data, sig

    def post_check(self, request: PostCheckRequest) -> PostCheck:
        # no message: the coordinator checks the verdict's commitments itself
        start = time.perf_counter()
        try:
            return self.inner.post_check(request)
        finally:
            self.seconds += time.perf_counter() - start


def _session(
    mode: str, updates: Mapping[str, np.ndarray], d: int, session: str, settings: MaskSettings
) -> dict[str, float]:
    check = TrustCheck(TrustConfig(enabled=True), seed=0, model_sizes={"m": d})
    timer = SessionTimer()
    router = _Bytes()
    agg = MaskedAggregator(settings=settings, min_contributors=3, timer=timer, router=router)
    for p in updates:  # identity keys exist before the session (the PKI), not timed
        agg.identity_public(p)
    seal_s: dict[str, float] = {}
    inputs: dict[str, ClientInput] = {}
    for pid, upd in updates.items():
        sealed = None
        if mode == "today":
            start = time.perf_counter()
            sealed = check.seal(participant=pid, update=upd, session=session)
            seal_s[pid] = time.perf_counter() - start
        inputs[pid] = ClientInput(update=upd, weight=10.0, sealed_summary=sealed)
    vet = check.vet_for(session=session, iteration=1, model_id="m")
    audit_s = 0.0
    auditor_bytes = 0
    if mode == "today":
        relayed: list[int] = []
        spent: list[float] = []

        def plain(sealed: Mapping[str, bytes], /, **kw: Any) -> Mapping[str, str]:
            relayed.append(sum(len(b) for b in sealed.values()))
            start = time.perf_counter()
            try:
                return vet(sealed, **kw)
            finally:
                spent.append(time.perf_counter() - start)

        result = agg.aggregate(session=session, inputs=inputs, vet=plain)
        auditor_bytes, audit_s = sum(relayed), sum(spent)
    else:
        timed = _TimedAudit(vet)
        result = agg.aggregate(session=session, inputs=inputs, vet=timed)
        audit_s, auditor_bytes = timed.seconds, timed.bytes
    per_client = [timer.clients[p] + seal_s.get(p, 0.0) for p in updates]
    uploads = list(result.upload_bytes.values())
    return {
        "client_s": statistics.median(per_client),
        "upload_bytes": statistics.median(uploads),
        "report_bytes": statistics.median(router.reports) if router.reports else 0,
        # today the auditor's vet runs inside the coordinator's close_inputs: not its time
        "server_s": timer.server - (audit_s if mode == "today" else 0.0),
        "auditor_s": audit_s,
        "coordinator_auditor_bytes": auditor_bytes,
        "contributors": len(result.contributors),
    }


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="securepool bench mask_binding")
    p.add_argument("--n", type=int, default=20)
    p.add_argument("--d", type=int, nargs="+", default=[650, 1210, 2442, 6186, 100_000])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    settings = MaskSettings(max_weight=128.0)
    rng = np.random.default_rng(args.seed)
    rows = []
    for d in args.d:
        runs: dict[str, list[dict[str, float]]] = {"today": [], "bound": []}
        for r in range(args.repeats):
            base = rng.normal(0, 0.01, d)
            updates = {
                f"p{i:02d}": (base + rng.normal(0, 0.003, d)).astype(np.float32)
                for i in range(args.n)
            }
            order = ("today", "bound") if r % 2 == 0 else ("bound", "today")
            for mode in order:
                runs[mode].append(_session(mode, updates, d, f"it{r:04d}/d{d}{mode}", settings))

        def med(mode: str, key: str, runs: dict[str, list[dict[str, float]]] = runs) -> float:
            return float(statistics.median(x[key] for x in runs[mode]))

        row: dict[str, Any] = {"d": d, "n": args.n}
        for key in runs["today"][0]:
            row[f"{key}_today"] = med("today", key)
            row[f"{key}_bound"] = med("bound", key)
        row["client_ratio_bound_over_today"] = row["client_s_bound"] / row["client_s_today"]
        # the two sessions of one repeat ran back to back: their ratio sees one load
        row["client_ratio_paired_median"] = statistics.median(
            b["client_s"] / t["client_s"] for t, b in zip(runs["today"], runs["bound"], strict=True)
        )
        row["upload_ratio_bound_over_today"] = row["upload_bytes_bound"] / row["upload_bytes_today"]
        rows.append(row)
    print(json.dumps({"repeats": args.repeats, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv[1:]))
