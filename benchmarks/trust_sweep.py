"""Poisoning attacks against the P6 trust check (issue 6), per attack and mode.

    .venv/bin/python benchmarks/trust_sweep.py --modes plaintext,mask

IID digits (and Dirichlet alpha 0.5), 20 participants, 20% malicious. For every attack:
the clean run, the undefended run (attack on, trust check off) and the defended run.
Detection per participant: participant_tpr = malicious participants ever marked
untrusted / malicious participants; participant_fpr = honest participants ever marked /
honest participants. And per contribution: tpr = malicious updates flagged / malicious
updates submitted (late in training, honest updates are mostly noise and a flipped one
looks alike), fpr = honest updates flagged / honest updates submitted.

Issue 22 (``--attacks weight_inflation --weightings records,equal``): a claimed weight
is refused in plaintext mode by the coordinator, by name ("weight refused: ..."), not by
the trust ledger, so participant_caught_tpr / _fpr count a participant caught if it was
ever marked untrusted OR excluded for a refused weight in some iteration. Also per run:
honest_iterations_lost (honest group members left out of their group's aggregate,
aborted groups included), groups_aborted, and the backdoor's success per model.
"""

from __future__ import annotations

import argparse
import itertools
import json
import tempfile
import tomllib
from pathlib import Path
from typing import Any

from securepool.bench.run import _dump_toml, with_overrides
from securepool.runner import start_job

ATTACKS = ["sign_flip", "scaling", "gaussian_noise", "alie", "ipm", "label_flip", "backdoor"]
#: issue 13: a poisoned update behind the summary of an honest-looking one (mask mode; in
#: plaintext and HE mode the update itself is judged), and the kernel attack on the
#: public projection (``--attacks cover`` selects these three)
COVER_ATTACKS = ["scaling_cover", "backdoor_cover", "kernel"]

#: which rule flagged an update, from the start of the auditor's reason
RULES = {
    "near-duplicate": "screen_duplicate",
    "too central": "screen_central",
    "misaligned": "screen_misaligned",
    "norm ": "norm",
    "ballot rejected": "rejected",
    "bound weight": "weight",  # issue 22: a claimed weight under equal weighting
    "fold weight": "weight",
    # issue 22, mask mode's binding: an omitted or invented seed, a report that does not
    # add up to the masked input, a weight bucket that is no weight (a claim or a false seed)
    "report omits the mask seed": "seed_omitted",
    "report names non-neighbours": "seed_invented",
    "report does not match": "report_mismatch",
    "bound sketch rejected": "weight_bucket",
}


def rule_of(reason: str) -> str:
    """The rule behind one flag: a screen, the difference threshold, the norm rule, a
    ballot that did not open, a claimed weight, a binding lie (mask mode)."""
    for start, rule in RULES.items():
        if reason.startswith(start):
            return rule
    return "threshold" if " difference " in reason else "other"


def run(table: dict[str, Any]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "c.toml"
        cfg.write_text(_dump_toml(table))
        out = Path(tmp) / "run"
        summary = start_job(cfg, out)
        metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    bad = set((summary.get("attack") or {}).get("malicious", []))
    ever = set(summary["untrusted_participants"])
    everyone = {p for m in metrics for g in m["groups"] for p in g["members"]}
    flags = (summary.get("trust") or {}).get("flags", [])
    refused = {
        p
        for m in metrics
        for g in m["groups"]
        for p, r in g["excluded"].items()
        if r.startswith("weight refused")
    }
    caught = ever | refused
    # an aborted group loses every member; an aggregated one those it excluded
    lost = sum(
        p not in bad and (g["status"] != "aggregated" or p in g["excluded"])
        for m in metrics
        for g in m["groups"]
        for p in g["members"]
    )
    malicious_excluded: dict[str, int] = {}  # how the attackers were kept out (reason start)
    for m in metrics:
        for g in m["groups"]:
            for p, r in g["excluded"].items():
                if p in bad:
                    key = r.split(":")[0]
                    malicious_excluded[key] = malicious_excluded.get(key, 0) + 1
    backdoor = (summary.get("attack") or {}).get("backdoor_success") or {}
    honest_rules: dict[str, int] = {}
    malicious_rules: dict[str, int] = {}
    for f in flags:
        into = malicious_rules if f["participant"] in bad else honest_rules
        rule = rule_of(f["reason"])
        into[rule] = into.get(rule, 0) + 1
    # (participant, iteration) pairs: an honest member flagged at least once that iteration
    honest_iters = {(p, m["iteration"]) for m in metrics for g in m["groups"] for p in g["members"]}
    honest_iters = {(p, i) for p, i in honest_iters if p not in bad}
    flagged_iters = {(f["participant"], f["iteration"]) for f in flags} & honest_iters
    tp = fn = fp = tn = 0
    for m in metrics:
        for g in m["groups"]:
            flagged = {p for p, r in g["excluded"].items() if r.startswith("untrusted")}
            for p in g["members"]:
                if p in bad:
                    tp += p in flagged
                    fn += p not in flagged
                else:
                    fp += p in flagged
                    tn += p not in flagged
    best = max(v["test_accuracy"] for v in summary["models"].values())
    return {
        "best_model_accuracy": best,
        "best_accepted_accuracy": summary["best_accuracy"],
        "tpr": tp / (tp + fn) if tp + fn else None,
        "fpr": fp / (fp + tn) if fp + tn else None,
        "participant_tpr": len(ever & bad) / len(bad) if bad else None,
        "participant_fpr": len(ever - bad) / max(1, len(everyone - bad)),
        "participant_caught_tpr": len(caught & bad) / len(bad) if bad else None,
        "participant_caught_fpr": len(caught - bad) / max(1, len(everyone - bad)),
        "weight_refused": sorted(refused),
        "honest_iterations_lost": lost,
        "groups_aborted": sum(g["status"] != "aggregated" for m in metrics for g in m["groups"]),
        "aborted": [
            [m["iteration"], g["model"], g["status"]]
            for m in metrics
            for g in m["groups"]
            if g["status"] != "aggregated"
        ],
        "malicious_excluded": malicious_excluded,
        "honest_flagged_iteration_rate": len(flagged_iters) / max(1, len(honest_iters)),
        "honest_marked": sorted(ever - bad),
        "honest_flag_rules": honest_rules,
        "malicious_flag_rules": malicious_rules,
        # every flag (participant, iteration, rule): enough to replay other strike rules
        "flags": [[f["participant"], f["iteration"], rule_of(f["reason"])] for f in flags],
        "other_flag_reasons": sorted(
            {f["reason"] for f in flags if rule_of(f["reason"]) == "other"}
        ),
        "iterations": summary["iterations"],
        "backdoor_success": max(backdoor.values(), default=None),
        "backdoor_success_per_model": backdoor,
    }


def emit(
    rows: list[dict[str, Any]], table: dict[str, Any], where: dict[str, str], **label: Any
) -> dict[str, Any]:
    """Run one configuration, append its row (``where`` + ``label`` + figures), print it."""
    r = run(table)
    rows.append({**where, **label, **r})
    print(json.dumps(rows[-1]), flush=True)
    return r


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--config", type=Path, default=Path("examples/digits.toml"))
    p.add_argument("--modes", default="plaintext,mask")
    p.add_argument("--partitions", default="iid,dirichlet")
    p.add_argument("--out", type=Path, default=Path("benchmarks/trust_sweep.json"))
    p.add_argument("--no-clean", action="store_true", help="skip the clean baseline run")
    p.add_argument(
        "--clean-defended", action="store_true", help="also run the clean case with trust on"
    )
    p.add_argument("--max-iterations", type=int, default=15)
    p.add_argument(
        "--attacks",
        default=",".join(ATTACKS),
        help="comma-separated attack kinds; 'cover' stands for " + ",".join(COVER_ATTACKS),
    )
    p.add_argument(
        "--defences",
        default="off,on",
        help="attack runs to make: undefended (off), defended (on) or both",
    )
    p.add_argument(
        "--seeds",
        default="",
        help="run.seed values, each a repeat of the whole grid (default: the config's)",
    )
    p.add_argument(
        "--strengths", default="0", help="attack strengths to sweep (0: each attack's default)"
    )
    p.add_argument(
        "--weightings",
        default="",
        help="aggregation.weighting values (records, equal), each a repeat of the whole "
        "grid (default: the config's)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override for every run, TOML value (e.g. trust.strikes=2)",
    )
    args = p.parse_args()
    base = tomllib.loads(args.config.read_text())
    extra = {k: tomllib.loads(f"v = {v}")["v"] for k, v in (x.split("=", 1) for x in args.set)}
    attacks = [
        k for a in args.attacks.split(",") if a for k in (COVER_ATTACKS if a == "cover" else [a])
    ]
    seeds = [int(x) for x in args.seeds.split(",") if x] or [int(base["run"]["seed"])]
    weightings = [x for x in args.weightings.split(",") if x] or [None]
    rows: list[dict[str, Any]] = []
    for seed, part, mode, weighting in itertools.product(
        seeds, args.partitions.split(","), args.modes.split(","), weightings
    ):
        common = {
            "run.seed": seed,
            "aggregation.mode": mode,
            "data.partition": part,
            "data.alpha": 0.5,
            "data.min_records": 5,
            "convergence.max_iterations": args.max_iterations,
            "convergence.error_range": [0.0, 0.001],  # run the full budget: comparable runs
            "acceptance.max_error_bound": 1.0,
            **({} if weighting is None else {"aggregation.weighting": weighting}),
            **extra,
        }
        where = {"partition": part, "mode": mode, "seed": seed}
        if weighting is not None:
            where["weighting"] = weighting
        clean_accuracy = None
        if not args.no_clean:
            table = with_overrides(base, common)
            clean = emit(rows, table, where, attack="none", defence="off")
            clean_accuracy = clean["best_model_accuracy"]
        if args.clean_defended:  # no attacker at all: every mark is a false positive
            table = with_overrides(base, {**common, "trust.enabled": True})
            emit(rows, table, where, attack="none", defence="on", clean_accuracy=clean_accuracy)
        for attack in attacks:
            for strength in (float(x) for x in args.strengths.split(",")):
                atk = {
                    **common,
                    "attack.enabled": True,
                    "attack.kind": attack,
                    "attack.fraction": 0.2,
                    "attack.strength": strength,
                }
                for defended in (d == "on" for d in args.defences.split(",")):
                    emit(
                        rows,
                        with_overrides(base, {**atk, "trust.enabled": defended}),
                        where,
                        attack=attack,
                        strength=strength,
                        defence="on" if defended else "off",
                        clean_accuracy=clean_accuracy,
                    )
        args.out.write_text(json.dumps(rows, indent=2) + "\n")  # partial results kept


if __name__ == "__main__":
    main()
