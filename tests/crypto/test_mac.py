"""HMAC-SHA256 MAC keys and the MAC key an identity key derives: known answers against
independent implementations (the standard library's hmac, RFC 5869 written out),
label and key binding, every bad input."""

from __future__ import annotations

import copy
import hashlib
import hmac
import pickle

import pytest

from crypto.errors import CryptoTypeError, InvalidSignature, KeyMaterialError
from crypto.mac import MacKey, mac_input
from crypto.signing import IdentityKey

# RFC 8032 section 7.1, TEST 1's secret (the identity key the derivation is pinned on)
RFC_SECRET = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
KEY = bytes(range(32))
# frozen: MacKey(bytes(range(32))).tag(b"abc", label=b"securepool/kat")
OUR_TAG = bytes.fromhex("34ce77728f1051c01b0c153829e6adb7d439135d9f43cdfc96579947477f51c7")


def _hkdf_by_hand(ikm: bytes, *, salt: bytes, info: bytes, length: int) -> bytes:
    """RFC 5869 section 2, written out with the standard library."""
    prk = hmac.new(salt, ikm, hashlib.sha256).digest()
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        out, counter = out + block, counter + 1
    return out[:length]


def test_tag_is_hmac_sha256_of_the_framed_message() -> None:
    framed = mac_input(b"abc", label=b"securepool/kat")
    assert framed == b"securepool/mac/v1" + (14).to_bytes(4, "big") + b"securepool/kat" + b"abc"
    assert MacKey(KEY).tag(b"abc", label=b"securepool/kat") == OUR_TAG
    assert hmac.new(KEY, framed, hashlib.sha256).digest() == OUR_TAG
    MacKey(KEY).verify(b"abc", OUR_TAG, label=b"securepool/kat")


def test_a_tag_is_bound_to_key_label_and_message() -> None:
    key = MacKey(KEY)
    tag = key.tag(b"abc", label=b"l1")
    for bad in (
        lambda: key.verify(b"abd", tag, label=b"l1"),
        lambda: key.verify(b"abc", tag, label=b"l2"),
        lambda: MacKey(bytes(32)).verify(b"abc", tag, label=b"l1"),
        lambda: key.verify(b"abc", tag[:-1] + bytes([tag[-1] ^ 1]), label=b"l1"),
        lambda: key.verify(b"abc", tag[:31], label=b"l1"),
        lambda: key.verify(b"abc", b"", label=b"l1"),
        # the framing is length-delimited: moving bytes between label and message fails
        lambda: key.verify(b"bc", tag, label=b"l1a"),
    ):
        with pytest.raises(InvalidSignature):
            bad()


def test_bad_keys_and_types() -> None:
    for bad in (b"", bytes(31), bytes(33), "k" * 32, None):
        with pytest.raises(KeyMaterialError):
            MacKey(bad)  # type: ignore[arg-type]
    key = MacKey(KEY)
    with pytest.raises(CryptoTypeError):
        key.tag("abc", label=b"l")  # type: ignore[arg-type]
    with pytest.raises(CryptoTypeError):
        key.tag(b"abc", label="l")  # type: ignore[arg-type]
    with pytest.raises(CryptoTypeError):
        key.verify(b"abc", bytearray(32), label=b"l")  # type: ignore[arg-type]


def test_a_mac_key_hides_itself() -> None:
    key = MacKey(KEY)
    assert KEY.hex() not in repr(key) and "secret" in repr(key)
    for leak in (lambda: pickle.dumps(key), lambda: copy.deepcopy(key)):
        with pytest.raises(TypeError):
            leak()


def test_identity_derived_mac_key_is_rfc5869_of_the_seed() -> None:
    identity = IdentityKey.from_private_bytes(RFC_SECRET)
    label = b"securepool/kat/mac"
    expected = _hkdf_by_hand(
        RFC_SECRET, salt=b"securepool/identity-derived-key/v1", info=label, length=32
    )
    derived = identity.derive_mac_key(label=label)
    assert derived.tag(b"m", label=b"x") == MacKey(expected).tag(b"m", label=b"x")
    # deterministic (a restarted node derives the same key), one key per label and per
    # identity, and never the seed itself
    again = IdentityKey.from_private_bytes(RFC_SECRET).derive_mac_key(label=label)
    assert again.tag(b"m", label=b"x") == derived.tag(b"m", label=b"x")
    others = (
        identity.derive_mac_key(label=b"securepool/kat/other"),
        IdentityKey.generate().derive_mac_key(label=label),
        MacKey(RFC_SECRET),
    )
    for other in others:
        assert other.tag(b"m", label=b"x") != derived.tag(b"m", label=b"x")
    with pytest.raises(KeyMaterialError):
        identity.derive_mac_key(label=b"")
    with pytest.raises(CryptoTypeError):
        identity.derive_mac_key(label="l")  # type: ignore[arg-type]
