"""Fixed-point encoding: error bounds, wrapping sums, the headroom check (and the wrap it
prevents), unbiased CSPRNG rounding, and every bad input."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crypto.errors import CryptoTypeError, EncodingError, KeyMaterialError
from crypto.fixedpoint import (
    FixedPointSpec,
    check_headroom,
    decode,
    encode,
    spec_for,
    wrapping_sum,
)
from crypto.prg import expand_mask


def _n_fold(encoded: np.ndarray, n: int) -> np.ndarray:
    """n copies summed in the ring: multiplication wraps exactly like n additions."""
    return encoded * encoded.dtype.type(n)


@settings(deadline=None, max_examples=40)
@given(
    bits=st.sampled_from([32, 64]),
    n=st.integers(1, 120),
    clip=st.floats(1e-3, 1e3),
    seed=st.binary(min_size=32, max_size=32),
)
def test_encode_decode_error_and_sum_error_are_bounded(
    bits: int, n: int, clip: float, seed: bytes
) -> None:
    spec = spec_for(bits=bits, clip=clip, n_summands=n)
    values = np.frombuffer(expand_mask(seed, label=b"test/values", length=n * 8), dtype=np.uint32)
    values = (values.astype(np.float64) / 2**32 * 3 - 1.5).reshape(n, 8) * clip  # some clip
    clipped = np.clip(values, -clip, clip)
    encodings = [encode(row, spec, seed=os.urandom(32)) for row in values]
    for row, enc in zip(clipped, encodings, strict=True):
        assert enc.dtype == np.dtype(spec.dtype) and enc.shape == (8,)
        assert np.all(np.abs(decode(enc, spec) - row) <= spec.step)
    total = wrapping_sum(encodings, spec)
    exact = np.array([math.fsum(clipped[:, i]) for i in range(8)])
    assert np.all(np.abs(decode(total, spec) - exact) <= n * spec.step)


def test_sum_of_many_encodings_wraps_through_and_back() -> None:
    """Masked inputs are uniform in the ring, so partial sums wrap many times; the final
    sum still decodes exactly (wrapping is the point, not a bug)."""
    spec = spec_for(bits=32, clip=1.0, n_summands=50)
    values = np.linspace(-1, 1, 50 * 4).reshape(50, 4)
    total = np.zeros(4, dtype=np.uint32)
    masks = [expand_mask(os.urandom(32), label=b"m", length=4) for _ in range(50)]
    for row, mask in zip(values, masks, strict=True):
        total += encode(row, spec, seed=os.urandom(32)) + mask  # wraps mod 2^32
    for mask in masks:
        total -= mask
    assert np.all(np.abs(decode(total, spec) - values.sum(axis=0)) <= 50 * spec.step)


@pytest.mark.parametrize(("bits", "log_scale"), [(32, 20), (32, 24), (64, 40), (64, 50)])
def test_headroom_boundary_is_exactly_where_the_sum_wraps(bits: int, log_scale: int) -> None:
    """With clip = 1 and scale = 2^k, n values of +1 sum to n * 2^k. The check passes
    up to the largest n that fits and raises at the very next n, which is the first n
    whose sum wraps to a negative number: the failure Flower returned silently."""
    spec = FixedPointSpec(bits=bits, scale=2.0**log_scale, clip=1.0)
    first_bad = 2 ** (bits - 1 - log_scale)
    check_headroom(spec, n_summands=first_bad - 1)
    with pytest.raises(EncodingError, match="headroom"):
        check_headroom(spec, n_summands=first_bad)
    one = encode(np.ones(3), spec, seed=bytes(32))
    assert decode(_n_fold(one, first_bad - 1), spec).tolist() == [first_bad - 1.0] * 3
    wrapped = decode(_n_fold(one, first_bad), spec)  # what the check prevents
    assert wrapped.tolist() == [-float(first_bad)] * 3


def test_flower_n_1030_case() -> None:
    """Flower's failure at n = 1030 (an error of 9.93): a 2^21 scale for clip 1 cannot
    hold 1030 summands in 32 bits. The check raises; spec_for picks a scale that fits."""
    unsafe = FixedPointSpec(bits=32, scale=2.0**21, clip=1.0)
    with pytest.raises(EncodingError, match="headroom"):
        check_headroom(unsafe, n_summands=1030)
    one = encode(np.ones(4), unsafe, seed=bytes(32))
    assert np.all(np.abs(decode(_n_fold(one, 1030), unsafe) - 1030) > 100)
    safe = spec_for(bits=32, clip=1.0, n_summands=1030)
    one = encode(np.ones(4), safe, seed=bytes(32))
    assert decode(_n_fold(one, 1030), safe).tolist() == [1030.0] * 4


@settings(deadline=None, max_examples=50)
@given(
    bits=st.sampled_from([32, 64]),
    log_scale=st.integers(-4, 60),
    log_clip=st.integers(-6, 6),
    log_weight=st.integers(0, 4),
    n=st.integers(1, 10**6),
)
def test_headroom_passes_only_when_no_sum_can_wrap(
    bits: int, log_scale: int, log_clip: int, log_weight: int, n: int
) -> None:
    """Sound: when the check passes, the extreme sums (every summand at +bound or at
    -bound, plus a rounding unit each) fit the signed range. Tight: when it raises, the
    extreme sum is within one rounding unit per summand of wrapping."""
    try:
        spec = FixedPointSpec(bits=bits, scale=2.0**log_scale, clip=2.0**log_clip)
    except EncodingError:
        return  # not even one value fits: refused at construction
    bound = 2 ** (log_clip + log_weight + log_scale)  # clip * max_weight * scale
    half = 2 ** (bits - 1)
    try:
        check_headroom(spec, n_summands=n, max_weight=2.0**log_weight)
    except EncodingError:
        assert n * bound + n >= half
        assert n * (bound + 1) >= half
    else:
        assert -half <= -n * (bound + 1) and n * (bound + 1) <= half - 1
        if log_weight == 0:  # the encodings themselves, summed in the ring
            for sign in (1.0, -1.0):
                enc = encode(np.array([sign * spec.clip]), spec, seed=bytes(32))
                total = decode(_n_fold(enc, n), spec)[0]  # no wrap: within n steps
                assert abs(total - sign * n * spec.clip) <= n * spec.step
                if log_clip + log_scale >= 0:  # an integer bound: no rounding at all
                    assert total == sign * n * spec.clip


@settings(deadline=None, max_examples=50)
@given(
    bits=st.sampled_from([32, 64]),
    clip=st.floats(1e-4, 1e4),
    weight=st.floats(0.1, 1e3),
    n=st.integers(1, 10**5),
)
def test_spec_for_picks_the_largest_safe_power_of_two(
    bits: int, clip: float, weight: float, n: int
) -> None:
    spec = spec_for(bits=bits, clip=clip, n_summands=n, max_weight=weight)
    assert math.frexp(spec.scale)[0] == 0.5  # a power of two
    check_headroom(spec, n_summands=n, max_weight=weight)
    if bits == 32:  # twice the scale fails the check (or cannot hold even one value)
        with pytest.raises(EncodingError, match="headroom"):
            finer = FixedPointSpec(bits=bits, scale=spec.scale * 2, clip=clip)
            check_headroom(finer, n_summands=n, max_weight=weight)
    else:  # capped so the worst-case sum converts to float64 exactly (below 2^53)
        assert n * (clip * weight * spec.scale + 1) < 2**53
        assert n * (clip * weight * spec.scale * 2 + 1) >= 2**53


def test_rounding_is_the_documented_csprng_construction() -> None:
    spec = FixedPointSpec(bits=32, scale=8.0, clip=4.0)
    values = np.linspace(-5, 5, 1001)
    seed = bytes(range(32))
    words = expand_mask(seed, label=b"securepool/fixedpoint/round/v1", length=1001,
                        dtype=np.uint64)  # fmt: skip
    uniform = (words >> np.uint64(11)).astype(np.float64) * 2.0**-53
    scaled = np.clip(values, -4, 4) * 8
    expected = (np.floor(scaled) + (uniform < scaled - np.floor(scaled))).astype(np.int64)
    assert np.array_equal(encode(values, spec, seed=seed).view(np.int32), expected)
    assert np.array_equal(encode(values, spec, seed=seed), encode(values, spec, seed=seed))
    assert not np.array_equal(encode(values, spec, seed=seed), encode(values, spec, seed=bytes(32)))


@pytest.mark.parametrize("value", [0.3, -0.3, 2.75, -7.125])
def test_stochastic_rounding_is_unbiased(value: float) -> None:
    spec = FixedPointSpec(bits=32, scale=1.0, clip=10.0)
    encoded = encode(np.full(100_000, value), spec, seed=os.urandom(32))
    decoded = decode(encoded, spec)
    assert set(np.unique(decoded)) <= {math.floor(value), math.floor(value) + 1}
    assert abs(decoded.mean() - value) < 0.01  # 7 standard deviations


def test_shapes_and_input_dtypes() -> None:
    spec = spec_for(bits=64, clip=2.0, n_summands=4)
    grid = np.arange(12, dtype=np.float32).reshape(3, 4) / 6 - 1
    enc = encode(grid, spec, seed=bytes(32))
    assert enc.shape == (3, 4) and enc.dtype == np.uint64
    assert np.all(np.abs(decode(enc, spec) - grid) <= spec.step)
    ints = encode(np.array([-2, 0, 1, 5]), spec, seed=bytes(32))
    assert decode(ints, spec).tolist() == [-2.0, 0.0, 1.0, 2.0]  # 5 clipped to 2
    assert encode(np.array([]), spec, seed=bytes(32)).shape == (0,)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_and_infinity_are_refused(bad: float) -> None:
    spec = spec_for(bits=32, clip=1.0, n_summands=2)
    with pytest.raises(EncodingError, match="NaN or infinity"):
        encode(np.array([0.0, bad, 1.0]), spec, seed=bytes(32))


def test_bad_value_types_and_seeds() -> None:
    spec = spec_for(bits=32, clip=1.0, n_summands=2)
    for values in (np.array([1 + 2j]), np.array([True]), np.array(["1.0"]), np.array([None])):
        with pytest.raises(CryptoTypeError):
            encode(values, spec, seed=bytes(32))
    for seed in (b"", bytes(31), "0" * 32):
        with pytest.raises(KeyMaterialError):
            encode(np.zeros(2), spec, seed=seed)  # type: ignore[arg-type]


def test_decode_refuses_other_dtypes_including_numpy_widened_sums() -> None:
    spec = spec_for(bits=32, clip=1.0, n_summands=8)
    stack = np.stack([encode(np.full(3, -0.5), spec, seed=os.urandom(32)) for _ in range(8)])
    widened = np.sum(stack, axis=0)  # numpy widens uint32 to uint64: no wrap at 2^32
    assert widened.dtype == np.uint64
    with pytest.raises(EncodingError, match="wrapping_sum"):
        decode(widened, spec)
    assert np.allclose(decode(np.sum(stack, axis=0, dtype=spec.dtype), spec), -4.0, atol=1e-5)
    assert np.array_equal(wrapping_sum(stack, spec), np.sum(stack, axis=0, dtype=np.uint32))
    for wrong in (stack[0].astype(np.int32), stack[0].astype(np.uint64), stack[0].astype(float)):
        with pytest.raises(EncodingError):
            decode(wrong, spec)


def test_wrapping_sum_rejects_bad_summands() -> None:
    spec = spec_for(bits=32, clip=1.0, n_summands=2)
    a = encode(np.zeros(3), spec, seed=bytes(32))
    with pytest.raises(EncodingError, match="at least one"):
        wrapping_sum([], spec)
    with pytest.raises(EncodingError, match="dtype"):
        wrapping_sum([a, a.astype(np.uint64)], spec)
    with pytest.raises(EncodingError, match="shape"):
        wrapping_sum([a, a[:2]], spec)
    wrapping_sum([a, a], spec)
    assert a.tolist() == encode(np.zeros(3), spec, seed=bytes(32)).tolist()  # not mutated


@pytest.mark.parametrize(
    "fields",
    [
        {"bits": 16, "scale": 1.0, "clip": 1.0},
        {"bits": True, "scale": 1.0, "clip": 1.0},
        {"bits": 32, "scale": 0.0, "clip": 1.0},
        {"bits": 32, "scale": -1.0, "clip": 1.0},
        {"bits": 32, "scale": math.nan, "clip": 1.0},
        {"bits": 32, "scale": math.inf, "clip": 1.0},
        {"bits": 32, "scale": 1.0, "clip": 0.0},
        {"bits": 32, "scale": 2.0**31, "clip": 1.0},  # one value already overflows
        {"bits": 64, "scale": 2.0**63, "clip": 1.0},
    ],
)
def test_bad_specs(fields: dict[str, object]) -> None:
    with pytest.raises(EncodingError):
        FixedPointSpec(**fields)  # type: ignore[arg-type]


def test_bad_headroom_and_spec_for_arguments() -> None:
    spec = spec_for(bits=32, clip=1.0, n_summands=2)
    for n in (0, -5):
        with pytest.raises(EncodingError):
            check_headroom(spec, n_summands=n)
    with pytest.raises(CryptoTypeError):
        check_headroom(spec, n_summands=2.5)  # type: ignore[arg-type]
    for weight in (0.0, -1.0, math.nan, math.inf):
        with pytest.raises(EncodingError):
            check_headroom(spec, n_summands=2, max_weight=weight)
    with pytest.raises(CryptoTypeError):
        FixedPointSpec(bits=32, scale="1", clip=1.0)  # type: ignore[arg-type]
    with pytest.raises(EncodingError, match="no room"):
        spec_for(bits=32, clip=1.0, n_summands=2**31)
    for kwargs in ({"bits": 48, "clip": 1.0}, {"bits": 32, "clip": 0.0},
                   {"bits": 32, "clip": 1.0, "max_weight": -1.0}):  # fmt: skip
        with pytest.raises(EncodingError):
            spec_for(n_summands=3, **kwargs)  # type: ignore[arg-type]
