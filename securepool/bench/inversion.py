"""``securepool bench inversion``: the gradient inversion audit at its full budget.

    securepool bench inversion --config examples/digits.toml [--quick] [--json FILE]

Runs :func:`securepool.audit.inversion.inversion_audit` on the config's pool and data
(group sizes 2-16 of one-step one-record updates, the run's real local training alone
and as a group of ``min_group_size``, more trials, DLG restarts and iterations than the
audit's quick mode) and prints a Markdown table: the exact command, the machine load
(``uptime``), one row per case. ``--json`` also writes the whole report.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any


def markdown(report: dict[str, Any], command: str, load: str) -> str:
    lines = [
        f"`{command}` (machine load: `{load}`; total {report['seconds']:.1f} s)",
        "",
        "| model | method | what the coordinator sees | training | records in it "
        "| identified | by chance | MSE | SSIM | MSE of mean image | s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in report["cases"]:
        ssim = f"{c['ssim']:.3f}" if c["ssim"] is not None else "—"
        mse = f"{c['mse']:.4f}" if c["mse"] is not None else "—"
        lines.append(
            f"| {c['model']} | {c['method']} | {c['view']} | {c['training']} "
            f"| {c['records_in_update']} x {c['trials']} trial(s) "
            f"| {c['identified']}/{c['true_records']} | {c['identified_by_chance']} "
            f"| {mse} | {ssim} | {c['mse_of_mean_image']:.4f} | {c['seconds']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="securepool bench inversion")
    p.add_argument("--config", type=Path, default=Path("examples/digits.toml"))
    p.add_argument("--quick", action="store_true", help="the audit's quick budget")
    p.add_argument("--json", type=Path, metavar="FILE", help="also write the whole report")
    args = p.parse_args(argv)

    import torch

    from securepool.audit.inversion import inversion_audit
    from securepool.config import load_config
    from securepool.data import partition

    cfg = load_config(args.config)
    torch.set_num_threads(cfg.run.torch_threads)
    data = partition(cfg.data, seed=cfg.run.seed)
    report = inversion_audit(config=cfg, data=data, quick=args.quick)
    command = "securepool bench inversion " + " ".join(argv)
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    sys.stdout.write(markdown(report, command.strip(), load or f"{os.getloadavg()}"))
    return 0
