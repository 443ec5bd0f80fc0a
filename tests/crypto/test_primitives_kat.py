"""Known-answer vectors and negative cases for crypto/'s masking primitives."""

from __future__ import annotations

import pickle
import struct

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from crypto.aead import aead_open, aead_seal
from crypto.agreement import AgreementKey
from crypto.errors import DecryptionError, InvalidSignature, KeyMaterialError
from crypto.kdf import hkdf_sha256
from crypto.prg import expand_mask
from crypto.shamir import shamir_combine
from crypto.signing import IdentityKey, verify_signature


def test_hkdf_rfc5869_case_1() -> None:
    okm = hkdf_sha256(
        bytes([0x0B] * 22),
        salt=bytes(range(0x0D)),
        info=bytes(range(0xF0, 0xFA)),
        length=42,
    )
    assert okm.hex() == (
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
    )


def test_hkdf_rfc5869_case_2() -> None:
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


def test_hkdf_rfc5869_case_3() -> None:
    okm = hkdf_sha256(bytes([0x0B] * 22), salt=b"", info=b"", length=42)
    assert okm.hex() == (
        "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8"
    )


def test_x25519_rfc7748_vector_then_labelled_hkdf() -> None:
    alice = bytes.fromhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
    bob_pub = bytes.fromhex("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")
    shared = bytes.fromhex("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742")
    key = AgreementKey.from_private_bytes(alice)
    assert key.derive(bob_pub, label=b"t") == hkdf_sha256(
        shared, info=b"securepool/x25519/v1|t", length=32
    )
    assert key.derive(bob_pub, label=b"t") != key.derive(bob_pub, label=b"u")


def test_agreement_is_symmetric_and_rejects_bad_keys() -> None:
    a, b = AgreementKey.generate(), AgreementKey.generate()
    assert a.derive(b.public_bytes(), label=b"x") == b.derive(a.public_bytes(), label=b"x")
    with pytest.raises(KeyMaterialError):
        a.derive(b"\x00" * 31, label=b"x")
    with pytest.raises(KeyMaterialError):
        a.derive(b"\x00" * 32, label=b"x")  # low-order point: all-zero shared secret
    with pytest.raises(KeyMaterialError):
        AgreementKey.from_private_bytes(b"short")


def test_mask_expansion_frozen_vectors() -> None:
    seed = bytes(32)
    assert expand_mask(seed, label=b"x", length=4).tolist() == [
        778544930,
        3328993079,
        225173618,
        222650217,
    ]
    assert expand_mask(seed, label=b"x", length=3, dtype=np.uint64).tolist() == [
        14297916403693889314,
        956275400687476850,
        10231180957786188235,
    ]
    # a prefix is stable; other labels and seeds give other streams
    long = expand_mask(seed, label=b"x", length=1000)
    assert long[:4].tolist() == expand_mask(seed, label=b"x", length=4).tolist()
    assert not np.array_equal(long, expand_mask(seed, label=b"y", length=1000))


@pytest.mark.parametrize("position", [0, 5, 31])
def test_every_seed_byte_matters(position: int) -> None:
    """Full-entropy seeds: flipping any one byte of the 256-bit seed changes the mask."""
    seed = bytearray(range(32))
    base = expand_mask(bytes(seed), label=b"m", length=64)
    seed[position] ^= 1
    other = expand_mask(bytes(seed), label=b"m", length=64)
    assert np.mean(base == other) < 0.05


def test_mask_rejects_short_seeds() -> None:
    with pytest.raises(KeyMaterialError):
        expand_mask(b"\x01" * 4, label=b"x", length=8)  # a 32-bit seed (Flower's fold) is refused
    with pytest.raises(TypeError):
        expand_mask(bytes(32), label=b"x", length=8, dtype=np.int32)  # type: ignore[arg-type]


def test_shamir_frozen_vector() -> None:
    # f(x) = s + 5x over GF(2^31 - 1) with s = 0x616263 ("abc")
    s = 0x616263

    def share(x: int) -> bytes:
        return struct.pack(">BHI", 1, 3, x) + struct.pack("<I", (s + 5 * x) % (2**31 - 1))

    assert shamir_combine({1: share(1), 2: share(2)}, threshold=2) == b"abc"
    assert shamir_combine({7: share(7), 3: share(3)}, threshold=2) == b"abc"


def test_ed25519_signatures_are_label_bound() -> None:
    key = IdentityKey.generate()
    sig = key.sign(b"msg", label=b"a")
    verify_signature(key.public_bytes(), b"msg", sig, label=b"a")
    with pytest.raises(InvalidSignature):
        verify_signature(key.public_bytes(), b"msg", sig, label=b"b")
    with pytest.raises(InvalidSignature):
        verify_signature(key.public_bytes(), b"msh", sig, label=b"a")
    with pytest.raises(InvalidSignature):
        verify_signature(IdentityKey.generate().public_bytes(), b"msg", sig, label=b"a")
    with pytest.raises(KeyMaterialError):
        verify_signature(b"\x00" * 31, b"msg", sig, label=b"a")


def test_aead_round_trip_and_tampering() -> None:
    key = bytes(range(32))
    sealed = aead_seal(key, b"secret share", aad=b"s|u|v")
    assert aead_open(key, sealed, aad=b"s|u|v") == b"secret share"
    with pytest.raises(DecryptionError):
        aead_open(key, sealed, aad=b"s|u|w")
    tampered = bytearray(sealed)
    tampered[-1] ^= 1
    with pytest.raises(DecryptionError):
        aead_open(key, bytes(tampered), aad=b"s|u|v")
    with pytest.raises(DecryptionError):
        aead_open(bytes(32), sealed, aad=b"s|u|v")
    with pytest.raises(DecryptionError):
        aead_open(key, sealed[:10], aad=b"s|u|v")
    with pytest.raises(KeyMaterialError):
        aead_seal(b"short", b"x", aad=b"")


@pytest.mark.parametrize("factory", [AgreementKey.generate, IdentityKey.generate])
def test_secret_keys_hide_and_refuse_pickling(factory: object) -> None:
    key = factory()  # type: ignore[operator]
    assert "hidden" in repr(key) and "hidden" in str(key)
    with pytest.raises(TypeError):
        pickle.dumps(key)


def test_raw_x25519_matches_library() -> None:
    raw = X25519PrivateKey.generate()
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        NoEncryption,
        PrivateFormat,
    )

    priv = raw.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    assert AgreementKey.from_private_bytes(priv).private_bytes() == priv
