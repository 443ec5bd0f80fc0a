"""The batched reconstruction of the unmasking step against one-by-one combination.

``shamir_combine_many`` interpolates every group of one secret length together, however
many shares each group has (issue 26: it used to take one numpy pass per share count),
and checks extra shares by evaluating the polynomial of the first t at each of them.
These tests hold it to ``shamir_combine`` group by group (the same secret or the same
ShareError, message included) on random batches with attacks mixed in: a share moved off
the polynomial (among the first t or among the extras), another secret's share, an
element outside the field, a share made for another x, another version, a truncated
share, too few shares, and results outside the chunk range.
"""

from __future__ import annotations

import os
import struct

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from crypto.errors import ShareError
from crypto.shamir import (
    HEADER,
    PRIME,
    _inverse_columns,
    shamir_combine,
    shamir_combine_many,
    shamir_split,
)

ATTACKS = (
    "none",
    "off-polynomial-first",
    "off-polynomial-last",
    "other-secret",
    "outside-field",
    "other-x",
    "version",
    "truncated",
    "too-few",
    "out-of-range",
)


def _elements(share: bytes) -> list[int]:
    return list(struct.unpack(f"<{(len(share) - HEADER.size) // 4}I", share[HEADER.size :]))


def _share(x: int, length: int, values: list[int]) -> bytes:
    return HEADER.pack(1, length, x) + b"".join(struct.pack("<I", v) for v in values)


def _outcome(shares: dict[int, bytes], t: int) -> bytes | str:
    try:
        return shamir_combine(shares, threshold=t)
    except ShareError as exc:
        return f"ShareError: {exc}"


def _attacked(shares: dict[int, bytes], attack: str, t: int, length: int) -> dict[int, bytes]:
    """``shares`` with one attack mounted by the holder(s) it names."""
    out = dict(shares)
    xs = sorted(out)
    if attack in ("off-polynomial-first", "off-polynomial-last", "outside-field") and length:
        x = xs[0] if attack == "off-polynomial-first" else xs[-1]
        values = _elements(out[x])
        values[-1] = PRIME if attack == "outside-field" else (values[-1] + 1) % PRIME
        out[x] = _share(x, length, values)
    elif attack == "other-secret":
        other = shamir_split([os.urandom(length)], threshold=t, xs=xs)
        out[xs[-1]] = other[-1][0]
    elif attack == "other-x" and len(xs) > 1:
        out[xs[0]], out[xs[1]] = out[xs[1]], out[xs[0]]
    elif attack == "version":
        out[xs[0]] = b"\x02" + out[xs[0]][1:]
    elif attack == "truncated":
        out[xs[-1]] = out[xs[-1]][:-1]
    elif attack == "too-few":
        out = {x: out[x] for x in xs[: t - 1]}
    elif attack == "out-of-range" and length:
        # shares of a polynomial whose value at 0 is 2^25 in the last element: every
        # share checks out, the result does not fit a 3-byte chunk
        body = [(2**25 + 7 * x) % PRIME for x in xs]
        out = {x: _share(x, length, [*_elements(out[x])[:-1], body[k]]) for k, x in enumerate(xs)}
    return out


@settings(deadline=None, max_examples=60)
@given(data=st.data(), t=st.integers(1, 7))
def test_many_is_combine_of_each_group_under_attack(data: st.DataObject, t: int) -> None:
    groups: list[dict[int, bytes]] = []
    for _ in range(data.draw(st.integers(1, 10), label="groups")):
        count = data.draw(st.integers(t, t + 6), label="shares")
        xs = data.draw(
            st.lists(st.integers(1, PRIME - 1), min_size=count, max_size=count, unique=True),
            label="xs",
        )
        length = data.draw(st.sampled_from([0, 3, 5, 32]), label="length")
        rows = shamir_split([os.urandom(length)], threshold=t, xs=xs)
        shares = {x: rows[j][0] for j, x in enumerate(xs)}
        attack = data.draw(st.sampled_from(ATTACKS), label="attack")
        groups.append(_attacked(shares, attack, t, length))
    got = shamir_combine_many(groups, threshold=t)
    assert len(got) == len(groups)
    for group, result in zip(groups, got, strict=True):
        expected = _outcome(group, t)
        if isinstance(result, ShareError):
            assert f"ShareError: {result}" == expected
        else:
            assert result == expected


def test_an_unmasking_sized_batch_with_a_few_liars() -> None:
    """The shape of the unmasking step at n = 1000 (t = 43, 43 to 66 shares per
    secret, 32-byte secrets), one batch; some holders lie. Honest groups rebuild their
    secret, each lying group fails exactly as shamir_combine says, and an extra share
    moved off the polynomial is caught wherever it sits among the extras."""
    t, rng = 43, np.random.default_rng(7)
    secrets = [os.urandom(32) for _ in range(120)]
    groups = []
    for k, secret in enumerate(secrets):
        xs = sorted(rng.choice(np.arange(1, 1001), size=43 + k % 24, replace=False).tolist())
        rows = shamir_split([secret], threshold=t, xs=xs)
        groups.append({x: rows[j][0] for j, x in enumerate(xs)})
    liars = {5: 0, 17: -1, 40: 50, 77: 44, 101: 20}  # group -> index of the lying share
    for g, index in liars.items():
        x = sorted(groups[g])[index]
        values = _elements(groups[g][x])
        values[3] = (values[3] + 12345) % PRIME
        groups[g][x] = _share(x, 32, values)
    got = shamir_combine_many(groups, threshold=t)
    for g, (group, result) in enumerate(zip(groups, got, strict=True)):
        if g in liars and len(group) > t:
            assert isinstance(result, ShareError) and "one polynomial" in str(result)
            assert f"ShareError: {result}" == _outcome(group, t)
        elif g in liars:  # exactly t shares: undetectable, but the same (wrong) result
            assert result == _outcome(group, t) and result != secrets[g]
        else:
            assert result == secrets[g]


def test_inverse_columns_against_python_integers() -> None:
    rng = np.random.default_rng(3)
    a = rng.integers(1, PRIME, size=(9, 700), dtype=np.uint64)
    a[0, :3] = [1, PRIME - 1, 2]
    inverse = _inverse_columns(a)
    expected = [[pow(int(v), -1, PRIME) for v in row] for row in a.tolist()]
    assert inverse.tolist() == expected
