"""X25519 + labelled HKDF: RFC 7748 known answer, symmetry, and every bad peer key."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from crypto.agreement import AgreementKey, agreement_salt
from crypto.errors import CryptoTypeError, KeyMaterialError
from crypto.kdf import hkdf_sha256

# RFC 7748 section 6.1
ALICE_PRIVATE = bytes.fromhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
ALICE_PUBLIC = bytes.fromhex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
BOB_PRIVATE = bytes.fromhex("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb")
BOB_PUBLIC = bytes.fromhex("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")
SHARED = bytes.fromhex("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742")

# Encodings of small-order points (RFC 7748 section 7; the usual blocklist): X25519
# with any clamped scalar maps each of them to zero.
LOW_ORDER = [
    "0000000000000000000000000000000000000000000000000000000000000000",
    "0100000000000000000000000000000000000000000000000000000000000000",
    "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
    "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
]


def test_rfc7748_public_keys() -> None:
    assert AgreementKey.from_private_bytes(ALICE_PRIVATE).public_bytes() == ALICE_PUBLIC
    assert AgreementKey.from_private_bytes(BOB_PRIVATE).public_bytes() == BOB_PUBLIC


def test_rfc7748_exchange_then_labelled_hkdf_both_ways() -> None:
    """The raw exchange is RFC 7748's shared secret; derive() is exactly HKDF of it."""
    expected = hkdf_sha256(
        SHARED,
        info=b"securepool/x25519/v1|label",
        length=32,
        salt=ALICE_PUBLIC + BOB_PUBLIC,  # sorted: 0x85.. < 0xde..
    )
    alice = AgreementKey.from_private_bytes(ALICE_PRIVATE)
    bob = AgreementKey.from_private_bytes(BOB_PRIVATE)
    assert alice.derive(BOB_PUBLIC, label=b"label") == expected
    assert bob.derive(ALICE_PUBLIC, label=b"label") == expected
    assert alice.derive(BOB_PUBLIC, label=b"label", length=64)[:32] == expected


def test_agreement_is_symmetric_and_label_separated() -> None:
    a, b = AgreementKey.generate(), AgreementKey.generate()
    k = a.derive(b.public_bytes(), label=b"x")
    assert k == b.derive(a.public_bytes(), label=b"x")
    assert k != a.derive(b.public_bytes(), label=b"y")
    assert k != a.derive(AgreementKey.generate().public_bytes(), label=b"x")
    assert agreement_salt(b"b", b"a") == agreement_salt(b"a", b"b") == b"ab"


def test_private_bytes_round_trip() -> None:
    raw = X25519PrivateKey.generate()
    priv = raw.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    key = AgreementKey.from_private_bytes(priv)
    assert key.private_bytes() == priv
    peer = AgreementKey.generate()
    # a key rebuilt from its bytes (as SecAgg rebuilds a dropped peer's) derives the same
    again = AgreementKey.from_private_bytes(key.private_bytes())
    assert again.derive(peer.public_bytes(), label=b"m") == key.derive(
        peer.public_bytes(), label=b"m"
    )


@pytest.mark.parametrize("point", LOW_ORDER)
def test_low_order_peer_keys_are_refused(point: str) -> None:
    """Attack: a peer (or a key-swapping server) sends a small-order point to force a
    shared secret everyone knows. derive() refuses instead of returning HKDF(0)."""
    with pytest.raises(KeyMaterialError, match=r"low-order|all-zero"):
        AgreementKey.generate().derive(bytes.fromhex(point), label=b"x")


@pytest.mark.parametrize("peer", [b"", b"\x09" * 31, b"\x09" * 33, b"\x09" * 64])
def test_peer_key_of_wrong_length(peer: bytes) -> None:
    with pytest.raises(KeyMaterialError, match="32 bytes"):
        AgreementKey.generate().derive(peer, label=b"x")


@pytest.mark.parametrize("peer", ["09" * 32, bytearray(32), None, 9])
def test_peer_key_of_wrong_type(peer: object) -> None:
    with pytest.raises(KeyMaterialError):
        AgreementKey.generate().derive(peer, label=b"x")  # type: ignore[arg-type]


@pytest.mark.parametrize("data", [b"", b"\x01" * 31, b"\x01" * 33, "01" * 32, bytearray(32)])
def test_private_key_of_wrong_size_or_type(data: object) -> None:
    with pytest.raises(KeyMaterialError):
        AgreementKey.from_private_bytes(data)  # type: ignore[arg-type]


def test_bad_label_and_length() -> None:
    a, b = AgreementKey.generate(), AgreementKey.generate()
    with pytest.raises(CryptoTypeError):
        a.derive(b.public_bytes(), label="x")  # type: ignore[arg-type]
    for length in (0, 8161):
        with pytest.raises(KeyMaterialError):
            a.derive(b.public_bytes(), label=b"x", length=length)
    with pytest.raises(KeyMaterialError):
        AgreementKey("not a key")  # type: ignore[arg-type]
