"""The coordinator's TenSEAL-free sum: same result as TenSEAL, and every forged chunk refused.

The attacks rewrite a genuine chunk at the byte level (an unreduced coefficient, another
scale, another level, a truncated or padded frame, a decompression bomb), as a
malicious participant could, and check that each raises CiphertextError before anything
is added.
"""

from __future__ import annotations

import struct

import numpy as np
import pytest
import tenseal as ts
import zstandard

from crypto.ckks import CKKSParameters, SecretCKKSContext, decrypt_chunks, encrypt_chunks
from crypto.ckks.coefficients import ChunkCodec, CoefficientSum, data_primes
from crypto.errors import CiphertextError, EncodingError

PARAMS = CKKSParameters(poly_modulus_degree=4096, coeff_mod_bit_sizes=(50, 59), scale_bits=39)
TWO_PRIMES = CKKSParameters(
    poly_modulus_degree=8192, coeff_mod_bit_sizes=(50, 45, 60), scale_bits=39
)


@pytest.fixture(scope="module")
def secret() -> SecretCKKSContext:
    return SecretCKKSContext.generate(PARAMS)


@pytest.fixture(scope="module")
def codec(secret: SecretCKKSContext) -> ChunkCodec:
    return ChunkCodec.of(secret.public())


def chunk(secret: SecretCKKSContext, seed: int = 0) -> bytes:
    row = np.random.default_rng(seed).uniform(-1, 1, size=(1, PARAMS.slots))
    return encrypt_chunks(secret.public(), row)[0]


@pytest.mark.parametrize("params", [PARAMS, TWO_PRIMES])
def test_sum_decrypts_to_the_plaintext_sum_and_matches_tenseal(params: CKKSParameters) -> None:
    secret = SecretCKKSContext.generate(params)
    public = secret.public()
    codec = ChunkCodec.of(public)
    assert len(codec.primes) == len(params.coeff_mod_bit_sizes) - 1
    rng = np.random.default_rng(1)
    xs = [rng.uniform(-1, 1, size=(3, params.slots)) for _ in range(5)]
    uploads = [encrypt_chunks(public, x) for x in xs]
    acc = CoefficientSum(codec, n_chunks=3)
    scratch = acc.scratch()
    for blobs in uploads:
        acc.read_all(blobs, scratch)
        acc.add_checked(scratch)
    ours = acc.to_bytes()
    assert np.max(np.abs(decrypt_chunks(secret, ours) - sum(xs))) <= 1e-6
    # TenSEAL's own sum of the same ciphertexts decrypts to the same numbers
    theirs = [ts.ckks_vector_from(public.tenseal, u[0]) for u in uploads]
    for v in theirs[1:]:
        theirs[0].add_(v)
    np.testing.assert_allclose(
        decrypt_chunks(secret, [theirs[0].serialize()])[0],
        decrypt_chunks(secret, ours[:1])[0],
        atol=1e-9,
    )


def test_data_primes_are_seals() -> None:
    primes = data_primes(PARAMS)
    assert len(primes) == 1 and primes[0].bit_length() == 50
    assert primes[0] % (2 * PARAMS.poly_modulus_degree) == 1


def test_lazy_reduction_never_overflows(secret: SecretCKKSContext, codec: ChunkCodec) -> None:
    blob = chunk(secret, 2)
    exact = CoefficientSum(codec, n_chunks=1)
    lazy = CoefficientSum(codec, n_chunks=1)
    lazy._room = 2  # reduce every other addition instead of every 2^13
    scratch = exact.scratch()
    exact.read_all([blob], scratch)
    for _ in range(7):
        exact.add_checked(scratch)
        lazy.add_checked(scratch)
    expected = (codec.read(blob).astype(object) * 7) % codec.primes[0]
    assert exact.to_bytes() == lazy.to_bytes()
    assert np.array_equal(codec.read(exact.to_bytes()[0]).astype(object), expected)


def test_merged_partial_sums_equal_one_sum(secret: SecretCKKSContext, codec: ChunkCodec) -> None:
    blobs = [chunk(secret, s) for s in range(4)]
    one, a, b = (CoefficientSum(codec, n_chunks=1) for _ in range(3))
    scratch = one.scratch()
    for i, blob in enumerate(blobs):
        one.read_all([blob], scratch)
        one.add_checked(scratch)
        (a if i % 2 else b).read_all([blob], scratch)
        (a if i % 2 else b).add_checked(scratch)
    a.merge(b)
    assert a.count == 4 and a.to_bytes() == one.to_bytes()


def _rewrite(codec: ChunkCodec, blob: bytes, edit) -> bytes:  # type: ignore[no-untyped-def]
    """Decode a genuine chunk, let ``edit`` change its uncompressed bytes, return them."""
    return bytes(edit(bytearray(codec.write(codec.read(blob)))))


def _set_coefficient(codec: ChunkCodec, value: int):  # type: ignore[no-untyped-def]
    def edit(b: bytearray) -> bytearray:
        struct.pack_into("<Q", b, len(b) - 9 - 8, value)  # last coefficient
        return b

    return edit


def test_unreduced_coefficient_is_refused(secret: SecretCKKSContext, codec: ChunkCodec) -> None:
    blob = chunk(secret)
    ok = _rewrite(codec, blob, _set_coefficient(codec, codec.primes[0] - 1))
    codec.read(ok)  # the largest reduced value is fine
    bad = _rewrite(codec, blob, _set_coefficient(codec, codec.primes[0]))
    with pytest.raises(CiphertextError, match="not reduced"):
        codec.read(bad)


def test_other_scale_level_size_or_context_is_refused(
    secret: SecretCKKSContext, codec: ChunkCodec
) -> None:
    blob = chunk(secret)

    def frame_scale(b: bytearray) -> bytearray:
        struct.pack_into("<d", b, len(b) - 8, 2.0**38)
        return b

    with pytest.raises(CiphertextError, match="scale"):
        codec.read(_rewrite(codec, blob, frame_scale))

    def body_field(offset: int, value: int):  # type: ignore[no-untyped-def]
        def edit(b: bytearray) -> bytearray:
            start = len(codec.shape_field) + 1 + len(_varint_of(b)) + 16
            struct.pack_into("<Q", b, start + offset, value)
            return b

        return edit

    # body: parms_id (32) | ntt flag (1) | size @33 | N @41 | primes @49 | scale @57 ...
    for offset, value in [(33, 3), (41, 2048), (49, 2), (0, 12345)]:
        with pytest.raises(CiphertextError, match="parameters differ"):
            codec.read(_rewrite(codec, blob, body_field(offset, value)))
    other = SecretCKKSContext.generate(
        CKKSParameters(poly_modulus_degree=8192, coeff_mod_bit_sizes=(50, 60), scale_bits=39)
    )
    foreign = encrypt_chunks(other.public(), np.zeros((1, 4096)))[0]
    with pytest.raises(CiphertextError, match="frame differs"):
        codec.read(foreign)


def _varint_of(b: bytearray) -> bytes:
    """The length varint after the shape field and the SEAL-bytes tag of a frame."""
    out = bytearray()
    for byte in b[b.index(0x12, 1) + 1 :]:
        out.append(byte)
        if byte < 0x80:
            return bytes(out)
    raise AssertionError("no varint")


def test_truncated_padded_and_garbage_frames_are_refused(
    secret: SecretCKKSContext, codec: ChunkCodec
) -> None:
    blob = chunk(secret)
    for bad in (blob[:-1], blob + b"\x00", blob[:100], b"", b"\x0a" + bytes(50)):
        with pytest.raises(CiphertextError):
            codec.read(bad)
    # A flipped byte inside the zstd stream may still decode to reduced coefficients
    # (zstd frames here carry no checksum): the codec cannot see that; the signed upload
    # digest does (test_he: test_bad_upload_bytes_exclude_that_participant_only).
    flipped = bytearray(blob)
    flipped[len(flipped) // 2] ^= 0xFF
    try:
        changed = codec.read(bytes(flipped))
    except CiphertextError:
        pass
    else:
        assert not np.array_equal(changed, codec.read(blob))


def test_decompression_bomb_is_refused_before_decompressing(
    secret: SecretCKKSContext, codec: ChunkCodec
) -> None:
    body = bytes(codec.body_size * 64)  # 64x the size a chunk may have: zeros compress well
    payload = zstandard.ZstdCompressor().compress(body)
    seal = struct.pack("<HBBBBHQ", 0xA15E, 16, *codec.version, 2, 0, 16 + len(payload))
    seal += payload
    length = bytearray()
    n = len(seal)
    while True:
        length.append((n & 0x7F) | (0x80 if n >> 7 else 0))
        n >>= 7
        if not n:
            break
    frame = codec.shape_field + b"\x12" + bytes(length) + seal + b"\x19"
    frame += struct.pack("<d", PARAMS.scale)
    with pytest.raises(CiphertextError, match="declares"):
        codec.read(frame)


def test_written_sum_loads_in_tenseal_and_bad_shapes_are_refused(
    secret: SecretCKKSContext, codec: ChunkCodec
) -> None:
    coeffs = codec.read(chunk(secret, 5))
    out = codec.write(coeffs)
    assert np.array_equal(codec.read(out), coeffs)
    with pytest.raises(EncodingError):
        codec.write(coeffs[:1])
    with pytest.raises(EncodingError):
        CoefficientSum(codec, n_chunks=0)
    with pytest.raises(EncodingError, match="empty"):
        CoefficientSum(codec, n_chunks=1).to_bytes()
    with pytest.raises(CiphertextError, match="expected 2"):
        CoefficientSum(codec, n_chunks=2).read_all([chunk(secret)], np.empty(0, np.uint64))
