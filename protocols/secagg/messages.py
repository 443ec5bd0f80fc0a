"""SecAgg+ messages: one frozen dataclass each, and their versioned binary wire format.

Wire format (:mod:`protocols.codec`): ``b"SA" | version (1) | kind (1) | fields`` in
the order of each class's ``SCHEMA``, every length checked against the schema and the
bytes left; no JSON, no hex. Every message names its session, so a message of another
session (round) is refused. Identifiers (session, sender, peers) are checked by
``crypto.encoding.require_identifier`` both when a message is built and when decoded.

Version 4 (this one) lets keys be advertised in advance (:mod:`protocols.secagg.prekeys`):
ShareKeys then carries the client's signed model digest and ShareDelivery every sharer's,
and adds the multi-step messages of :mod:`protocols.secagg.stepped` (kinds 10-13).

Version 3 added the binding of mask mode (:mod:`protocols.secagg.binding`):
the SurvivorList carries the SHA-256 of every masked input received, the
ConsistencySignature the client's report sealed to the auditor (empty without a trust
check), and the UnmaskRequest the auditor's signed verdict (empty without one).

Version 2 replaced the JSON + hex header of version 1: a KeyDirectory no
longer names the degree and threshold (clients derive them from the group size and the
agreed settings) and every advertisement carries the sender's model digest.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from crypto.encoding import require_identifier
from crypto.errors import MessageError, SecurePoolError
from protocols.codec import Field, Kind, Reader, Schema, decode_fields, encode

MAGIC = b"SA"
VERSION = 4
MAX_PARTICIPANTS = 10_000  # per session: bounds every list and map a decoder accepts
MAX_SHARE_CT = 1024  # an AEAD-sealed pair of Shamir shares is ~100 bytes
MAX_SUMMARY = 1 << 20  # a sealed trust summary (norm + sketch) is a few kB
MAX_REPORT = 1 << 24  # a sealed binding report: (degree + 2) x (dim + 1) words
MAX_VERDICT = 1 << 22  # a signed verdict: ids and reasons of flagged and excluded
MAX_VECTOR = 1 << 28  # words of a masked vector (1 GiB at 32 bits)
KEY = 32
SIG = 64
DIGEST = 32

_SESSION = Field("session", Kind.ID)
_SENDER = Field("sender", Kind.ID)


def _check_ids(msg: Any) -> None:
    """Constructor-side checks: identifiers valid, byte fields bytes."""
    try:
        require_identifier("session", msg.session)
        if hasattr(msg, "sender"):
            require_identifier("sender", msg.sender)
    except SecurePoolError as exc:
        raise MessageError(str(exc)) from None


@dataclass(frozen=True)
class AdvertiseKeys:
    """Stage 0, client -> server: two X25519 public keys and the client's model digest,
    signed by its identity key."""

    KIND: ClassVar[int] = 1
    SCHEMA: ClassVar[Schema] = (
        _SESSION,
        _SENDER,
        Field("c_pk", Kind.BYTES, size=KEY),
        Field("s_pk", Kind.BYTES, size=KEY),
        Field("model_digest", Kind.BYTES, size=DIGEST),
        Field("signature", Kind.BYTES, size=SIG),
    )
    session: str
    sender: str
    c_pk: bytes  # for encrypting shares
    s_pk: bytes  # for mask agreement
    model_digest: bytes  # hash of the global model + session parameters it was sent
    signature: bytes

    def __post_init__(self) -> None:
        _check_ids(self)


@dataclass(frozen=True)
class KeyDirectory:
    """Stage 0, server -> clients: everybody's signed advertisement, the graph seed, the
    fixed-point scale and the vector length. ``keys[pid] = (c_pk, s_pk, model_digest,
    signature)``. Clients derive the graph seed and the scale themselves
    (:func:`protocols.secagg.settings.encoding_spec`) and refuse a directory that names
    others: on the wire they only show that both sides agree."""

    KIND: ClassVar[int] = 2
    SCHEMA: ClassVar[Schema] = (
        _SESSION,
        Field("keys", Kind.RECORDS, widths=(KEY, KEY, DIGEST, SIG), limit=MAX_PARTICIPANTS),
        Field("graph_seed", Kind.BYTES, size=32),
        Field("scale", Kind.F64),
        Field("length", Kind.U32),
    )
    session: str
    keys: dict[str, tuple[bytes, bytes, bytes, bytes]]
    graph_seed: bytes
    scale: float
    length: int

    def __post_init__(self) -> None:
        _check_ids(self)


@dataclass(frozen=True)
class ShareKeys:
    """Stage 1, client -> server: AEAD-encrypted Shamir shares, one per neighbour; with
    keys advertised in advance (:mod:`protocols.secagg.prekeys`) also the client's model
    digest and its signature over it (empty otherwise: the digest is in the advert)."""

    KIND: ClassVar[int] = 3
    SCHEMA: ClassVar[Schema] = (
        _SESSION,
        _SENDER,
        Field("ciphertexts", Kind.ID_BYTES, limit=MAX_PARTICIPANTS),
        Field("model_digest", Kind.BYTES, limit=DIGEST),
        Field("digest_signature", Kind.BYTES, limit=SIG),
    )
    session: str
    sender: str
    ciphertexts: dict[str, bytes]
    model_digest: bytes = b""
    digest_signature: bytes = b""

    def __post_init__(self) -> None:
        _check_ids(self)


@dataclass(frozen=True)
class ShareDelivery:
    """Stage 1, server -> client: the ciphertexts addressed to it; with keys advertised
    in advance, every sharer's signed model digest (``digests[pid] = (digest,
    signature)``), which the client checks before it sends its masked input."""

    KIND: ClassVar[int] = 4
    SCHEMA: ClassVar[Schema] = (
        _SESSION,
        Field("ciphertexts", Kind.ID_BYTES, limit=MAX_PARTICIPANTS),
        Field("digests", Kind.RECORDS, widths=(DIGEST, SIG), limit=MAX_PARTICIPANTS),
    )
    session: str
    ciphertexts: dict[str, bytes]  # sender -> ciphertext
    digests: dict[str, tuple[bytes, bytes]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_ids(self)


@dataclass(frozen=True)
class MaskedInput:
    """Stage 2, client -> server: the masked vector, and the summary sealed to the auditor."""

    KIND: ClassVar[int] = 5
    SCHEMA: ClassVar[Schema] = (
        _SESSION,
        _SENDER,
        Field("sealed_summary", Kind.BYTES, limit=MAX_SUMMARY),
        Field("vector", Kind.VECTOR, limit=MAX_VECTOR),
    )
    session: str
    sender: str
    sealed_summary: bytes
    vector: NDArray[np.unsignedinteger]

    def __post_init__(self) -> None:
        _check_ids(self)


@dataclass(frozen=True)
class SurvivorList:
    """Stage 3, server -> clients: who is in the aggregate (masked input in, not flagged),
    and ``digests``: the SHA-256 of every masked input received (the binding's
    projection is drawn from them, :func:`protocols.secagg.binding.projection_seed`)."""

    KIND: ClassVar[int] = 6
    SCHEMA: ClassVar[Schema] = (
        _SESSION,
        Field("survivors", Kind.IDS, limit=MAX_PARTICIPANTS),
        Field("digests", Kind.ID_BYTES, size=DIGEST, limit=MAX_PARTICIPANTS),
    )
    session: str
    survivors: tuple[str, ...]
    digests: dict[str, bytes] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_ids(self)


@dataclass(frozen=True)
class ConsistencySignature:
    """Stage 3, client -> server: the client's signature over the survivor list and the
    digests, and its binding report sealed to the auditor (empty without trust check)."""

    KIND: ClassVar[int] = 7
    SCHEMA: ClassVar[Schema] = (
        _SESSION,
        _SENDER,
        Field("signature", Kind.BYTES, size=SIG),
        Field("sealed_report", Kind.BYTES, limit=MAX_REPORT),
    )
    session: str
    sender: str
    signature: bytes
    sealed_report: bytes = b""

    def __post_init__(self) -> None:
        _check_ids(self)


@dataclass(frozen=True)
class UnmaskRequest:
    """Stage 4, server -> clients: survivors, dropped, everybody's consistency signatures,
    and the auditor's signed verdict (``verdict``, ``verdict_signature``; both empty
    without a trust check)."""

    KIND: ClassVar[int] = 8
    SCHEMA: ClassVar[Schema] = (
        _SESSION,
        Field("survivors", Kind.IDS, limit=MAX_PARTICIPANTS),
        Field("dropped", Kind.IDS, limit=MAX_PARTICIPANTS),
        Field("signatures", Kind.ID_BYTES, size=SIG, limit=MAX_PARTICIPANTS),
        Field("verdict", Kind.BYTES, limit=MAX_VERDICT),
        Field("verdict_signature", Kind.BYTES, limit=SIG),
    )
    session: str
    survivors: tuple[str, ...]
    dropped: tuple[str, ...]
    signatures: dict[str, bytes]
    verdict: bytes = b""
    verdict_signature: bytes = b""

    def __post_init__(self) -> None:
        _check_ids(self)


@dataclass(frozen=True)
class UnmaskResponse:
    """Stage 4, client -> server: self-mask shares of survivors, key shares of the dropped."""

    KIND: ClassVar[int] = 9
    SCHEMA: ClassVar[Schema] = (
        _SESSION,
        _SENDER,
        Field("b_shares", Kind.ID_BYTES, limit=MAX_PARTICIPANTS),
        Field("s_shares", Kind.ID_BYTES, limit=MAX_PARTICIPANTS),
    )
    session: str
    sender: str
    b_shares: dict[str, bytes]
    s_shares: dict[str, bytes]

    def __post_init__(self) -> None:
        _check_ids(self)


@dataclass(frozen=True)
class StepModel:
    """A multi-step session's step ``step`` (>= 1), server -> contributor: the sum the
    previous step unmasked (two's-complement words), from which the contributor computes
    the model of this step itself (:mod:`protocols.secagg.stepped`)."""

    KIND: ClassVar[int] = 10
    SCHEMA: ClassVar[Schema] = (
        _SESSION,
        Field("step", Kind.U32),
        Field("total", Kind.VECTOR, limit=MAX_VECTOR),
    )
    session: str
    step: int
    total: NDArray[np.unsignedinteger]

    def __post_init__(self) -> None:
        _check_ids(self)


@dataclass(frozen=True)
class StepDigest:
    """Contributor -> server: its signature over the model it computed for ``step``."""

    KIND: ClassVar[int] = 11
    SCHEMA: ClassVar[Schema] = (
        _SESSION,
        _SENDER,
        Field("step", Kind.U32),
        Field("signature", Kind.BYTES, size=SIG),
    )
    session: str
    sender: str
    step: int
    signature: bytes

    def __post_init__(self) -> None:
        _check_ids(self)


@dataclass(frozen=True)
class StepGo:
    """Server -> contributor: every contributor's signature over its model of ``step``;
    a contributor sends its masked input only if all are over the model it computed."""

    KIND: ClassVar[int] = 12
    SCHEMA: ClassVar[Schema] = (
        _SESSION,
        Field("step", Kind.U32),
        Field("signatures", Kind.ID_BYTES, size=SIG, limit=MAX_PARTICIPANTS),
    )
    session: str
    step: int
    signatures: dict[str, bytes]

    def __post_init__(self) -> None:
        _check_ids(self)


@dataclass(frozen=True)
class StepInput:
    """Contributor -> server: its masked input of ``step`` (pairwise masks only)."""

    KIND: ClassVar[int] = 13
    SCHEMA: ClassVar[Schema] = (
        _SESSION,
        _SENDER,
        Field("step", Kind.U32),
        Field("vector", Kind.VECTOR, limit=MAX_VECTOR),
    )
    session: str
    sender: str
    step: int
    vector: NDArray[np.unsignedinteger]

    def __post_init__(self) -> None:
        _check_ids(self)


Message = (
    AdvertiseKeys
    | KeyDirectory
    | ShareKeys
    | ShareDelivery
    | MaskedInput
    | SurvivorList
    | ConsistencySignature
    | UnmaskRequest
    | UnmaskResponse
    | StepModel
    | StepDigest
    | StepGo
    | StepInput
)
_TYPES: dict[int, Any] = {
    t.KIND: t
    for t in (
        AdvertiseKeys,
        KeyDirectory,
        ShareKeys,
        ShareDelivery,
        MaskedInput,
        SurvivorList,
        ConsistencySignature,
        UnmaskRequest,
        UnmaskResponse,
        StepModel,
        StepDigest,
        StepGo,
        StepInput,
    )
}
DECODERS = tuple(_TYPES.values())


def encode_message(msg: Message) -> bytes:
    """Serialise a message to its wire form; MessageError if a field does not fit."""
    values = {f.name: getattr(msg, f.name) for f in fields(msg)}
    return encode(MAGIC, VERSION, msg.KIND, msg.SCHEMA, values)


def decode_message(data: bytes, expected: type[Any] | None = None) -> Any:
    """Parse a wire message; raise MessageError for anything malformed.

    Security: checks magic, version and kind, then reads the kind's schema in one pass
    (:mod:`protocols.codec`): every length bounded by the schema and the bytes left,
    identifiers validated, maps canonical, no trailing bytes. It raises MessageError and
    nothing else, in time and memory linear in ``len(data)``.
    """
    reader = Reader(data, magic=MAGIC, version=VERSION, name="SecAgg+")
    cls = _TYPES.get(reader.kind)
    if cls is None:
        raise MessageError(f"unknown SecAgg+ message kind {reader.kind}")
    if expected is not None and cls is not expected:
        raise MessageError(f"expected {expected.__name__}, got {cls.__name__}")
    return cls(**decode_fields(reader, cls.SCHEMA))
