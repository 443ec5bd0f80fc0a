"""Transcript audit: what each role received, group sizes, untrusted marks.

A run with ``run.record_transcripts = true`` writes DIR/transcripts/ROLE.jsonl, one line
per message a role sent or received, recorded at the coordinator's Driver in every
runtime (:mod:`securepool.runtime.recording`): session, direction, peer, kind (the
stage; ``<stage>:reply`` for a reply), bytes and SHA-256 of the exact wire bytes (the
runner keeps digests, not payloads). From that the audit reports, per role, the
bytes, message kinds and sessions it received, and for mask mode the checks that
digests allow: every masked input of a session has the same size (sizes carry nothing
about the data) and no two masked inputs of the run are byte-identical (a repeated
masked vector would betray reused masks). What digests cannot show is whether the
masked values are uniformly distributed: that needs payloads. When a transcript
carries them (``payload_hex`` per line, e.g. one recorded with
``TranscriptRecorder(keep_payloads=True)``), every masked input is decoded and tested
against the uniform distribution on Z_2^k (chi-square over 256
bins of the top byte, and Kolmogorov–Smirnov of value / 2^k).

The smallest group per iteration and the untrusted marks come from metrics.jsonl and
summary.json, and are reported whether or not transcripts were recorded.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import stats

from securepool.audit.inputs import AuditInputs

MASKED_INPUT_KIND = "secagg/shares:reply"  # a node's reply carrying its MaskedInput
#: the significance level of each test: an honest run's masked values are flagged with
#: probability about 2 * ALPHA (two tests), so an audit that says "not uniform" means it;
#: a plaintext vector among them gives p-values far below it (hundreds of values in a
#: few bins), see tests/securepool/test_audit.py
ALPHA = 1e-6


def uniformity_test(vectors: list[NDArray[np.unsignedinteger]], *, bits: int) -> dict[str, Any]:
    """Are these masked vectors' entries consistent with uniform values mod 2^bits?"""
    values = np.concatenate([np.asarray(v, dtype=np.uint64) for v in vectors])
    top = (values >> np.uint64(bits - 8)).astype(np.int64)
    counts = np.bincount(top, minlength=256)
    chi2 = stats.chisquare(counts)
    ks = stats.kstest(values.astype(np.float64) / float(2**bits), "uniform")
    return {
        "values": int(values.size),
        "chi2_top_byte_p": float(chi2.pvalue),
        "ks_p": float(ks.pvalue),
        "alpha": ALPHA,
        "uniform": bool(chi2.pvalue >= ALPHA and ks.pvalue >= ALPHA),
    }


def _masked_vectors(entries: list[dict[str, Any]]) -> list[NDArray[np.unsignedinteger]]:
    from protocols.secagg.messages import MaskedInput, decode_message
    from securepool.node.wire import Reply

    out = []
    for e in entries:
        body = Reply.from_bytes(bytes.fromhex(e["payload_hex"])).body
        msg = decode_message(body, MaskedInput)
        out.append(msg.vector)
    return out


def _roles(transcripts: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    out = {}
    for role, rows in sorted(transcripts.items()):
        recv = [r for r in rows if r.get("direction") == "received"]
        sent = [r for r in rows if r.get("direction") == "sent"]
        out[role] = {
            "received_bytes": sum(int(r.get("bytes", 0)) for r in recv),
            "sent_bytes": sum(int(r.get("bytes", 0)) for r in sent),
            "received_kinds": dict(Counter(str(r.get("kind")) for r in recv)),
            "sessions": len({r.get("session") for r in rows}),
        }
    return out


def _mask_checks(run: AuditInputs, transcripts: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    coord = transcripts.get("coordinator", [])
    masked = [
        r for r in coord if r.get("direction") == "received" and r.get("kind") == MASKED_INPUT_KIND
    ]
    by_session: dict[str, set[int]] = defaultdict(set)
    for r in masked:
        by_session[str(r["session"])].add(int(r["bytes"]))
    uneven = sorted(s for s, sizes in by_session.items() if len(sizes) > 1)
    digests = Counter(str(r["sha256"]) for r in masked)
    repeated = sum(1 for c in digests.values() if c > 1)
    checks: dict[str, Any] = {
        "masked_inputs": len(masked),
        "sessions": len(by_session),
        "sessions_with_unequal_sizes": uneven,
        "repeated_masked_inputs": repeated,
        "passed": bool(masked) and not uneven and repeated == 0,
    }
    with_payload = [r for r in masked if r.get("payload_hex")]
    if with_payload and len(with_payload) == len(masked):
        bits = run.config.aggregation.mask.bits
        checks["uniformity"] = uniformity_test(_masked_vectors(with_payload), bits=bits)
        checks["passed"] = checks["passed"] and checks["uniformity"]["uniform"]
        checks["can_test"] = "sizes, repeats, kinds and the distribution of masked values"
        checks["cannot_test"] = ""
    else:
        checks["uniformity"] = None
        checks["can_test"] = (
            "equal sizes of masked inputs per session, no byte-identical masked inputs "
            "(SHA-256), the stages and counts of messages each role received"
        )
        checks["cannot_test"] = (
            "whether masked values are uniform: the run recorded sizes and SHA-256 digests "
            "only, not payloads, so no statistical test of the masked vectors is possible"
        )
    return checks


def group_sizes(run: AuditInputs) -> list[dict[str, Any]]:
    rows = []
    floor = run.config.assignment.min_group_size
    for m in run.metrics:
        groups = m.get("groups", [])
        aggregated = [g for g in groups if g.get("status") == "aggregated"]
        rows.append(
            {
                "iteration": m["iteration"],
                "smallest_group": min((len(g.get("members", [])) for g in groups), default=None),
                "smallest_aggregate": min(
                    (int(g.get("contributors", 0)) for g in aggregated), default=None
                ),
                "below_min_group_size": [
                    g["model"] for g in aggregated if int(g.get("contributors", 0)) < floor
                ],
            }
        )
    return rows


def transcript_audit(run: AuditInputs) -> dict[str, Any]:
    trust = run.summary.get("trust") or {}
    marks = [
        {
            "participant": mk.get("participant"),
            "iteration": mk.get("iteration"),
            "model": mk.get("model"),
            "reason": mk.get("reason"),
            "strikes": mk.get("strikes"),
        }
        for mk in trust.get("marks", [])
    ]
    sizes = group_sizes(run)
    out: dict[str, Any] = {
        "recorded": run.transcripts is not None,
        "mode": run.config.aggregation.mode.value,
        "min_group_size": run.config.assignment.min_group_size,
        "group_sizes": sizes,
        "smallest_aggregate": min(
            (r["smallest_aggregate"] for r in sizes if r["smallest_aggregate"] is not None),
            default=None,
        ),
        "trust_enabled": run.config.trust.enabled,
        "untrusted": sorted({str(m["participant"]) for m in marks}),
        "marks": marks,
        "flags": len(trust.get("flags", [])),
    }
    if run.transcripts is None:
        out["note"] = (
            "no transcripts: set run.record_transcripts = true in the run config to audit "
            "what each role received"
        )
        return out
    out["roles"] = _roles(run.transcripts)
    if run.config.aggregation.mode.value == "mask":
        out["mask_checks"] = _mask_checks(run, run.transcripts)
    return out
