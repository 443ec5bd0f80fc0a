"""Mask expansion: frozen vectors, the AES-CTR construction, determinism, bad inputs."""

from __future__ import annotations

import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from crypto.errors import CryptoError, CryptoTypeError, KeyMaterialError
from crypto.kdf import hkdf_sha256
from crypto.prg import expand_mask, prg_key_and_nonce

SEED = bytes(range(32))
LABEL = b"securepool/kat"


def test_frozen_vectors_both_dtypes() -> None:
    """Our own known answers: change the construction and these fail."""
    assert expand_mask(SEED, label=LABEL, length=8).tolist() == [
        3577670996, 289710855, 291733043, 897647960,
        2615980762, 2983085212, 1626989874, 2519223730,
    ]  # fmt: skip
    assert expand_mask(SEED, label=LABEL, length=8, dtype=np.uint64).tolist() == [
        1244298651098869076, 3855368631812849203, 12812253429337207514, 10819983533284123954,
        5735915524060766298, 7773002997089455622, 5315288003752832507, 15071432410607573706,
    ]  # fmt: skip
    assert expand_mask(bytes(32), label=b"x", length=4).tolist() == [
        778544930, 3328993079, 225173618, 222650217,
    ]  # fmt: skip


def test_is_aes256_ctr_keystream_under_hkdf_key() -> None:
    """The construction, spelled out: HKDF(seed, prefix|label) -> key | counter block,
    AES-256-CTR over zeros, little-endian words. Lengths cross the 64 KiB chunking."""
    key, nonce = prg_key_and_nonce(SEED, label=LABEL)
    okm = hkdf_sha256(SEED, info=b"securepool/prg/v1|" + LABEL, length=48)
    assert (key, nonce) == (okm[:32], okm[32:])
    for words in (0, 1, 3, 16383, 16384, 16385, 40000):
        stream = Cipher(algorithms.AES(key), modes.CTR(nonce)).encryptor().update(
            bytes(4 * words)
        )
        reference = np.frombuffer(stream, dtype="<u4")
        assert np.array_equal(expand_mask(SEED, label=LABEL, length=words), reference)


def test_deterministic_prefix_stable_and_dtypes_share_the_stream() -> None:
    long = expand_mask(SEED, label=LABEL, length=50_000)
    assert np.array_equal(long, expand_mask(SEED, label=LABEL, length=50_000))
    assert np.array_equal(long[:1234], expand_mask(SEED, label=LABEL, length=1234))
    wide = expand_mask(SEED, label=LABEL, length=25_000, dtype=np.uint64)
    low, high = long[0::2].astype(np.uint64), long[1::2].astype(np.uint64)
    assert np.array_equal(wide, low | (high << np.uint64(32)))  # little-endian words
    assert long.dtype == np.uint32 and wide.dtype == np.uint64
    assert expand_mask(SEED, label=LABEL, length=0).shape == (0,)
    assert expand_mask(SEED, label=LABEL, length=4, dtype=np.dtype(np.uint64)).dtype == np.uint64


def test_labels_and_seeds_give_unrelated_streams() -> None:
    base = expand_mask(SEED, label=b"a", length=4096)
    for other in (
        expand_mask(SEED, label=b"b", length=4096),
        expand_mask(SEED, label=b"a\x00", length=4096),
        expand_mask(bytes(32), label=b"a", length=4096),
    ):
        assert np.mean(base == other) < 0.01


@pytest.mark.parametrize("position", [0, 5, 16, 31])
def test_every_seed_byte_matters(position: int) -> None:
    """Full-entropy seeds: flipping any bit of the 256-bit seed changes the whole mask
    (Flower folds seeds to <= 32 bits; here no byte is ignored)."""
    seed = bytearray(SEED)
    seed[position] ^= 0x80
    other = expand_mask(bytes(seed), label=b"m", length=1024)
    assert np.mean(expand_mask(SEED, label=b"m", length=1024) == other) < 0.01


def test_output_looks_uniform() -> None:
    """A smoke test of the bits (not a proof): each bit position is set about half the
    time and the mean word is near the middle of the range."""
    words = expand_mask(SEED, label=b"stats", length=1 << 18)
    bits = np.unpackbits(words.view(np.uint8)).reshape(-1, 32).mean(axis=0)
    assert np.all(np.abs(bits - 0.5) < 0.01)
    assert abs(words.astype(np.float64).mean() / 2**32 - 0.5) < 0.005


def test_result_is_a_fresh_writable_array() -> None:
    first = expand_mask(SEED, label=LABEL, length=16)
    first += np.uint32(1)  # callers add masks in place; must not disturb later calls
    assert expand_mask(SEED, label=LABEL, length=16).tolist() != first.tolist()
    assert first.flags.writeable and first.flags.c_contiguous


@pytest.mark.parametrize("seed", [b"", b"\x01" * 4, b"\x01" * 31, b"\x01" * 33, b"\x01" * 64])
def test_seeds_that_are_not_256_bits_are_refused(seed: bytes) -> None:
    with pytest.raises(KeyMaterialError, match="32 bytes"):
        expand_mask(seed, label=b"x", length=8)


@pytest.mark.parametrize("seed", ["00" * 16, bytearray(32), 12345, None])
def test_seeds_of_wrong_type_are_refused(seed: object) -> None:
    with pytest.raises(KeyMaterialError):
        expand_mask(seed, label=b"x", length=8)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "dtype", [np.int32, np.int64, np.uint16, np.uint8, np.float64, "uint32", np.dtype(">u4")]
)
def test_other_dtypes_are_refused(dtype: object) -> None:
    with pytest.raises(CryptoTypeError):
        expand_mask(SEED, label=b"x", length=8, dtype=dtype)  # type: ignore[arg-type]


def test_bad_length_and_label() -> None:
    with pytest.raises(CryptoError, match=">= 0"):
        expand_mask(SEED, label=b"x", length=-1)
    for length in (2.0, True, "8"):
        with pytest.raises(CryptoTypeError):
            expand_mask(SEED, label=b"x", length=length)  # type: ignore[arg-type]
    with pytest.raises(CryptoTypeError):
        expand_mask(SEED, label="x", length=8)  # type: ignore[arg-type]
    assert expand_mask(SEED, label=b"x", length=np.int64(3)).shape == (3,)
