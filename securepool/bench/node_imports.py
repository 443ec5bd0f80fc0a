"""What a Flower ClientApp imports per message: the node factories vs what they needed.

    .venv/bin/python -m securepool.bench.node_imports --repeats 7

Flower 1.42 starts a new ClientApp process for every message, so every stage a node
answers pays its imports. This times, in fresh interpreter processes, interleaved:

- ``factory_s``: ``import securepool.node.serve, securepool.runtime.flower`` (what a
  beacon or SecAgg+ stage imports now: the node builds records, models and the DP
  engine only where it trains or evaluates);
- ``eager_s``: the same plus ``torch``, ``sklearn.datasets`` and ``opacus`` (what the
  factory imported before its heavy parts were made lazy: the baseline);
- ``bare_s``: ``import flwr`` alone (what Flower's own ClientApp process costs anyway);
- ``relay_s``: ``import securepool.node.relay, securepool.runtime.flower`` (issue 27: a
  SuperNode in front of a node service relays every stage's bytes, training stages
  included; the service paid torch and the records once, when it started).

Prints one JSON object: medians over repeats, the ratio eager / factory, and the load
average before and after. No timing is asserted by the tests.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

CASES = {
    "factory_s": "import securepool.node.serve, securepool.runtime.flower",
    "eager_s": (
        "import securepool.node.serve, securepool.runtime.flower, torch, sklearn.datasets, opacus"
    ),
    "bare_s": "import flwr",
    "relay_s": "import securepool.node.relay, securepool.runtime.flower",
}


def _time(code: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="securepool bench node_imports", description=__doc__)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args(argv)
    load_before = os.getloadavg()[0]
    times: dict[str, list[float]] = {k: [] for k in CASES}
    for _ in range(args.repeats):  # interleaved, so load drifts hit every case alike
        for name, code in CASES.items():
            times[name].append(_time(code))
    out: dict[str, object] = {k: round(statistics.median(v), 3) for k, v in times.items()}
    out["eager_vs_factory"] = round(
        statistics.median(times["eager_s"]) / statistics.median(times["factory_s"]), 2
    )
    relay = statistics.median(times["relay_s"])
    out["factory_vs_relay"] = round(statistics.median(times["factory_s"]) / relay, 2)
    out["eager_vs_relay"] = round(statistics.median(times["eager_s"]) / relay, 2)
    out["repeats"] = args.repeats
    out["load_before"], out["load_after"] = round(load_before, 2), round(os.getloadavg()[0], 2)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
