"""Ed25519 identity keys: RFC 8032 known answers, label binding, every bad input."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from crypto.errors import CryptoTypeError, InvalidSignature, KeyMaterialError
from crypto.signing import IdentityKey, signed_bytes, verify_signature

# RFC 8032 section 7.1, TEST 1 (empty message)
RFC_SECRET = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
RFC_PUBLIC = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
RFC_SIGNATURE = bytes.fromhex(
    "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155"
    "5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
)
# Our own frozen vector: RFC 8032 TEST 1's key signing b"abc" under label b"securepool/kat".
OUR_SIGNATURE = bytes.fromhex(
    "35d95fba93047744dfed68be91c4b44821a5142bda8d2c805298c40e372485dd"
    "2eaf522457f5eed8153b62dcfa0ba693fc48165567c0c6fb48dd2e72ed189b04"
)


def test_rfc8032_test1_key_and_published_signature() -> None:
    key = IdentityKey.from_private_bytes(RFC_SECRET)
    assert key.public_bytes() == RFC_PUBLIC
    # the published raw signature verifies with the underlying library (no label) ...
    Ed25519PublicKey.from_public_bytes(RFC_PUBLIC).verify(RFC_SIGNATURE, b"")
    assert Ed25519PrivateKey.from_private_bytes(RFC_SECRET).sign(b"") == RFC_SIGNATURE
    # ... but is never accepted as a labelled SecurePool signature
    with pytest.raises(InvalidSignature):
        verify_signature(RFC_PUBLIC, b"", RFC_SIGNATURE, label=b"")


def test_frozen_labelled_signature() -> None:
    """Pins the framing: RFC 8032 signing is deterministic, so the bytes are fixed."""
    key = IdentityKey.from_private_bytes(RFC_SECRET)
    assert key.sign(b"abc", label=b"securepool/kat") == OUR_SIGNATURE
    assert signed_bytes(b"abc", label=b"securepool/kat") == (
        b"securepool/sig/v1" + b"\x00\x00\x00\x0esecurepool/kat" + b"abc"
    )
    verify_signature(RFC_PUBLIC, b"abc", OUR_SIGNATURE, label=b"securepool/kat")


def test_signature_is_bound_to_key_message_and_label() -> None:
    key = IdentityKey.generate()
    sig = key.sign(b"msg", label=b"a")
    assert len(sig) == 64
    verify_signature(key.public_bytes(), b"msg", sig, label=b"a")
    with pytest.raises(InvalidSignature, match="label"):
        verify_signature(key.public_bytes(), b"msg", sig, label=b"b")
    with pytest.raises(InvalidSignature):
        verify_signature(key.public_bytes(), b"msh", sig, label=b"a")
    with pytest.raises(InvalidSignature):
        verify_signature(IdentityKey.generate().public_bytes(), b"msg", sig, label=b"a")
    tampered = bytes([sig[0] ^ 1]) + sig[1:]
    with pytest.raises(InvalidSignature):
        verify_signature(key.public_bytes(), b"msg", tampered, label=b"a")


def test_label_and_message_cannot_trade_bytes() -> None:
    """Attack: move a byte from the label into the message. Length-delimiting the label
    makes (b"ab", b"c") and (b"a", b"bc") different signed strings."""
    key = IdentityKey.generate()
    sig = key.sign(b"c", label=b"ab")
    with pytest.raises(InvalidSignature):
        verify_signature(key.public_bytes(), b"bc", sig, label=b"a")
    assert signed_bytes(b"c", label=b"ab") != signed_bytes(b"bc", label=b"a")


@pytest.mark.parametrize("signature", [b"", b"\x00" * 63, b"\x00" * 65, b"\x00" * 64])
def test_malformed_signatures_do_not_verify(signature: bytes) -> None:
    key = IdentityKey.generate()
    with pytest.raises(InvalidSignature):
        verify_signature(key.public_bytes(), b"m", signature, label=b"a")


@pytest.mark.parametrize("public", [b"", b"\x01" * 31, b"\x01" * 33, "ab" * 16, bytearray(32)])
def test_public_key_of_wrong_length_or_type(public: object) -> None:
    sig = IdentityKey.generate().sign(b"m", label=b"a")
    with pytest.raises(KeyMaterialError):
        verify_signature(public, b"m", sig, label=b"a")  # type: ignore[arg-type]


def test_non_point_public_key_just_fails_to_verify() -> None:
    sig = IdentityKey.generate().sign(b"m", label=b"a")
    with pytest.raises(InvalidSignature):
        verify_signature(b"\xff" * 32, b"m", sig, label=b"a")


def test_wrong_argument_types() -> None:
    key = IdentityKey.generate()
    sig = key.sign(b"m", label=b"a")
    with pytest.raises(CryptoTypeError):
        key.sign("m", label=b"a")  # type: ignore[arg-type]
    with pytest.raises(CryptoTypeError):
        key.sign(b"m", label="a")  # type: ignore[arg-type]
    with pytest.raises(CryptoTypeError):
        verify_signature(key.public_bytes(), b"m", sig.hex(), label=b"a")  # type: ignore[arg-type]
    with pytest.raises(CryptoTypeError):
        verify_signature(key.public_bytes(), "m", sig, label=b"a")  # type: ignore[arg-type]
    for seed in (b"\x00" * 31, b"\x00" * 64, "00" * 32):
        with pytest.raises(KeyMaterialError):
            IdentityKey.from_private_bytes(seed)  # type: ignore[arg-type]
    with pytest.raises(KeyMaterialError):
        IdentityKey(Ed25519PrivateKey.generate().public_key())  # type: ignore[arg-type]
