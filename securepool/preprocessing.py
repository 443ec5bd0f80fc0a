"""The feature preprocessing a dataset's records go through, as data a pool can carry.

Training scales the raw features by a fixed rule agreed up front; a model of the shared
pool only makes sense on inputs scaled the same way. The rule is therefore written into
the pool's manifest (for breast_cancer it holds the dataset-wide maxima, which a user of
the pool could not rebuild) and :func:`securepool.load_pool` applies it to raw inputs.

    x' = f(x) / divisor        f = identity or log1p, divisor one value per feature
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True)
class Preprocessing:
    transform: str  # "identity" | "log1p"
    divisor: tuple[float, ...]  # one per feature

    def __post_init__(self) -> None:
        if self.transform not in ("identity", "log1p"):
            raise ValueError(f"unknown transform {self.transform!r}")
        if not self.divisor or not all(math.isfinite(d) and d > 0 for d in self.divisor):
            raise ValueError("divisor must be finite and > 0 for every feature")

    @property
    def n_features(self) -> int:
        return len(self.divisor)

    def apply(self, x: NDArray[Any]) -> NDArray[np.float32]:
        """Raw features (rows x n_features) -> the model's inputs."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise ValueError(f"expected rows of {self.n_features} features, got shape {x.shape}")
        if self.transform == "log1p":
            if np.any(x < 0):
                raise ValueError("log1p preprocessing needs non-negative features")
            x = np.log1p(x)
        out: NDArray[np.float32] = (x / np.asarray(self.divisor)).astype(np.float32)
        return out

    def to_json(self) -> dict[str, Any]:
        return {"transform": self.transform, "divisor": list(self.divisor)}

    @classmethod
    def from_json(cls, obj: Any) -> Preprocessing:
        if not isinstance(obj, dict) or set(obj) != {"transform", "divisor"}:
            raise ValueError("preprocessing must be {transform, divisor}")
        return cls(str(obj["transform"]), tuple(float(d) for d in obj["divisor"]))
