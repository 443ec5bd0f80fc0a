"""ChaCha20-Poly1305 sealing: RFC 8439 known answer, tampering anywhere, bad inputs."""

from __future__ import annotations

import pytest

from crypto.aead import NONCE, OVERHEAD, TAG, aead_open, aead_seal
from crypto.errors import CryptoTypeError, DecryptionError, KeyMaterialError

# RFC 8439 section 2.8.2, laid out as our sealed format: nonce || ciphertext || tag
RFC_KEY = bytes(range(0x80, 0xA0))
RFC_AAD = bytes.fromhex("50515253c0c1c2c3c4c5c6c7")
RFC_PLAINTEXT = (
    b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the "
    b"future, sunscreen would be it."
)
RFC_SEALED = bytes.fromhex(
    "070000004041424344454647"
    "d31a8d34648e60db7b86afbc53ef7ec2a4aded51296e08fea9e2b5a736ee62d6"
    "3dbea45e8ca9671282fafb69da92728b1a71de0a9e060b2905d6a5b67ecd3b36"
    "92ddbd7f2d778b8c9803aee328091b58fab324e4fad675945585808b4831d7bc"
    "3ff4def08e4b7a9de576d26586cec64b6116"
    "1ae10b594f09e26a7e902ecbd0600691"
)
KEY = bytes(range(32))


def test_rfc8439_vector_opens() -> None:
    assert aead_open(RFC_KEY, RFC_SEALED, aad=RFC_AAD) == RFC_PLAINTEXT


def test_round_trip_fresh_nonces_and_sizes() -> None:
    sealed = [aead_seal(KEY, b"secret share", aad=b"s|u|v") for _ in range(50)]
    assert all(aead_open(KEY, s, aad=b"s|u|v") == b"secret share" for s in sealed)
    assert len({s[:NONCE] for s in sealed}) == 50  # a fresh random nonce every time
    assert all(len(s) == len(b"secret share") + OVERHEAD for s in sealed)
    assert aead_open(KEY, aead_seal(KEY, b"", aad=b""), aad=b"") == b""
    assert TAG == 16


@pytest.mark.parametrize("position", [0, NONCE - 1, NONCE, NONCE + 20, -TAG, -1])
def test_any_flipped_bit_is_refused(position: int) -> None:
    """Attack: flip one bit of the nonce, the ciphertext or the tag in transit."""
    sealed = bytearray(aead_seal(KEY, b"the share of peer 7, 32 bytes!!", aad=b"a"))
    sealed[position] ^= 0x01
    with pytest.raises(DecryptionError, match="authentication failed"):
        aead_open(KEY, bytes(sealed), aad=b"a")


def test_wrong_aad_key_truncation_extension() -> None:
    sealed = aead_seal(KEY, b"secret share", aad=b"s|u|v")
    with pytest.raises(DecryptionError):  # re-addressed to another receiver
        aead_open(KEY, sealed, aad=b"s|u|w")
    with pytest.raises(DecryptionError):
        aead_open(bytes(32), sealed, aad=b"s|u|v")
    with pytest.raises(DecryptionError):
        aead_open(KEY, sealed[:-1], aad=b"s|u|v")
    with pytest.raises(DecryptionError):
        aead_open(KEY, sealed + b"\x00", aad=b"s|u|v")
    for short in (b"", sealed[: OVERHEAD - 1]):
        with pytest.raises(DecryptionError, match="fewer than"):
            aead_open(KEY, short, aad=b"s|u|v")


@pytest.mark.parametrize("key", [b"", b"k" * 16, b"k" * 31, b"k" * 33, "k" * 32, bytearray(32)])
def test_keys_of_wrong_size_or_type(key: object) -> None:
    with pytest.raises(KeyMaterialError):
        aead_seal(key, b"x", aad=b"")  # type: ignore[arg-type]
    with pytest.raises(KeyMaterialError):
        aead_open(key, bytes(40), aad=b"")  # type: ignore[arg-type]


def test_non_bytes_arguments() -> None:
    sealed = aead_seal(KEY, b"x", aad=b"a")
    with pytest.raises(CryptoTypeError):
        aead_seal(KEY, "x", aad=b"a")  # type: ignore[arg-type]
    with pytest.raises(CryptoTypeError):
        aead_seal(KEY, b"x", aad="a")  # type: ignore[arg-type]
    with pytest.raises(CryptoTypeError):
        aead_open(KEY, sealed.hex(), aad=b"a")  # type: ignore[arg-type]
    with pytest.raises(CryptoTypeError):
        aead_open(KEY, sealed, aad=None)  # type: ignore[arg-type]
