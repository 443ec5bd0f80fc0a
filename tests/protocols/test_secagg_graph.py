"""The SecAgg+ graph rule: its bounds checked independently, and its guarantees attacked.

The rule (protocols.secagg.graph) picks k and t from exact tails; here scipy recomputes
them, a coalition of the whole corruption budget tries to gather t shares of an honest
participant, and a coordinator tries to learn a partial sum by cutting the graph.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
from scipy import stats

from crypto.errors import SecurityViolation
from protocols.secagg.graph import (
    choose_degree_threshold,
    consistency_threshold,
    graph_seed_from,
    neighbours,
    neighbours_of,
    safe_floor,
    security_tail,
    session_parameters,
)

CASES = [(n, d) for n in (20, 50, 100, 300, 1000) for d in (0.01, 0.1, 0.2)]


@pytest.mark.parametrize(("n", "dropout"), CASES)
def test_chosen_degree_meets_every_bound(n: int, dropout: float) -> None:
    corrupt = 0.2
    k, t = choose_degree_threshold(n, dropout=dropout, corrupt=corrupt)
    assert safe_floor(k) <= t <= k <= n - 1
    if k == n - 1:  # the complete graph: nothing sparse passed
        return
    budget = math.ceil(corrupt * n)
    # security: P[Hypergeometric(n-1, K, k) >= t], per honest node, union over n
    assert n * stats.hypergeom.sf(t - 1, n - 1, budget, k) <= 2.0**-40
    # correctness: P[Binomial(k, 1 - dropout) < t], per node, union over n
    assert n * stats.binom.cdf(t - 1, k, 1 - dropout) <= 2.0**-20
    # connectivity: two runs of k/2 removed nodes, union over pairs of positions
    assert math.comb(n, 2) * (corrupt + dropout) ** (2 * (k // 2)) <= 2.0**-40
    # and k is the smallest even degree that passes (k - 2 fails one of the bounds)
    smaller = k - 2
    if smaller >= 2:
        passes = (
            any(
                n * stats.hypergeom.sf(tt - 1, n - 1, budget, smaller) <= 2.0**-40
                and n * stats.binom.cdf(tt - 1, smaller, 1 - dropout) <= 2.0**-20
                for tt in range(safe_floor(smaller), smaller + 1)
            )
            and math.comb(n, 2) * (corrupt + dropout) ** (2 * (smaller // 2)) <= 2.0**-40
        )
        assert not passes


def test_degree_grows_with_dropout_and_corruption() -> None:
    base = choose_degree_threshold(300, dropout=0.05, corrupt=0.1)[0]
    assert choose_degree_threshold(300, dropout=0.2, corrupt=0.1)[0] >= base
    assert choose_degree_threshold(300, dropout=0.05, corrupt=0.3)[0] >= base


def test_rates_out_of_range_are_refused() -> None:
    with pytest.raises(ValueError, match="dropout and corrupt"):
        choose_degree_threshold(100, dropout=1.0, corrupt=0.2)
    with pytest.raises(ValueError, match="at least 2"):
        choose_degree_threshold(1, dropout=0.1, corrupt=0.2)


def test_graph_is_regular_symmetric_and_per_node_view_agrees() -> None:
    ids = [f"p{i:03d}" for i in range(100)]
    seed = os.urandom(32)
    graph = neighbours(ids, 38, seed=seed)
    assert all(len(vs) == 38 and u not in vs for u, vs in graph.items())
    assert all(u in graph[v] for u in ids for v in graph[u])
    assert all(neighbours_of(p, ids, 38, seed=seed) == graph[p] for p in ids)
    full = neighbours(ids[:10], 9, seed=seed)
    assert all(len(vs) == 9 for vs in full.values())
    assert neighbours_of("p000", ids[:10], 9, seed=seed) == full["p000"]


def test_the_whole_corruption_budget_never_holds_t_shares_of_an_honest_node() -> None:
    """Attack: 20 colluders of 100 (the budget) pool the shares they hold of each honest
    participant; at k = 38 they need t = 21 of one node's shares and can never get them,
    whichever graph seed is drawn and whichever 20 are corrupt."""
    n = 100
    k, t = choose_degree_threshold(n, dropout=0.1, corrupt=0.2)
    ids = [f"p{i:03d}" for i in range(n)]
    rng = np.random.default_rng(3)
    for _ in range(50):
        graph = neighbours(ids, k, seed=os.urandom(32))
        corrupt = set(rng.choice(ids, 20, replace=False))
        held = max(len(graph[u] & corrupt) for u in ids if u not in corrupt)
        assert held < t


def _components(nodes: set[str], graph: dict[str, frozenset[str]]) -> int:
    seen: set[str] = set()
    count = 0
    for start in nodes:
        if start in seen:
            continue
        count += 1
        stack = [start]
        seen.add(start)
        while stack:
            for v in graph[stack.pop()] & nodes:
                if v not in seen:
                    seen.add(v)
                    stack.append(v)
    return count


def test_honest_survivors_stay_connected_so_no_partial_sum_leaks() -> None:
    """Attack: the coordinator hopes corruption plus dropouts cut the graph, so that it
    could unmask the sum of one part alone. At the chosen degree the honest survivors
    stayed one component in every trial; at degree 4 they fall apart (the check bites)."""
    n = 100
    k, _t = choose_degree_threshold(n, dropout=0.1, corrupt=0.2)
    ids = [f"p{i:03d}" for i in range(n)]
    rng = np.random.default_rng(4)
    cut_at_k = cut_at_4 = 0
    for _ in range(200):
        seed = os.urandom(32)
        removed = set(rng.choice(ids, 20, replace=False))
        removed |= {p for p in ids if rng.random() < 0.1}
        honest = set(ids) - removed
        cut_at_k += _components(honest, neighbours(ids, k, seed=seed)) > 1
        cut_at_4 += _components(honest, neighbours(ids, 4, seed=seed)) > 1
    assert cut_at_k == 0
    assert cut_at_4 > 0


@pytest.mark.parametrize(("n", "dropout"), CASES)
def test_consistency_threshold_against_a_lying_coordinator(n: int, dropout: float) -> None:
    """The active-model bound (graph.py): T signers of one survivor list, recomputed.

    Security: two lists signed by T members each share >= 2T - n members; with at most
    C = ceil(0.2 n) colluders some honest member would have signed both, so the split
    survivor-list attack needs 2T - n <= C, which T = floor((n + C)/2) + 1 rules out
    (and T - 1 would not). Then the coordinator rebuilds both secrets of an honest node
    only from t colluding neighbours: the hypergeometric tail, recomputed by scipy.
    Liveness: an honest run aborts in the consistency round only if fewer than T of n
    members survive, P[Binomial(n, 1 - dropout) < T] (reported, and small for the
    dropout rates the degree rule is sized for).
    """
    corrupt = 0.2
    c = math.ceil(corrupt * n)
    params = session_parameters(n, dropout=dropout, corrupt=corrupt)
    big_t = params.consistency
    assert big_t == consistency_threshold(n, corrupt=corrupt) == (n + c) // 2 + 1
    assert 2 * big_t - n > c and 2 * (big_t - 1) - n <= c
    k, t = params.degree, params.threshold
    tail = n * stats.hypergeom.sf(t - 1, n - 1, c, k)
    assert tail <= 2.0**-40
    assert security_tail(n, k, t, corrupt=corrupt) == pytest.approx(tail, rel=1e-6, abs=1e-300)
    abort = stats.binom.cdf(big_t - 1, n, 1 - dropout)
    if dropout <= 0.1 and n >= 50:
        assert abort <= 2.0**-20


def test_an_agreed_degree_that_fails_the_bound_is_refused() -> None:
    with pytest.raises(SecurityViolation, match="degree 2"):
        session_parameters(40, dropout=0.1, corrupt=0.2, degree=2)
    ok = session_parameters(40, dropout=0.1, corrupt=0.2, degree=38)
    assert (ok.degree, ok.threshold) == (38, 20)


def test_graph_seed_is_bound_to_joint_seed_and_session() -> None:
    joint = os.urandom(32)
    a = graph_seed_from(joint, session="it0001/m")
    assert len(a) == 32
    assert a != graph_seed_from(joint, session="it0002/m")
    assert a != graph_seed_from(os.urandom(32), session="it0001/m")
    with pytest.raises(SecurityViolation):
        graph_seed_from(b"short", session="it0001/m")
