"""The ``[trust]`` section."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from crypto.hpke import Kem


class VotingRule(str, Enum):
    NEAREST_NEIGHBOUR = "nearest_neighbour"  # each votes for its nearest; plurality wins
    KRUM = "krum"  # lowest sum of distances to its n - f - 2 nearest
    VALIDATION = "validation"  # each scores the others' models on its own records (plaintext)


class Difference(str, Enum):
    RELATIVE_L2 = "relative_l2"
    COSINE = "cosine"


class ThresholdRule(str, Enum):
    FIXED = "fixed"
    ROBUST = "robust"  # median + k * MAD of the group's differences


class ExclusionPolicy(str, Enum):
    ROUNDS = "rounds"  # excluded for `exclude_rounds` iterations
    PERMANENT = "permanent"
    NONE = "none"  # left out of that aggregate only


@dataclass(frozen=True)
class TrustConfig:
    enabled: bool = False
    voting: VotingRule = VotingRule.NEAREST_NEIGHBOUR
    difference: Difference = Difference.COSINE
    threshold_rule: ThresholdRule = ThresholdRule.ROBUST
    threshold: float = 1.0  # fixed threshold, or the floor under the robust one
    mad_k: float = 3.0
    norm_ratio: float = 3.0  # also flag a norm >= this x the group's median norm (0: off)
    sketch_dim: int = 256  # 0: raw parameters (P6 baseline, plaintext mode)
    policy: ExclusionPolicy = ExclusionPolicy.ROUNDS
    exclude_rounds: int = 3
    strikes: int = 2  # flagged iterations (within strike_window) before a participant is marked
    strike_window: int = 5
    krum_f: int = 0  # assumed attackers for Krum (0: a third of the group, rounded down)
    duplicate_ratio: float = 0.1  # screen pairs closer than this x median distance (0: off)
    central_ratio: float = 0.4  # screen updates this much nearer the centre (0: off)
    align_floor: float = -0.3  # screen cosines with the others' median below this (-1: off)
    kem: Kem = Kem.X25519

    def problems(self) -> list[str]:
        from securepool.config_loader import check_float

        out = check_float("threshold", self.threshold, gt=0)
        out += check_float("mad_k", self.mad_k, gt=0)
        out += check_float("norm_ratio", self.norm_ratio, ge=0)
        if self.sketch_dim < 0:
            out.append(f"sketch_dim must be >= 0, got {self.sketch_dim}")
        if self.exclude_rounds < 1:
            out.append(f"exclude_rounds must be >= 1, got {self.exclude_rounds}")
        if self.strikes < 1:
            out.append(f"strikes must be >= 1, got {self.strikes}")
        if self.strike_window < self.strikes:
            out.append(f"strike_window ({self.strike_window}) must be >= strikes ({self.strikes})")
        out += check_float("duplicate_ratio", self.duplicate_ratio, ge=0, lt=1)
        out += check_float("central_ratio", self.central_ratio, ge=0, lt=1)
        out += check_float("align_floor", self.align_floor, ge=-1, le=0)
        if self.krum_f < 0:
            out.append(f"krum_f must be >= 0, got {self.krum_f}")
        return out
