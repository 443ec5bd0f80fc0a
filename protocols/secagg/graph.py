"""The neighbour graph of SecAgg+ and the choice of its degree k and threshold t.

Each participant shares its secrets with, and masks against, only its k neighbours;
t of them must answer to recover a secret. The graph is a Harary-style circulant graph
(each node linked to the h = k/2 nearest on each side) over a random permutation of the
participants drawn from a public seed, so each node's neighbourhood is a uniformly
random k-subset of the others.

Following Bell et al. (CCS 2020), with n participants of which at most
K = ceil(gamma * n) are corrupt (chosen independently of the graph seed) and each
dropping independently with rate delta, we pick the smallest even k (and the smallest t
in (k/2, k]) such that:

* security:     n * P[Hypergeometric(n - 1, K, k) >= t] <= 2^-security_bits
  (no honest participant has t corrupt neighbours who could rebuild its secrets; the
  corrupt neighbours of one node are a k-subset draw without replacement from the K);
* correctness:  n * P[Binomial(k, 1 - delta) < t] <= 2^-correctness_bits
  (every needed secret keeps t live holders);
* connectivity: C(n, 2) * rho^(2h) <= 2^-security_bits with rho = gamma + delta
  (the honest survivors stay one connected component, so the coordinator learns only
  their whole sum, not sums of parts: cutting the circulant graph takes two runs of h
  consecutive removed nodes; the removal indicators are negatively associated, so h
  given positions are all removed with probability at most rho^h).

When no sparse k < n - 1 satisfies all three, the complete graph is used with
t = floor((n - 1) / 2) + 1 (the Bonawitz setting). Clients refuse any threshold below
``safe_floor(k)`` = floor(k / 2) + 1.

Against a malicious coordinator (Bonawitz et al. CCS 2017, malicious variant)
-----------------------------------------------------------------------------
A coordinator that lies can send *different* survivor lists to different clients: the
neighbours told that a target u survived return u's self-mask share, those told that u
dropped return u's mask-key share, and with both it unmasks u alone. So no client
answers an unmask request unless at least

    T = consistency_threshold(n, corrupt) = floor((n + C) / 2) + 1,   C = ceil(gamma * n)

members of the group signed the *same* survivor list (and session and model digest)
with their identity keys, every signer being on that list. Two different lists L1, L2
would need T signers each; honest members sign one list only, so the two signer sets
share at most the C colluders: |S1| + |S2| <= (n - C) + 2C = n + C < 2T. Hence at most
one list per session is ever answered, every honest holder answers the same split
(self-mask shares of L's members, key shares of the others), and recovering both
secrets of an honest u needs t shares of one kind from colluding neighbours alone,
which the security bound above makes a 2^-security_bits event. A list answered at all
also has >= T - C > (n - C) / 2 honest members, so the only sum unmasked is over a
majority of the group's honest members. ``n`` is the client's own view of its group
(the ``members`` it was given), not the coordinator's directory, and (k, t, T) are
derived by each client from n and the agreed MaskSettings (:func:`session_parameters`),
never read from the coordinator.

The graph seed is ``graph_seed_from(joint_seed, session=...)``: a seed the coordinator
picks could be ground until colluders fill a target's neighbourhood, which the
hypergeometric bound (corruption independent of the seed) does not cover.

Earlier versions bounded the corrupt neighbours by Binomial(k, gamma), which treats
every neighbour as corrupt independently and so allows more than K corrupt in all; the
hypergeometric tail is exact for a fixed corruption budget and gives the same
guarantee with a smaller k (n = 100, 10% dropout, 20% corrupt: k = 38 instead of 66).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from math import ceil, comb

from crypto.encoding import bind
from crypto.errors import SecurityViolation

GRAPH_SEED_DOMAIN = b"securepool/secagg/v2/graph-seed"


def safe_floor(degree: int) -> int:
    return degree // 2 + 1


def _tail_lt(k: int, p: float, t: int) -> float:
    return sum(comb(k, i) * p**i * (1 - p) ** (k - i) for i in range(t))


def _hypergeometric_tail_ge(others: int, corrupt: int, k: int, t: int) -> float:
    """P[X >= t] for X the corrupt count in a uniform k-subset of ``others`` nodes."""
    hits = sum(comb(corrupt, i) * comb(others - corrupt, k - i) for i in range(t, k + 1))
    return hits / comb(others, k)


def _disconnect_bound(n: int, k: int, removed_rate: float) -> float:
    """Union bound on two disjoint runs of k/2 removed nodes around the ring."""
    return comb(n, 2) * removed_rate ** (2 * (k // 2))


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
    if not (0 <= dropout < 1 and 0 <= corrupt < 1):
        raise ValueError(f"dropout and corrupt must be in [0, 1), got {dropout}, {corrupt}")
    full = n - 1
    budget = min(ceil(corrupt * n), full)
    for k in range(2, full, 2):
        if _disconnect_bound(n, k, min(corrupt + dropout, 1.0)) > 2.0**-security_bits:
            continue
        for t in range(safe_floor(k), k + 1):
            if n * _hypergeometric_tail_ge(full, budget, k, t) > 2.0**-security_bits:
                continue
            if n * _tail_lt(k, 1 - dropout, t) <= 2.0**-correctness_bits:
                return k, t
            break  # larger t only hurts correctness
    return full, safe_floor(full)


def _ring(ids: Sequence[str], seed: bytes) -> list[str]:
    """The participants in the seeded random order the circulant graph is laid on."""
    return sorted(ids, key=lambda pid: hashlib.sha256(seed + pid.encode()).digest())


def neighbours(ids: Sequence[str], degree: int, *, seed: bytes) -> dict[str, frozenset[str]]:
    """Circulant graph of the given even ``degree`` (or complete) over a seeded shuffle."""
    n = len(ids)
    if degree >= n - 1:
        return {u: frozenset(v for v in ids if v != u) for u in ids}
    order = _ring(ids, seed)
    half = degree // 2
    return {
        u: frozenset(order[(i + step) % n] for step in range(-half, half + 1) if step)
        for i, u in enumerate(order)
    }


def neighbours_of(pid: str, ids: Sequence[str], degree: int, *, seed: bytes) -> frozenset[str]:
    """``neighbours(ids, degree, seed=seed)[pid]`` without building the whole graph."""
    n = len(ids)
    if degree >= n - 1:
        return frozenset(v for v in ids if v != pid)
    order = _ring(ids, seed)
    i = order.index(pid)
    half = degree // 2
    return frozenset(order[(i + step) % n] for step in range(-half, half + 1) if step)


def consistency_threshold(n: int, *, corrupt: float) -> int:
    """T = floor((n + C) / 2) + 1 with C = ceil(corrupt * n): signers of one survivor list
    a client needs before it answers an unmask request (see the module docstring).

    Security: any two sets of T signers among n members share more than C members, so
    with at most C colluders no two different lists can both be answered.
    """
    colluders = min(ceil(corrupt * n), n)
    return min((n + colluders) // 2 + 1, n)


def security_tail(n: int, k: int, t: int, *, corrupt: float) -> float:
    """n * P[Hypergeometric(n - 1, ceil(corrupt * n), k) >= t]: the union bound on some
    honest member having t colluding neighbours (for the complete graph, k = n - 1)."""
    budget = min(ceil(corrupt * n), n - 1)
    return n * _hypergeometric_tail_ge(n - 1, budget, min(k, n - 1), t)


@dataclass(frozen=True)
class SessionParameters:
    """What every party derives for itself from the group size and the agreed settings:
    graph degree k, Shamir threshold t, consistency threshold T."""

    degree: int
    threshold: int
    consistency: int


def session_parameters(
    n: int,
    *,
    dropout: float,
    corrupt: float,
    correctness_bits: int = 20,
    security_bits: int = 40,
    degree: int = 0,
) -> SessionParameters:
    """(k, t, T) for a group of ``n`` members; ``degree`` > 0 fixes k (agreed settings).

    Security: raises SecurityViolation when the resulting (k, t) fails the security
    bound n * P[Hypergeometric >= t] <= 2^-security_bits (an agreed degree too small for
    the corruption assumption is refused, not silently used).
    """
    if degree:
        k = min(degree, n - 1)
        t = safe_floor(k)
        if security_tail(n, k, t, corrupt=corrupt) > 2.0**-security_bits:
            raise SecurityViolation(
                f"degree {k} / threshold {t} at n = {n} fails the 2^-{security_bits} "
                f"bound for corrupt fraction {corrupt}"
            )
    else:
        k, t = choose_degree_threshold(
            n,
            dropout=dropout,
            corrupt=corrupt,
            correctness_bits=correctness_bits,
            security_bits=security_bits,
        )
    return SessionParameters(k, t, consistency_threshold(n, corrupt=corrupt))


def graph_seed_from(joint_seed: bytes, *, session: str) -> bytes:
    """The 32-byte neighbour-graph seed of ``session``: SHA-256 over
    ``bind(GRAPH_SEED_DOMAIN, joint_seed, session)``.

    Security: as unpredictable and unsteerable as ``joint_seed`` (32 bytes from a
    commit-reveal no single party controls); binding the session gives every session its
    own graph. Raises SecurityViolation for a joint seed that is not 32 bytes.
    """
    if not isinstance(joint_seed, bytes) or len(joint_seed) != 32:
        raise SecurityViolation("the joint seed must be 32 bytes")
    return hashlib.sha256(bind(GRAPH_SEED_DOMAIN, joint_seed, session)).digest()
