"""Screening before the vote: summaries that are *too* consistent to be honest.

Distance-based flagging (difference.py) catches updates far from the trusted one. Two
crafted attacks sit on the other side:

* **near-duplicates**: colluding participants that compute one poisoned update from
  the same information (A Little Is Enough, inner-product manipulation) send identical
  vectors. Honest updates trained on different records never coincide; a pair closer
  than ``duplicate_ratio`` x the group's median pairwise distance is flagged, both
  sides (the idea of FoolsGold, Fung et al. 2020: sybils share an objective).
* **too central**: A Little Is Enough (Baruch et al. 2019) places its update at the
  benign mean plus a small z of the per-coordinate spread, so it lies *closer* to the
  group's coordinate-wise median than any honest update does (an honest update is about
  one spread away). An update nearer than ``central_ratio`` x the median of the
  group's distances to that centre is flagged.

Screened participants take no part in the vote (an ALIE update would otherwise be
everyone's nearest neighbour and be elected the trusted participant). Both rules need
at least three summaries. Pure numpy on the auditor's decrypted summaries.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from numpy.typing import NDArray

from securepool.trust.voting import pairwise_distances


def near_duplicates(vectors: Mapping[str, NDArray[np.float64]], *, ratio: float) -> dict[str, str]:
    """Participants with a partner closer than ``ratio`` x the median pairwise distance."""
    if ratio <= 0 or len(vectors) < 3:
        return {}
    ids, dist = pairwise_distances(vectors)
    upper = dist[np.triu_indices(len(ids), k=1)]
    typical = float(np.median(upper))
    if typical <= 0.0:
        return {}
    flagged: dict[str, str] = {}
    for i, pid in enumerate(ids):
        for j, other in enumerate(ids):
            if i != j and dist[i, j] < ratio * typical and pid not in flagged:
                flagged[pid] = (
                    f"near-duplicate of {other}: distance {dist[i, j]:.3g} < {ratio} x "
                    f"group median {typical:.3g} (colluding or replayed update)"
                )
    return flagged


def too_central(vectors: Mapping[str, NDArray[np.float64]], *, ratio: float) -> dict[str, str]:
    """Participants nearer the coordinate-wise median than ``ratio`` x the median distance."""
    if ratio <= 0 or len(vectors) < 3:
        return {}
    ids = sorted(vectors)
    m = np.stack([vectors[p] for p in ids])
    centre = np.median(m, axis=0)
    dist = np.linalg.norm(m - centre, axis=1)
    typical = float(np.median(dist))
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
