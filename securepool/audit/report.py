"""audit.json -> report.html (self-contained, plots embedded as PNG) and report.md.

The plots are drawn with matplotlib's Agg backend into memory and embedded as base64
``data:`` URIs in the HTML; the Markdown report carries the same text and tables and
references the same PNGs written beside it (plots/*.png).
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _fmt(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def plot_epsilon(dp: dict[str, Any]) -> bytes | None:
    curves = dp.get("epsilon_over_iterations")
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for pid, ys in sorted(curves.items()):
        xs = [i + 1 for i, y in enumerate(ys) if y is not None]
        ax.plot(xs, [y for y in ys if y is not None], lw=1, alpha=0.7, label=pid)
    if dp.get("budget") is not None:
        ax.axhline(dp["budget"], color="red", ls="--", lw=1, label="epsilon_max")
    ax.set_xlabel("iteration")
    ax.set_ylabel(f"epsilon (delta={dp.get('delta')})")
    ax.set_title("Epsilon per participant over iterations")
    if len(curves) <= 12:
        ax.legend(fontsize=6, ncol=2)
    return _png(fig)


def roc_points(
    fpr: list[float], tpr: list[float], *, n_neg: int, n_pos: int
) -> tuple[list[float], list[float]]:
    """The ROC points a log-log plot can show honestly: only measured false-positive
    rates (at least 1/n_neg: a rate of 0 is "below 1/n_neg", not a point on the axis, so
    no curve runs flat below the smallest measured rate); a TPR of 0 is drawn at the
    floor 1/n_pos, the smallest non-zero rate the members can show."""
    lo_f, lo_t = 1.0 / max(1, n_neg), 1.0 / max(1, n_pos)
    pts = [(f, max(t, lo_t)) for f, t in zip(fpr, tpr, strict=True) if f >= lo_f * (1 - 1e-9)]
    return [f for f, _ in pts], [t for _, t in pts]


def plot_roc(mem: dict[str, Any]) -> bytes | None:
    models = mem.get("models") or {}
    if not models:
        return None
    n_neg, n_pos = int(mem["non_members"]), int(mem["members"])
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for mid, entry in sorted(models.items()):
        for attack, ls in (("lira", "-"), ("loss_threshold", ":")):
            r = entry[attack]["roc"]
            xs, ys = roc_points(r["fpr"], r["tpr"], n_neg=n_neg, n_pos=n_pos)
            ax.plot(xs, ys, ls=ls, label=f"{mid} {attack} (AUC {entry[attack]['auc']:.3f})")
    ax.plot([1.0 / n_neg, 1], [1.0 / n_neg, 1], color="grey", lw=0.8, label="chance")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(1.0 / n_neg, 1.0)
    ax.set_ylim(min(1.0 / n_pos, 1.0 / n_neg), 1.05)
    ax.set_xlabel(f"false positive rate (measured down to 1/{n_neg} non-members)")
    ax.set_ylabel("true positive rate")
    ax.set_title("Membership inference against the released pool")
    ax.legend(fontsize=6)
    return _png(fig)


def plot_canaries(can: dict[str, Any]) -> bytes | None:
    if not can.get("enabled"):
        return None
    models = sorted(can["models"])
    fig, ax = plt.subplots(figsize=(6, 3.4))
    xs = range(len(models))
    ax.bar(xs, [can["models"][m]["epsilon_lower_bound"] for m in models], label="measured bound")
    ax.axhline(can["best_possible_with_m"], color="green", ls="--", label="best m canaries allow")
    if can.get("accountant_epsilon") is not None:
        ax.axhline(can["accountant_epsilon"], color="red", ls=":", label="accountant epsilon")
    ax.set_xticks(list(xs), models)
    ax.set_ylabel("epsilon")
    ax.set_title(f"Canary audit, {can['canaries']} canaries, {can['confidence']:.0%} confidence")
    ax.legend(fontsize=7)
    return _png(fig)


def plot_groups(tr: dict[str, Any]) -> bytes | None:
    rows = [r for r in tr.get("group_sizes", []) if r["smallest_group"] is not None]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(7, 3))
    ax.step([r["iteration"] for r in rows], [r["smallest_group"] for r in rows], where="mid")
    ax.axhline(tr["min_group_size"], color="red", ls="--", label="min_group_size")
    ax.set_xlabel("iteration")
    ax.set_ylabel("smallest group")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=7)
    return _png(fig)


def plot_inversion_examples(case: dict[str, Any]) -> bytes | None:
    """True records (top row) beside what the attack rebuilt from the update (bottom
    row), for image data; a green frame marks a record the test counts as identified."""
    ex = case.get("examples")
    if not ex or not ex.get("true"):
        return None
    side, k = int(ex["image_side"]), len(ex["true"])
    fig, axes = plt.subplots(2, k, figsize=(1.1 * k + 0.9, 2.5), squeeze=False)
    for j in range(k):
        for row, key in ((0, "true"), (1, "rebuilt")):
            ax = axes[row][j]
            ax.imshow(np.asarray(ex[key][j]).reshape(side, side), cmap="gray_r", vmin=0.0, vmax=1.0)
            ax.set_xticks([])
            ax.set_yticks([])
            if ex["identified"][j]:
                for spine in ax.spines.values():
                    spine.set_edgecolor("green")
                    spine.set_linewidth(2.5)
    axes[0][0].set_ylabel("true", fontsize=8)
    axes[1][0].set_ylabel("rebuilt", fontsize=8)
    fig.suptitle(
        f"{case['model']} {case['method']}: {case['view']}, {case['training'][:48]}", fontsize=8
    )
    return _png(fig)


def _as_png(v: Any) -> bytes | None:
    """A PNG the inversion section hands over, as bytes or a data: URI; else None."""
    prefix = "data:image/png;base64,"
    if isinstance(v, bytes) and v.startswith(b"\x89PNG"):
        return v
    if isinstance(v, str) and v.startswith(prefix):
        return base64.b64decode(v[len(prefix) :])
    return None


class _Doc:
    """Builds the HTML and Markdown side by side."""

    def __init__(self) -> None:
        self.html: list[str] = []
        self.md: list[str] = []
        self.pngs: dict[str, bytes] = {}

    def h(self, level: int, text: str) -> None:
        self.html.append(f"<h{level}>{html.escape(text)}</h{level}>")
        self.md.append(f"\n{'#' * level} {text}\n")

    def p(self, text: str) -> None:
        self.html.append(f"<p>{html.escape(text)}</p>")
        self.md.append(text + "\n")

    def warn(self, text: str) -> None:
        self.html.append(f'<div class="warn"><b>Warning:</b> {html.escape(text)}</div>')
        self.md.append(f"> **Warning:** {text}\n")

    def table(self, head: list[str], rows: list[list[Any]]) -> None:
        cells = "".join(f"<th>{html.escape(h)}</th>" for h in head)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(_fmt(c))}</td>" for c in r) + "</tr>" for r in rows
        )
        self.html.append(f"<table><tr>{cells}</tr>{body}</table>")
        self.md.append("| " + " | ".join(head) + " |")
        self.md.append("|" + "---|" * len(head))
        self.md.extend("| " + " | ".join(_fmt(c) for c in r) + " |" for r in rows)
        self.md.append("")

    def img(self, name: str, png: bytes | None) -> None:
        if png is None:
            return
        self.pngs[name] = png
        b64 = base64.b64encode(png).decode()
        self.html.append(f'<img alt="{name}" src="data:image/png;base64,{b64}">')
        self.md.append(f"![{name}](plots/{name}.png)\n")


def _rates(entry: dict[str, Any]) -> list[Any]:
    row: list[Any] = [entry["auc"]]
    for r in entry["at_fpr"]:
        lo, hi = r["tpr_ci95"]
        tpr = f"{r['tpr']:.4f} [{lo:.4f}, {hi:.4f}]"
        bounds = (
            f"{_fmt(r['epsilon_lower_bound'])} / {_fmt(r.get('epsilon_lower_bound_corrected'))}"
            if r["epsilon_lower_bound"] is not None
            else None
        )
        row += [tpr if r["resolvable"] else f"{tpr} (unresolved)", bounds]
    return row


def _inversion(d: _Doc, inv: dict[str, Any]) -> None:
    """The inversion section: what the attacker is, the test, one table row per case
    (counts, chance, p-value, verdict), and for image data the true records beside what
    each attack rebuilt. Keys the section adds beyond these are listed, not dumped."""
    for key in ("attacker", "identified_means", "test"):
        if key in inv:
            d.p(f"{key.replace('_', ' ').capitalize()}: {inv[key]}.")
    cases = inv.get("cases") or []
    if cases:
        d.table(
            [
                "model",
                "method",
                "what the coordinator sees",
                "training",
                "identified",
                "expected by chance",
                "p-value",
                "verdict",
                "MSE",
                "MSE of mean image",
                "SSIM",
            ],
            [
                [
                    c["model"],
                    c["method"],
                    c["view"],
                    c["training"],
                    f"{c['identified']}/{c['true_records']}",
                    f"{c['expected_by_chance']:.3g}" if "expected_by_chance" in c else None,
                    c.get("p_value"),
                    c.get("verdict"),
                    c["mse"],
                    c["mse_of_mean_image"],
                    c["ssim"],
                ]
                for c in cases
            ],
        )
        if any(c.get("examples") for c in cases):
            d.p(
                "True records (top) beside the attack's best reconstruction of each "
                "(bottom); a green frame: the nearest dataset record to some "
                "reconstruction is that true record."
            )
        for i, c in enumerate(cases):
            d.img(f"inversion_{i:02d}_{c['model']}_{c['method']}", plot_inversion_examples(c))
    rest = []
    for k, v in sorted(inv.items()):
        if k in ("attacker", "identified_means", "test", "cases", "findings"):
            continue
        png = _as_png(v)
        if png is not None:
            d.img(f"inversion_{k}", png)
        elif not isinstance(v, (dict, list)):
            rest.append([k, v])
    if rest:
        d.table(["key", "value"], rest)


def _power_line(d: _Doc, name: str, power: Any, verdict: str, statement: str) -> None:
    """One "Power" line: a warning block when the check cannot detect a violation or
    found one."""
    text = f"Power ({name}): best bound this design could certify {_fmt(power)}. {statement}"
    if verdict in ("no power", "violation"):
        d.warn(text)
    else:
        d.p(text)


def _membership(d: _Doc, mem: dict[str, Any]) -> None:
    """The membership section's text, headline, table and ROC plot."""
    d.p(
        f"Members: {mem['members']}, the {mem['member_set']}; non-members: "
        f"{mem['non_members']}, the {mem['non_member_set']}. Accountant epsilon: "
        f"{_fmt(mem['accountant_epsilon'])}."
    )
    hl = mem.get("headline")
    if hl:
        d.p(
            f"Headline epsilon lower bound: {_fmt(hl['epsilon_lower_bound'])} at "
            f"{hl['confidence']:.0%} confidence, the largest of {hl['family_size']} row "
            f"bounds each taken at {hl['per_bound_confidence']:.4g} "
            f"({hl['correction'].capitalize()} correction)."
        )
        _power_line(d, "membership", hl["power"], hl["verdict"], hl["statement"])
    for n in mem["notes"]:
        d.warn(n)
    rows = []
    for mid, e in sorted(mem["models"].items()):
        for attack in ("loss_threshold", "lira"):
            rows.append([mid, attack, *_rates(e[attack])])
    head = ["model", "attack", "AUC"]
    first = next(iter(mem["models"].values()), None)
    for r in first["lira"]["at_fpr"] if first else []:
        head += [
            f"TPR @ {r['target_fpr']:.1%} FPR [95% CI]",
            f"eps lb @ {r['target_fpr']:.1%} (row 95% / corrected)",
        ]
    d.table(head, rows)
    d.img("roc", plot_roc(mem))


def render(audit: dict[str, Any]) -> tuple[str, str, dict[str, bytes]]:
    """Return (html, markdown, {plot name: png bytes})."""
    d = _Doc()
    d.h(1, f"Privacy audit of {audit['run_dir']}")
    d.p(
        f"Aggregation mode {audit['aggregation']['mode']}; {audit['iterations']} iteration(s); "
        f"config SHA-256 {audit['config_sha256'][:16]}…; audit {audit['mode']} mode."
    )
    dp = audit["dp"]
    d.h(2, "Differential privacy")
    for w in dp["warnings"]:
        d.warn(w)
    d.table(
        ["enabled", "delta", "sampler delta", "noise source", "budget status", "worst epsilon"],
        [
            [
                dp["enabled"],
                dp["delta"],
                dp.get("sampler_delta"),
                dp["noise_source"],
                dp["budget_status"],
                dp["worst_epsilon"],
            ]
        ],
    )
    if dp["participants"]:
        d.table(
            ["participant", "epsilon", "iterations", "sigma", "q", "budget exhausted"],
            [
                [
                    p,
                    v["epsilon"],
                    v["iterations"],
                    v["noise_multiplier"],
                    v["sample_rate"],
                    v["budget_exhausted"],
                ]
                for p, v in sorted(dp["participants"].items())
            ],
        )
    if dp.get("neighbouring_relation"):
        d.p(f"Epsilon bounds: {dp['neighbouring_relation']}.")
    if dp["curve_source"]:
        d.p(f"Epsilon curve: {dp['curve_source']}.")
    d.img("epsilon", plot_epsilon(dp))
    for check, pw in (audit.get("empirical_vs_accountant") or {}).get("power", {}).items():
        _power_line(d, check, pw["power"], pw["verdict"], pw["statement"])

    mem = audit["membership"]
    d.h(2, "Membership inference against the released pool")
    if mem.get("skipped"):
        d.warn(mem["skipped"])
    else:
        _membership(d, mem)

    can = audit["canaries"]
    d.h(2, "Canary audit (one run; Steinke, Nasr, Jagielski 2023)")
    if not can["enabled"]:
        d.p(can["note"])
    else:
        d.p(
            f"{can['canaries']} canaries ({can.get('canary_pool', 'pool not recorded')}), "
            f"{can['included']} included; epsilon lower bound at "
            f"{can['confidence']:.0%} confidence {can['epsilon_lower_bound']:.3f} "
            f"(Bonferroni over {can['bonferroni_tests']} tests), beside the "
            f"best {can['canaries']} canaries could certify with perfect guesses: "
            f"{can['best_possible_with_m']:.3f} (accountant: {_fmt(can['accountant_epsilon'])}). "
            f"{can['note']}."
        )
        if "verdict" in can:
            _power_line(d, "canaries", can["power"], can["verdict"], can["statement"])
        d.table(
            ["model", "guesses", "correct", "epsilon lb", "best possible"],
            [
                [m, r["guesses"], r["correct"], r["epsilon_lower_bound"], r["best_possible"]]
                for m, e in sorted(can["models"].items())
                for r in e["by_guesses"]
            ],
        )
        d.img("canaries", plot_canaries(can))

    tr = audit["transcripts"]
    d.h(2, "Transcripts, group sizes and untrusted marks")
    d.p(
        f"Smallest aggregate of the run: {_fmt(tr['smallest_aggregate'])} contributors "
        f"(min_group_size {tr['min_group_size']})."
    )
    d.img("groups", plot_groups(tr))
    if "note" in tr:
        d.p(tr["note"])
    if tr.get("roles"):
        d.table(
            ["role", "received bytes", "sent bytes", "sessions", "received kinds"],
            [
                [
                    r,
                    v["received_bytes"],
                    v["sent_bytes"],
                    v["sessions"],
                    ", ".join(f"{k}×{c}" for k, c in sorted(v["received_kinds"].items())),
                ]
                for r, v in tr["roles"].items()
            ],
        )
    mc = tr.get("mask_checks")
    if mc:
        d.p(
            f"Mask mode checks {'PASSED' if mc['passed'] else 'FAILED'}: {mc['masked_inputs']} "
            f"masked inputs in {mc['sessions']} sessions; sessions with unequal sizes: "
            f"{len(mc['sessions_with_unequal_sizes'])}; repeated masked inputs: "
            f"{mc['repeated_masked_inputs']}."
        )
        d.p(f"Can test: {mc['can_test']}.")
        if mc["cannot_test"]:
            d.warn(f"Cannot test: {mc['cannot_test']}.")
        if mc["uniformity"]:
            u = mc["uniformity"]
            d.p(
                f"Uniformity of {u['values']} masked values: chi-square p = "
                f"{u['chi2_top_byte_p']:.3g}, KS p = {u['ks_p']:.3g} (alpha {u['alpha']})."
            )
    if tr["trust_enabled"]:
        d.p(
            f"Trust check: {tr['flags']} flag(s), untrusted: "
            f"{', '.join(tr['untrusted']) or 'none'}."
        )
        if tr["marks"]:
            d.table(
                ["participant", "iteration", "model", "strikes", "reason"],
                [
                    [m["participant"], m["iteration"], m["model"], m["strikes"], m["reason"]]
                    for m in tr["marks"]
                ],
            )
    else:
        d.p("Trust check off: no untrusted marks.")

    inv = audit["inversion"]
    d.h(2, "Gradient inversion")
    if inv.get("skipped"):
        d.p(inv["skipped"])
    else:
        _inversion(d, inv)

    style = (
        "body{font-family:sans-serif;max-width:960px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;margin:1em 0;font-size:13px}"
        "td,th{border:1px solid #ccc;padding:3px 7px;text-align:left}"
        ".warn{background:#fff3cd;border:1px solid #e0a800;padding:.6em;margin:.6em 0}"
        "img{max-width:100%}pre{font-size:11px;background:#f6f6f6;padding:1em;overflow:auto}"
    )
    page = (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>SecurePool audit</title>"
        f"<style>{style}</style></head><body>{''.join(d.html)}</body></html>\n"
    )
    return page, "\n".join(d.md) + "\n", d.pngs


def write_report(out: Path, audit: dict[str, Any]) -> None:
    page, md, pngs = render(audit)
    (out / "report.html").write_text(page, encoding="utf-8")
    (out / "report.md").write_text(md, encoding="utf-8")
    if pngs:
        (out / "plots").mkdir(exist_ok=True)
        for name, data in pngs.items():
            (out / "plots" / f"{name}.png").write_bytes(data)
