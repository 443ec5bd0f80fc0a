"""S401/S405: test every global model; S402/S406: are all errors inside the range?

Two sources of test samples: the coordinator's held-out set, or *federated*
evaluation where each participant tests the global model on its local test split and
reports only (errors, total) counts, which the coordinator adds up.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from scipy.stats import beta
from torch import nn


@dataclass(frozen=True)
class TestResult:
    __test__ = False  # not a pytest class

    errors: int
    total: int

    @property
    def error_rate(self) -> float:
        return self.errors / self.total if self.total else 1.0

    @property
    def accuracy(self) -> float:
        return 1.0 - self.error_rate

    def __add__(self, other: TestResult) -> TestResult:
        return TestResult(self.errors + other.errors, self.total + other.total)


def count_errors(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> TestResult:
    model.eval()
    with torch.no_grad():
        pred = model(x).argmax(dim=1)
    return TestResult(errors=int((pred != y).sum()), total=int(y.shape[0]))


def all_within_range(errors: Mapping[str, float], error_range: tuple[float, float]) -> bool:
    """S402/S406: True when every global model's test error is inside the range at once."""
    lo, hi = error_range
    return bool(errors) and all(lo <= e <= hi for e in errors.values())


def clopper_pearson_upper(errors: int, total: int, *, confidence: float) -> float:
    """One-sided Clopper–Pearson upper confidence bound on the true error rate."""
    if total <= 0:
        return 1.0
    if errors >= total:
        return 1.0
    return float(beta.ppf(confidence, errors + 1, total - errors))
