"""``securepool bench summary_leakage``: how much of an update its summary reveals.

    securepool bench summary_leakage --d 10000 --dims 16,64,256,1024,4096 --json

The auditor sees a count-sketch s = S x (S: dim x d, one ±1 per column). Its best
linear guess of x is the least-norm reconstruction x_hat = S^T (S S^T)^-1 s. We report
the relative error ||x_hat - x|| / ||x|| (1.0: nothing learnt beyond the norm; 0: the
update in full) per sketch dimension, for Gaussian updates and for a real update (a
digits CNN trained one epoch locally), optionally with Gaussian noise of
``--noise`` x ||x|| / sqrt(dim) added to the sketch. Medians over ``--repeats``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics

import numpy as np
from numpy.typing import NDArray

from protocols.summaries import sketch_projection, summarize


def reconstruction_error(x: NDArray[np.float32], *, dim: int, noise: float, seed: bytes) -> float:
    s = summarize(x, dim=dim, seed=seed).sketch
    norm = float(np.linalg.norm(x))
    if noise:
        s = s + np.random.default_rng(0).normal(0, noise * norm / np.sqrt(dim), size=dim)
    buckets, signs = sketch_projection(x.size, dim=dim, seed=seed)
    counts = np.bincount(buckets, minlength=dim).astype(np.float64)
    x_hat = signs * s[buckets] / np.maximum(counts[buckets], 1.0)
    return float(np.linalg.norm(x_hat - x) / norm)


def real_update() -> NDArray[np.float32]:
    import torch

    from securepool.config import Dataset
    from securepool.data import load_arrays
    from securepool.models import Architecture, build_model, flatten
    from securepool.training import PlainTrainer, TrainSettings

    x, y = (torch.from_numpy(a[:200]) for a in load_arrays(Dataset.DIGITS))
    model = build_model(Architecture.CNN, n_features=64, n_classes=10, seed=0)
    before = flatten(model)
    PlainTrainer().train(
        participant="p", model=model, x=x, y=y, settings=TrainSettings(lr=0.1), seed=0
    )
    return (flatten(model) - before).astype(np.float32)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="securepool bench summary_leakage")
    p.add_argument("--d", type=int, default=10_000)
    p.add_argument("--dims", default="16,64,256,1024,4096")
    p.add_argument("--noise", type=float, default=0.0)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--json", action="store_true", help="(output is always JSON)")
    args = p.parse_args(argv)
    rng = np.random.default_rng(1)
    real = real_update()
    rows = []
    for dim in (int(v) for v in args.dims.split(",")):
        gauss = [
            reconstruction_error(
                rng.normal(size=args.d).astype(np.float32),
                dim=dim,
                noise=args.noise,
                seed=os.urandom(32),
            )
            for _ in range(args.repeats)
        ]
        cnn = [
            reconstruction_error(real, dim=dim, noise=args.noise, seed=os.urandom(32))
            for _ in range(args.repeats)
        ]
        rows.append(
            {
                "sketch_dim": dim,
                "gaussian_d": args.d,
                "gaussian_relative_error": statistics.median(gauss),
                "cnn_update_d": int(real.size),
                "cnn_relative_error": statistics.median(cnn),
            }
        )
    print(json.dumps({"noise": args.noise, "repeats": args.repeats, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv[1:]))
