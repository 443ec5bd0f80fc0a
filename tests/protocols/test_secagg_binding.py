"""The binding's pure pieces (protocols.secagg.binding): the projection is exact in
Z_{2^k}, its seed depends on every masked input, reports and verdicts open only in
their own context."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crypto.errors import DecryptionError, InvalidSignature, MessageError, StageError
from crypto.hpke import SummaryOpeningKey
from crypto.signing import IdentityKey
from protocols.secagg.binding import (
    BindingReport,
    MaskVerdict,
    open_report,
    projection,
    projection_seed,
    seal_report,
)

SEED = bytes(range(32))


def _reference(vec: np.ndarray, buckets: np.ndarray, negative: np.ndarray, width: int) -> list[int]:
    bits = vec.dtype.itemsize * 8
    out = [0] * width
    for v, b, neg in zip(vec.tolist(), buckets.tolist(), negative.tolist(), strict=True):
        out[b] = (out[b] + (-v if neg else v)) % (1 << bits)
    return out


@settings(max_examples=30, deadline=None)
@given(
    length=st.integers(1, 300),
    dim=st.integers(1, 40),
    bits=st.sampled_from([32, 64]),
    seed=st.binary(min_size=32, max_size=32),
)
def test_projection_is_exact_modulo_2k(length: int, dim: int, bits: int, seed: bytes) -> None:
    dtype = np.uint32 if bits == 32 else np.uint64
    rng = np.random.default_rng(length * dim)
    vec = rng.integers(0, 2**bits, length, dtype=np.uint64, endpoint=False).astype(dtype)
    proj = projection(seed, length=length, dim=dim)
    got = proj.apply(vec)
    assert got.dtype == np.dtype(dtype) and got.size == dim + 1
    assert got.tolist() == _reference(vec, proj.buckets, proj.negative, dim + 1)
    # linear: R(a + b) = R a + R b mod 2^k; the weight coordinate alone in the last bucket
    other = rng.integers(0, 2**bits, length, dtype=np.uint64).astype(dtype)
    assert np.array_equal(proj.apply(vec + other), got + proj.apply(other))
    assert proj.buckets[-1] == dim and not proj.negative[-1]
    assert (proj.buckets[:-1] < dim).all()


def test_dimension_zero_is_the_identity() -> None:
    vec = np.arange(7, dtype=np.uint32)
    assert np.array_equal(projection(SEED, length=7, dim=0).apply(vec), vec)
    with pytest.raises(MessageError):
        projection(SEED, length=7, dim=3).apply(np.arange(6, dtype=np.uint32))


def test_the_projection_seed_depends_on_every_input_digest() -> None:
    digests = {"p01": bytes(32), "p02": bytes([1]) * 32}
    base = projection_seed(session="s", joint_seed=SEED, digests=digests)
    assert base == projection_seed(session="s", joint_seed=SEED, digests=dict(digests))
    for changed in (
        {**digests, "p02": bytes([2]) * 32},
        {**digests, "p03": bytes(32)},
        {"p01": bytes(32)},
    ):
        assert projection_seed(session="s", joint_seed=SEED, digests=changed) != base
    assert projection_seed(session="t", joint_seed=SEED, digests=digests) != base
    assert projection_seed(session="s", joint_seed=bytes(32), digests=digests) != base


def test_a_report_opens_only_for_its_session_and_participant() -> None:
    key = SummaryOpeningKey()
    vec = np.arange(5, dtype=np.uint32)
    report = BindingReport("s", "p01", vec, bytes(32), {"p02": bytes(range(32))})
    sealed = seal_report(report, auditor_public=key.public_bytes())
    opened = open_report(key, sealed, session="s", participant="p01", width=5, dtype=np.uint32)
    assert np.array_equal(opened.r, vec) and opened.seeds["p02"] == bytes(range(32))
    for session, pid in (("t", "p01"), ("s", "p02")):
        with pytest.raises(DecryptionError):
            open_report(key, sealed, session=session, participant=pid, width=5, dtype=np.uint32)
    with pytest.raises(MessageError, match="words"):
        open_report(key, sealed, session="s", participant="p01", width=6, dtype=np.uint32)
    with pytest.raises(MessageError, match="no binding report"):
        open_report(key, b"", session="s", participant="p01", width=5, dtype=np.uint32)


def test_a_verdict_verifies_only_under_the_auditor_key_and_session() -> None:
    auditor = IdentityKey.generate()
    data, sig = MaskVerdict("s", {"p01": "why"}, {}).sign(auditor)
    MaskVerdict.verified(data, sig, auditor=auditor.public_bytes(), session="s")
    with pytest.raises(InvalidSignature):
        MaskVerdict.verified(data, sig, auditor=IdentityKey.generate().public_bytes(), session="s")
    with pytest.raises(InvalidSignature):
        MaskVerdict.verified(b"", b"", auditor=auditor.public_bytes(), session="s")
    with pytest.raises(StageError):
        MaskVerdict.verified(data, sig, auditor=auditor.public_bytes(), session="t")
