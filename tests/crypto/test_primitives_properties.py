"""Hypothesis properties: Shamir thresholds, fixed-point error bounds and headroom."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crypto.errors import CryptoError, EncodingError
from crypto.fixedpoint import FixedPointSpec, check_headroom, decode, encode, spec_for
from crypto.shamir import PRIME, shamir_combine, shamir_split


@settings(deadline=None, max_examples=40)
@given(
    n=st.integers(1, 12),
    data=st.data(),
    secret=st.binary(min_size=1, max_size=40),
)
def test_any_t_of_n_shares_reconstruct(n: int, data: st.DataObject, secret: bytes) -> None:
    t = data.draw(st.integers(1, n))
    xs = data.draw(st.lists(st.integers(1, 10_000), min_size=n, max_size=n, unique=True))
    shares = shamir_split([secret, secret[::-1]], threshold=t, xs=xs)
    subset = data.draw(st.lists(st.sampled_from(range(n)), min_size=t, max_size=n, unique=True))
    got = shamir_combine({xs[j]: shares[j][0] for j in subset}, threshold=t)
    assert got == secret
    got2 = shamir_combine({xs[j]: shares[j][1] for j in subset}, threshold=t)
    assert got2 == secret[::-1]
    if t > 1:
        with pytest.raises(CryptoError):
            shamir_combine({xs[j]: shares[j][0] for j in subset[: t - 1]}, threshold=t)


@settings(deadline=None, max_examples=30)
@given(candidate=st.integers(0, 2**24 - 1), x=st.integers(1, 1000))
def test_one_share_of_a_threshold_two_secret_fits_every_secret(candidate: int, x: int) -> None:
    """t - 1 shares reveal nothing: for ANY candidate secret there is a degree-1
    polynomial through the observed share, so the share cannot rule any secret out."""
    share = shamir_split([os.urandom(3)], threshold=2, xs=[x, x + 1])[0][0]
    y = int.from_bytes(share[-4:], "little")
    slope = (y - candidate) * pow(x, PRIME - 2, PRIME) % PRIME
    assert (candidate + slope * x) % PRIME == y


def test_shares_reject_tampering_and_mixing() -> None:
    shares = shamir_split([b"k" * 32], threshold=2, xs=[1, 2, 3])
    other = shamir_split([b"j" * 16], threshold=2, xs=[1, 2, 3])
    with pytest.raises(CryptoError):  # shares of secrets of different lengths mixed
        shamir_combine({1: shares[0][0], 2: other[1][0]}, threshold=2)
    with pytest.raises(CryptoError):  # one call shares secrets of one length only
        shamir_split([b"k" * 32, b"j" * 16], threshold=2, xs=[1, 2, 3])
    with pytest.raises(CryptoError):  # x of the key differs from the share's
        shamir_combine({1: shares[0][0], 5: shares[1][0]}, threshold=2)
    with pytest.raises(CryptoError):
        shamir_combine({1: shares[0][0][:-1], 2: shares[1][0]}, threshold=2)
    with pytest.raises(CryptoError):
        shamir_split([b"a"], threshold=3, xs=[1, 2])


@settings(deadline=None, max_examples=40)
@given(
    bits=st.sampled_from([32, 64]),
    n=st.integers(1, 200),
    clip=st.floats(0.01, 100.0),
    seed=st.integers(0, 2**31),
)
def test_encode_decode_error_is_bounded(bits: int, n: int, clip: float, seed: int) -> None:
    spec = spec_for(bits=bits, clip=clip, n_summands=n)
    rng = np.random.default_rng(seed)
    values = rng.uniform(-clip, clip, size=(n, 16))
    total = np.zeros(16, dtype=spec.dtype)
    for row in values:
        enc = encode(row, spec, seed=os.urandom(32))
        assert np.all(np.abs(decode(enc, spec) - row) <= spec.step)
        total += enc
    assert np.all(np.abs(decode(total, spec) - values.sum(axis=0)) <= n * spec.step)


def test_headroom_check_prevents_the_wrap_it_would_cause() -> None:
    n = 1030
    spec = FixedPointSpec(bits=32, scale=2.0**21, clip=1.0)
    with pytest.raises(EncodingError, match="headroom"):
        check_headroom(spec, n_summands=n)
    # what the check prevents: the unchecked sum silently wraps (Flower's failure mode)
    values = np.full(4, 1.0)
    total = np.zeros(4, dtype=np.uint32)
    for _ in range(n):
        total += encode(values, spec, seed=os.urandom(32))
    assert np.abs(decode(total, spec) - n).max() > 100
    # the scale spec_for picks for this group keeps the sum exact
    safe = spec_for(bits=32, clip=1.0, n_summands=n)
    total = np.zeros(4, dtype=np.uint32)
    for _ in range(n):
        total += encode(values, safe, seed=os.urandom(32))
    assert np.abs(decode(total, safe) - n).max() <= n * safe.step


def test_encode_rejects_nan_and_bad_specs() -> None:
    spec = spec_for(bits=32, clip=1.0, n_summands=2)
    with pytest.raises(EncodingError):
        encode(np.array([np.nan]), spec, seed=bytes(32))
    with pytest.raises(EncodingError):
        FixedPointSpec(bits=16, scale=1.0, clip=1.0)
    with pytest.raises(EncodingError):
        decode(np.zeros(2, dtype=np.uint64), spec)
