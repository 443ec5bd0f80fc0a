"""The feature preprocessing a dataset's records go through, as data a pool can carry.

Training scales the raw features by a fixed rule agreed up front; a model of the shared
pool only makes sense on inputs scaled the same way. The rule is therefore written into
the pool's manifest (for breast_cancer it holds the dataset-wide maxima, which a user of
the pool could not rebuild) and :func:`securepool.load_pool` applies it to raw inputs.

    x' = (f(x) - offset) / divisor    f = identity or log1p; offset, divisor one per feature

With ``[data] scaling = "federated"`` the offset and divisor are the federation's mean and
standard deviation of each numeric input, computed by the participants under secure
aggregation before the first iteration (:mod:`securepool.coordinator.preprocess`): each
node sends, masked, two vectors of statistics of its own training records
(:func:`magnitude_stats`, then :func:`moment_stats` at the agreed magnitudes), and the
coordinator sees only their sums over the participants (:func:`standardisation`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

#: the magnitudes (log2 of a feature's root mean square) the first statistics round
#: sends are clipped to this range; a feature's agreed magnitude lies within it
MAGNITUDE_RANGE = 60
#: the second round's statistics (mean and mean square of a feature divided by 2^its
#: agreed magnitude) are clipped to this bound: an agency whose values reach 2^8 times
#: the federation's typical magnitude is clipped (and says so in its log)
MOMENT_CLIP = float(2**16)


@dataclass(frozen=True)
class Preprocessing:
    transform: str  # "identity" | "log1p"
    divisor: tuple[float, ...]  # one per feature
    offset: tuple[float, ...] = ()  # one per feature (empty: zero)

    def __post_init__(self) -> None:
        if self.transform not in ("identity", "log1p"):
            raise ValueError(f"unknown transform {self.transform!r}")
        if not self.divisor or not all(math.isfinite(d) and d > 0 for d in self.divisor):
            raise ValueError("divisor must be finite and > 0 for every feature")
        if self.offset and (
            len(self.offset) != len(self.divisor) or not all(math.isfinite(o) for o in self.offset)
        ):
            raise ValueError("offset must hold one finite value per feature")

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
        if self.offset:
            x = x - np.asarray(self.offset)
        out: NDArray[np.float32] = (x / np.asarray(self.divisor)).astype(np.float32)
        return out

    def then_standardise(self, scaling: Standardisation) -> Preprocessing:
        """This rule followed by ``scaling`` (which was computed on this rule's
        outputs), as one rule: ((f(x) - o) / d - m) / s = (f(x) - (o + m d)) / (d s)."""
        if scaling.n_features != self.n_features:
            raise ValueError(
                f"a standardisation of {scaling.n_features} inputs after a rule of "
                f"{self.n_features}"
            )
        offset = self.offset or (0.0,) * self.n_features
        return Preprocessing(
            self.transform,
            tuple(d * s for d, s in zip(self.divisor, scaling.std, strict=True)),
            tuple(o + m * d for o, m, d in zip(offset, scaling.mean, self.divisor, strict=True)),
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"transform": self.transform, "divisor": list(self.divisor)}
        if self.offset:
            out["offset"] = list(self.offset)
        return out

    @classmethod
    def from_json(cls, obj: Any) -> Preprocessing:
        if (
            not isinstance(obj, dict)
            or not {"transform", "divisor"} <= set(obj)
            or not set(obj) <= {"transform", "divisor", "offset"}
        ):
            raise ValueError("preprocessing must be {transform, divisor[, offset]}")
        return cls(
            str(obj["transform"]),
            tuple(float(d) for d in obj["divisor"]),
            tuple(float(o) for o in obj.get("offset", ())),
        )


@dataclass(frozen=True)
class Standardisation:
    """x' = (x - mean) / std per model input; an input left as it is (a one-hot column)
    has mean 0 and std 1."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.mean) != len(self.std) or not self.mean:
            raise ValueError("a standardisation needs one mean and one std per input")
        if not all(math.isfinite(m) for m in self.mean) or not all(
            math.isfinite(s) and s > 0 for s in self.std
        ):
            raise ValueError("a standardisation needs finite means and finite stds > 0")

    @property
    def n_features(self) -> int:
        return len(self.mean)

    def apply(self, x: NDArray[Any]) -> NDArray[np.float32]:
        """Rows of ``n_features`` inputs, standardised."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise ValueError(f"expected rows of {self.n_features} inputs, got shape {x.shape}")
        out: NDArray[np.float32] = ((x - self.mean) / np.asarray(self.std)).astype(np.float32)
        return out

    def to_json(self) -> dict[str, Any]:
        return {"mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_json(cls, obj: Any) -> Standardisation:
        """ValueError for anything but {mean, std} of finite numbers (std > 0)."""
        if not isinstance(obj, dict) or set(obj) != {"mean", "std"}:
            raise ValueError("a standardisation must be {mean, std}")
        try:
            return cls(tuple(float(m) for m in obj["mean"]), tuple(float(s) for s in obj["std"]))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"a standardisation of non-numbers: {exc}") from None


def magnitude_stats(x: NDArray[Any], numeric: NDArray[np.bool_]) -> NDArray[np.float32]:
    """Round 1 of the statistics: per numeric input, log2 of the root mean square of
    this agency's values (clipped to [-MAGNITUDE_RANGE, MAGNITUDE_RANGE]), then per
    input 1 where that is defined (some value is not 0), else 0 and 0. Summed over the
    federation, their ratio is the mean order of magnitude 2^e of each input among the
    agencies that hold non-zero values, so the second round's sums fit a fixed-point
    encoding whatever the units (an agency of zeros does not drag it down)."""
    x = np.asarray(x, dtype=np.float64)
    rms = np.sqrt(np.mean(x * x, axis=0)) if x.shape[0] else np.zeros(x.shape[1])
    present = numeric & (rms > 0)
    logs = np.log2(np.where(present, rms, 1.0))
    out = np.concatenate(
        [np.where(present, np.clip(logs, -MAGNITUDE_RANGE, MAGNITUDE_RANGE), 0.0), present]
    )
    return out.astype(np.float32)


def magnitudes(total: NDArray[Any]) -> tuple[int, ...]:
    """The agreed exponent e of each input from the sum of :func:`magnitude_stats`:
    the mean log2 RMS over the agencies with non-zero values, rounded (0 if none)."""
    total = np.asarray(total, dtype=np.float64)
    if total.ndim != 1 or total.size % 2:
        raise ValueError(f"magnitude statistics of {total.size} values (two per input)")
    n = total.size // 2
    logs, count = total[:n], np.rint(total[n:])
    mean = np.where(count >= 1, logs / np.maximum(count, 1.0), 0.0)
    return tuple(int(v) for v in np.clip(np.rint(mean), -MAGNITUDE_RANGE, MAGNITUDE_RANGE))


def moment_stats(
    x: NDArray[Any], exponents: tuple[int, ...]
) -> tuple[NDArray[np.float32], list[int]]:
    """Round 2: (mean of x / 2^e, then mean of (x / 2^e)^2, per input, clipped to
    MOMENT_CLIP; the inputs that clipping changed). The node sends these weighted by
    its record count, so their sum over the federation is the federation's sums."""
    x = np.asarray(x, dtype=np.float64)
    if x.shape[1] != len(exponents):
        raise ValueError(f"{len(exponents)} magnitudes for {x.shape[1]} inputs")
    y = x / np.exp2(np.asarray(exponents, dtype=np.float64))
    stats = np.concatenate([y.mean(axis=0), (y * y).mean(axis=0)])
    clipped = sorted({int(i) % x.shape[1] for i in np.flatnonzero(np.abs(stats) > MOMENT_CLIP)})
    out = np.clip(stats, -MOMENT_CLIP, MOMENT_CLIP).astype(np.float32)
    return out, clipped


def standardisation(
    total: NDArray[Any],
    weight: float,
    exponents: tuple[int, ...],
    numeric: NDArray[np.bool_],
) -> Standardisation:
    """The federation's mean and standard deviation per numeric input from the sum of
    :func:`moment_stats` weighted by record counts (``weight``: the records in the sum);
    an input with no spread keeps std 1 (it carries nothing either way)."""
    if not weight > 0:
        raise ValueError("no records in the statistics' sum")
    total = np.asarray(total, dtype=np.float64)
    n = len(exponents)
    if total.shape != (2 * n,):
        raise ValueError(f"statistics of {total.size} values for {n} inputs")
    scale = np.exp2(np.asarray(exponents, dtype=np.float64))
    mean_y = total[:n] / weight
    var_y = np.maximum(total[n:] / weight - mean_y * mean_y, 0.0)
    std = np.sqrt(var_y) * scale
    flat = ~(std > 1e-12 * np.maximum(scale, 1e-300))
    mean = np.where(numeric, mean_y * scale, 0.0)
    std = np.where(numeric & ~flat, std, 1.0)
    return Standardisation(tuple(float(m) for m in mean), tuple(float(s) for s in std))
