"""Voting rules that elect the trusted participant of a model group (P6).

The distance rules take the group's summary vectors; the validation vote takes the
participants' ballots (losses of each other's models on their own records). Each returns
the elected participant. Pure numpy.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Mapping

import numpy as np
from numpy.typing import NDArray


def stack(vectors: Mapping[str, NDArray[np.float64]]) -> tuple[list[str], NDArray[np.float64]]:
    """Participant ids in sorted order and their vectors as the rows of one matrix."""
    ids = sorted(vectors)
    return ids, np.stack([vectors[i] for i in ids])


def pairwise_distances(
    vectors: Mapping[str, NDArray[np.float64]],
) -> tuple[list[str], NDArray[np.float64]]:
    ids, m = stack(vectors)
    sq = np.sum(m * m, axis=1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * (m @ m.T), 0.0)
    return ids, np.sqrt(d2)


def nearest_neighbour_vote(vectors: Mapping[str, NDArray[np.float64]]) -> str:
    """Each participant votes for its nearest other participant; plurality wins.

    Ties go to the candidate with the smallest mean distance to the group, then by name.
    """
    ids, dist = pairwise_distances(vectors)
    if len(ids) == 1:
        return ids[0]
    np.fill_diagonal(dist, np.inf)
    votes = Counter(ids[int(np.argmin(row))] for row in dist)
    np.fill_diagonal(dist, 0.0)
    mean = {pid: float(dist[i].mean()) for i, pid in enumerate(ids)}
    return min(ids, key=lambda p: (-votes[p], mean[p], p))


def krum_vote(vectors: Mapping[str, NDArray[np.float64]], *, f: int = 0) -> str:
    """Krum (Blanchard et al. 2017): lowest sum of squared distances to its n-f-2 nearest."""
    ids, dist = pairwise_distances(vectors)
    n = len(ids)
    f = f or (n - 1) // 3
    k = max(1, n - f - 2)
    scores = {}
    for i, pid in enumerate(ids):
        others = np.sort(np.delete(dist[i], i))[:k]
        scores[pid] = float(np.sum(others**2))
    return min(ids, key=lambda p: (scores[p], p))


def validation_vote(
    ballots: Mapping[str, Mapping[str, float]], candidates: Collection[str]
) -> str | None:
    """Each voter votes for the candidate whose model scored best (lowest loss) on the
    voter's own records; plurality wins.

    ``ballots[voter][candidate]`` is the loss of (global + candidate's update) on the
    voter's data. A voter's own entry and candidates outside ``candidates`` are ignored;
    only voters among ``candidates`` count (screened participants take no part). Ties go
    to the lowest median loss over all voters, then by name. None if nobody voted.
    """
    pool = set(candidates)
    votes: Counter[str] = Counter()
    losses: dict[str, list[float]] = {c: [] for c in pool}
    for voter, ballot in ballots.items():
        if voter not in pool:
            continue
        scored = {c: float(v) for c, v in ballot.items() if c in pool and c != voter}
        if not scored:
            continue
        votes[min(scored, key=lambda c: (scored[c], c))] += 1
        for c, v in scored.items():
            losses[c].append(v)
    if not votes:
        return None
    median = {c: float(np.median(v)) if v else float("inf") for c, v in losses.items()}
    return min(votes, key=lambda c: (-votes[c], median[c], c))
