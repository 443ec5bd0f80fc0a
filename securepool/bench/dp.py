"""``securepool bench dp``: DP-SGD (Opacus) epoch time against plain SGD, same run.

    securepool bench dp --model cnn --repeats 5 --json

One participant holding all of scikit-learn's digits (1,797 records), batch 64, one
epoch; timings exclude the one-time Opacus wrapping, which is reported separately.
Prints model, samples, epoch_s_private, epoch_s_nonprivate, overhead_ratio (medians).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings
from typing import Any

import torch
from opacus import PrivacyEngine
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from securepool.config import Dataset
from securepool.data import load_arrays
from securepool.models import Architecture, build_model


def _epoch(model: nn.Module, opt: torch.optim.Optimizer, loader: DataLoader[Any]) -> float:
    loss_fn = nn.CrossEntropyLoss()
    start = time.perf_counter()
    for xb, yb in loader:
        opt.zero_grad()
        loss_fn(model(xb), yb).backward()
        opt.step()
    return time.perf_counter() - start


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="securepool bench dp")
    p.add_argument("--model", choices=[a.value for a in Architecture], default="cnn")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--mode", default="hooks", help="Opacus grad_sample_mode")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", action="store_true", help="(output is always JSON)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    x, y = (torch.from_numpy(a) for a in load_arrays(Dataset.DIGITS))
    arch = Architecture(args.model)
    plain_t, private_t, setup_t = [], [], []
    for r in range(args.repeats):
        loader = DataLoader(TensorDataset(x, y), batch_size=args.batch_size, shuffle=True)
        model = build_model(arch, n_features=64, n_classes=10, seed=r)
        plain_t.append(_epoch(model, torch.optim.SGD(model.parameters(), lr=0.1), loader))
        model = build_model(arch, n_features=64, n_classes=10, seed=r)
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            private, opt, dp_loader = PrivacyEngine(accountant="rdp").make_private(
                module=model,
                optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                data_loader=loader,
                noise_multiplier=1.0,
                max_grad_norm=1.0,
                poisson_sampling=True,
                grad_sample_mode=args.mode,
            )
            setup_t.append(time.perf_counter() - start)
            private_t.append(_epoch(private, opt, dp_loader))
    out = {
        "model": args.model,
        "samples": int(y.shape[0]),
        "batch_size": args.batch_size,
        "grad_sample_mode": args.mode,
        "threads": args.threads,
        "repeats": args.repeats,
        "epoch_s_private": statistics.median(private_t),
        "epoch_s_nonprivate": statistics.median(plain_t),
        "overhead_ratio": statistics.median(private_t) / statistics.median(plain_t),
        "make_private_s": statistics.median(setup_t),
    }
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv[1:]))
