"""The neighbour graph of SecAgg+ and the choice of its degree k and threshold t.

Each participant shares its secrets with, and masks against, only its k neighbours;
t of them must answer to recover a secret. Following Bell et al. (CCS 2020) we pick the
smallest k (and a t in (k/2, k]) such that, with n participants, each dropping
independently with rate delta and each corrupt with rate gamma:

* correctness: n * P[Binomial(k, 1 - delta) < t] <= 2^-correctness_bits
  (every needed secret keeps t live holders), and
* security:    n * P[Binomial(k, gamma) >= t] <= 2^-security_bits
  (no honest participant has t corrupt neighbours who could rebuild its secrets).

When no sparse k < n - 1 satisfies both, the complete graph is used with
t = floor((n - 1) / 2) + 1 (the Bonawitz setting). Clients refuse any threshold below
``safe_floor(k)`` = floor(k / 2) + 1.

The graph is a Harary-style circulant graph (each node linked to the k/2 nearest on
each side) over a random permutation of the participants drawn from a public seed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from functools import lru_cache
from math import comb


def safe_floor(degree: int) -> int:
    return degree // 2 + 1


def _tail_lt(k: int, p: float, t: int) -> float:
    return sum(comb(k, i) * p**i * (1 - p) ** (k - i) for i in range(t))


def _tail_ge(k: int, p: float, t: int) -> float:
    return sum(comb(k, i) * p**i * (1 - p) ** (k - i) for i in range(t, k + 1))


@lru_cache(maxsize=256)
def choose_degree_threshold(
    n: int,
    *,
    dropout: float,
    corrupt: float,
    correctness_bits: int = 20,
    security_bits: int = 40,
) -> tuple[int, int]:
    """Return (k, t) for ``n`` participants; see the module docstring for the rule."""
    if n < 2:
        raise ValueError("a session needs at least 2 participants")
    full = n - 1
    for k in range(2, full, 2):
        for t in range(safe_floor(k), k + 1):
            if n * _tail_ge(k, corrupt, t) > 2.0**-security_bits:
                continue
            if n * _tail_lt(k, 1 - dropout, t) <= 2.0**-correctness_bits:
                return k, t
            break  # larger t only hurts correctness
    return full, safe_floor(full)


def neighbours(ids: Sequence[str], degree: int, *, seed: bytes) -> dict[str, frozenset[str]]:
    """Circulant graph of the given even ``degree`` (or complete) over a seeded shuffle."""
    n = len(ids)
    if degree >= n - 1:
        return {u: frozenset(v for v in ids if v != u) for u in ids}
    order = sorted(ids, key=lambda pid: hashlib.sha256(seed + pid.encode()).digest())
    half = degree // 2
    nbrs: dict[str, set[str]] = {u: set() for u in ids}
    for i, u in enumerate(order):
        for step in range(1, half + 1):
            v = order[(i + step) % n]
            nbrs[u].add(v)
            nbrs[v].add(u)
    return {u: frozenset(vs) for u, vs in nbrs.items()}
