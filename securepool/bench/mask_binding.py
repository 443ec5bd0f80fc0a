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

Sessions are driven by :func:`securepool.bench.sessions.masked_session`; the auditor is
:class:`securepool.trust.auditor.Auditor` (what the auditor node runs). The post-check
runs at the coordinator (it checks the verdict's commitments, no message) but counts as
the auditor's time here, as it always has in this benchmark's figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from crypto.signing import IdentityKey
from protocols.aggregation import ClientInput
from protocols.secagg.binding import BindingKeys, JudgeRequest, MaskVerdict
from protocols.secagg.client import ClientStage
from protocols.secagg.messages import ConsistencySignature, decode_message
from protocols.secagg.settings import MaskSettings
from protocols.summaries import seal_summary, summarize
from securepool.bench.sessions import masked_session
from securepool.trust.auditor import Auditor
from securepool.trust.check import public_projection_seed
from securepool.trust.config import TrustConfig


def _session(
    mode: str, updates: Mapping[str, np.ndarray], d: int, session: str, settings: MaskSettings
) -> dict[str, float]:
    config = TrustConfig(enabled=True)
    auditor = Auditor(config)
    auditor_identity = auditor.identity_public()  # the PKI's copy
    # identity keys exist before the session (the PKI), not timed
    identities = {p: IdentityKey.generate() for p in updates}
    seal_s: dict[str, float] = {}
    inputs: dict[str, ClientInput] = {}
    for pid, upd in updates.items():
        sealed = None
        if mode == "today":  # as plaintext nodes sealed theirs, to the public projection
            start = time.perf_counter()
            summary = summarize(upd, dim=config.sketch_dim, seed=public_projection_seed(0, session))
            sealed = seal_summary(
                summary, auditor_public=auditor.public_key(), session=session, participant=pid
            )
            seal_s[pid] = time.perf_counter() - start
        inputs[pid] = ClientInput(update=upd, weight=10.0, sealed_summary=sealed)
    reports: list[int] = []

    def count_reports(stage: ClientStage, pid: str, reply: bytes) -> None:
        """The sealed binding reports on the wire (in the survivor list's replies)."""
        if stage is ClientStage.CONSISTENCY:
            msg = decode_message(reply, ConsistencySignature)
            reports.append(len(msg.sealed_report))

    if mode == "today":
        relayed: list[int] = []
        spent: list[float] = []

        def vet(sealed: Mapping[str, bytes]) -> Mapping[str, str]:
            """The auditor's vet on the relayed summaries, and the coordinator's check
            of its signed verdict."""
            relayed.append(sum(len(b) for b in sealed.values()))
            start = time.perf_counter()
            try:
                verdict, signature = auditor.vet(session, sealed, dim=config.sketch_dim)
                verdict.verify(auditor_identity, signature)
                return dict(verdict.flagged)
            finally:
                spent.append(time.perf_counter() - start)

        result = masked_session(
            inputs,
            session=session,
            settings=settings,
            identities=identities,
            vet=vet,
            observe=count_reports,
        )
        auditor_bytes, audit_s = sum(relayed), sum(spent)
        # today the auditor's vet runs inside the coordinator's close_inputs: not its time
        server_s = result.clock.server - audit_s
    else:
        judged: list[int] = []

        def judge(request: JudgeRequest) -> tuple[bytes, bytes]:
            """The auditor's signed verdict, checked by the coordinator (as the loop)."""
            judged.append(
                sum(len(b) for b in request.reports.values())
                + sum(v.nbytes for v in request.projected.values())
                + sum(len(p) + len(d) for p, d in request.digests.items())
            )
            _verdict, data, signature = auditor.judge_mask(request, dim=config.sketch_dim)
            MaskVerdict.verified(data, signature, auditor=auditor_identity, session=session)
            judged.append(len(data) + len(signature))
            return data, signature

        binding = BindingKeys(
            auditor_public=auditor.public_key(),
            auditor_identity=auditor_identity,
            dim=config.sketch_dim,
        )
        result = masked_session(
            inputs,
            session=session,
            settings=settings,
            identities=identities,
            binding=binding,
            judge=judge,
            observe=count_reports,
        )
        post = result.clock.steps["post_check"]
        audit_s = result.clock.auditor + post
        server_s = result.clock.server - post
        auditor_bytes = sum(judged)
    clock = result.clock
    per_client = [clock.clients[p] + seal_s.get(p, 0.0) for p in updates]
    uploads = list(result.upload_bytes.values())
    return {
        "client_s": statistics.median(per_client),
        "upload_bytes": statistics.median(uploads),
        "report_bytes": statistics.median(reports) if reports else 0,
        "server_s": server_s,
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
