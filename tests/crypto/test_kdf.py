"""HKDF-SHA256: RFC 5869 known answers, label separation, and every bad input."""

from __future__ import annotations

import pytest

from crypto.errors import CryptoTypeError, KeyMaterialError
from crypto.kdf import hkdf_sha256


def test_rfc5869_case_1() -> None:
    okm = hkdf_sha256(
        bytes([0x0B] * 22), salt=bytes(range(0x0D)), info=bytes(range(0xF0, 0xFA)), length=42
    )
    assert okm.hex() == (
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
    )


def test_rfc5869_case_2_long_inputs() -> None:
    okm = hkdf_sha256(
        bytes(range(0x00, 0x50)),
        salt=bytes(range(0x60, 0xB0)),
        info=bytes(range(0xB0, 0x100)),
        length=82,
    )
    assert okm.hex() == (
        "b11e398dc80327a1c8e7f78c596a49344f012eda2d4efad8a050cc4c19afa97c"
        "59045a99cac7827271cb41c65e590e09da3275600c2f09b8367793a9aca3db71"
        "cc30c58179ec3e87c14c01d5c1f3434f1d87"
    )


def test_rfc5869_case_3_empty_salt_and_info() -> None:
    expected = (
        "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8"
    )
    assert hkdf_sha256(bytes([0x0B] * 22), salt=b"", info=b"", length=42).hex() == expected
    # RFC 5869: an absent salt is HashLen zero bytes, so None gives the same output
    assert hkdf_sha256(bytes([0x0B] * 22), info=b"", length=42).hex() == expected


def test_labels_separate_and_lengths_are_prefixes() -> None:
    ikm = bytes(range(32))
    assert hkdf_sha256(ikm, info=b"a", length=32) != hkdf_sha256(ikm, info=b"b", length=32)
    assert hkdf_sha256(ikm, info=b"a", length=64)[:32] == hkdf_sha256(ikm, info=b"a", length=32)
    assert len(hkdf_sha256(ikm, info=b"a", length=8160)) == 8160


@pytest.mark.parametrize("length", [0, -1, 8161])
def test_length_out_of_range(length: int) -> None:
    with pytest.raises(KeyMaterialError, match="length"):
        hkdf_sha256(b"k", info=b"i", length=length)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"ikm": "key", "info": b"i", "length": 32},
        {"ikm": bytearray(b"key"), "info": b"i", "length": 32},
        {"ikm": b"key", "info": "i", "length": 32},
        {"ikm": b"key", "info": b"i", "length": 32, "salt": "s"},
        {"ikm": b"key", "info": b"i", "length": 32.0},
        {"ikm": b"key", "info": b"i", "length": True},
    ],
)
def test_wrong_types_raise_typed_errors(kwargs: dict[str, object]) -> None:
    ikm = kwargs.pop("ikm")
    with pytest.raises(CryptoTypeError):
        hkdf_sha256(ikm, **kwargs)  # type: ignore[arg-type]
