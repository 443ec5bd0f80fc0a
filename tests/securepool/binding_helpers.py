"""Shared inputs of the trust-binding tests (plaintext summaries, mask reports, HE folds):
an honest group of similar updates and the two poisoned variants every mode must catch."""

from __future__ import annotations

import numpy as np


def honest_group(n: int, d: int, seed: int = 0) -> dict[str, np.ndarray]:
    """``n`` similar float32 updates of length ``d`` (a shared direction plus noise)."""
    rng = np.random.default_rng(seed)
    base = rng.normal(0, 0.01, d)
    return {f"p{i:02d}": (base + rng.normal(0, 0.003, d)).astype(np.float32) for i in range(n)}


def poisoned(honest: dict[str, np.ndarray], bad: set[str], poison: str) -> dict[str, np.ndarray]:
    """``honest`` with the updates of ``bad`` replaced: ``"scale_minus_5"`` sends -5x the
    honest update, ``"backdoor_shift"`` a model-replacement style shift on a few
    coordinates."""
    sent = dict(honest)
    for pid in bad:
        if poison == "scale_minus_5":
            sent[pid] = (-5.0 * honest[pid]).astype(np.float32)
        else:
            shifted = honest[pid].copy()
            shifted[:20] += 0.5
            sent[pid] = shifted
    return sent
