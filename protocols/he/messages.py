"""HE-mode messages: one frozen dataclass each, with a versioned, length-checked wire form.

=====================  ==========================  ===============================
message                route                       carries
=====================  ==========================  ===============================
``ContextOffer``       auditor -> everyone         public CKKS context, sealbox key,
                                                   signed by the auditor's identity
``HEUpload``           participant -> coordinator  ciphertext chunks only
``ContributionReceipt`` participant -> coordinator  signed upload digest, model digest
                       (relayed to the auditor)    and sealed tag seed
``DecryptRequest``     coordinator -> auditor      aggregate chunks + receipts
``AggregateRelease``   auditor -> coordinator      weighted sum, total weight
``FoldRequest``        coordinator -> auditor      one fold per participant + receipts,
                                                   the joint seed and the fold seed
``FoldVerdict``        auditor -> coordinator      the signed P6 verdict on the folds
=====================  ==========================  ===============================

Nothing here carries a secret key, a sample count or a plaintext update of one
participant. What is signed or bound (the offer, the receipt and its sealing AAD) is
:func:`crypto.encoding.bind` of the fields under a versioned domain, and every session
and participant id is checked by :func:`crypto.encoding.require_identifier` where a
message is decoded (a bad one is a :class:`MessageError`).
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from numpy.typing import NDArray

from crypto.encoding import bind, require_identifier
from crypto.errors import CryptoError, InvalidSignature, MessageError, SecurityViolation
from crypto.signing import verify_signature
from protocols.framing import Reader, Writer
from protocols.trust_offer import check_epoch

MAX_CHUNKS = 1 << 20
MAX_CHUNK_BYTES = 1 << 24
#: far below any CKKS ciphertext chunk (tens of KB at the smallest 128-bit parameters)
MIN_CHUNK_BYTES = 1024
MAX_CONTEXT_BYTES = 1 << 26
MAX_RECEIPT_BYTES = 4096
MAX_GROUP = 1 << 16
DIGEST = 32
SIGNATURE = 64
_ID_LIMIT = 128
OFFER_LABEL = b"securepool/he/context-offer/v4"
_OFFER_DOMAIN = b"securepool/he/context-offer/v4"  # v4: the keys' epoch, signed
_RECEIPT_DOMAIN = b"securepool/he/receipt/v3"  # v3: the model digest, signed
_RECEIPT_HEADER_DOMAIN = b"securepool/he/receipt-header/v3"


def checked_id(name: str, value: str) -> str:
    """``value`` if it is a valid session or participant id, else :class:`MessageError`."""
    try:
        return require_identifier(name, value)
    except CryptoError as exc:
        raise MessageError(str(exc)) from None


@dataclass(frozen=True)
class ContextOffer:
    """The key holder's public material: a public-only CKKS context, an X25519 key and,
    with the HE binding, the Galois keys of the fold's rotations (SEAL bytes; empty
    without), signed (Ed25519, label :data:`OFFER_LABEL`) by the auditor's identity key
    over :meth:`signed_part`, which binds the setup session, the keys' ``epoch`` (the
    number of the auditor's CKKS key pair, persisted and incremented by the auditor every
    time it makes a new one) and the Galois keys' SHA-256. Only the coordinator folds,
    so participants get the offer without the keys (:meth:`without_galois`: same
    signature, the digest stands in for them)."""

    KIND: ClassVar[int] = 1
    session: str
    public_context: bytes
    sealbox_public: bytes
    signature: bytes
    galois_keys: bytes = b""
    galois_digest: bytes = b""  # SHA-256 of the Galois keys (set from them when empty)
    epoch: int = 1  # the auditor's key pair number: participants refuse older ones

    def __post_init__(self) -> None:
        check_epoch(self.epoch)
        digest = hashlib.sha256(self.galois_keys).digest()
        if not self.galois_digest:
            object.__setattr__(self, "galois_digest", digest)
        elif self.galois_keys and self.galois_digest != digest:
            raise MessageError("context offer: the Galois keys do not match their digest")

    def signed_part(self) -> bytes:
        return bind(_OFFER_DOMAIN, self.session, self.epoch, self.key_material())

    def key_material(self) -> bytes:
        """What the offer's epoch names: the public context's and the Galois keys'
        SHA-256 and the sealbox key (the same with or without the Galois keys)."""
        context_digest = hashlib.sha256(self.public_context).digest()
        keys = (context_digest, self.sealbox_public, self.galois_digest)
        return bind(_OFFER_DOMAIN + b"/keys", *keys)

    def without_galois(self) -> ContextOffer:
        """The same signed offer without the Galois keys (a participant's copy)."""
        return dataclasses.replace(self, galois_keys=b"", galois_digest=self.galois_digest)

    def to_bytes(self) -> bytes:
        w = Writer(self.KIND).text(self.session).blob(self.public_context)
        w.blob(self.sealbox_public).blob(self.signature).blob(self.galois_keys)
        return w.blob(self.galois_digest).u64(self.epoch).finish()

    @classmethod
    def from_bytes(cls, data: bytes) -> ContextOffer:
        r = Reader(data, kind=cls.KIND, name="ContextOffer")
        session = checked_id("session", r.text(limit=_ID_LIMIT))
        context, sealbox = r.blob(limit=MAX_CONTEXT_BYTES), r.blob(exact=32)
        signature, galois = r.blob(exact=SIGNATURE), r.blob(limit=MAX_CONTEXT_BYTES)
        digest, epoch = r.blob(exact=32), r.u64()
        r.end()
        return cls(session, context, sealbox, signature, galois, digest, epoch)


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
        """(session, participant, fingerprint, d, chunk count) without copying the chunks.

        Security: the chunk count is the number of chunks really present (each at least
        :data:`MIN_CHUNK_BYTES`), so memory the coordinator sizes from it is bounded by
        the upload's own length; only MessageError.
        """
        r = Reader(data, kind=cls.KIND, name="HEUpload")
        session = checked_id("session", r.text(limit=_ID_LIMIT))
        participant = checked_id("participant", r.text(limit=_ID_LIMIT))
        fingerprint, d = r.blob(exact=DIGEST), r.u64()
        count, shortest = r.skip_blobs(max_count=MAX_CHUNKS, limit=MAX_CHUNK_BYTES)
        r.end()
        if count and shortest < MIN_CHUNK_BYTES:
            raise MessageError(f"HEUpload: a chunk of {shortest} bytes is not a ciphertext")
        return session, participant, fingerprint, d, count

    @classmethod
    def from_bytes(cls, data: bytes) -> HEUpload:
        r = Reader(data, kind=cls.KIND, name="HEUpload")
        session = checked_id("session", r.text(limit=_ID_LIMIT))
        participant = checked_id("participant", r.text(limit=_ID_LIMIT))
        fingerprint, d = r.blob(exact=DIGEST), r.u64()
        chunks = tuple(r.blobs(max_count=MAX_CHUNKS, limit=MAX_CHUNK_BYTES))
        r.end()
        if d < 1 or not chunks:
            raise MessageError("HEUpload: empty update")
        return cls(session, participant, fingerprint, d, chunks)


@dataclass(frozen=True)
class ContributionReceipt:
    """A participant's signed statement: "I contributed exactly this upload to this session".

    ``model_digest`` names everything the participant was sent for the session (in a
    pool run :func:`securepool.consistency.session_digest`, which the node computes
    itself: the global model, the session, the model's id and layout, the training
    settings and the group's joint seed), so that the key holder can refuse an aggregate
    of members that were sent different models. ``sealed_tag_seed`` is the participant's
    per-session contribution-tag seed sealed to the key holder; the sealing binds
    :meth:`header` as associated data. ``signature`` (Ed25519, label ``RECEIPT_LABEL``)
    covers :meth:`signed_part`. Both are :func:`~crypto.encoding.bind` encodings under
    their own versioned domains.
    """

    KIND: ClassVar[int] = 8  # the v3 receipt (model digest); v2 was kind 3, no longer parsed
    session: str
    participant: str
    context_fingerprint: bytes
    d: int
    n_chunks: int
    upload_digest: bytes
    model_digest: bytes
    sealed_tag_seed: bytes
    signature: bytes

    def _fields(self) -> tuple[str, str, bytes, int, int, bytes, bytes]:
        return (
            self.session,
            self.participant,
            self.context_fingerprint,
            self.d,
            self.n_chunks,
            self.upload_digest,
            self.model_digest,
        )

    def header(self) -> bytes:
        """The fields the tag seed is sealed to (everything but the seal and signature)."""
        return bind(_RECEIPT_HEADER_DOMAIN, *self._fields())

    def signed_part(self) -> bytes:
        return bind(_RECEIPT_DOMAIN, *self._fields(), self.sealed_tag_seed)

    def to_bytes(self) -> bytes:
        w = Writer(self.KIND).text(self.session).text(self.participant)
        w.blob(self.context_fingerprint).u64(self.d).u64(self.n_chunks)
        w.blob(self.upload_digest).blob(self.model_digest)
        w.blob(self.sealed_tag_seed).blob(self.signature)
        return w.finish()

    @classmethod
    def from_bytes(cls, data: bytes) -> ContributionReceipt:
        if len(data) > MAX_RECEIPT_BYTES:
            raise MessageError(f"ContributionReceipt of {len(data)} bytes is too long")
        r = Reader(data, kind=cls.KIND, name="ContributionReceipt")
        session = checked_id("session", r.text(limit=_ID_LIMIT))
        participant = checked_id("participant", r.text(limit=_ID_LIMIT))
        fingerprint, d, n_chunks = r.blob(exact=DIGEST), r.u64(), r.u64()
        if d >= 1 << 62 or n_chunks >= 1 << 62:
            raise MessageError("ContributionReceipt: d or chunk count out of range")
        digest, model, sealed = r.blob(exact=DIGEST), r.blob(exact=DIGEST), r.blob(limit=256)
        signature = r.blob(exact=SIGNATURE)
        r.end()
        return cls(session, participant, fingerprint, d, n_chunks, digest, model, sealed, signature)


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
        session = checked_id("session", r.text(limit=_ID_LIMIT))
        fingerprint, d = r.blob(exact=DIGEST), r.u64()
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
        session = checked_id("session", r.text(limit=_ID_LIMIT))
        contributors = tuple(
            checked_id("contributor", c) for c in r.texts(max_count=MAX_GROUP, limit=_ID_LIMIT)
        )
        total_weight, d = r.f64(), r.u64()
        weighted_sum = r.floats(count=d)
        r.end()
        if not (np.isfinite(total_weight) and total_weight > 0):
            raise MessageError("AggregateRelease: total weight must be positive and finite")
        return cls(session, contributors, total_weight, weighted_sum)


def verify_context_offer(offer: bytes, *, auditor_public: bytes, session: str) -> ContextOffer:
    """The decoded offer if the auditor signed it for ``session``; else an error.

    Security: raises :class:`SecurityViolation` for an offer of another session or one
    not signed by ``auditor_public`` (another key holder's context, a re-signed or
    altered one, the epoch included), :class:`MessageError` for malformed bytes.
    ``auditor_public`` must come from the PKI, never from the offer. Whether the epoch
    is the newest is the participant's check (:mod:`protocols.offer_epochs`).
    """
    msg = ContextOffer.from_bytes(offer)
    if msg.session != session:
        raise SecurityViolation(f"context offer for session {msg.session!r}, expected {session!r}")
    try:
        verify_signature(auditor_public, msg.signed_part(), msg.signature, label=OFFER_LABEL)
    except InvalidSignature as exc:
        raise SecurityViolation(
            f"context offer is not signed by the auditor's identity key: {exc}"
        ) from exc
    return msg


@dataclass(frozen=True)
class FoldRequest:
    """The coordinator's ask under the HE binding: judge these participants by these folds.

    ``folds[i]`` is the fold (protocols.he.fold) of the upload ``receipts[i]`` signs;
    ``seed`` is the fold seed the coordinator used, which the auditor recomputes from
    the session, ``joint_seed`` and the receipts' upload digests.
    """

    KIND: ClassVar[int] = 6
    session: str
    context_fingerprint: bytes
    d: int
    joint_seed: bytes
    seed: bytes
    receipts: tuple[bytes, ...]
    folds: tuple[bytes, ...]

    def to_bytes(self) -> bytes:
        w = Writer(self.KIND).text(self.session).blob(self.context_fingerprint).u64(self.d)
        w.blob(self.joint_seed).blob(self.seed)
        return w.blobs(self.receipts).blobs(self.folds).finish()

    @classmethod
    def from_bytes(cls, data: bytes) -> FoldRequest:
        r = Reader(data, kind=cls.KIND, name="FoldRequest")
        session = checked_id("session", r.text(limit=_ID_LIMIT))
        fingerprint, d = r.blob(exact=DIGEST), r.u64()
        joint_seed, seed = r.blob(limit=64), r.blob(exact=DIGEST)
        receipts = tuple(r.blobs(max_count=MAX_GROUP, limit=MAX_RECEIPT_BYTES))
        folds = tuple(r.blobs(max_count=MAX_GROUP, limit=MAX_CHUNK_BYTES))
        r.end()
        if len(folds) != len(receipts):
            raise MessageError(f"FoldRequest: {len(folds)} folds for {len(receipts)} receipts")
        return cls(session, fingerprint, d, joint_seed, seed, receipts, folds)


@dataclass(frozen=True)
class FoldVerdict:
    """The auditor's answer to a :class:`FoldRequest`: the fields of a
    :class:`protocols.verdict.Verdict` and the auditor's signature over its payload."""

    KIND: ClassVar[int] = 7
    session: str
    trusted: str  # "" for none
    flagged: tuple[tuple[str, str], ...]
    differences: tuple[tuple[str, float], ...]
    threshold: float
    signature: bytes

    def to_bytes(self) -> bytes:
        w = Writer(self.KIND).text(self.session).text(self.trusted).u64(len(self.flagged))
        for pid, reason in self.flagged:
            w.text(pid).text(reason)
        w.u64(len(self.differences))
        for pid, diff in self.differences:
            w.text(pid).f64(diff)
        return w.f64(self.threshold).blob(self.signature).finish()

    @classmethod
    def from_bytes(cls, data: bytes) -> FoldVerdict:
        r = Reader(data, kind=cls.KIND, name="FoldVerdict")
        session = checked_id("session", r.text(limit=_ID_LIMIT))
        trusted = r.text(limit=_ID_LIMIT)
        if trusted:
            checked_id("trusted", trusted)
        n = r.u64()
        if n > MAX_GROUP:
            raise MessageError("FoldVerdict: too many flagged participants")
        flagged = tuple(
            (checked_id("flagged", r.text(limit=_ID_LIMIT)), r.text(limit=4096)) for _ in range(n)
        )
        m = r.u64()
        if m > MAX_GROUP:
            raise MessageError("FoldVerdict: too many differences")
        differences = tuple(
            (checked_id("participant", r.text(limit=_ID_LIMIT)), r.f64()) for _ in range(m)
        )
        threshold, signature = r.f64(), r.blob(exact=SIGNATURE)
        r.end()
        return cls(session, trusted, flagged, differences, threshold, signature)
