"""HE mode side by side with raw TenSEAL, in one process, as a Markdown table.

    .venv/bin/python benchmarks/he_raw_tenseal.py --n 10 --d 1000000 --repeats 3 [--workers 2]

Rows: SecurePool HE mode (its parameters), raw TenSEAL at the same parameters, and raw
TenSEAL at NVFlare's default (N = 8192, [60, 40, 40], scale 2^40), each on the same
synthetic updates (see securepool/bench/he.py). Medians over ``--repeats``.
"""

from __future__ import annotations

import argparse
import json
import statistics
from typing import Any

from protocols.he import HESettings
from securepool.bench.he import NVFLARE, framework_round, make_inputs, raw_round


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=10)
    p.add_argument("--d", type=int, default=1_000_000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--weight-unit", type=float, default=250.0)
    args = p.parse_args()
    settings = HESettings(
        weight_unit=args.weight_unit,
        workers=args.workers,
        max_contributors=max(args.n, HESettings.max_contributors),
    )
    own: dict[str, Any] = {
        "poly_modulus_degree": settings.poly_modulus_degree,
        "coeff_mod_bit_sizes": list(settings.coeff_mod_bit_sizes),
        "scale_bits": settings.scale_bits,
    }
    rows: dict[str, list[dict[str, float]]] = {"securepool": [], "raw_same": [], "raw_nvflare": []}
    for r in range(args.repeats):
        inputs = make_inputs(args.n, args.d, seed=r)
        rows["securepool"].append(framework_round(settings, inputs, session=f"b{r}"))
        rows["raw_same"].append(raw_round(**own, inputs=inputs, weight_unit=args.weight_unit))
        nv = raw_round(**NVFLARE, inputs=inputs, weight_unit=args.weight_unit)
        rows["raw_nvflare"].append(nv)
    keys = ["enc_s_per_party", "server_s", "decrypt_s", "bytes_per_param", "rel_error"]
    med = {
        name: {k: statistics.median(x[k] for x in runs) for k in keys}
        for name, runs in rows.items()
    }
    label = {
        "securepool": f"SecurePool HE ({settings.params.label()}, workers={args.workers})",
        "raw_same": f"raw TenSEAL ({settings.params.label()})",
        "raw_nvflare": "raw TenSEAL, NVFlare default (N=8192 [60, 40, 40] scale=2^40)",
    }
    print(f"n = {args.n}, d = {args.d}, repeats = {args.repeats} (medians)\n")
    print("| | enc s/party | server s | decrypt s | bytes/param | rel. error |")
    print("|---|---|---|---|---|---|")
    for name, m in med.items():
        print(
            f"| {label[name]} | {m['enc_s_per_party']:.3f} | {m['server_s']:.3f} | "
            f"{m['decrypt_s']:.3f} | {m['bytes_per_param']:.2f} | {m['rel_error']:.1e} |"
        )
    for base in ("raw_same", "raw_nvflare"):
        ratios = {k: med["securepool"][k] / med[base][k] for k in keys[:4]}
        print(f"\nSecurePool / {base}: " + json.dumps({k: round(v, 3) for k, v in ratios.items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
