"""Settings of HE-mode aggregation (the ``[aggregation.he]`` config table).

Defaults come from the parameter sweep in benchmarks/RESULTS.md (HE section): the smallest
parameters with 128-bit security, <= 30 bytes per uploaded parameter and a relative
error <= 1e-6 on the weighted mean (ring degree, one data prime, one special prime).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from crypto.ckks.params import MAX_LOG_Q_128, CKKSParameters
from crypto.errors import ConfigError, KeyMaterialError


@dataclass(frozen=True)
class HESettings:
    """Public parameters every role of an HE session agrees on.

    * ``poly_modulus_degree``, ``coeff_mod_bit_sizes``, ``scale_bits``: the CKKS ring,
      modulus chain (data primes then the special prime) and encoding scale.
    * ``min_group_size``: the key holder decrypts only aggregates of at least this many
      distinct, signed contributions.
    * ``weight_unit``: a public normaliser. Each participant encrypts
      ``(weight / weight_unit) * update`` and ``weight / weight_unit``; the unit cancels
      in the mean and only keeps values near 1 (set it near a typical sample count).
    * ``max_abs_value``: bound on every normalised value a participant encrypts (its
      weighted update entries and its normalised weight); a participant over it is
      excluded for the round with the reason. ``max_contributors`` x ``max_abs_value``
      must fit the CKKS headroom, so an aggregate never wraps.
    * ``tag_slots``, ``tag_tolerance``: contribution-tag slots per ciphertext and the
      decryption tolerance the key holder allows on them (see protocols/he/keyholder.py).
    * ``workers``: threads the coordinator checks and adds uploads with (0, the
      default: one per CPU core, at most 4; 1: in the calling thread).
    * ``fold_dim``: the HE binding of the trust check (protocols/he/fold.py): the
      slots each participant's ciphertext is folded to for the auditor, a power of two
      (0: no fold, the layout of protocols/he/layout.py without reserved columns). The
      run wiring sets it to ``trust.sketch_dim`` when the trust check is on.
    * ``equal_weights``: every participant's weight is 1 (the run wiring sets it from
      ``aggregation.weighting``): the key holder flags a fold whose weight is not
      ``1 / weight_unit`` and refuses an aggregate whose total weight is not one per
      contributor.
    """

    poly_modulus_degree: int = 8192
    coeff_mod_bit_sizes: tuple[int, ...] = (50, 60)
    scale_bits: int = 39
    min_group_size: int = 3
    weight_unit: float = 100.0
    max_abs_value: float = 8.0
    max_contributors: int = 64
    tag_slots: int = 8
    tag_tolerance: float = 1e-5
    workers: int = 0
    fold_dim: int = 0
    #: every contribution weighs 1 (``aggregation.weighting = "equal"``): the key holder
    #: checks each fold's weight and each aggregate's total against it
    equal_weights: bool = False

    def problems(self) -> list[str]:
        out: list[str] = []
        params: CKKSParameters | None = None
        if self.poly_modulus_degree not in MAX_LOG_Q_128:
            out.append(f"poly_modulus_degree must be one of {sorted(MAX_LOG_Q_128)}")
        else:
            try:
                params = self.params
            except KeyMaterialError as exc:  # lists every parameter problem
                out.append(str(exc))
        if self.min_group_size < 3:
            out.append(f"min_group_size must be >= 3, got {self.min_group_size}")
        if self.max_contributors < self.min_group_size:
            out.append("max_contributors must be >= min_group_size")
        if not (math.isfinite(self.weight_unit) and self.weight_unit > 0):
            out.append(f"weight_unit must be positive, got {self.weight_unit}")
        if not (math.isfinite(self.max_abs_value) and self.max_abs_value >= 1.0):
            out.append(f"max_abs_value must be >= 1 (tags reach 1), got {self.max_abs_value}")
        if not 1 <= self.tag_slots <= 64:
            out.append(f"tag_slots must be in 1..64, got {self.tag_slots}")
        if not 0 < self.tag_tolerance < 0.01:
            out.append(f"tag_tolerance must be in (0, 0.01), got {self.tag_tolerance}")
        if self.workers < 0:
            out.append(f"workers must be >= 0, got {self.workers}")
        f = self.fold_dim
        if f < 0 or f & (f - 1) or (f and f < self.tag_slots + 2):
            out.append(
                f"fold_dim must be 0 or a power of two >= tag_slots + 2, got {self.fold_dim}"
            )
        if params is not None:
            if f > params.slots // 2:
                out.append(f"fold_dim must be at most slots / 2 = {params.slots // 2}")
            if self.tag_slots >= params.slots:
                out.append("tag_slots leave no room for data")
            peak = self.max_contributors * self.max_abs_value
            if peak > params.headroom():
                out.append(
                    f"max_contributors x max_abs_value = {peak:g} exceeds the CKKS headroom "
                    f"{params.headroom():g} of {params.label()}: lower scale_bits"
                )
        return out

    def check(self) -> None:
        """Raise :class:`ConfigError` listing every problem, if any."""
        problems = self.problems()
        if problems:
            raise ConfigError([f"aggregation.he: {p}" for p in problems])

    def threads(self) -> int:
        """The coordinator's summing threads: ``workers``, or one per core (at most 4)."""
        return self.workers or min(os.cpu_count() or 1, 4)

    @property
    def params(self) -> CKKSParameters:
        return CKKSParameters(
            poly_modulus_degree=self.poly_modulus_degree,
            coeff_mod_bit_sizes=tuple(self.coeff_mod_bit_sizes),
            scale_bits=self.scale_bits,
        )
