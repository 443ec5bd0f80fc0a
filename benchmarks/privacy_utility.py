"""Privacy-utility sweep on digits (issue 5): best model accuracy against epsilon.

    .venv/bin/python benchmarks/privacy_utility.py --out benchmarks/privacy_utility

Runs the random pool on examples/digits.toml with 10 participants, DP-SGD calibrated to
each target epsilon per participant over the whole run (delta 1e-5), and without DP
(epsilon = inf), through `securepool bench run`'s runner. Writes a JSON table and a PNG.
"""

from __future__ import annotations

import argparse
import json
import tomllib
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from securepool.bench.run import run_once, with_overrides

COMMON = {
    "data.participants": 10,
    "training.epochs": 1,
    "training.batch_size": 32,
    "training.momentum": 0.5,
    "convergence.max_iterations": 20,
    "acceptance.max_error_bound": 1.0,
}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--config", type=Path, default=Path("examples/digits.toml"))
    p.add_argument("--out", type=Path, default=Path("benchmarks/privacy_utility"))
    p.add_argument("--lr", type=float, default=1.0)
    p.add_argument("--epsilons", default="1,2,4,8,inf")
    args = p.parse_args()
    table = tomllib.loads(args.config.read_text())
    rows = []
    for eps_text in args.epsilons.split(","):
        overrides: dict[str, object] = {**COMMON, "training.lr": args.lr}
        if eps_text != "inf":
            overrides.update(
                {
                    "privacy.enabled": True,
                    "privacy.target_epsilon": float(eps_text),
                    "privacy.delta": 1e-5,
                }
            )
        r = run_once(with_overrides(table, overrides))
        rows.append({"target_epsilon": eps_text, **r})
        print(json.dumps(rows[-1]), flush=True)
    args.out.with_suffix(".json").write_text(json.dumps(rows, indent=2) + "\n")
    xs = [float(r["target_epsilon"]) if r["target_epsilon"] != "inf" else 16.0 for r in rows]
    plt.figure(figsize=(5, 3.5))
    plt.plot(xs, [r["best_model_accuracy"] for r in rows], "o-")
    plt.xscale("log", base=2)
    plt.xticks(xs, [r["target_epsilon"] for r in rows])
    plt.axhline(0.80, ls="--", c="grey", lw=0.8)
    plt.xlabel("target epsilon per participant (delta 1e-5)")
    plt.ylabel("best model test accuracy")
    plt.title("digits, 10 participants, random pool")
    plt.tight_layout()
    plt.savefig(args.out.with_suffix(".png"), dpi=120)


if __name__ == "__main__":
    main()
