"""Parameter sweep for HE mode: bytes per parameter, error and encryption time per candidate.

    .venv/bin/python benchmarks/he_params.py [--d 200000] [--n 10]

For each candidate (ring degree N, modulus chain, scale) it encrypts ``n`` synthetic
weighted updates (N(0, 0.05^2), sample counts 50..500, weight unit 250) with raw TenSEAL
per ciphertext chunk, adds them, decrypts, and prints one JSON line: bytes per uploaded
parameter, relative error of the weighted mean (max |error| / max |mean|), seconds to
encrypt 1M parameters, and whether log Q meets the 128-bit HE-standard bound.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import tenseal as ts

from crypto.ckks.params import MAX_LOG_Q_128

CANDIDATES = [
    (8192, [60, 40, 40], 40),  # NVFlare default
    (8192, [60, 40, 40, 60], 40),
    (4096, [40, 60], 25),
    (4096, [45, 60], 30),
    (4096, [50, 59], 35),
    (4096, [50, 59], 39),
    (8192, [45, 60], 34),
    (8192, [50, 60], 39),
    (8192, [52, 60], 41),
    (16384, [50, 60], 39),
]


def measure(n_ring: int, chain: list[int], scale_bits: int, *, n: int, d: int) -> dict[str, object]:
    rng = np.random.default_rng(0)
    ctx = ts.context(ts.SCHEME_TYPE.CKKS, n_ring, coeff_mod_bit_sizes=chain)
    public = ts.context_from(ctx.serialize(save_secret_key=False))
    slots, scale, unit = n_ring // 2, float(2**scale_bits), 250.0
    k = -(-(d + 1) // slots)
    acc = None
    sizes, enc = 0, 0.0
    ref = np.zeros(k * slots)
    for _ in range(n):
        x = (rng.standard_normal(d) * 0.05).astype(np.float32)
        w = float(rng.integers(50, 501)) / unit
        rows = np.zeros(k * slots)
        rows[:d], rows[d] = x * w, w
        ref += rows
        t = time.perf_counter()
        vecs = [ts.ckks_vector(public, r, scale=scale) for r in rows.reshape(k, slots)]
        blobs = [v.serialize() for v in vecs]
        enc += time.perf_counter() - t
        sizes += sum(len(b) for b in blobs)
        loaded = [ts.ckks_vector_from(public, b) for b in blobs]
        if acc is None:
            acc = loaded
        else:
            for a, b in zip(acc, loaded, strict=True):
                a.add_(b)
    assert acc is not None
    plain = np.concatenate(
        [np.asarray(ts.ckks_vector_from(ctx, v.serialize()).decrypt()) for v in acc]
    )
    mean, ref_mean = plain[:d] / plain[d], ref[:d] / ref[d]
    err = float(np.max(np.abs(mean - ref_mean)))
    return {
        "N": n_ring,
        "chain": chain,
        "scale_bits": scale_bits,
        "log_q": sum(chain),
        "secure_128": sum(chain) <= MAX_LOG_Q_128[n_ring],
        "bytes_per_param": sizes / (n * d),
        "rel_error": err / float(np.max(np.abs(ref_mean))),
        "enc_s_per_1M": enc / (n * d) * 1e6,
    }


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--d", type=int, default=200_000)
    p.add_argument("--n", type=int, default=10)
    args = p.parse_args()
    for n_ring, chain, scale_bits in CANDIDATES:
        print(json.dumps(measure(n_ring, chain, scale_bits, n=args.n, d=args.d)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
