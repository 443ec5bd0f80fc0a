"""crypto.entropy: the participant's private stream."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest

from crypto.entropy import SecureStream
from crypto.errors import CryptoError, SecretPicklingError


def test_two_streams_never_agree_and_draws_never_repeat() -> None:
    a, b = SecureStream(), SecureStream()
    first = a.uint64(64)
    assert not np.array_equal(first, b.uint64(64))
    assert not np.array_equal(first, a.uint64(64))
    assert a.words_drawn == 128 and not a.reproducible


def test_insecure_stream_is_a_function_of_its_seed_and_label() -> None:
    one = SecureStream.insecure_from_seed(b"seed", label=b"p1").uint64(8)
    assert np.array_equal(one, SecureStream.insecure_from_seed(b"seed", label=b"p1").uint64(8))
    assert not np.array_equal(one, SecureStream.insecure_from_seed(b"seed", label=b"p2").uint64(8))
    assert SecureStream.insecure_from_seed(b"seed", label=b"p1").reproducible


def test_stream_is_secret() -> None:
    s = SecureStream()
    assert "hidden" in repr(s)
    with pytest.raises(SecretPicklingError):
        pickle.dumps(s)
    with pytest.raises(SecretPicklingError):
        copy.deepcopy(s)


def test_bernoulli_rate_and_bounds() -> None:
    s = SecureStream()
    draws = s.bernoulli(0.25, 200_000)
    assert abs(draws.mean() - 0.25) < 0.005  # 5 sigma = 0.0048
    assert s.bernoulli(0.0, 100).sum() == 0 and s.bernoulli(1.0, 100).all()
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(CryptoError):
            s.bernoulli(bad, 3)
    with pytest.raises(CryptoError):
        s.uint64(-1)
