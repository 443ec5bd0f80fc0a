"""CKKS parameter sets for additive-only aggregation, checked against the HE standard.

Aggregation needs no multiplicative depth: one *data* prime holds the values (the
ciphertext lives at that level) and one *special* prime is used only at key level,
where encryption happens before it is divided away (which keeps fresh noise small).
Each uploaded parameter then costs about ``data_bits / 2`` bytes before compression
(two polynomials of N coefficients carry N/2 slots).
"""

from __future__ import annotations

from dataclasses import dataclass

from crypto.errors import KeyMaterialError

#: Largest total coefficient-modulus size (bits) per ring degree for 128-bit classical
#: security with a ternary secret (HomomorphicEncryption.org standard, Table 1; the same
#: table SEAL enforces as ``sec_level_type.tc128``).
MAX_LOG_Q_128: dict[int, int] = {1024: 27, 2048: 54, 4096: 109, 8192: 218, 16384: 438, 32768: 881}


@dataclass(frozen=True)
class CKKSParameters:
    """A CKKS ring, modulus chain and encoding scale.

    ``coeff_mod_bit_sizes`` lists the primes' sizes in bits: every prime but the last is a
    data prime; the last is the special (key-switching) prime. ``scale_bits`` is log2 of
    the encoding scale.

    Security: construction raises :class:`KeyMaterialError` unless the parameters meet
    128-bit security per the HE standard table (:data:`MAX_LOG_Q_128`).
    """

    poly_modulus_degree: int
    coeff_mod_bit_sizes: tuple[int, ...]
    scale_bits: int

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise KeyMaterialError("invalid CKKS parameters: " + "; ".join(problems))

    def problems(self) -> list[str]:
        out: list[str] = []
        n = self.poly_modulus_degree
        if n not in MAX_LOG_Q_128:
            out.append(f"poly_modulus_degree must be one of {sorted(MAX_LOG_Q_128)}, got {n}")
            return out
        bits = self.coeff_mod_bit_sizes
        if len(bits) < 2:
            out.append("coeff_mod_bit_sizes needs a data prime and a special prime")
        if any(not 20 <= b <= 60 for b in bits):
            out.append(f"every prime must have 20..60 bits, got {list(bits)}")
        if sum(bits) > MAX_LOG_Q_128[n]:
            out.append(
                f"log Q = {sum(bits)} exceeds {MAX_LOG_Q_128[n]}, the 128-bit bound for N = {n}"
            )
        if bits and not 1 <= self.scale_bits < min(bits[:-1] or bits):
            out.append(f"scale_bits must be below the smallest data prime, got {self.scale_bits}")
        return out

    @property
    def slots(self) -> int:
        """Real values one ciphertext carries (N / 2)."""
        return self.poly_modulus_degree // 2

    @property
    def data_bits(self) -> int:
        """Bits of the modulus the ciphertext lives under (all primes but the special one)."""
        return sum(self.coeff_mod_bit_sizes[:-1])

    @property
    def log_q(self) -> int:
        return sum(self.coeff_mod_bit_sizes)

    @property
    def scale(self) -> float:
        return float(2**self.scale_bits)

    def headroom(self) -> float:
        """Largest |slot value| an aggregate may reach before it wraps modulo the data primes.

        Conservative: a constant vector puts its whole value into one coefficient.
        """
        return float(2 ** (self.data_bits - 1 - self.scale_bits))

    def label(self) -> str:
        chain = list(self.coeff_mod_bit_sizes)
        return f"N={self.poly_modulus_degree} {chain} scale=2^{self.scale_bits}"
