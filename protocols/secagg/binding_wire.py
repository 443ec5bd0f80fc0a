"""The auditor's message of mask-mode binding on the wire.

The coordinator sends the auditor node a :class:`~protocols.secagg.binding.JudgeRequest`
as bytes, in every runtime. The encoding is canonical (sorted maps, the codec's checked lengths) and
round-trips exactly; the signed verdict travels as its own ``(data, signature)`` pair
(:class:`~protocols.secagg.binding.MaskVerdict`), and the post-check needs no message
(it runs against the verdict's commitments).

Security: the coordinator is trusted for the integrity of what it relays (R y_i, the
digests: threat_model.md) and gains nothing by encoding them; the
decoders only bound what a malformed or hostile message can cost (every count and
length checked before anything is allocated, MessageError for anything else). The
sealed reports stay sealed: only the auditor opens them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TypeVar

import numpy as np

from crypto.errors import MessageError, SecurePoolError
from crypto.fixedpoint import FixedPointSpec
from protocols.codec import Reader, Writer
from protocols.secagg.binding import (
    MAX_PARTICIPANTS,
    MAX_VECTOR,
    JudgeRequest,
)

MAGIC = b"SW"
VERSION = 2  # 2: the request names the group's members
KIND_JUDGE = 1
#: a sealed report: r, q and one p per neighbour of dim + 1 words, plus HPKE overhead
MAX_REPORT = 1 << 28


T = TypeVar("T")


def _write_map(w: Writer, value: Mapping[str, T], write: Callable[[T], None]) -> None:
    """u32 count | (id | value)* in id order."""
    w.u32(len(value))
    for pid in sorted(value):
        w.ident(pid)
        write(value[pid])


def _read_map(r: Reader, read: Callable[[], T]) -> dict[str, T]:
    """What :func:`_write_map` wrote; MessageError for too many or unsorted ids."""
    n = r.u32()
    if n > MAX_PARTICIPANTS:
        raise MessageError(f"{n} entries exceed {MAX_PARTICIPANTS}")
    out: dict[str, T] = {}
    last = ""
    for _ in range(n):
        pid = r.ident()
        if out and pid <= last:
            raise MessageError("a map of ids is not strictly increasing")
        out[pid], last = read(), pid
    return out


def _reader(data: bytes, kind: int, name: str) -> Reader:
    r = Reader(data, magic=MAGIC, version=VERSION, name=name)
    if r.kind != kind:
        raise MessageError(f"{name}: message kind {r.kind}, expected {kind}")
    return r


def encode_judge_request(req: JudgeRequest) -> bytes:
    """A :class:`JudgeRequest` as bytes (MessageError if a field is out of range).

    Security: canonical (ids sorted, checked lengths); carries the group's members, so
    the verdict can name the instance it was made for."""
    w = Writer(MAGIC, VERSION, KIND_JUDGE)
    w.ident(req.session)
    w.ids(tuple(req.members), limit=MAX_PARTICIPANTS)
    w.blob(req.joint_seed, limit=64)
    w.u32(req.spec.bits)
    w.f64(req.spec.scale)
    w.f64(req.spec.clip)
    w.u32(req.length)
    w.ids(tuple(req.survivors), limit=MAX_PARTICIPANTS)
    _write_map(w, req.digests, lambda v: w.blob(v, size=32))
    _write_map(w, req.projected, lambda v: w.vector(np.asarray(v), limit=MAX_VECTOR))
    _write_map(w, req.reports, lambda v: w.blob(v, limit=MAX_REPORT))
    _write_map(w, req.neighbours, lambda v: w.ids(tuple(v), limit=MAX_PARTICIPANTS))
    return w.finish()


def decode_judge_request(data: bytes) -> JudgeRequest:
    """The request :func:`encode_judge_request` wrote; MessageError for anything else.

    Security: one bounded pass (every count and length checked before allocation), and
    the decoded request must describe one consistent group instance
    (:meth:`JudgeRequest.check_instance`)."""
    r = _reader(data, KIND_JUDGE, "judge request")
    session = r.ident()
    members = frozenset(r.ids(limit=MAX_PARTICIPANTS))
    joint_seed = r.blob(limit=64)
    bits, scale, clip = r.u32(), r.f64(), r.f64()
    try:
        spec = FixedPointSpec(bits, scale, clip)
    except SecurePoolError as exc:
        raise MessageError(f"judge request: bad encoding: {exc}") from None
    length = r.u32()
    survivors = frozenset(r.ids(limit=MAX_PARTICIPANTS))
    digests = _read_map(r, lambda: r.blob(size=32))
    projected = _read_map(r, lambda: r.vector(limit=MAX_VECTOR))
    reports = _read_map(r, lambda: r.blob(limit=MAX_REPORT))
    neighbours = _read_map(r, lambda: frozenset(r.ids(limit=MAX_PARTICIPANTS)))
    r.end()
    request = JudgeRequest(
        session=session,
        members=members,
        joint_seed=joint_seed,
        spec=spec,
        length=length,
        digests=digests,
        survivors=survivors,
        projected=projected,
        reports=reports,
        neighbours=neighbours,
    )
    request.check_instance()
    return request


__all__ = ["decode_judge_request", "encode_judge_request"]
