"""HE-mode messages: one frozen dataclass each, with a versioned, length-checked wire form.

=====================  ==========================  ===============================
message                route                       carries
=====================  ==========================  ===============================
``ContextOffer``       auditor -> everyone         public CKKS context, sealbox key
``HEUpload``           participant -> coordinator  ciphertext chunks only
``ContributionReceipt`` participant -> coordinator  signed digest + sealed tag seed
                       (relayed to the auditor)
``DecryptRequest``     coordinator -> auditor      aggregate chunks + receipts
``AggregateRelease``   auditor -> coordinator      weighted sum, total weight
=====================  ==========================  ===============================

Nothing here carries a secret key, a sample count or a plaintext update of one
participant.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from numpy.typing import NDArray

from crypto.errors import MessageError
from protocols.he.wire import Reader, Writer

MAX_CHUNKS = 1 << 20
MAX_CHUNK_BYTES = 1 << 24
MAX_CONTEXT_BYTES = 1 << 26
MAX_RECEIPT_BYTES = 4096
MAX_GROUP = 1 << 16
DIGEST = 32


@dataclass(frozen=True)
class ContextOffer:
    """The key holder's public material: a public-only CKKS context and an X25519 key."""

    KIND: ClassVar[int] = 1
    public_context: bytes
    sealbox_public: bytes

    def to_bytes(self) -> bytes:
        return Writer(self.KIND).blob(self.public_context).blob(self.sealbox_public).finish()

    @classmethod
    def from_bytes(cls, data: bytes) -> ContextOffer:
        r = Reader(data, kind=cls.KIND, name="ContextOffer")
        msg = cls(r.blob(limit=MAX_CONTEXT_BYTES), r.blob(exact=32))
        r.end()
        return msg


@dataclass(frozen=True)
class HEUpload:
    """One participant's encrypted, weighted update: ``n_chunks`` serialised ciphertexts."""

    KIND: ClassVar[int] = 2
    session: str
    participant: str
    context_fingerprint: bytes
    d: int
    chunks: tuple[bytes, ...]

    def to_bytes(self) -> bytes:
        w = Writer(self.KIND).text(self.session).text(self.participant)
        return w.blob(self.context_fingerprint).u64(self.d).blobs(self.chunks).finish()

    @classmethod
    def peek(cls, data: bytes) -> tuple[str, str, bytes, int, int]:
        """(session, participant, fingerprint, d, chunk count) without copying the chunks."""
        r = Reader(data, kind=cls.KIND, name="HEUpload")
        return r.text(), r.text(), r.blob(exact=DIGEST), r.u64(), r.u32()

    @classmethod
    def from_bytes(cls, data: bytes) -> HEUpload:
        r = Reader(data, kind=cls.KIND, name="HEUpload")
        session, participant = r.text(), r.text()
        fingerprint, d = r.blob(exact=DIGEST), r.u64()
        chunks = tuple(r.blobs(max_count=MAX_CHUNKS, limit=MAX_CHUNK_BYTES))
        r.end()
        if d < 1 or not chunks:
            raise MessageError("HEUpload: empty update")
        return cls(session, participant, fingerprint, d, chunks)


@dataclass(frozen=True)
class ContributionReceipt:
    """A participant's signed statement: "I contributed exactly this upload to this session".

    ``sealed_tag_seed`` is the participant's per-session contribution-tag seed sealed to
    the key holder; the sealing binds :meth:`header` as associated data. ``signature``
    (Ed25519, label :data:`RECEIPT_LABEL`) covers :meth:`signed_part`.
    """

    KIND: ClassVar[int] = 3
    session: str
    participant: str
    context_fingerprint: bytes
    d: int
    n_chunks: int
    upload_digest: bytes
    sealed_tag_seed: bytes
    signature: bytes

    def header(self) -> bytes:
        """The fields the tag seed is sealed to (everything but the seal and signature)."""
        w = Writer(self.KIND).text(self.session).text(self.participant)
        w.blob(self.context_fingerprint).u64(self.d).u64(self.n_chunks)
        return w.blob(self.upload_digest).finish()

    def signed_part(self) -> bytes:
        return Writer(self.KIND).blob(self.header()).blob(self.sealed_tag_seed).finish()

    def to_bytes(self) -> bytes:
        return Writer(self.KIND).blob(self.signed_part()).blob(self.signature).finish()

    @classmethod
    def from_bytes(cls, data: bytes) -> ContributionReceipt:
        if len(data) > MAX_RECEIPT_BYTES:
            raise MessageError(f"ContributionReceipt of {len(data)} bytes is too long")
        outer = Reader(data, kind=cls.KIND, name="ContributionReceipt")
        signed, signature = outer.blob(), outer.blob(exact=64)
        outer.end()
        mid = Reader(signed, kind=cls.KIND, name="ContributionReceipt")
        header, sealed = mid.blob(), mid.blob(limit=256)
        mid.end()
        r = Reader(header, kind=cls.KIND, name="ContributionReceipt")
        session, participant = r.text(), r.text()
        fingerprint, d, n_chunks = r.blob(exact=DIGEST), r.u64(), r.u64()
        digest = r.blob(exact=DIGEST)
        r.end()
        return cls(session, participant, fingerprint, d, n_chunks, digest, sealed, signature)


@dataclass(frozen=True)
class DecryptRequest:
    """The coordinator's ask: decrypt this aggregate of the contributions these receipts name."""

    KIND: ClassVar[int] = 4
    session: str
    context_fingerprint: bytes
    d: int
    receipts: tuple[bytes, ...]
    chunks: tuple[bytes, ...]

    def to_bytes(self) -> bytes:
        w = Writer(self.KIND).text(self.session).blob(self.context_fingerprint).u64(self.d)
        return w.blobs(self.receipts).blobs(self.chunks).finish()

    @classmethod
    def from_bytes(cls, data: bytes) -> DecryptRequest:
        r = Reader(data, kind=cls.KIND, name="DecryptRequest")
        session, fingerprint, d = r.text(), r.blob(exact=DIGEST), r.u64()
        receipts = tuple(r.blobs(max_count=MAX_GROUP, limit=MAX_RECEIPT_BYTES))
        chunks = tuple(r.blobs(max_count=MAX_CHUNKS, limit=MAX_CHUNK_BYTES))
        r.end()
        return cls(session, fingerprint, d, receipts, chunks)


@dataclass(frozen=True)
class AggregateRelease:
    """The key holder's answer: the group's weighted sum and total weight, nothing else."""

    KIND: ClassVar[int] = 5
    session: str
    contributors: tuple[str, ...]
    total_weight: float
    weighted_sum: NDArray[np.float64]

    def to_bytes(self) -> bytes:
        w = Writer(self.KIND).text(self.session).texts(self.contributors)
        w.f64(self.total_weight).u64(self.weighted_sum.size)
        return w.floats(self.weighted_sum).finish()

    @classmethod
    def from_bytes(cls, data: bytes) -> AggregateRelease:
        r = Reader(data, kind=cls.KIND, name="AggregateRelease")
        session, contributors = r.text(), tuple(r.texts(max_count=MAX_GROUP))
        total_weight, d = r.f64(), r.u64()
        weighted_sum = r.floats(count=d)
        r.end()
        if not (np.isfinite(total_weight) and total_weight > 0):
            raise MessageError("AggregateRelease: total weight must be positive and finite")
        return cls(session, contributors, total_weight, weighted_sum)
