from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest
import tenseal as ts
from hypothesis import given, settings
from hypothesis import strategies as st

from crypto.agreement import AgreementKey
from crypto.ckks import (
    CKKSParameters,
    CoefficientSum,
    PublicCKKSContext,
    SecretCKKSContext,
    chunk_codec,
    decrypt_chunks,
    encrypt_chunks,
    load_chunk,
)
from crypto.ckks.sealbox import open_sealed, seal_to
from crypto.ckks.tags import expand_tags
from crypto.errors import CiphertextError, DecryptionError, EncodingError, KeyMaterialError

PARAMS = CKKSParameters(poly_modulus_degree=4096, coeff_mod_bit_sizes=(50, 59), scale_bits=39)


@pytest.fixture(scope="module")
def secret() -> SecretCKKSContext:
    return SecretCKKSContext.generate(PARAMS)


def rows(values: np.ndarray, params: CKKSParameters = PARAMS) -> np.ndarray:
    out = np.zeros((1, params.slots), dtype=np.float64)
    out[0, : values.size] = values
    return out


def test_parameters_enforce_the_128_bit_table() -> None:
    CKKSParameters(4096, (50, 59), 39)  # log Q = 109: exactly the bound
    with pytest.raises(KeyMaterialError, match="exceeds 109"):
        CKKSParameters(4096, (50, 60), 39)
    with pytest.raises(KeyMaterialError, match="special prime"):
        CKKSParameters(8192, (50,), 39)
    with pytest.raises(KeyMaterialError, match="scale_bits"):
        CKKSParameters(8192, (40, 60), 45)
    with pytest.raises(KeyMaterialError, match="poly_modulus_degree"):
        CKKSParameters(3000, (40, 60), 30)


@settings(deadline=None, max_examples=25)
@given(
    st.lists(st.floats(-8.0, 8.0, allow_nan=False, width=32), min_size=1, max_size=300),
)
def test_round_trip_within_ckks_error_bound(secret: SecretCKKSContext, values: list[float]) -> None:
    x = np.asarray(values, dtype=np.float64)
    blobs = encrypt_chunks(secret.public(), rows(x))
    back = decrypt_chunks(secret, blobs)[0, : x.size]
    # fresh noise is ~2^13 at scale 2^39 in the worst slot: 1.5e-8; allow 1e-7
    assert np.max(np.abs(back - x)) <= 1e-7


def test_sum_of_ciphertexts_matches_plaintext_sum(secret: SecretCKKSContext) -> None:
    rng = np.random.default_rng(1)
    xs = [rng.uniform(-1, 1, size=(2, PARAMS.slots)) for _ in range(6)]
    acc = CoefficientSum(chunk_codec(secret), n_chunks=2)
    scratch = acc.scratch()
    for x in xs:
        acc.read_all(encrypt_chunks(secret.public(), x), scratch)
        acc.add_checked(scratch)
    got = decrypt_chunks(secret, acc.to_bytes())
    assert acc.count == 6
    assert np.max(np.abs(got - sum(xs))) <= 1e-7


def test_shipped_context_has_no_secret_key(secret: SecretCKKSContext) -> None:
    shipped = ts.context_from(secret.public_bytes())
    assert not shipped.has_secret_key()
    assert not shipped.is_private()
    assert shipped.is_public()
    assert not shipped.has_galois_keys() and not shipped.has_relin_keys()
    with pytest.raises(ValueError):  # TenSEAL: decryption needs the secret key
        ts.ckks_vector(shipped, [1.0]).decrypt()


def test_public_context_refuses_bytes_that_carry_a_secret_key(secret: SecretCKKSContext) -> None:
    leaking = secret.tenseal.serialize(save_secret_key=True)
    with pytest.raises(KeyMaterialError, match="secret key"):
        PublicCKKSContext.from_bytes(leaking, params=PARAMS)
    with pytest.raises(KeyMaterialError, match="does not parse"):
        PublicCKKSContext.from_bytes(b"not a context", params=PARAMS)
    other = CKKSParameters(8192, (50, 60), 39)
    with pytest.raises(KeyMaterialError, match="N = 4096"):
        PublicCKKSContext.from_bytes(secret.public_bytes(), params=other)


def test_secret_context_hides_itself_and_refuses_pickling(secret: SecretCKKSContext) -> None:
    assert "hidden" in repr(secret) and "hidden" in str(secret)
    assert secret.tenseal.serialize(save_secret_key=True)[:64].hex() not in repr(secret)
    with pytest.raises(KeyMaterialError):
        pickle.dumps(secret)
    with pytest.raises(KeyMaterialError):
        copy.deepcopy(secret)
    # the public half pickles as bytes only (it is what workers receive)
    assert pickle.loads(pickle.dumps(secret.public_bytes())) == secret.public_bytes()


def test_load_chunk_rejects_bad_ciphertexts(secret: SecretCKKSContext) -> None:
    public = secret.public()
    good = encrypt_chunks(public, rows(np.ones(4)))[0]
    load_chunk(public, good)
    for bad in (b"", good[:100], good[: len(good) // 2], b"\x00" * 500):
        with pytest.raises(CiphertextError):
            load_chunk(public, bad)
    other = SecretCKKSContext.generate(CKKSParameters(8192, (50, 60), 39))
    foreign = encrypt_chunks(other.public(), np.zeros((1, 4096)))[0]
    with pytest.raises(CiphertextError):
        load_chunk(public, foreign)
    wrong_scale = ts.ckks_vector(public.tenseal, [0.0] * PARAMS.slots, scale=2.0**30).serialize()
    with pytest.raises(CiphertextError, match="scale"):
        load_chunk(public, wrong_scale)
    short = ts.ckks_vector(public.tenseal, [0.0] * 10, scale=PARAMS.scale).serialize()
    with pytest.raises(CiphertextError, match="frame differs"):
        load_chunk(public, short)


def test_encrypt_refuses_values_beyond_headroom(secret: SecretCKKSContext) -> None:
    with pytest.raises(EncodingError, match="headroom"):
        encrypt_chunks(secret.public(), rows(np.array([PARAMS.headroom() * 2])))
    with pytest.raises(EncodingError):
        encrypt_chunks(secret.public(), np.zeros((1, 7)))
    with pytest.raises(EncodingError):
        encrypt_chunks(secret.public(), rows(np.array([np.nan])))


def test_sealbox_round_trip_and_tampering() -> None:
    key = AgreementKey.generate()
    sealed = seal_to(key.public_bytes(), b"seed" * 8, aad=b"session-1")
    assert open_sealed(key, sealed, aad=b"session-1") == b"seed" * 8
    with pytest.raises(DecryptionError):
        open_sealed(key, sealed, aad=b"session-2")
    with pytest.raises(DecryptionError):
        open_sealed(AgreementKey.generate(), sealed, aad=b"session-1")
    flipped = sealed[:-1] + bytes([sealed[-1] ^ 1])
    with pytest.raises(DecryptionError):
        open_sealed(key, flipped, aad=b"session-1")
    with pytest.raises(DecryptionError):
        open_sealed(key, sealed[:20], aad=b"session-1")


def test_tags_are_deterministic_uniform_and_seed_bound() -> None:
    a = expand_tags(b"\x01" * 32, n_chunks=3, per_chunk=8)
    assert a.shape == (3, 8)
    assert np.array_equal(a, expand_tags(b"\x01" * 32, n_chunks=3, per_chunk=8))
    assert not np.array_equal(a, expand_tags(b"\x02" * 32, n_chunks=3, per_chunk=8))
    assert np.all((a >= 0) & (a < 1))
    with pytest.raises(KeyMaterialError):
        expand_tags(b"short", n_chunks=1, per_chunk=1)
