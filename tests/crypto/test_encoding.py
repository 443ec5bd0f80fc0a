"""crypto.encoding: bind() is injective, identifiers have one spelling."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crypto.encoding import bind, require_identifier
from crypto.errors import CryptoError, CryptoTypeError

FIELD = st.one_of(st.binary(max_size=20), st.text(max_size=10), st.integers(-(2**63), 2**63 - 1))


def test_separator_collisions_are_gone() -> None:
    assert bind(b"d", "a|b", "c") != bind(b"d", "a", "b|c")
    assert bind(b"d", "a\x00", "b") != bind(b"d", "a", "\x00b")
    assert bind(b"d", "1") != bind(b"d", 1) != bind(b"d", b"1")
    assert bind(b"d1", "x") != bind(b"d", "1x")


@given(
    st.binary(max_size=8),
    st.lists(FIELD, max_size=4),
    st.binary(max_size=8),
    st.lists(FIELD, max_size=4),
)
def test_bind_is_injective(d1: bytes, f1: list[object], d2: bytes, f2: list[object]) -> None:
    same_input = d1 == d2 and [(type(a), a) for a in f1] == [(type(b), b) for b in f2]
    assert (bind(d1, *f1) == bind(d2, *f2)) == same_input  # type: ignore[arg-type]


def test_bad_fields_are_typed_errors() -> None:
    with pytest.raises(CryptoTypeError):
        bind(b"d", 1.5)  # type: ignore[arg-type]
    with pytest.raises(CryptoTypeError):
        bind(b"d", True)
    with pytest.raises(CryptoError):
        bind(b"d", 2**64)
    with pytest.raises(CryptoTypeError):
        bind("d", b"x")  # type: ignore[arg-type]


@pytest.mark.parametrize("good", ["p00", "it0001/cnn", "agency-a@example.org", "a.b_c:d+e"])
def test_identifiers_accepted(good: str) -> None:
    assert require_identifier("pid", good) == good


@pytest.mark.parametrize(
    "bad", ["", " p0", "p0 ", "p\x000", "p|0".replace("|", "\n"), "é", "-p", "x" * 129, "p\u200b0"]
)
def test_identifiers_refused(bad: str) -> None:
    with pytest.raises(CryptoError, match="pid"):
        require_identifier("pid", bad)


def test_identifier_type() -> None:
    with pytest.raises(CryptoTypeError):
        require_identifier("pid", b"p0")
