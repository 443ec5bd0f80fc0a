"""DP audit: epsilon per participant over iterations, delta, budget, noise source.

Sources, best first: per-iteration ``privacy.epsilon`` in metrics.jsonl lines; else the
curve rebuilt from the checkpoint's privacy ledgers (each participant node's own, which
the in-process runtime exports into every checkpoint; one (sigma, q, steps) entry per
local run) aligned with the iterations each participant
trained in (metrics.jsonl groups); else only summary.json's final ``privacy`` block.
The noise source and the sampler's own delta are those each participant's trainer
reported in summary.json.
"""

from __future__ import annotations

from typing import Any

from securepool.audit.inputs import AuditInputs


def _from_metrics(metrics: list[dict[str, Any]]) -> dict[str, list[float | None]] | None:
    if not metrics or not all(
        isinstance(m.get("privacy"), dict) and "epsilon" in m["privacy"] for m in metrics
    ):
        return None
    pids = sorted({p for m in metrics for p in m["privacy"]["epsilon"]})
    return {p: [m["privacy"]["epsilon"].get(p) for m in metrics] for p in pids}


def _trained_in(metrics: list[dict[str, Any]]) -> dict[str, list[int]]:
    """Iteration numbers (1-based) in which each participant ran local training."""
    out: dict[str, list[int]] = {}
    for m in metrics:
        for g in m.get("groups", []):
            for pid in g.get("members", []):
                reason = str(g.get("excluded", {}).get(pid, ""))
                # a node that did not train (its budget) refused: "...did not train: ..."
                if reason.startswith("privacy budget") or "did not train" in reason:
                    continue
                out.setdefault(pid, []).append(int(m["iteration"]))
    return out


def _from_ledger(run: AuditInputs) -> tuple[dict[str, list[float | None]] | None, str]:
    import json

    import numpy as np
    from opacus.accountants.analysis.rdp import compute_rdp, get_privacy_spent

    from securepool.privacy.accounting import ORDERS

    cache: dict[tuple[float, float, int], Any] = {}

    def rdp(entry: tuple[float, float, int]) -> Any:
        # the same composition as securepool.privacy.accounting.epsilon_of, but running:
        # one RDP curve per distinct local run, summed as the participant takes part
        if entry not in cache:
            sigma, q, steps = entry
            cache[entry] = np.asarray(
                compute_rdp(q=q, noise_multiplier=sigma, steps=steps, orders=ORDERS)
            )
        return cache[entry]

    state = json.loads((run.run_dir / "checkpoint" / "state.json").read_text("utf-8"))
    # the in-process runtime's checkpoint holds each node's durable state, whose privacy
    # ledger (ParticipantDP) is that participant's own account; nodes in their own
    # processes keep theirs in their own files, so a split run's checkpoint has none
    nodes = (state.get("components") or {}).get("nodes") or {}
    ledger = {
        pid: (own.get("privacy") or {})["ledger"][pid]
        for pid, own in sorted(nodes.items())
        if pid in ((own.get("privacy") or {}).get("ledger") or {})
    }
    if not ledger:
        return None, "the checkpoint holds no privacy ledger"
    trained = _trained_in(run.metrics)
    delta = run.config.privacy.delta
    n_it = len(run.metrics)
    curves: dict[str, list[float | None]] = {}
    for pid, acc in sorted(ledger.items()):
        history = [(float(s), float(q), int(n)) for s, q, n in acc["history"]]
        its = trained.get(pid, [])
        if len(its) != len(history):
            return None, (
                f"{pid}: the ledger has {len(history)} local runs but metrics.jsonl shows "
                f"{len(its)}; cannot align them"
            )
        curve: list[float | None] = []
        k = 0
        eps = 0.0
        total = np.zeros(len(ORDERS))
        for it in range(1, n_it + 1):
            moved = False
            while k < len(its) and its[k] == it:
                total = total + rdp(history[k])
                k += 1
                moved = True
            if moved:
                eps = float(get_privacy_spent(orders=ORDERS, rdp=total.tolist(), delta=delta)[0])
            curve.append(eps)
        curves[pid] = curve
    return curves, "rebuilt from the checkpoint's privacy ledger and metrics.jsonl's groups"


def dp_audit(run: AuditInputs) -> dict[str, Any]:
    """The DP section of audit.json (no figures: the curves are data for the plot)."""
    cfg = run.config.privacy
    final = run.summary.get("privacy") or {}
    reproducible = run.summary.get(
        "dp_noise_reproducible",
        run.manifest.get("dp_noise_reproducible", bool(cfg.enabled and not cfg.secure_rng)),
    )
    warnings: list[str] = []
    if not cfg.enabled:
        warnings.append(
            "DP was OFF in this run: no epsilon bounds what the released pool, the aggregates "
            "or the summaries reveal about any record. The membership and canary sections "
            "measure what an attacker gets."
        )
    elif reproducible:
        warnings.append(
            "The run's DP noise was REPRODUCIBLE (secure_rng = false: each participant's "
            "noise and batch sampling keyed from the run's seed). Anyone who knows the "
            "config can regenerate the noise and subtract it, so the epsilon below holds "
            "only against an adversary who cannot; it is not a deployment guarantee."
        )
    curves = _from_metrics(run.metrics)
    source = "metrics.jsonl privacy.epsilon per iteration"
    if curves is None and cfg.enabled:
        curves, source = _from_ledger(run)
    if curves is None:
        source = f"final values only (summary.json privacy); {source}" if cfg.enabled else ""
    per: dict[str, Any] = {}
    for pid, rep in sorted(final.items()):
        per[pid] = {
            "epsilon": rep.get("epsilon"),
            "iterations": rep.get("iterations"),
            "noise_multiplier": rep.get("noise_multiplier"),
            "sample_rate": rep.get("sample_rate"),
            "budget_exhausted": rep.get("budget_exhausted", False),
            "rounds_skipped_for_budget": rep.get("rounds_skipped_for_budget", 0),
            "sampler_delta": rep.get("sampler_delta"),
            "noise_source": rep.get("noise_source"),
        }
    eps_values = [v["epsilon"] for v in per.values() if v["epsilon"] is not None]
    worst = max(eps_values) if eps_values else None
    budget = cfg.epsilon_max
    if not cfg.enabled:
        status = "no DP"
    elif budget is None:
        status = "no budget set (epsilon_max unset): epsilon grows with every round"
    else:
        exhausted = sorted(p for p, v in per.items() if v["budget_exhausted"])
        status = (
            f"within budget {budget}: worst epsilon {worst:.3f}"
            if not exhausted and worst is not None
            else f"budget {budget} reached by {len(exhausted)} participant(s): "
            + ", ".join(exhausted)
        )
    if not cfg.enabled:
        noise = "none (DP off)"
    else:  # what each participant's trainer reported in summary.json
        sources = sorted({str(v["noise_source"]) for v in per.values() if v["noise_source"]})
        noise = "; ".join(sources) if sources else "not reported in summary.json"
    sampler = [float(v["sampler_delta"]) for v in per.values() if v["sampler_delta"] is not None]
    relation = None
    if cfg.enabled:
        from securepool.privacy.accounting import NEIGHBOURING_RELATION

        relation = NEIGHBOURING_RELATION
    return {
        "enabled": cfg.enabled,
        # what the epsilon bounds (README "Differential privacy"); None without DP
        "neighbouring_relation": relation,
        "delta": cfg.delta if cfg.enabled else None,
        # the discrete Gaussian sampler's own error, to add to delta (worst participant)
        "sampler_delta": max(sampler) if sampler else None,
        "noise_source": noise,
        "dp_noise_reproducible": bool(reproducible) if cfg.enabled else None,
        "budget": budget,
        "budget_status": status,
        "worst_epsilon": worst,
        "participants": per,
        "epsilon_over_iterations": curves,
        "curve_source": source,
        "warnings": warnings,
    }
