"""``securepool bench prg``: mask-expansion throughput on one core, against numpy's RNG.

    securepool bench prg --mib 4 --repeats 21       (4 MiB = a d = 1M uint32 mask)
    .venv/bin/python -m securepool.bench.prg --mib 32 --repeats 15

For each word type (uint32, uint64) it times, interleaved within every repeat so that
machine noise hits all of them alike:

- ``expand_mask``: :func:`crypto.prg.expand_mask` (HKDF, then AES-256-CTR keystream
  written straight into the numpy array);
- ``numpy_default_rng``: ``np.random.default_rng().integers`` for the same number of
  words: the same-run baseline (NOT a cryptographic generator; it is what a fast
  non-secure mask would cost);
- ``aes_ctr_raw``: pyca's AES-256-CTR ``update`` over zero bytes into a Python ``bytes``
  object, no numpy: the ceiling that expand_mask's overhead is measured against.

All single-threaded (one core). Prints one JSON object: GB/s medians over repeats
(GB = 10^9 bytes of mask produced), the ratio of medians against the numpy baseline,
the median of per-repeat (paired) ratios, and the latency of one 100,000-word call
(a client's mask for a d = 100k model). ``--primitives`` adds, for context, median
milliseconds of the other per-participant primitives at SecAgg sizes: fixed-point
encode of 100k floats, and Shamir split / combine of two 32-byte secrets for
neighbourhoods of k = 20, 40, 100 (threshold k/2 + 1; combine from exactly t shares
and from all k, which adds the consistency check).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from crypto.fixedpoint import encode, spec_for
from crypto.prg import expand_mask
from crypto.shamir import shamir_combine, shamir_split

_DTYPES: dict[str, type[np.uint32] | type[np.uint64]] = {"uint32": np.uint32, "uint64": np.uint64}


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(
    nbytes: int, repeats: int, dtype: type[np.uint32] | type[np.uint64]
) -> dict[str, float]:
    """Medians (GB/s) of the three generators for ``nbytes`` of output, interleaved."""
    words = nbytes // np.dtype(dtype).itemsize
    seed = os.urandom(32)
    rng = np.random.default_rng()
    zeros = bytes(nbytes)
    high = 2**32 if dtype is np.uint32 else 2**64

    def ours() -> object:
        return expand_mask(seed, label=b"bench/prg", length=words, dtype=dtype)

    def baseline() -> object:
        return rng.integers(0, high, size=words, dtype=dtype)

    def raw() -> object:
        enc = Cipher(algorithms.AES(bytes(32)), modes.CTR(bytes(16))).encryptor()
        return enc.update(zeros)

    for fn in (ours, baseline, raw):  # warm up allocators and caches
        fn()
    times: dict[str, list[float]] = {"expand_mask": [], "numpy_default_rng": [], "aes_ctr_raw": []}
    for _ in range(repeats):
        times["expand_mask"].append(_timed(ours))
        times["numpy_default_rng"].append(_timed(baseline))
        times["aes_ctr_raw"].append(_timed(raw))
    gbps = {k: nbytes / statistics.median(v) / 1e9 for k, v in times.items()}
    paired = statistics.median(
        b / a for a, b in zip(times["expand_mask"], times["numpy_default_rng"], strict=True)
    )
    return {
        **{f"{k}_gbps": round(v, 3) for k, v in gbps.items()},
        "expand_mask_gbps_slowest_repeat": round(nbytes / max(times["expand_mask"]) / 1e9, 3),
        "speedup_vs_numpy": round(gbps["expand_mask"] / gbps["numpy_default_rng"], 2),
        "paired_speedup_vs_numpy_median": round(paired, 2),
        "fraction_of_raw_aes_ctr": round(gbps["expand_mask"] / gbps["aes_ctr_raw"], 2),
    }


def call_latency_us(words: int, repeats: int) -> float:
    """Median wall time of one expand_mask call of ``words`` uint32 words (µs)."""
    seed = os.urandom(32)
    expand_mask(seed, label=b"bench/latency", length=words)
    samples = [
        _timed(lambda: expand_mask(seed, label=b"bench/latency", length=words))
        for _ in range(max(repeats, 5) * 4)
    ]
    return round(statistics.median(samples) * 1e6, 1)


def _median_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()
    return round(statistics.median(_timed(fn) for _ in range(repeats)) * 1e3, 3)


def primitives_ms(repeats: int) -> dict[str, float]:
    """Median ms of fixed-point encode (d = 100k) and Shamir split / combine."""
    values = np.linspace(-1.0, 1.0, 100_000, dtype=np.float32)
    spec = spec_for(bits=32, clip=1.0, n_summands=100)
    out = {"encode_100k_ms": _median_ms(lambda: encode(values, spec, seed=os.urandom(32)),
                                        repeats)}  # fmt: skip
    secrets = [os.urandom(32), os.urandom(32)]
    for k in (20, 40, 100):
        t, xs = k // 2 + 1, list(range(1, k + 1))
        shares = shamir_split(secrets, threshold=t, xs=xs)
        exact = {xs[j]: shares[j][0] for j in range(t)}
        every = {xs[j]: shares[j][0] for j in range(k)}
        out[f"shamir_split_2x32B_k{k}_ms"] = _median_ms(
            lambda: shamir_split(secrets, threshold=t, xs=xs), repeats  # noqa: B023
        )
        out[f"shamir_combine_t_of_k{k}_ms"] = _median_ms(
            lambda: shamir_combine(exact, threshold=t), repeats  # noqa: B023
        )
        out[f"shamir_combine_all_k{k}_ms"] = _median_ms(
            lambda: shamir_combine(every, threshold=t), repeats  # noqa: B023
        )
    return out


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="securepool bench prg")
    p.add_argument("--mib", type=int, default=4, help="mask size per call, MiB (default 4)")
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--dtype", choices=[*_DTYPES, "both"], default="both")
    p.add_argument("--primitives", action="store_true", help="also time encode and Shamir")
    p.add_argument("--json", action="store_true", help="(output is always JSON)")
    args = p.parse_args(argv)
    if args.mib < 1 or args.repeats < 1:
        p.error("--mib and --repeats must be >= 1")
    nbytes = args.mib * 2**20
    names = list(_DTYPES) if args.dtype == "both" else [args.dtype]
    out = {
        "bytes_per_call": nbytes,
        "repeats": args.repeats,
        "threads": 1,
        "machine": platform.machine(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "results": {name: measure(nbytes, args.repeats, _DTYPES[name]) for name in names},
        "call_100k_uint32_words_us": call_latency_us(100_000, args.repeats),
    }
    if args.primitives:
        out["primitives_ms"] = primitives_ms(max(args.repeats, 5))
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv[1:]))
