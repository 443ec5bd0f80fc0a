"""Parameter-difference measures against the trusted participant, and threshold rules."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from numpy.typing import NDArray

from securepool.trust.config import Difference, ThresholdRule


def difference(a: NDArray[np.float64], trusted: NDArray[np.float64], how: Difference) -> float:
    """relative L2: ||a - t|| / ||t||; cosine: 1 - cos(a, t) (0 same direction, 2 opposite)."""
    tn = float(np.linalg.norm(trusted))
    if how is Difference.RELATIVE_L2:
        return float(np.linalg.norm(a - trusted)) / max(tn, 1e-12)
    an = float(np.linalg.norm(a))
    if an == 0.0 or tn == 0.0:
        return 1.0
    return 1.0 - float(a @ trusted) / (an * tn)


def threshold_for(
    diffs: Mapping[str, float], *, rule: ThresholdRule, fixed: float, mad_k: float
) -> float:
    """Fixed, or robust: median + k * 1.4826 * MAD of the group's differences.

    The robust threshold never drops below 1.5 x the median, so a tight honest group with
    a tiny MAD does not flag its ordinary spread.
    """
    if rule is ThresholdRule.FIXED or not diffs:
        return fixed
    vals = np.array(list(diffs.values()))
    med = float(np.median(vals))
    mad = float(np.median(np.abs(vals - med)))
    return max(med + mad_k * 1.4826 * mad, 1.5 * med)
