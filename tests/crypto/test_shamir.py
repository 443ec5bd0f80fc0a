"""Shamir sharing: frozen vectors, threshold properties, hiding, and every bad share."""

from __future__ import annotations

import itertools
import os
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import crypto.shamir as shamir_module
from crypto.errors import CryptoError, CryptoTypeError, ShareError
from crypto.shamir import (
    HEADER,
    PRIME,
    _inverse,
    _matmul_mod,
    _powers,
    shamir_combine,
    shamir_combine_many,
    shamir_split,
)

# Our own frozen vector: "SecAgg" = elements 0x536563, 0x416767 shared with threshold 3
# by f(x) = s + a1 x + a2 x^2, a1 = (5, 1000), a2 = (7, 2^30), at x = 1..4.
FROZEN = {
    1: bytes.fromhex("010006000000016f6553004f6b4140"),
    2: bytes.fromhex("0100060000000289655300396f4100"),
    3: bytes.fromhex("01000600000003b165530023734140"),
    4: bytes.fromhex("01000600000004e76553000f774100"),
}


def _share(x: int, length: int, values: list[int]) -> bytes:
    return HEADER.pack(1, length, x) + b"".join(struct.pack("<I", v) for v in values)


def _lagrange(points: dict[int, int], at: int) -> int:
    """Reference interpolation with Python integers (independent of the module)."""
    total = 0
    for xj, yj in points.items():
        num = den = 1
        for xk in points:
            if xk != xj:
                num = num * (at - xk) % PRIME
                den = den * (xj - xk) % PRIME
        total += yj * num * pow(den, -1, PRIME)
    return total % PRIME


def _elements(share: bytes) -> list[int]:
    return list(struct.unpack(f"<{(len(share) - HEADER.size) // 4}I", share[HEADER.size :]))


def test_frozen_vector_every_three_of_four_and_all_four() -> None:
    for subset in itertools.combinations(FROZEN, 3):
        assert shamir_combine({x: FROZEN[x] for x in subset}, threshold=3) == b"SecAgg"
    assert shamir_combine(FROZEN, threshold=3) == b"SecAgg"


def test_frozen_vector_threshold_two() -> None:
    s = 0x616263  # f(x) = "abc" + 5x
    share = {x: _share(x, 3, [(s + 5 * x) % PRIME]) for x in (1, 2, 7)}
    assert shamir_combine({1: share[1], 2: share[2]}, threshold=2) == b"abc"
    assert shamir_combine({7: share[7], 1: share[1]}, threshold=2) == b"abc"


def test_split_evaluates_the_polynomial_it_claims() -> None:
    """Shares are f(x) for a degree t-1 polynomial with f(0) = the secret's elements."""
    xs = [3, 9, 1000, PRIME - 1, 2**30]
    secret = os.urandom(30)
    shares = shamir_split([secret], threshold=4, xs=xs)
    points = {x: _elements(shares[j][0]) for j, x in enumerate(xs)}
    first4 = dict(itertools.islice(points.items(), 4))
    for e in range(10):
        column = {x: v[e] for x, v in first4.items()}
        assert _lagrange(column, 0) == int.from_bytes(secret[3 * e : 3 * e + 3], "big")
        assert _lagrange(column, xs[4]) == points[xs[4]][e]  # the 5th lies on the same f


@settings(deadline=None, max_examples=40)
@given(data=st.data(), n=st.integers(1, 9))
def test_any_t_of_n_shares_reconstruct(data: st.DataObject, n: int) -> None:
    t = data.draw(st.integers(1, n), label="t")
    xs = data.draw(st.lists(st.integers(1, PRIME - 1), min_size=n, max_size=n, unique=True))
    secrets = data.draw(st.lists(st.binary(max_size=40), min_size=1, max_size=3))
    shares = shamir_split(secrets, threshold=t, xs=xs)
    assert len(shares) == n and all(len(row) == len(secrets) for row in shares)
    subset = data.draw(st.lists(st.sampled_from(range(n)), min_size=t, max_size=n, unique=True))
    for s, secret in enumerate(secrets):
        assert shamir_combine({xs[j]: shares[j][s] for j in subset}, threshold=t) == secret
        if t > 1:
            with pytest.raises(ShareError, match="needed"):
                shamir_combine({xs[j]: shares[j][s] for j in subset[: t - 1]}, threshold=t)


@settings(deadline=None, max_examples=40)
@given(
    t=st.integers(2, 6),
    secret=st.binary(min_size=1, max_size=12),
    candidate_seed=st.binary(min_size=12, max_size=12),
)
def test_t_minus_1_shares_fit_every_candidate_secret(
    t: int, secret: bytes, candidate_seed: bytes
) -> None:
    """Information-theoretic hiding, checked in the field: whatever secret an attacker
    holding t-1 shares guesses, there is a degree t-1 polynomial through the guess and
    all t-1 shares. Completing the shares with that polynomial's value at a fresh point
    makes shamir_combine return the guess, so the t-1 shares cannot rule it out."""
    xs = list(range(1, t + 1))
    shares = shamir_split([secret], threshold=t, xs=xs)
    seen = {xs[j]: _elements(shares[j][0]) for j in range(t - 1)}  # the attacker's view
    candidate = candidate_seed[: len(secret)]
    guess = [int.from_bytes(candidate[i : i + 3].ljust(3, b"\x00"), "big") for i in
             range(0, len(secret), 3)]  # fmt: skip
    fresh = PRIME - 5  # any point the attacker does not hold
    forged = [
        _lagrange({0: guess[e], **{x: v[e] for x, v in seen.items()}}, fresh)
        for e in range(len(guess))
    ]
    completed = {x: shares[j][0] for j, x in enumerate(xs[: t - 1])}
    completed[fresh] = _share(fresh, len(secret), forged)
    assert shamir_combine(completed, threshold=t) == candidate


def test_extra_shares_are_checked_not_trusted() -> None:
    """Attack: one holder returns a corrupted share. With more than t shares the
    corruption is detected (Reed-Solomon parity); with exactly t it cannot be, and the
    result is simply wrong, which is why SecAgg seals shares with AEAD."""
    xs = [1, 2, 3, 4, 5, 6]
    secret = os.urandom(32)
    shares = [row[0] for row in shamir_split([secret], threshold=3, xs=xs)]
    for victim in range(6):
        values = _elements(shares[victim])
        values[4] = (values[4] + 1) % PRIME
        bad = dict(zip(xs, shares, strict=True))
        bad[xs[victim]] = _share(xs[victim], 32, values)
        with pytest.raises(ShareError, match="one polynomial"):
            shamir_combine(bad, threshold=3)
        if victim < 3:  # among the three used: undetectable with exactly t shares
            exact = {x: bad[x] for x in xs[:3]}
            try:
                result: bytes | None = shamir_combine(exact, threshold=3)
            except ShareError:  # or the wrong result left the 3-byte chunk range
                result = None
            assert result != secret


def test_shares_of_another_secret_are_detected() -> None:
    a = [row[0] for row in shamir_split([b"k" * 32], threshold=2, xs=[1, 2, 3])]
    b = [row[0] for row in shamir_split([b"j" * 32], threshold=2, xs=[1, 2, 3])]
    with pytest.raises(ShareError, match="one polynomial"):
        shamir_combine({1: a[0], 2: a[1], 3: b[2]}, threshold=2)


def test_large_threshold_and_extreme_elements_do_not_overflow() -> None:
    """The uint64 reduction argument, performed: entries p-1 everywhere, 300 terms."""
    a = np.full((3, 300), PRIME - 1, dtype=np.uint64)
    b = np.full((300, 4), PRIME - 1, dtype=np.uint64)
    b[7, 2] = 12345
    expected = [[sum(int(a[i, k]) * int(b[k, j]) for k in range(300)) % PRIME for j in range(4)]
                for i in range(3)]  # fmt: skip
    assert _matmul_mod(a, b).tolist() == expected
    xs = list(range(1, 261))
    secret = os.urandom(64)
    shares = shamir_split([secret], threshold=200, xs=xs)
    assert shamir_combine({x: shares[j][0] for j, x in enumerate(xs)}, threshold=200) == secret


def test_field_helpers_against_python_integers() -> None:
    x = np.asarray([1, 2, 12345, PRIME - 1, 2**30 + 7], dtype=np.uint64)
    for count in range(0, 12):
        expected = [[pow(int(v), k, PRIME) for k in range(count)] for v in x]
        assert _powers(x, count).tolist() == expected
    assert [int(v) * int(w) % PRIME for v, w in zip(x, _inverse(x), strict=True)] == [1] * 5
    # the batched unmasking's long vectors take the exponentiation path
    long = np.resize(x, 3001)
    assert long.size > shamir_module._FERMAT_FROM
    assert _inverse(long).tolist() == [pow(int(v), -1, PRIME) for v in long]


def test_coefficients_come_from_os_urandom(monkeypatch: pytest.MonkeyPatch) -> None:
    """The randomness source, shown: with os.urandom replaced by zeros every coefficient
    is 0 and each share equals the secret; a word of 2^31-1 is rejected, not reduced."""
    calls: list[int] = []

    def fake_urandom(n: int) -> bytes:
        calls.append(n)
        return b"\xff\xff\xff\x7f" + bytes(n - 4) if len(calls) == 1 else bytes(n)

    monkeypatch.setattr(shamir_module.os, "urandom", fake_urandom)
    shares = shamir_split([b"abcdef"], threshold=3, xs=[1, 2, 3])
    assert calls
    assert all(_elements(row[0]) == [0x616263, 0x646566] for row in shares)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"threshold": 0, "xs": [1, 2]}, "threshold"),
        ({"threshold": 3, "xs": [1, 2]}, "exceeds"),
        ({"threshold": 2**17 + 1, "xs": [1, 2]}, "threshold"),
        ({"threshold": 1, "xs": []}, "at least one"),
        ({"threshold": 2, "xs": [1, 1, 2]}, "distinct"),
        ({"threshold": 1, "xs": [0, 1]}, "1.."),
        ({"threshold": 1, "xs": [PRIME]}, "1.."),
        ({"threshold": 1, "xs": [-3]}, "1.."),
    ],
)
def test_split_rejects_bad_thresholds_and_points(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ShareError, match=match):
        shamir_split([b"s"], **kwargs)  # type: ignore[arg-type]


def test_split_rejects_bad_types_and_sizes() -> None:
    with pytest.raises(CryptoTypeError):
        shamir_split(["secret"], threshold=1, xs=[1])  # type: ignore[list-item]
    with pytest.raises(CryptoTypeError):
        shamir_split([b"s"], threshold=1, xs=[1.0])  # type: ignore[list-item]
    with pytest.raises(CryptoTypeError):
        shamir_split([b"s"], threshold=True, xs=[1])
    with pytest.raises(ShareError, match="65535"):
        shamir_split([bytes(65536)], threshold=1, xs=[1])
    assert shamir_split([], threshold=1, xs=[1, 2]) == [[], []]
    assert shamir_split([b"s"], threshold=1, xs=[np.int64(5)])[0][0][3:7] == b"\x00\x00\x00\x05"


def test_combine_rejects_malformed_shares() -> None:
    rows = shamir_split([b"k" * 32], threshold=2, xs=[1, 2, 3])
    shares = {x: row[0] for x, row in zip([1, 2, 3], rows, strict=True)}
    good2 = shares[2]
    cases: list[tuple[dict[int, bytes], str]] = [
        ({1: shares[1]}, "needed"),
        ({1: shares[1], 5: good2}, "made for x=2"),
        ({1: shares[1], 2: good2[:-1]}, "expected 51"),
        ({1: shares[1], 2: good2 + b"\x00"}, "expected 51"),
        ({1: shares[1], 2: good2[:5]}, "header"),
        ({1: shares[1], 2: b"\x02" + good2[1:]}, "version"),
        ({1: shares[1], 2: good2[:7] + b"\xff\xff\xff\x7f" + good2[11:]}, "outside the field"),
        ({1: shares[1], 2: shamir_split([b"j" * 16], threshold=1, xs=[2])[0][0]}, "mixed"),
        ({0: shares[1], 2: good2}, "1.."),
    ]
    for given_shares, match in cases:
        with pytest.raises(ShareError, match=match):
            shamir_combine(given_shares, threshold=2)
    with pytest.raises(ShareError):
        shamir_combine(shares, threshold=0)
    with pytest.raises(CryptoTypeError):
        shamir_combine({1: shares[1], 2: good2.hex()}, threshold=2)  # type: ignore[dict-item]
    with pytest.raises(CryptoTypeError):
        shamir_combine({True: shares[1], 2: good2}, threshold=2)
    with pytest.raises(CryptoError):  # the whole family is catchable at once
        shamir_combine({}, threshold=1)


def test_result_outside_the_chunk_range_is_refused() -> None:
    """Two valid-looking shares whose interpolation at 0 is >= 2^24: never truncated."""
    with pytest.raises(ShareError, match="range"):
        shamir_combine({1: _share(1, 3, [2**25]), 2: _share(2, 3, [2**25])}, threshold=2)


def test_threshold_one_is_the_secret_itself() -> None:
    """Documented: t = 1 hides nothing."""
    shares = shamir_split([b"abc"], threshold=1, xs=[4, 9])
    assert _elements(shares[0][0]) == _elements(shares[1][0]) == [0x616263]
    assert shamir_combine({9: shares[1][0]}, threshold=1) == b"abc"


def _outcome(shares: dict[int, bytes], t: int) -> bytes | str:
    try:
        return shamir_combine(shares, threshold=t)
    except ShareError as exc:
        return f"ShareError: {exc}"


def test_combine_many_is_combine_of_each_group_even_among_bad_groups() -> None:
    """The batched interpolation (the unmasking step's) gives every group exactly what
    shamir_combine gives it: the secret, or the same ShareError. Attack: corrupted,
    substituted, out-of-field, too few and out-of-range shares in some groups of one
    batch (same share count and length as honest groups, so they share a numpy pass):
    each is refused on its own and no honest group's secret changes."""
    t, xs = 4, list(range(1, 10))
    groups: list[dict[int, bytes]] = []
    for k in range(24):
        secret = os.urandom(32 if k % 3 else 5)
        rows = shamir_split([secret], threshold=t, xs=xs)
        shares = {x: rows[j][0] for j, x in enumerate(xs)}
        take = xs[k % 5 :] if k % 2 else xs[: t + k % 6]  # share counts t..9
        groups.append({x: shares[x] for x in take})
    honest = [dict(g) for g in groups]
    first = min(groups[1])
    values = _elements(groups[1][first])
    values[0] = (values[0] + 1) % PRIME
    groups[1][first] = _share(first, 32, values)  # corrupted: off the polynomial
    other = shamir_split([b"z" * 32], threshold=t, xs=xs)
    last = max(groups[5])
    groups[5][last] = other[xs.index(last)][0]  # another secret's share
    groups[7] = dict(list(groups[7].items())[: t - 1])  # too few
    bad = _elements(groups[8][min(groups[8])])
    bad[1] = PRIME  # outside the field
    groups[8][min(groups[8])] = _share(min(groups[8]), 32, bad)
    a, b = sorted(groups[10])[:2]
    groups[10][a], groups[10][b] = groups[10][b], groups[10][a]  # made for another x
    v = min(groups[11])
    groups[11][v] = bytes([2]) + groups[11][v][1:]  # another version
    w = min(groups[13])
    groups[13][w] = groups[13][w][:3] + bytes([1]) + groups[13][w][4:]  # embedded x wrong
    groups.append(
        {
            1: _share(1, 3, [2**25]),
            2: _share(2, 3, [2**25]),
            3: _share(3, 3, [2**25]),
            4: _share(4, 3, [2**25]),
        }
    )  # out of range
    got = shamir_combine_many(groups, threshold=t)
    assert len(got) == len(groups)
    for group, result in zip(groups, got, strict=True):
        expected = _outcome(group, t)
        if isinstance(result, ShareError):
            assert expected == f"ShareError: {result}"
        else:
            assert result == expected
    for k in (1, 5, 7, 8, 10, 11, 13, len(groups) - 1):
        assert isinstance(got[k], ShareError)
    for k in set(range(24)) - {1, 5, 7, 8, 10, 11, 13}:
        assert got[k] == shamir_combine(honest[k], threshold=t)
    assert shamir_combine_many([], threshold=t) == []
    with pytest.raises(ShareError, match="threshold"):
        shamir_combine_many(groups, threshold=0)
