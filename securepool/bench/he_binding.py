"""``securepool bench he_binding``: the HE binding's cost (issue 13) against plain HE.

    securepool bench he_binding --n 10 --d 650,4810,6186,100000 --repeats 3 --json

For each ``d`` (default: the digits demo's three models and 100k), one HE group session
of ``n`` synthetic participants (updates ~ N(0, 0.02^2), sample counts 20..90) runs
twice per repeat, back to back, at the default HE parameters: without the trust check
(``fold_dim = 0``, the baseline) and with the binding (``fold_dim = 256``, the default
``trust.sketch_dim``). Figures are medians over ``--repeats`` (participant times:
median over participants, then over repeats):

* ``participant_s``      one participant's upload (weight, tag, encrypt, sign)
* ``coordinator_fold_s``  the coordinator's whole fold request for the group, split into
  ``..._group_s`` (seed, multipliers, plaintext encoding: once per group) and
  ``..._per_participant_s`` (one fold: products, sum, rotations)
* ``auditor_open_s``     the key holder opening every fold (decrypt, checks);
  ``auditor_judge_s`` the P6 rules on the opened sketches, signing
* ``coordinator_sum_s``, ``auditor_decrypt_s``  the aggregate itself (both runs)
* ``leakage``: what one opened fold tells the auditor, as ``bench summary_leakage``
  measures a sketch: the relative error of the best linear (least-norm) reconstruction
  of a Gaussian update from its fold (``fold``: everything the auditor decrypts;
  ``without_conjugation``: what real and imaginary parts would give), next to the
  public count-sketch's at ``trust.sketch_dim = 256`` (1.0: nothing beyond the norm)
* bytes: ``upload_bytes`` per participant, ``fold_bytes`` per participant,
  ``offer_bytes`` (public context + Galois keys), ``galois_bytes``, and the size of
  TenSEAL's default Galois key set (every power-of-two step) for comparison

Sessions are driven by :class:`securepool.bench.sessions.HEGroup` (the roles the nodes,
the coordinator and the auditor node run, in the loop's order); the auditor's judgement
is :class:`securepool.trust.auditor.Auditor`'s on the opened folds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from dataclasses import replace
from typing import Any

import numpy as np

from crypto.ckks.fold import all_rotation_keys_bytes
from protocols.aggregation import ClientInput
from protocols.he import HESettings
from protocols.he.fold import FoldProjection, fold_seed
from protocols.he.keyholder import FoldOpening
from protocols.he.layout import SlotLayout
from protocols.he.messages import ContextOffer, FoldRequest
from securepool.bench.sessions import HEGroup
from securepool.trust.auditor import Auditor
from securepool.trust.config import TrustConfig

DIGITS_D = (650, 4810, 6186)  # logreg, mlp, cnn of examples/digits.toml


def _inputs(n: int, d: int, seed: int) -> dict[str, ClientInput]:
    rng = np.random.default_rng(seed)
    base = rng.normal(0, 0.02, d)
    return {
        f"p{i:03d}": ClientInput(
            (base + rng.normal(0, 0.01, d)).astype(np.float32), float(rng.integers(20, 91))
        )
        for i in range(n)
    }


def one_round(n: int, d: int, seed: int) -> dict[str, float]:
    """One repeat: the session without the binding (``base``) and with it (``bound``) on
    the same inputs, back to back; their figures."""
    inputs = _inputs(n, d, seed)
    out: dict[str, float] = {}
    joint_seed = b"\x01" * 32
    session = f"bench{seed}"
    auditor = Auditor(TrustConfig(enabled=True))

    def judge(opening: FoldOpening) -> dict[str, str]:
        """The P6 rules on the opened sketches, signed (the auditor node's work)."""
        verdict, _ = auditor.vet_opened(opening.session, opening.summaries)
        return dict(verdict.flagged)

    for label, fold_dim in (("base", 0), ("bound", 256)):
        settings = replace(HESettings(), fold_dim=fold_dim)
        group = HEGroup(settings)
        # the summing threads: one, as this benchmark has always measured the sum
        run = group.run(
            session, inputs, judge=judge if fold_dim else None, joint_seed=joint_seed, threads=1
        )
        steps = run.clock.steps
        out[f"{label}.participant_s"] = statistics.median(run.clock.clients.values())
        out[f"{label}.upload_bytes"] = float(statistics.median(run.upload_bytes.values()))
        out[f"{label}.offer_bytes"] = float(len(group.offer))
        if fold_dim:
            out["coordinator_fold_s"] = steps["fold"]
            req = FoldRequest.from_bytes(run.fold_request)
            public = group.coordinator.public
            layout = SlotLayout(
                d=d, slots=public.params.slots, tag_slots=settings.tag_slots, fold_dim=fold_dim
            )
            t = time.perf_counter()
            digests = {p: c.digest for p, c in run.contributions.items()}
            projection = FoldProjection.derive(
                fold_seed(session, joint_seed, digests), layout, public.params
            )
            projection.plaintexts(public)
            group_s = time.perf_counter() - t
            out["coordinator_fold_group_s"] = group_s
            out["coordinator_fold_per_participant_s"] = (out["coordinator_fold_s"] - group_s) / n
            out["fold_bytes"] = float(statistics.median(len(f) for f in req.folds))
            out["galois_bytes"] = float(len(ContextOffer.from_bytes(group.offer).galois_keys))
            out["auditor_open_s"] = steps["open"]
            out["auditor_judge_s"] = steps["judge"]
        out[f"{label}.coordinator_sum_s"] = steps["sum"]
        out[f"{label}.auditor_decrypt_s"] = steps["decrypt"]
    return out


def fold_leakage(d: int, *, seed: int) -> dict[str, float]:
    """Least-norm reconstruction error from the fold sketch vs the count-sketch."""
    from crypto.ckks.fold import FOLD_TERMS
    from securepool.bench.summary_leakage import reconstruction_error

    settings = HESettings()
    params = settings.params
    layout = SlotLayout(d=d, slots=params.slots, tag_slots=settings.tag_slots, fold_dim=256)
    projection = FoldProjection.derive(bytes([seed]) * 32, layout, params)
    positions = layout._update_positions()[:d]
    r = projection.multipliers.reshape(-1)[positions] / np.sqrt(FOLD_TERMS / 2)
    rows = positions % 256  # every coordinate lands in exactly one update column
    x = np.random.default_rng(seed).standard_normal(d)
    out: dict[str, float] = {}
    # the fold holds 2 Re(...) only (the conjugation cancels the imaginary parts); the
    # complex variant is what the auditor would see without it (two projections)
    for name, parts in (("fold", (r.real,)), ("without_conjugation", (r.real, r.imag))):
        x_hat = np.zeros(d)
        for t in np.unique(rows):
            idx = np.flatnonzero(rows == t)
            p = np.stack([w[idx] for w in parts])  # (k, coordinates of column t)
            s_t = p @ x[idx]
            x_hat[idx] = p.T @ np.linalg.lstsq(p @ p.T, s_t, rcond=None)[0]
        out[name] = float(np.linalg.norm(x_hat - x) / np.linalg.norm(x))
    cs = reconstruction_error(x.astype(np.float32), dim=256, noise=0.0, seed=bytes([seed]) * 32)
    out["countsketch_256"] = cs
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="securepool bench he_binding", description=__doc__)
    ap.add_argument("--n", type=int, default=10)
    ap.add_argument("--d", default=",".join(str(d) for d in (*DIGITS_D, 100_000)))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    result: dict[str, Any] = {"n": args.n, "repeats": args.repeats, "load": os.getloadavg()}
    settings = replace(HESettings(), fold_dim=256)
    from crypto.ckks.context import SecretCKKSContext

    secret = SecretCKKSContext.generate(settings.params)
    result["tenseal_all_steps_galois_bytes"] = all_rotation_keys_bytes(secret)
    result["public_context_bytes"] = len(secret.public_bytes())
    per_d: dict[str, Any] = {}
    sizes = [int(x) for x in args.d.split(",")]
    one_round(min(args.n, 3), sizes[0], 10_000)  # warm-up: codecs, imports, caches
    for d in sizes:
        rounds = [one_round(args.n, d, seed) for seed in range(args.repeats)]
        med: dict[str, Any] = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
        med["participant_ratio"] = med["bound.participant_s"] / med["base.participant_s"]
        med["upload_bytes_ratio"] = med["bound.upload_bytes"] / med["base.upload_bytes"]
        med["offer_bytes_ratio"] = med["bound.offer_bytes"] / med["base.offer_bytes"]
        med["coordinator_ratio"] = (
            med["coordinator_fold_s"] + med["bound.coordinator_sum_s"]
        ) / med["base.coordinator_sum_s"]
        leak = [fold_leakage(d, seed=s) for s in range(args.repeats)]
        med["leakage"] = {k: statistics.median(r[k] for r in leak) for k in leak[0]}
        per_d[str(d)] = med
    result["d"] = per_d
    result["load_after"] = os.getloadavg()
    print(json.dumps(result, indent=2 if args.json else None))
    return 0
