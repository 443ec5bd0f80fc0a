"""Fixed-point encoding of float vectors into Z_{2^k} (k = 32 or 64) for masking.

Values are clipped to [-clip, clip], multiplied by ``scale``, stochastically rounded to
an integer with randomness from the CSPRNG (so the rounding is unbiased and reveals
nothing), and stored mod 2^k as uint32/uint64 (two's complement).

Wrapping arithmetic: numpy's uint32/uint64 ``+``, ``-`` and ``+=`` wrap mod 2^k
silently, which is exactly the ring the masks live in: adding and later subtracting a
mask, in any order, cancels exactly. So a sum of encodings *computed in the same
dtype* (``total += enc`` into a uint32/uint64 accumulator, or :func:`wrapping_sum`)
decodes to the sum of the encoded values, as long as the true integer sum lies in
[-2^(k-1), 2^(k-1)): that is what :func:`check_headroom` guarantees up front. Beware
``np.sum(stack, axis=0)`` on uint32: numpy widens the accumulator to uint64, so the
result has the wrong dtype (decode refuses it; reduce with ``dtype=spec.dtype``).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction
from typing import Final

import numpy as np
from numpy.typing import NDArray

from crypto._validate import require_int
from crypto.errors import CryptoTypeError, EncodingError
from crypto.prg import expand_mask

BITS: Final = (32, 64)
FLOAT_EXACT_BITS: Final = 53  # integers below 2^53 convert to float64 exactly
_ROUND_LABEL: Final = b"securepool/fixedpoint/round/v1"


@dataclass(frozen=True)
class FixedPointSpec:
    """How floats map into Z_{2^bits}: ``integer = round(clip(value) * scale)``.

    ``bits`` is 32 or 64; ``scale`` (> 0, finite) is the multiplier, so the quantisation
    step is ``1 / scale``; ``clip`` (> 0, finite) bounds every encoded value's magnitude.
    Prefer :func:`spec_for`, which picks the finest power-of-two scale that is safe for
    a group size. Invalid values raise EncodingError (CryptoTypeError for a non-number);
    a spec whose single clipped value would not fit the signed range is refused.

    Security: a spec is public (every participant and the coordinator must use the
    same one); a valid spec alone does not make a sum safe: run :func:`check_headroom`
    for the group size, or build the spec with :func:`spec_for`.
    """

    bits: int
    scale: float
    clip: float

    def __post_init__(self) -> None:
        if isinstance(self.bits, bool) or self.bits not in BITS:
            raise EncodingError(f"bits must be 32 or 64, got {self.bits!r}")
        for name in ("scale", "clip"):
            object.__setattr__(self, name, _positive(name, getattr(self, name)))
        if _worst_summand(self, 1.0) >= 2 ** (self.bits - 1):
            raise EncodingError(
                f"headroom: clip {self.clip:g} x scale {self.scale:g} + 1 does not fit a signed "
                f"{self.bits}-bit integer even for a single value"
            )

    @property
    def dtype(self) -> type[np.uint32] | type[np.uint64]:
        """The unsigned numpy type encodings have: uint32 or uint64."""
        return np.uint32 if self.bits == 32 else np.uint64

    @property
    def step(self) -> float:
        """The quantisation step 1/scale: the largest rounding error of one value."""
        return 1.0 / self.scale


def check_headroom(spec: FixedPointSpec, *, n_summands: int, max_weight: float = 1.0) -> None:
    """Raise EncodingError unless ``n_summands * (clip * max_weight * scale + 1) < 2^(bits-1)``.

    Each summand's integer is at most ``clip * max_weight * scale`` in magnitude plus one
    unit from rounding up; ``max_weight`` is the factor by which a summand may exceed
    ``spec.clip`` (1 when the encoded values themselves are clipped to ``spec.clip``).
    A ``max_weight`` below 1 is the caller's promise that every summand is at most
    ``clip * max_weight`` (encode only clips to ``clip``, it cannot enforce that).
    Evaluated in exact rational arithmetic, so there is no float slack at the boundary.

    Security: without this check a large group or large values wrap mod 2^bits silently
    and the decoded aggregate is wrong (Flower returned an error of 9.93 at n = 1030):
    a correctness failure that also lets one participant steer the aggregate by wrapping.
    When it passes, no sum of ``n_summands`` such encodings can wrap; it is tight to
    within one rounding unit per summand (for an integer ``clip * scale`` the first
    failing group size is exactly the one where ``n`` values of ``+clip`` wrap). Bad
    ``n_summands`` (< 1, not an int) or ``max_weight`` (not positive and finite) raise
    EncodingError / CryptoTypeError.
    """
    n = require_int("n_summands", n_summands)
    if n < 1:
        raise EncodingError(f"n_summands must be >= 1, got {n}")
    weight = _positive("max_weight", max_weight)
    worst = n * _worst_summand(spec, weight)
    if worst >= 2 ** (spec.bits - 1):
        raise EncodingError(
            f"headroom: {n} summands x (clip {spec.clip:g} x weight {weight:g} x scale "
            f"{spec.scale:g} + 1) = {float(worst):.4g} does not fit a signed {spec.bits}-bit "
            f"sum (limit 2^{spec.bits - 1}); lower the scale, the clip or the group size"
        )


def spec_for(*, bits: int, clip: float, n_summands: int, max_weight: float = 1.0) -> FixedPointSpec:
    """The spec with the largest power-of-two scale that passes :func:`check_headroom`.

    Two further caps, both needed for correctness: the spec must hold a single clipped
    value (``clip * scale + 1 < 2^(bits-1)``, which binds only for ``max_weight < 1``);
    and for ``bits = 64`` the worst-case sum stays below 2^53 (``n_summands * (clip *
    max_weight * scale + 1) < 2^53``), because :func:`decode` converts the integer sum
    to float64, exact only below 2^53 (float inputs carry no more precision anyway). A
    power of two makes ``value * scale`` and the division in decode exact.

    Security: the result always passes :func:`check_headroom` for ``n_summands``, so
    sums of that many encodings never wrap. EncodingError if no positive scale can work
    (``n_summands >= 2^(bits-1)``) or the arguments are not positive and finite.
    """
    if isinstance(bits, bool) or bits not in BITS:
        raise EncodingError(f"bits must be 32 or 64, got {bits!r}")
    n = require_int("n_summands", n_summands)
    if n < 1:
        raise EncodingError(f"n_summands must be >= 1, got {n}")
    clip_f, weight = _positive("clip", clip), _positive("max_weight", max_weight)
    limit = 2 ** min(bits - 1, FLOAT_EXACT_BITS)
    room = Fraction(limit, n) - 1  # need clip * weight * scale < room
    if room <= 0:
        raise EncodingError(f"{n} summands leave no room in a {bits}-bit sum for any scale")
    exponent = min(
        _largest_exponent(Fraction(clip_f) * Fraction(weight), room),
        _largest_exponent(Fraction(clip_f), Fraction(2 ** (bits - 1)) - 1),
    )
    if not -1074 <= exponent <= 1023:
        raise EncodingError(f"clip {clip} x weight {max_weight} needs a scale of 2^{exponent}")
    spec = FixedPointSpec(bits=bits, scale=math.ldexp(1.0, exponent), clip=clip_f)
    check_headroom(spec, n_summands=n, max_weight=max_weight)
    return spec


def _largest_exponent(span: Fraction, room: Fraction) -> int:
    """The largest integer e with span * 2^e < room (span, room > 0), exactly."""
    exponent = math.floor(math.log2(room) - math.log2(span))  # a float estimate, then exact
    while span * Fraction(2) ** (exponent + 1) < room:
        exponent += 1
    while span * Fraction(2) ** exponent >= room:
        exponent -= 1
    return exponent


def encode(
    values: NDArray[np.floating], spec: FixedPointSpec, *, seed: bytes
) -> NDArray[np.unsignedinteger]:
    """Clip, scale, round stochastically, reduce mod 2^bits; same shape, ``spec.dtype``.

    Rounding: with ``s = clip(v) * scale``, the result is ``floor(s) + 1`` with
    probability ``s - floor(s)`` and ``floor(s)`` otherwise, so it is unbiased and
    within one step of ``s``. Accepts any real float or integer array.

    Security: the rounding randomness is :func:`crypto.prg.expand_mask` of ``seed``
    under its own label, never numpy's RNG: it cannot be predicted or steered, so the
    rounding adds no exploitable bias to the aggregate. Use a fresh secret 32-byte seed
    per call (``os.urandom(32)``); reusing one just makes the rounding repeatable.
    NaN or infinity raises EncodingError (silently clipping them would hide a diverged
    or malicious update); non-real dtypes raise CryptoTypeError; a seed that is not
    32 bytes raises KeyMaterialError. Encoding hides nothing by itself: mask it.
    """
    v = np.asarray(values)
    if v.dtype.kind not in "fiu":
        raise CryptoTypeError(f"values must be a real float or integer array, got {v.dtype}")
    v = v.astype(np.float64, copy=False)
    finite = np.isfinite(v)
    if not finite.all():
        first = int(np.argmin(finite.ravel()))
        bad = int(finite.size - np.count_nonzero(finite))
        raise EncodingError(f"cannot encode NaN or infinity ({bad} value(s), first at {first})")
    # Few temporaries on purpose: a fresh array of 10^5+ elements costs more in page
    # faults than its arithmetic, so the steps run in place on two buffers.
    scaled = np.clip(v, -spec.clip, spec.clip)
    scaled *= spec.scale
    ints = np.empty(v.shape, dtype=np.int64)
    np.floor(scaled, out=ints, casting="unsafe")  # exact: |scaled| < 2^53
    scaled -= ints  # now the fractional part f, in [0, 1), exact in float64
    scaled *= 2.0**53  # f * 2^53: still exact (a power of two)
    words = expand_mask(seed, label=_ROUND_LABEL, length=v.size, dtype=np.uint64)
    words >>= np.uint64(11)  # 53 random bits r, uniform on [0, 2^53)
    # round up with probability f: r < f * 2^53 (r < 2^53 converts to a double exactly)
    ints += words.view(np.int64).reshape(v.shape) < scaled
    if spec.bits == 64:
        return ints.view(np.uint64)  # two's complement: the same bits, no copy
    encoded: NDArray[np.unsignedinteger] = ints.astype(spec.dtype)  # two's complement wrap
    return encoded


def decode(values: NDArray[np.unsignedinteger], spec: FixedPointSpec) -> NDArray[np.float64]:
    """Interpret as signed two's complement integers and divide by ``spec.scale``.

    Works on one encoding or on a wrapping sum of many (computed in ``spec.dtype``):
    the sum decodes to the sum of the encoded values whenever :func:`check_headroom`
    passed for that many summands.

    Security: decoding is public arithmetic; it checks only that ``values`` has exactly
    ``spec.dtype`` (EncodingError otherwise: a uint64 array under a 32-bit spec is
    usually a numpy-widened sum, and reading it as-is would be silently wrong). It
    cannot detect a sum that wrapped; that is what the headroom check prevents.
    """
    arr = np.asarray(values)
    if arr.dtype != np.dtype(spec.dtype):
        raise EncodingError(
            f"expected {np.dtype(spec.dtype)} for a {spec.bits}-bit spec, got {arr.dtype} "
            "(np.sum widens uint32 to uint64: sum with dtype=spec.dtype or wrapping_sum)"
        )
    signed = arr.view(np.int32 if spec.bits == 32 else np.int64)
    out: NDArray[np.float64] = signed.astype(np.float64) / spec.scale
    return out


def wrapping_sum(
    encodings: Iterable[NDArray[np.unsignedinteger]], spec: FixedPointSpec
) -> NDArray[np.unsignedinteger]:
    """The element-wise sum of equally shaped encodings, mod 2^bits, in ``spec.dtype``.

    Security: pure arithmetic in the ring; it cannot see overflow of the true sum, so
    run :func:`check_headroom` for the number of summands first. Arrays of another
    dtype raise EncodingError (they would not wrap the same way); an empty iterable or
    mismatched shapes raise EncodingError.
    """
    total: NDArray[np.unsignedinteger] | None = None
    dtype = np.dtype(spec.dtype)
    for count, enc in enumerate(encodings):
        arr = np.asarray(enc)
        if arr.dtype != dtype:
            raise EncodingError(f"summand {count} has dtype {arr.dtype}, expected {dtype}")
        if total is None:
            total = arr.copy()
        elif arr.shape != total.shape:
            raise EncodingError(f"summand {count} has shape {arr.shape}, expected {total.shape}")
        else:
            total += arr  # wraps mod 2^bits
    if total is None:
        raise EncodingError("wrapping_sum needs at least one encoding")
    return total


def _positive(name: str, value: object) -> float:
    """``value`` as a float if it is a real number > 0 and finite; else a typed error."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise CryptoTypeError(f"{name} must be a real number, got {type(value).__name__}")
    number = float(value)
    if not (math.isfinite(number) and number > 0):
        raise EncodingError(f"{name} must be positive and finite, got {value!r}")
    return number


def _worst_summand(spec: FixedPointSpec, max_weight: float) -> Fraction:
    """clip * max_weight * scale + 1, exactly: the largest magnitude of one summand."""
    return Fraction(spec.clip) * Fraction(max_weight) * Fraction(spec.scale) + 1
