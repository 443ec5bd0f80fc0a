"""Screening before the vote: summaries that are *too* consistent to be honest.

Distance-based flagging (difference.py) catches updates far from the trusted one. Two
crafted attacks sit on the other side:

* **near-duplicates**: colluding participants that compute one poisoned update from
  the same information (A Little Is Enough, inner-product manipulation) send identical
  vectors. Honest updates trained on different records never coincide; a pair closer
  than ``duplicate_ratio`` x the group's typical distance (taken robustly, see
  :func:`near_duplicates`) is flagged, both sides (the idea of FoolsGold, Fung et
  al. 2020: sybils share an objective).
* **too central**: A Little Is Enough (Baruch et al. 2019) places its update at the
  benign mean plus a small z of the per-coordinate spread, so it lies *closer* to the
  group's coordinate-wise median than any honest update does (an honest update is about
  one spread away). An update nearer than ``central_ratio`` x the median of the
  group's distances to that centre is flagged.

And one on the far side:

* **misaligned**: an update whose cosine with the coordinate-wise median of the *other*
  members' updates is below ``align_floor`` points against what the rest of the group
  learns (sign flip, IPM). Honest updates share the task's direction even when their
  data differ (non-IID), so they rarely fall far below zero; a distance from the trusted
  participant does not separate a flipped update there (measured in RESULTS.md).

Screened participants take no part in the vote (an ALIE update would otherwise be
everyone's nearest neighbour and be elected the trusted participant). :func:`screen`
applies all three; each needs at least three summaries. Pure numpy on the auditor's
decrypted summaries.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from numpy.typing import NDArray

from securepool.trust.voting import pairwise_distances, stack


def _distances_to_centre(
    vectors: Mapping[str, NDArray[np.float64]],
) -> tuple[list[str], NDArray[np.float64], float]:
    """Each vector's distance to the group's coordinate-wise median, and their median.

    Both are robust to a minority of huge outliers (scaled or noise updates), which
    would inflate any scale taken from all pairwise distances.
    """
    ids, m = stack(vectors)
    dist = np.linalg.norm(m - np.median(m, axis=0), axis=1)
    return ids, dist, float(np.median(dist))


def near_duplicates(vectors: Mapping[str, NDArray[np.float64]], *, ratio: float) -> dict[str, str]:
    """Participants with a partner closer than ``ratio`` x the group's typical distance.

    The typical distance between two honest updates is sqrt(2) x the median distance to
    the coordinate-wise median (independent spreads add in quadrature). When most of the
    group coincide that median is 0, and the median of the non-zero pairwise distances
    is used instead.
    """
    if ratio <= 0 or len(vectors) < 3:
        return {}
    _, _, to_centre = _distances_to_centre(vectors)
    ids, dist = pairwise_distances(vectors)
    typical = float(np.sqrt(2.0)) * to_centre
    if typical <= 0.0:  # most of the group coincide: scale by the pairs that differ
        upper = dist[np.triu_indices(len(ids), k=1)]
        if not np.any(upper > 0.0):
            return {}
        typical = float(np.median(upper[upper > 0.0]))
    flagged: dict[str, str] = {}
    for i, pid in enumerate(ids):
        for j, other in enumerate(ids):
            if i != j and dist[i, j] < ratio * typical and pid not in flagged:
                flagged[pid] = (
                    f"near-duplicate of {other}: distance {dist[i, j]:.3g} < {ratio} x "
                    f"typical distance {typical:.3g} (colluding or replayed update)"
                )
    return flagged


def too_central(vectors: Mapping[str, NDArray[np.float64]], *, ratio: float) -> dict[str, str]:
    """Participants nearer the coordinate-wise median than ``ratio`` x the median distance."""
    if ratio <= 0 or len(vectors) < 3:
        return {}
    ids, dist, typical = _distances_to_centre(vectors)
    if typical <= 0.0:
        return {}
    return {
        pid: (
            f"too central: distance {dist[i]:.3g} to the group's coordinate-wise median "
            f"< {ratio} x the median distance {typical:.3g} (crafted like ALIE)"
        )
        for i, pid in enumerate(ids)
        if dist[i] < ratio * typical
    }


def misaligned(vectors: Mapping[str, NDArray[np.float64]], *, floor: float) -> dict[str, str]:
    """Participants whose cosine with the others' coordinate-wise median is below ``floor``."""
    if floor <= -1.0 or len(vectors) < 3:
        return {}
    ids, m = stack(vectors)
    flagged: dict[str, str] = {}
    for i, pid in enumerate(ids):
        centre = np.median(np.delete(m, i, axis=0), axis=0)
        denom = float(np.linalg.norm(m[i]) * np.linalg.norm(centre))
        if denom <= 0.0:
            continue
        cos = float(m[i] @ centre) / denom
        if cos < floor:
            flagged[pid] = (
                f"misaligned: cosine {cos:.3f} with the others' coordinate-wise median "
                f"< {floor} (points against the group, like a sign flip)"
            )
    return flagged


def screen(
    vectors: Mapping[str, NDArray[np.float64]],
    *,
    duplicate_ratio: float,
    central_ratio: float,
    align_floor: float,
) -> dict[str, str]:
    """All three screens; a participant caught by several keeps the first reason."""
    screened = near_duplicates(vectors, ratio=duplicate_ratio)
    for found in (
        too_central(vectors, ratio=central_ratio),
        misaligned(vectors, floor=align_floor),
    ):
        for pid, reason in found.items():
            screened.setdefault(pid, reason)
    return screened
