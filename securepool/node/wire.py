"""The node's stages and the framing of what the coordinator and a node exchange.

Every stage payload and every reply is length-checked binary; anything malformed raises
:class:`~crypto.errors.MessageError`. The protocol messages inside (beacon, SecAgg+,
plaintext updates) are the protocols' own signed or bound bytes, carried unchanged.

Reply envelope: ``b"SN"`` | version 1 | status (0 ok, 1 refused) | u32 meta length |
meta (UTF-8 JSON object, at most 64 KiB: public facts the node chooses to report, e.g.
its sample count or epsilon) | body (the protocol message).
"""

from __future__ import annotations

import json
import logging
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import numpy as np
from numpy.typing import NDArray

from crypto.encoding import require_identifier
from crypto.errors import MessageError, SecurePoolError

log = logging.getLogger("securepool.node")

MAGIC = b"SN"
VERSION = 1
MAX_META = 64 * 1024
_HEAD = struct.Struct(">2sBBI")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")


class NodeStage(str, Enum):
    """The stages a participant node answers, in the order of one iteration."""

    HELLO = "hello"  # the node's public key (checked against the PKI) and readiness
    BEACON_START = "beacon/start"  # BeaconStart -> Commit
    BEACON_COMMITS = "beacon/commits"  # CommitList -> Reveal
    TRAIN = "train"  # Outcome + global model -> AdvertiseKeys (mask) / update (plaintext, HE)
    #: the round's quorum certificate (protocols.quorum): to a mask member with its first
    #: SecAgg+ stage after train, to the auditor (with the statement) before it folds
    #: or decrypts; -> empty reply
    BEACON_QUORUM = "beacon/quorum"
    #: with the beacon reveal of round r (mask mode): r -> the node's signed key advert
    #: for that round's SecAgg+ session (protocols.secagg.prekeys)
    SECAGG_PREKEYS = "secagg/prekeys"
    SECAGG_KEYS = "secagg/keys"  # KeyDirectory (with the train request) -> ShareKeys
    SECAGG_SHARES = "secagg/shares"  # ShareDelivery -> MaskedInput
    SECAGG_SURVIVORS = "secagg/survivors"  # SurvivorList -> ConsistencySignature
    SECAGG_UNMASK = "secagg/unmask"  # UnmaskRequest -> UnmaskResponse
    EVALUATE = "evaluate"  # every global model -> error counts on the local test split
    BUNDLE = "bundle"  # several of the above in one round trip (see encode_bundle)
    HE_OFFER = "he/offer"  # auditor: -> its signed CKKS context offer
    HE_DECRYPT = "he/decrypt"  # auditor: DecryptRequests (pack_list) -> releases / refusals
    TRUST_OFFER = "trust/offer"  # auditor: -> its signed HPKE opening key
    HE_FOLD = "he/fold"  # auditor: FoldRequests (pack_list) -> signed fold verdicts
    MASK_JUDGE = "mask/judge"  # auditor: JudgeRequests (pack_list) -> signed MaskVerdicts
    PLAIN_JUDGE = "plain/judge"  # auditor: received updates' summaries, ballots -> verdicts
    PLAIN_BALLOT = "plain/ballot"  # validation vote: the group's updates -> sealed ballot
    #: data.scaling = "federated", before the first iteration (securepool.scaling_round):
    #: ScalingRequest -> AdvertiseKeys of that round's SecAgg+ session over statistics
    SCALING_START = "scaling/start"
    SCALING_SECAGG = "scaling/secagg"  # that session's next SecAgg+ message -> the reply
    SCALING_RESULT = "scaling/result"  # the agreed standardisation -> empty reply
    #: privacy.mechanism = "distributed", each step after the first
    #: (protocols.secagg.stepped): the previous step's sum -> signed model digest
    DP_MODEL = "dp/model"
    DP_STEP = "dp/step"  # every contributor's signature -> the step's masked input


@dataclass(frozen=True)
class Reply:
    ok: bool
    body: bytes = b""
    meta: Mapping[str, Any] = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        meta = json.dumps(dict(self.meta), sort_keys=True).encode()
        if len(meta) > MAX_META:
            raise MessageError("reply metadata over 64 KiB")
        return _HEAD.pack(MAGIC, VERSION, 0 if self.ok else 1, len(meta)) + meta + self.body

    @classmethod
    def from_bytes(cls, data: bytes) -> Reply:
        if not isinstance(data, bytes) or len(data) < _HEAD.size:
            raise MessageError("node reply shorter than its header")
        magic, version, status, n = _HEAD.unpack_from(data)
        if magic != MAGIC or version != VERSION or status not in (0, 1):
            raise MessageError("node reply with a wrong magic, version or status")
        if n > MAX_META or _HEAD.size + n > len(data):
            raise MessageError("node reply metadata length out of range")
        try:
            meta = json.loads(data[_HEAD.size : _HEAD.size + n].decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise MessageError("node reply metadata is not JSON") from None
        if not isinstance(meta, dict):
            raise MessageError("node reply metadata is not a JSON object")
        return cls(status == 0, data[_HEAD.size + n :], meta)


#: an absolute path in a reason: its folders are the agency's business, not the federation's
_LOCAL_PATH = re.compile(r"(?<![\w.~])/(?:[^\s'\":,;()\[\]<>/]+/)+([^\s'\":,;()\[\]<>/]+)")


def local_reason(reason: str) -> str:
    """``reason`` as it may leave the node: every absolute path cut to ``…/its-name``.

    Security: the node's folders (where its records, keys and state live) stay in its
    own log; the name alone still tells the coordinator which of the agreed files."""
    return _LOCAL_PATH.sub(lambda m: f"…/{m.group(1)}", reason)


def refusal(exc: BaseException) -> bytes:
    """A node's reply when it refuses a message (its reason, typed, for the record).

    Security: the reason that leaves has no local path (:func:`local_reason`); the
    whole of it goes to the node's own log."""
    reason = str(exc)[:2000]
    shared = local_reason(reason)
    if shared != reason:
        log.warning("refused (in full, kept local): %s", reason)
    return Reply(False, meta={"error": type(exc).__name__, "reason": shared}).to_bytes()


class _Reader:
    def __init__(self, data: bytes, what: str) -> None:
        if not isinstance(data, bytes):
            raise MessageError(f"{what}: expected bytes")
        self.data, self.pos, self.what = data, 0, what

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise MessageError(f"{self.what}: truncated")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def u16(self) -> int:
        return int(_U16.unpack(self.take(2))[0])

    def u32(self) -> int:
        return int(_U32.unpack(self.take(4))[0])

    def u64(self) -> int:
        return int(_U64.unpack(self.take(8))[0])

    def ident(self, *, empty: bool = False) -> str:
        raw = self.take(self.u16())
        if empty and not raw:
            return ""
        try:
            return require_identifier("identifier", raw.decode("ascii"))
        except (UnicodeDecodeError, SecurePoolError) as exc:
            raise MessageError(f"{self.what}: bad identifier: {exc}") from None

    def vector(self) -> NDArray[np.float32]:
        n = self.u64()
        if n * 4 > len(self.data) - self.pos:
            raise MessageError(f"{self.what}: vector longer than the message")
        return np.frombuffer(self.take(4 * n), dtype="<f4").astype(np.float32)

    def end(self) -> None:
        if self.pos != len(self.data):
            raise MessageError(f"{self.what}: {len(self.data) - self.pos} trailing bytes")


def _ident(value: str) -> bytes:
    raw = value.encode("ascii")
    return _U16.pack(len(raw)) + raw


def _vector(vec: NDArray[np.float32]) -> bytes:
    return _U64.pack(vec.size) + np.ascontiguousarray(vec, dtype="<f4").tobytes()


@dataclass(frozen=True)
class TrainRequest:
    """The beacon's outcome and, for a group member, its group's global model.

    ``model_id`` is empty (and ``params`` empty) for a revealer not in any group this
    iteration: it still checks the outcome. The node recomputes its group from the
    outcome and refuses a model id that is not its own group's.
    """

    outcome: bytes
    model_id: str
    params: NDArray[np.float32]
    he_offer: bytes = b""  # HE mode: the auditor's signed context offer
    #: the trust check's signed opening key: mask mode, and plaintext mode under the
    #: validation vote (its ballots are sealed to it)
    trust_offer: bytes = b""
    #: the pool iteration (1-based) this beacon round serves: it seeds the order of the
    #: local mini-batches only, so a resumed run trains like an uninterrupted one (the
    #: beacon round, which a resume must move past, does not); 0: not given
    iteration: int = 0
    #: (model id, SHA-256 of its global model) for every group of the round, sorted:
    #: what every endorser's statement binds (securepool.node.agreement)
    model_hashes: tuple[tuple[str, bytes], ...] = ()

    def to_bytes(self) -> bytes:
        return (
            _U32.pack(len(self.outcome))
            + self.outcome
            + _ident(self.model_id)
            + _vector(self.params)
            + _U32.pack(len(self.he_offer))
            + self.he_offer
            + _U32.pack(len(self.trust_offer))
            + self.trust_offer
            + _U32.pack(self.iteration)
            + _U16.pack(len(self.model_hashes))
            + b"".join(_ident(mid) + h for mid, h in self.model_hashes)
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> TrainRequest:
        r = _Reader(data, "train request")
        outcome = r.take(r.u32())
        model_id = r.ident(empty=True)
        params = r.vector()
        offer = r.take(r.u32())
        trust = r.take(r.u32())
        iteration = r.u32()
        hashes = []
        for _ in range(r.u16()):
            mid = r.ident()
            hashes.append((mid, r.take(32)))
        r.end()
        if [m for m, _ in hashes] != sorted({m for m, _ in hashes}):
            raise MessageError("train request: model hashes not sorted or repeated")
        return cls(outcome, model_id, params, offer, trust, iteration, tuple(hashes))


def encode_globals(globals_: Mapping[str, NDArray[np.float32]]) -> bytes:
    """Every global model (the evaluate stage): u16 count | (id | vector)* in id order."""
    out = [_U16.pack(len(globals_))]
    for mid in sorted(globals_):
        out += [_ident(mid), _vector(globals_[mid])]
    return b"".join(out)


def decode_globals(data: bytes) -> dict[str, NDArray[np.float32]]:
    r = _Reader(data, "global models")
    out: dict[str, NDArray[np.float32]] = {}
    for _ in range(r.u16()):
        mid = r.ident()
        if mid in out:
            raise MessageError(f"global models: {mid!r} twice")
        out[mid] = r.vector()
    r.end()
    return out


MAX_BUNDLE = 8


def encode_bundle(parts: list[tuple[str, bytes]]) -> bytes:
    """Several stages' payloads for one node in one message: u16 count | (stage id |
    u32 length | payload)*. The node answers them in order (:func:`decode_bundle`)."""
    if not 1 <= len(parts) <= MAX_BUNDLE:
        raise MessageError(f"a bundle holds 1 to {MAX_BUNDLE} stages, not {len(parts)}")
    out = [_U16.pack(len(parts))]
    for stage, payload in parts:
        if stage == NodeStage.BUNDLE.value:
            raise MessageError("a bundle inside a bundle")
        out += [_ident(stage), _U32.pack(len(payload)), payload]
    return b"".join(out)


def decode_bundle(data: bytes) -> list[tuple[str, bytes]]:
    r = _Reader(data, "bundle")
    n = r.u16()
    if not 1 <= n <= MAX_BUNDLE:
        raise MessageError(f"bundle: {n} stages, expected 1 to {MAX_BUNDLE}")
    parts = []
    for _ in range(n):
        stage = r.take(r.u16()).decode("ascii", errors="replace")
        if stage == NodeStage.BUNDLE.value:
            raise MessageError("bundle: a bundle inside a bundle")
        parts.append((stage, r.take(r.u32())))
    r.end()
    return parts


def pack_list(items: list[bytes]) -> bytes:
    """A list of byte strings (a node's replies to a bundle, the auditor's decrypt
    requests): u16 count | (u32 length | item)*."""
    if len(items) > 0xFFFF:
        raise MessageError("a list of more than 65535 items")
    return _U16.pack(len(items)) + b"".join(_U32.pack(len(x)) + x for x in items)


def unpack_list(data: bytes, *, what: str, expected: int | None = None) -> list[bytes]:
    r = _Reader(data, what)
    n = r.u16()
    if expected is not None and n != expected:
        raise MessageError(f"{what}: {n} items, expected {expected}")
    out = [r.take(r.u32()) for _ in range(n)]
    r.end()
    return out


@dataclass(frozen=True)
class PlainJudgeRequest:
    """Plaintext mode with the trust check: one group's summaries, each the coordinator's
    of the update it received from that member under the projection drawn after every
    update of the group was fixed (:func:`securepool.trust.check.plain_projection_seed`),
    which the auditor judges (:meth:`securepool.trust.auditor.Auditor.vet_opened`);
    under the validation vote, each voter's ballot as it came from the voter (sealed to
    the auditor, :mod:`protocols.ballots`).

    Wire form: session | u32 dim | pack_list of rows, one per member in id order, each a
    pack_list of (id, summary, ballot), empty where absent."""

    session: str
    dim: int
    summaries: Mapping[str, bytes]  # protocols.summaries.encode_summary
    ballots: Mapping[str, bytes] = field(default_factory=dict)  # protocols.ballots

    def to_bytes(self) -> bytes:
        members = sorted(set(self.summaries) | set(self.ballots))
        rows = [
            pack_list([m.encode("ascii"), self.summaries.get(m, b""), self.ballots.get(m, b"")])
            for m in members
        ]
        return _ident(self.session) + _U32.pack(self.dim) + pack_list(rows)

    @classmethod
    def from_bytes(cls, data: bytes) -> PlainJudgeRequest:
        r = _Reader(data, "plaintext judge request")
        session, dim = r.ident(), r.u32()
        rows = unpack_list(data[r.pos :], what="plaintext judge rows")
        summaries: dict[str, bytes] = {}
        ballots: dict[str, bytes] = {}
        seen: set[str] = set()
        for row in rows:
            raw_id, summary, ballot = unpack_list(row, what="plaintext judge row", expected=3)
            try:
                pid = require_identifier("participant", raw_id.decode("ascii"))
            except (UnicodeDecodeError, SecurePoolError):
                raise MessageError("plaintext judge request: bad participant id") from None
            if pid in seen:
                raise MessageError(f"plaintext judge request: {pid!r} twice")
            seen.add(pid)
            if summary:
                summaries[pid] = summary
            if ballot:
                ballots[pid] = ballot
        return cls(session, dim, summaries, ballots)


@dataclass(frozen=True)
class BallotRequest:
    """The validation vote (plaintext mode): one group's session, the global model its
    members were sent and the updates the coordinator received from them, which each
    member scores on its own records (:meth:`ParticipantNode.score_candidates`).

    Wire form: session | model id | global vector | u16 count | (id | vector)* in id
    order; a node refuses a session, model or global model that is not the one it
    trained on, and candidates outside its group."""

    session: str
    model_id: str
    params: NDArray[np.float32]
    candidates: Mapping[str, NDArray[np.float32]]

    def to_bytes(self) -> bytes:
        if len(self.candidates) > 0xFFFF:
            raise MessageError("a ballot request of more than 65535 candidates")
        out = [
            _ident(self.session),
            _ident(self.model_id),
            _vector(self.params),
            _U16.pack(len(self.candidates)),
        ]
        for pid in sorted(self.candidates):
            out += [_ident(pid), _vector(self.candidates[pid])]
        return b"".join(out)

    @classmethod
    def from_bytes(cls, data: bytes) -> BallotRequest:
        r = _Reader(data, "ballot request")
        session, model_id, params = r.ident(), r.ident(), r.vector()
        candidates: dict[str, NDArray[np.float32]] = {}
        for _ in range(r.u16()):
            pid = r.ident()
            if pid in candidates:
                raise MessageError(f"ballot request: {pid!r} twice")
            candidates[pid] = r.vector()
        r.end()
        return cls(session, model_id, params, candidates)
