from __future__ import annotations

import numpy as np
import pytest

from securepool.acceptance import Candidate, decide
from securepool.config import AcceptanceSection
from securepool.evaluation import TestResult, all_within_range, clopper_pearson_upper


def test_clopper_pearson_known_values() -> None:
    # zero errors in n trials: upper bound = 1 - alpha^(1/n)
    assert clopper_pearson_upper(0, 100, confidence=0.95) == pytest.approx(1 - 0.05 ** (1 / 100))
    # the bound is above the point estimate and shrinks with more samples
    assert clopper_pearson_upper(10, 100, confidence=0.95) > 0.10
    assert clopper_pearson_upper(100, 1000, confidence=0.95) < clopper_pearson_upper(
        10, 100, confidence=0.95
    )
    assert clopper_pearson_upper(5, 5, confidence=0.95) == 1.0


def test_all_within_range() -> None:
    assert all_within_range({"a": 0.05, "b": 0.07}, (0.0, 0.08))
    assert not all_within_range({"a": 0.05, "b": 0.09}, (0.0, 0.08))
    assert not all_within_range({}, (0.0, 0.08))


def _cand(mid: str, errors: int, params: list[float], arch: str = "mlp") -> Candidate:
    return Candidate(mid, arch, TestResult(errors, 400), np.array(params, dtype=np.float32))


def test_acceptance_and_elimination() -> None:
    cands = {
        "good": _cand("good", 8, [1.0, 0.0]),
        "twin": _cand("twin", 9, [1.0, 0.001]),  # near-duplicate of good
        "ok": _cand("ok", 20, [0.0, 1.0]),
        "other": _cand("other", 24, [5.0, 5.0], arch="cnn"),
        "bad": _cand("bad", 80, [3.0, 3.0]),  # error 0.2: bound above 0.1
    }
    rule = AcceptanceSection(
        confidence=0.95, max_error_bound=0.1, keep_best=2, duplicate_distance=0.01
    )
    d = decide(cands, rule)
    assert not d["bad"].accepted and "error bound" in d["bad"].reason
    assert (
        d["twin"].accepted and d["twin"].eliminated and "near-duplicate of good" in d["twin"].reason
    )
    kept = sorted(m for m, x in d.items() if x.accepted and not x.eliminated)
    assert kept == ["good", "ok"]
    assert d["other"].eliminated and "2 best" in d["other"].reason
    for x in d.values():
        assert x.error_bound >= x.test_error
