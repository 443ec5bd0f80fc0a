"""The auditor's messages of mask-mode binding on the wire (split runtimes).

In one process the coordinator hands the auditor a :class:`JudgeRequest` and a
:class:`PostCheckRequest` as objects (:class:`~protocols.secagg.binding.MaskAudit`); an
auditor in its own process receives them as bytes and answers the post-check with a
:class:`PostCheck` as bytes. Each encoding here is canonical (sorted maps, the schema
codec's checked lengths) and round-trips exactly; the signed verdict travels as its own
``(data, signature)`` pair (:class:`~protocols.secagg.binding.MaskVerdict`).

Security: the coordinator is trusted for the integrity of what it relays (R y_i, the
digests, the rebuilt seeds: threat_model.md) and gains nothing by encoding them; the
decoders only bound what a malformed or hostile message can cost (every count and
length checked before anything is allocated, MessageError for anything else). The
sealed reports stay sealed: only the auditor opens them.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from crypto.errors import MessageError, SecurePoolError
from crypto.fixedpoint import FixedPointSpec
from protocols.codec import Reader, Writer
from protocols.secagg.binding import (
    MAX_PARTICIPANTS,
    MAX_VECTOR,
    JudgeRequest,
    PostCheck,
    PostCheckRequest,
)

MAGIC = b"SW"
VERSION = 1
KIND_JUDGE = 1
KIND_POST_CHECK_REQUEST = 2
KIND_POST_CHECK = 3
#: a sealed report: r, q and one p per neighbour of dim + 1 words, plus HPKE overhead
MAX_REPORT = 1 << 28
MAX_SECRET = 64  # a self-mask seed or an X25519 key, with room
MAX_REASON = 1 << 16


IdsMap = Mapping[str, frozenset[str]] | Mapping[str, tuple[str, ...]]


def _ids_map(w: Writer, value: IdsMap) -> None:
    w.u32(len(value))
    for pid in sorted(value):
        w.ident(pid)
        w.ids(tuple(value[pid]), limit=MAX_PARTICIPANTS)


def _read_ids_map(r: Reader) -> dict[str, tuple[str, ...]]:
    n = r.u32()
    if n > MAX_PARTICIPANTS:
        raise MessageError(f"{n} entries exceed {MAX_PARTICIPANTS}")
    out: dict[str, tuple[str, ...]] = {}
    for _ in range(n):
        pid = r.ident()
        if out and pid <= max(out):
            raise MessageError("a map of ids is not strictly increasing")
        out[pid] = r.ids(limit=MAX_PARTICIPANTS)
    return out


def _blob_map(w: Writer, value: Mapping[str, bytes], *, limit: int) -> None:
    w.u32(len(value))
    for pid in sorted(value):
        w.ident(pid)
        w.blob(value[pid], limit=limit)


def _read_blob_map(r: Reader, *, limit: int) -> dict[str, bytes]:
    n = r.u32()
    if n > MAX_PARTICIPANTS:
        raise MessageError(f"{n} entries exceed {MAX_PARTICIPANTS}")
    out: dict[str, bytes] = {}
    for _ in range(n):
        pid = r.ident()
        if out and pid <= max(out):
            raise MessageError("a map of ids is not strictly increasing")
        out[pid] = r.blob(limit=limit)
    return out


def _reader(data: bytes, kind: int, name: str) -> Reader:
    r = Reader(data, magic=MAGIC, version=VERSION, name=name)
    if r.kind != kind:
        raise MessageError(f"{name}: message kind {r.kind}, expected {kind}")
    return r


def encode_judge_request(req: JudgeRequest) -> bytes:
    """A :class:`JudgeRequest` as bytes (MessageError if a field is out of range)."""
    w = Writer(MAGIC, VERSION, KIND_JUDGE)
    w.ident(req.session)
    w.blob(req.joint_seed, limit=64)
    w.u32(req.spec.bits)
    w.f64(req.spec.scale)
    w.f64(req.spec.clip)
    w.u32(req.length)
    w.ids(tuple(req.survivors), limit=MAX_PARTICIPANTS)
    _blob_map(w, req.digests, limit=32)
    w.u32(len(req.projected))
    for pid in sorted(req.projected):
        w.ident(pid)
        w.vector(np.asarray(req.projected[pid]), limit=MAX_VECTOR)
    _blob_map(w, req.reports, limit=MAX_REPORT)
    _ids_map(w, req.neighbours)
    return w.finish()


def decode_judge_request(data: bytes) -> JudgeRequest:
    """The request :func:`encode_judge_request` wrote; MessageError for anything else."""
    r = _reader(data, KIND_JUDGE, "judge request")
    session = r.ident()
    joint_seed = r.blob(limit=64)
    bits, scale, clip = r.u32(), r.f64(), r.f64()
    try:
        spec = FixedPointSpec(bits, scale, clip)
    except SecurePoolError as exc:
        raise MessageError(f"judge request: bad encoding: {exc}") from None
    length = r.u32()
    survivors = frozenset(r.ids(limit=MAX_PARTICIPANTS))
    digests = _read_blob_map(r, limit=32)
    n = r.u32()
    if n > MAX_PARTICIPANTS:
        raise MessageError(f"judge request: {n} projections")
    projected: dict[str, np.ndarray] = {}
    for _ in range(n):
        pid = r.ident()
        if projected and pid <= max(projected):
            raise MessageError("judge request: projections not in id order")
        projected[pid] = r.vector(limit=MAX_VECTOR)
    reports = _read_blob_map(r, limit=MAX_REPORT)
    neighbours = {p: frozenset(v) for p, v in _read_ids_map(r).items()}
    r.end()
    return JudgeRequest(
        session=session,
        joint_seed=joint_seed,
        spec=spec,
        length=length,
        digests=digests,
        survivors=survivors,
        projected=projected,
        reports=reports,
        neighbours=neighbours,
    )


def encode_post_check_request(req: PostCheckRequest) -> bytes:
    w = Writer(MAGIC, VERSION, KIND_POST_CHECK_REQUEST)
    w.ident(req.session)
    w.ids(tuple(req.contributors), limit=MAX_PARTICIPANTS)
    _blob_map(w, req.self_seeds, limit=MAX_SECRET)
    _blob_map(w, req.mask_keys, limit=MAX_SECRET)
    _blob_map(w, req.s_public, limit=MAX_SECRET)
    return w.finish()


def decode_post_check_request(data: bytes) -> PostCheckRequest:
    r = _reader(data, KIND_POST_CHECK_REQUEST, "post-check request")
    out = PostCheckRequest(
        session=r.ident(),
        contributors=frozenset(r.ids(limit=MAX_PARTICIPANTS)),
        self_seeds=_read_blob_map(r, limit=MAX_SECRET),
        mask_keys=_read_blob_map(r, limit=MAX_SECRET),
        s_public=_read_blob_map(r, limit=MAX_SECRET),
    )
    r.end()
    return out


def encode_post_check(check: PostCheck) -> bytes:
    w = Writer(MAGIC, VERSION, KIND_POST_CHECK)
    _blob_map(w, {p: why.encode("utf-8") for p, why in check.flagged.items()}, limit=MAX_REASON)
    w.u32(1 if check.discard else 0)
    pairs: dict[str, list[str]] = {}
    for i, j in check.unresolved:
        pairs.setdefault(i, []).append(j)
    _ids_map(w, {i: tuple(js) for i, js in pairs.items()})
    return w.finish()


def decode_post_check(data: bytes) -> PostCheck:
    r = _reader(data, KIND_POST_CHECK, "post-check")
    raw = _read_blob_map(r, limit=MAX_REASON)
    discard = r.u32()
    if discard not in (0, 1):
        raise MessageError(f"post-check: discard flag {discard}")
    pairs = _read_ids_map(r)
    r.end()
    try:
        flagged = {p: why.decode("utf-8") for p, why in raw.items()}
    except UnicodeDecodeError:
        raise MessageError("post-check: a reason is not UTF-8") from None
    unresolved = tuple((i, j) for i, js in pairs.items() for j in js)
    return PostCheck(flagged, bool(discard), unresolved)


__all__ = [
    "decode_judge_request",
    "decode_post_check",
    "decode_post_check_request",
    "encode_judge_request",
    "encode_post_check",
    "encode_post_check_request",
]
