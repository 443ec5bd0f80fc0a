"""Mask-mode binding: the trust check's sketch is opened from the participant's masked input.

Notation: ``e_i`` is participant i's encoded input (``d`` update words then its weight,
mod 2^k), ``y_i = e_i + sum_j sign(i,j) PRG(s_ij) + PRG(b_i)`` its masked input, the sum
over the neighbours it masked with: exactly those that shared keys with it in the
session (the coordinator's share round, ``JudgeRequest.neighbours``).

1. **Projection fixed after the inputs.** The count-sketch ``R`` (a bucket and a sign per
   coordinate; the weight coordinate gets a bucket of its own) is drawn from
   :func:`projection_seed`: a hash of the session, the group's joint seed and the sorted
   ``(pid, SHA-256(y_i))`` of every masked input the coordinator received. The
   coordinator puts those hashes in the SurvivorList, every client checks its own hash
   is there, recomputes the seed and signs the hashes with the survivor list. Nobody
   knows R while choosing its input, so a perturbation in R's kernel cannot be planned.
2. **Report.** Each client seals to the auditor (HPKE, ``info`` = session + participant)
   ``r_i = R e_i`` and the seeds of its masks: ``b_i`` and ``s_ij`` for every neighbour
   it masked with. The auditor expands and projects the masks itself, so a report holds
   no mask projection a client could bend: for an honest client
   ``R y_i = r_i + R PRG(b_i) + sum_j sign(i,j) R PRG(s_ij)`` exactly (R is linear in
   Z_{2^k}).
3. **Judgement** (:func:`check_reports`, by the auditor, from ``R y_i`` computed by the
   coordinator, which holds y_i): (a) a report whose seeds name a neighbour it did not
   share keys with, or omit one it did, flags its sender; (a') so does a report with
   ``R y_i != r_i + masks``, or whose ``r_i`` is impossible (``plausible``: its weight
   bucket, which holds the weight alone, is no weight the run allows); (b) a pair that
   both reported with ``s_ij != s_ji`` is a dispute: both leave this aggregate through
   the dropout path, nobody is flagged yet. The rest's ``r_i`` decode to sketches for
   P6; the auditor signs a :class:`MaskVerdict` (flagged, excluded, the disputes, a
   SHA-256 commitment to every seed it opened, and the group instance it judged:
   members, survivors and the digest of every masked input) that clients require
   before unmasking, and only for their own instance
   (:meth:`MaskVerdict.require_instance`).
4. **Post-check** (:func:`post_check`, after unmasking, run by the coordinator against
   the verdict's commitments, from the self-mask seeds of the contributors and the mask
   keys of every non-contributor, rebuilt from Shamir shares and checked against the
   advertised public keys): a contributor whose claimed ``b_i`` or seed towards a
   non-contributor is not the one it shared is flagged and the aggregate discarded (its
   masked input holds masks unmasking does not remove); in a dispute the side whose
   seed is not the true one is flagged, the honest side was only excluded for this
   iteration.

What a lie can do: a seed that is not the one a client masked with turns its ``r_i``
into R of its input plus a pseudo-random vector it cannot steer (the check in (a')
holds only for the r it must then report), which the weight bucket shows; a seed that
is the one it masked with but not the one it shared is sabotage, not poisoning: its
sketch is true, and the post-check names it after unmasking at the price of that
aggregate (SecAgg+ without verifiable secret sharing cannot see it earlier).

Security: everything here is a pure function of bytes, arrays and keys, so a separate
auditor process can run it. The auditor learns per participant one fresh sketch
``r_i`` (as the sealed summary did) and the seeds of its masks; it never receives y_i,
so the seeds tell it nothing more about e_i (with the coordinator, which holds y_i, it
would unmask it: coordinator and auditor must not collude, threat_model.md). The
coordinator learns from the verdict only hashes of seeds (hiding: 256-bit secrets) and
checks them against the seeds unmasking reveals to it anyway; it never learns ``r_i``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from crypto.agreement import AgreementKey
from crypto.encoding import bind, require_identifier
from crypto.errors import (
    CryptoError,
    InvalidSignature,
    MessageError,
    SecurityViolation,
    StageError,
)
from crypto.fixedpoint import FixedPointSpec, decode
from crypto.hpke import SummaryOpeningKey, hpke_seal
from crypto.prg import expand_mask
from crypto.signing import IdentityKey, verify_signature
from protocols.codec import Field, Kind, Reader, Schema, Writer, decode_fields, encode
from protocols.secagg.labels import PAIR_MASK_LABEL, SELF_MASK_LABEL, mask_label, pair_sign
from protocols.verdict import proven

_DOMAIN = b"securepool/secagg/binding/v1/"
MAGIC = b"SB"
VERSION = 4  # 2: commitments, disputes; 3: the group instance judged; 4: seeds, not projections
MAX_PARTICIPANTS = 10_000
MAX_VECTOR = 1 << 28
LABEL_VERDICT = b"securepool/secagg/binding/verdict/v1"
_BLOCK = 1 << 20  # coordinates per float64 bincount: 2^20 sums of < 2^32 are exact

Words = NDArray[np.unsignedinteger]


# --- the projection -----------------------------------------------------------------


def input_digest(vector: Words) -> bytes:
    """SHA-256 of a masked input (word size, then its little-endian words).

    Security: collision resistant, so a listed digest fixes the masked input; the
    encoding is platform independent (little-endian) and names the word size.
    """
    arr = np.ascontiguousarray(vector)
    width = arr.dtype.itemsize
    h = hashlib.sha256(bytes([width]))
    h.update(arr.astype(f"<u{width}", copy=False).data.cast("B"))  # no copy
    return h.digest()


def projection_seed(*, session: str, joint_seed: bytes, digests: Mapping[str, bytes]) -> bytes:
    """The seed of R: fixed only once every masked input is.

    Security: injective in (session, joint seed, the sorted (pid, digest) pairs)
    (:func:`crypto.encoding.bind`); ids are validated (CryptoError otherwise). As long as
    one honest member's y_i (which carries a fresh secret self mask) is among the
    digests, nobody can predict the seed before sending its own input.
    """
    items: list[bytes | str | int] = [require_identifier("session", session), joint_seed]
    items.append(len(digests))
    for pid in sorted(digests):
        items += [require_identifier("participant", pid), digests[pid]]
    return hashlib.sha256(bind(_DOMAIN + b"projection-seed", *items)).digest()


@dataclass(frozen=True)
class Projection:
    """A count-sketch R over ``length`` words (the last is the weight) into ``dim + 1``
    buckets (the last holds the weight alone), applied exactly in Z_{2^k}.
    ``dim = 0``: the identity (the raw encoded input, the P6 baseline).

    Security: public once its seed is (after every input is fixed); linear over
    Z_{2^k}, which is what makes the report checkable against R y."""

    length: int
    dim: int
    buckets: NDArray[np.int64] = field(repr=False)
    negative: NDArray[np.bool_] = field(repr=False)
    signs: NDArray[np.float64] = field(repr=False)  # -1.0 where negative, else 1.0

    @property
    def width(self) -> int:
        return self.length if self.dim == 0 else self.dim + 1

    def apply(self, vector: Words) -> Words:
        """R vector mod 2^k, in the vector's own dtype (uint32 or uint64).

        Exact: per block of 2^20 coordinates, one float64 bincount of the signed 32-bit
        words (|bucket sum| < 2^52, so every partial sum is an exact integer), then
        reduced mod 2^k; a 64-bit vector is projected as its two 32-bit halves.

        Security: exact equality mod 2^k is what checks (a) and (b) compare, so an
        honest report always passes; MessageError for a vector of another length.
        """
        v = np.asarray(vector)
        if v.ndim != 1 or v.size != self.length or v.dtype.kind != "u":
            raise MessageError(f"cannot project a vector of {v.size} words ({v.dtype})")
        if self.dim == 0:
            return v.copy()
        out = np.zeros(self.width, dtype=np.uint64)
        halves = [(v, 0)] if v.dtype.itemsize == 4 else [(v & 0xFFFFFFFF, 0), (v >> 32, 32)]
        for start in range(0, v.size, _BLOCK):
            stop = min(start + _BLOCK, v.size)
            b = self.buckets[start:stop]
            signs = self.signs[start:stop]
            for part, shift in halves:
                w = part[start:stop].astype(np.float64)
                w *= signs
                sums = np.bincount(b, weights=w, minlength=self.width)
                # exact integers below 2^52 in magnitude: int64, then wrap to uint64
                out += sums.astype(np.int64).view(np.uint64) << np.uint64(shift)
        return out.astype(v.dtype)


def projection(seed: bytes, *, length: int, dim: int) -> Projection:
    """R from its seed: coordinate c < length - 1 goes to bucket h(c) < dim with sign
    s(c); the weight coordinate (the last) to bucket ``dim`` with sign +1.

    Security: buckets and signs come from :func:`crypto.prg.expand_mask` of the seed
    under a label of their own: unpredictable until the seed is, the same for everyone
    after."""
    if length < 1 or dim < 0:
        raise MessageError(f"projection of {length} words into {dim} buckets")
    words = expand_mask(seed, label=_DOMAIN + b"countsketch", length=length, dtype=np.uint64)
    if dim == 0:
        return Projection(length, 0, np.zeros(0, np.int64), np.zeros(0, bool), np.zeros(0))
    buckets = (words % np.uint64(dim)).astype(np.int64)
    negative = (words >> np.uint64(63)) == 1
    buckets[-1], negative[-1] = dim, False
    return Projection(length, dim, buckets, negative, np.where(negative, -1.0, 1.0))


def decode_sketch(r: Words, spec: FixedPointSpec) -> tuple[NDArray[np.float64], float]:
    """The count-sketch of the (clipped) update and the weight, from ``r_i = R e_i``.

    ``e_i`` holds weight x update, so the update's sketch is the decoded buckets divided
    by the decoded weight. A bucket whose true sum leaves the signed range of Z_{2^k}
    wraps; since R is unknown when the input is chosen, such a wrap cannot be steered
    towards an honest-looking sketch (it looks like noise of the group's scale or more).

    Security: public arithmetic; MessageError unless the weight bucket is positive.
    """
    values = decode(np.asarray(r, dtype=spec.dtype), spec)
    weight = float(values[-1])
    if not weight > 0:
        raise MessageError(f"report's weight bucket decodes to {weight}, not a positive weight")
    return values[:-1] / weight, weight


# --- the report ---------------------------------------------------------------------


SEED = 32  # bytes of a mask seed (b_i, s_ij)


@dataclass(frozen=True)
class BindingReport:
    """What a client seals to the auditor in its reply to the survivor list.

    ``r``: R e_i; ``self_seed``: b_i; ``seeds``: each neighbour it masked with and the
    seed s_ij of that pairwise mask.

    Security: travels only sealed to the auditor (:func:`seal_report`).
    """

    KIND: ClassVar[int] = 1
    SCHEMA: ClassVar[Schema] = (
        Field("session", Kind.ID),
        Field("sender", Kind.ID),
        Field("r", Kind.VECTOR, limit=MAX_VECTOR),
        Field("self_seed", Kind.BYTES, size=SEED),
        Field("seeds", Kind.ID_BYTES, size=SEED, limit=MAX_PARTICIPANTS),
    )
    session: str
    sender: str
    r: Words
    self_seed: bytes
    seeds: dict[str, bytes]

    def encode(self) -> bytes:
        """The versioned, schema-checked wire form (:mod:`protocols.codec`).

        Security: canonical (one report, one byte string); MessageError if a field
        does not fit its schema."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return encode(MAGIC, VERSION, self.KIND, self.SCHEMA, values)

    @classmethod
    def decode(cls, data: bytes) -> BindingReport:
        """Parse a report. Security: one bounded pass; MessageError and nothing else."""
        reader = Reader(data, magic=MAGIC, version=VERSION, name="binding report")
        if reader.kind != cls.KIND:
            raise MessageError(f"binding message kind {reader.kind} is not a report")
        return cls(**decode_fields(reader, cls.SCHEMA))


def report_info(session: str, participant: str) -> bytes:
    """HPKE ``info`` of a sealed report. Security: injective in (session, participant),
    both validated identifiers, and distinct from every other sealing context."""
    return bind(
        _DOMAIN + b"report-info",
        require_identifier("session", session),
        require_identifier("participant", participant),
    )


def seal_report(report: BindingReport, *, auditor_public: bytes) -> bytes:
    """Seal a report to the auditor. Security: only the auditor opens it; a report of
    one (session, participant) does not open as another's."""
    return hpke_seal(
        auditor_public, report.encode(), info=report_info(report.session, report.sender)
    )


@dataclass(frozen=True)
class OpenedReport:
    """A report the auditor opened and checked for shape: ``r`` of ``width`` words,
    32-byte seeds.

    Security: holds what only the auditor may see; never goes into a message."""

    r: Words
    self_seed: bytes
    seeds: Mapping[str, bytes]


def open_report(
    key: SummaryOpeningKey,
    sealed: bytes,
    *,
    session: str,
    participant: str,
    width: int,
    dtype: type[np.unsignedinteger],
) -> OpenedReport:
    """Open and shape-check a sealed report; DecryptionError or MessageError otherwise.

    Security: the HPKE ``info`` binds session and participant, and the decoded report
    must name them too; ``r`` must have ``width`` words of the session's dtype.
    """
    if not isinstance(sealed, bytes) or not sealed:
        raise MessageError("no binding report")
    report = BindingReport.decode(key.open(sealed, info=report_info(session, participant)))
    if report.session != session or report.sender != participant:
        raise MessageError("report names another session or participant")
    if report.r.size != width or report.r.dtype != np.dtype(dtype):
        raise MessageError(f"report's r has {report.r.size} {report.r.dtype} words, not {width}")
    if participant in report.seeds:
        raise MessageError("report names its sender as its own neighbour")
    return OpenedReport(report.r, report.self_seed, dict(report.seeds))


# --- the judgement (before unmasking) -----------------------------------------------


@dataclass(frozen=True)
class Judgement:
    """Outcome of checks (a) and (b): who lied (``flagged``), who left this aggregate
    without blame (``excluded``: disputes, missing reports), and the reports of the
    rest (``bound``), whose ``r`` the P6 judgement then reads.

    Security: the auditor's; ``bound`` holds only reports that passed (a) and (b)."""

    flagged: Mapping[str, str]
    excluded: Mapping[str, str]
    disputes: tuple[tuple[str, str], ...]
    bound: Mapping[str, OpenedReport]


def report_masks(
    pid: str, report: OpenedReport, *, length: int, dtype: type[np.unsignedinteger]
) -> Words:
    """The masks ``pid``'s report says its input carries, summed in Z_{2^k}:
    PRG(b_i) + sum_j pair_sign(i, j) PRG(s_ij), each mask expanded once, in place.

    Security: public arithmetic on secrets the auditor holds; nothing leaves it. R is
    linear in Z_{2^k}, so projecting this sum once equals the sum of the projected masks
    exactly (what check (a') compares), at one projection per report instead of one
    per mask."""
    total = expand_mask(report.self_seed, label=SELF_MASK_LABEL, length=length, dtype=dtype)
    for peer, seed in report.seeds.items():
        m = expand_mask(seed, label=PAIR_MASK_LABEL, length=length, dtype=dtype)
        if pair_sign(pid, peer) > 0:
            np.add(total, m, out=total)
        else:
            np.subtract(total, m, out=total)
    return total


def check_reports(
    *,
    survivors: frozenset[str],
    opened: Mapping[str, OpenedReport],
    rejected: Mapping[str, str],
    projected: Mapping[str, Words],
    neighbours: Mapping[str, frozenset[str]],
    proj: Projection,
    dtype: type[np.unsignedinteger],
    plausible: Callable[[Words], str | None] | None = None,
) -> Judgement:
    """Checks (a), (a') and (b) on the opened reports of the survivors.

    ``rejected``: survivors whose report did not open or had the wrong shape (flagged);
    a survivor with neither a report nor a rejection sent none (excluded, like a
    dropout). ``projected[i]`` is R y_i as the coordinator computed it;
    ``neighbours[i]`` are the neighbours i shared keys with in the session, exactly
    those it masked with. ``plausible(r)`` is the flag's reason if ``r`` is impossible
    (None if it is not).

    Security: (a) a report's seeds must name exactly i's neighbours: an omitted one is
    a lie of its sender (nobody else is excluded for it); (a') binds each report to the
    input the coordinator holds, the masks expanded here from the reported seeds
    (equality in Z_{2^k}, so an honest report always passes), and a false seed leaves a
    pseudo-random ``r`` that ``plausible`` refuses before any dispute is opened; (b)
    finds every pair of the rest whose seeds differ without deciding who lied: both are
    excluded (one honest member loses one iteration) until :func:`post_check`
    identifies the liar.
    """
    flagged = {p: proven(f"binding report rejected: {why}") for p, why in rejected.items()}
    excluded: dict[str, str] = {}
    for pid in sorted(survivors):
        if pid not in opened and pid not in flagged:
            excluded[pid] = "sent no binding report (left out like a dropout)"
    for pid, rep in sorted(opened.items()):
        if pid in flagged:
            continue
        expected = set(neighbours.get(pid, frozenset()))
        strangers, omitted = set(rep.seeds) - expected, expected - set(rep.seeds)
        if strangers:
            flagged[pid] = proven(f"report names non-neighbours {sorted(strangers)[:3]}")
            continue
        if omitted:
            flagged[pid] = proven(
                f"report omits the mask seed towards {sorted(omitted)[:3]} (neighbours that "
                "shared keys with it)"
            )
            continue
        total = rep.r + proj.apply(report_masks(pid, rep, length=proj.length, dtype=dtype))
        if pid not in projected or not np.array_equal(total, projected[pid]):
            flagged[pid] = proven("report does not match its masked input")
            continue
        why = plausible(rep.r) if plausible is not None else None
        if why is not None:
            flagged[pid] = proven(why)
    honest = {p: r for p, r in opened.items() if p not in flagged}
    disputes: list[tuple[str, str]] = []
    for i in sorted(honest):
        for j in sorted(honest):
            if j > i and honest[i].seeds.get(j) != honest[j].seeds.get(i):
                disputes.append((i, j))
    for i, j in disputes:
        excluded.setdefault(i, f"disputed mask seeds with {j} (excluded, not blamed)")
        excluded.setdefault(j, f"disputed mask seeds with {i} (excluded, not blamed)")
    bound = {p: r for p, r in honest.items() if p not in excluded}
    return Judgement(flagged, excluded, tuple(disputes), bound)


# --- the verdict that gates unmasking ----------------------------------------------


@dataclass(frozen=True)
class MaskVerdict:
    """The auditor's signed decision on one group instance: who is flagged and who
    excluded.

    Clients treat both sets as dropped at unmasking (key share revealed, never the self
    mask share) and refuse an unmask request without a valid one (client.py). The
    verdict names the instance it was made for: the group's ``members``, the
    ``survivors`` and the ``digests`` of every masked input of the judge request; a
    client refuses one whose instance is not its own view
    (:meth:`require_instance`).

    Security: signed over its canonical encoding under the auditor's identity key. A
    session string alone does not name one group instance (a coordinator that
    equivocates on the beacon runs two groups under one session string); the members,
    survivors and input digests do: the digests are SHA-256 of masked inputs that carry
    fresh secret self masks, so no two instances share them.
    """

    KIND: ClassVar[int] = 2
    SCHEMA: ClassVar[Schema] = (
        Field("session", Kind.ID),
        Field("flagged", Kind.ID_BYTES, limit=MAX_PARTICIPANTS),
        Field("excluded", Kind.ID_BYTES, limit=MAX_PARTICIPANTS),
        Field("commitments", Kind.ID_BYTES, limit=MAX_PARTICIPANTS),
        Field("disputes", Kind.BYTES, limit=1 << 24),
        Field("trusted", Kind.BYTES, limit=256),
        Field("threshold", Kind.F64),
        Field("members", Kind.IDS, limit=MAX_PARTICIPANTS),
        Field("survivors", Kind.IDS, limit=MAX_PARTICIPANTS),
        Field("digests", Kind.ID_BYTES, size=32, limit=MAX_PARTICIPANTS),
    )
    session: str
    flagged: Mapping[str, str]
    excluded: Mapping[str, str]
    #: per reporter not flagged: its commitment to b_i and every s_ij (:func:`commit`)
    commitments: Mapping[str, bytes] = field(default_factory=dict)
    #: the pairs whose reported seeds differ (check (b))
    disputes: tuple[tuple[str, str], ...] = ()
    #: P6's elected trusted participant ("" if none) and the threshold it applied
    trusted: str = ""
    threshold: float = 0.0
    #: the group instance judged: its members, its survivors, and the SHA-256 of every
    #: masked input the judge request named (:func:`input_digest`)
    members: frozenset[str] = frozenset()
    survivors: frozenset[str] = frozenset()
    digests: Mapping[str, bytes] = field(default_factory=dict)

    @property
    def left_out(self) -> frozenset[str]:
        return frozenset(self.flagged) | frozenset(self.excluded)

    def require_instance(
        self,
        *,
        members: Iterable[str],
        survivors: Iterable[str],
        digests: Mapping[str, bytes],
    ) -> None:
        """Refuse this verdict unless it was made for exactly this group instance.

        Security: SecurityViolation unless the verdict's members, survivors and input
        digests equal the caller's own view (the members of its group, the survivor
        list and the digests it signed in the consistency round): a verdict the auditor
        signed for another instance of the same session string (other members, another
        survivor set, other masked inputs) is refused before anything is unmasked.
        Names only which part differs (ids and digests are public).
        """
        differ = []
        if frozenset(members) != self.members:
            differ.append("members")
        if frozenset(survivors) != self.survivors:
            differ.append("survivors")
        if dict(digests) != dict(self.digests):
            differ.append("masked-input digests")
        if differ:
            raise SecurityViolation(
                f"the auditor's verdict of session {self.session!r} was made for another "
                f"group instance (its {', '.join(differ)} are not this group's)"
            )

    def encode(self) -> bytes:
        """The canonical wire form. Security: injective (schema codec, sorted maps);
        MessageError for an invalid id or a reason over 64 KiB."""

        def reasons(m: Mapping[str, str]) -> dict[str, bytes]:
            return {p: why.encode("utf-8") for p, why in m.items()}

        pairs = Writer(MAGIC, VERSION, KIND_PAIRS)
        pairs.u32(len(self.disputes))
        for i, j in self.disputes:
            pairs.ident(i)
            pairs.ident(j)
        values = {
            "session": self.session,
            "flagged": reasons(self.flagged),
            "excluded": reasons(self.excluded),
            "commitments": dict(self.commitments),
            "disputes": pairs.finish(),
            "trusted": self.trusted.encode("ascii"),
            "threshold": float(self.threshold),
            "members": tuple(self.members),
            "survivors": tuple(self.survivors),
            "digests": dict(self.digests),
        }
        return encode(MAGIC, VERSION, self.KIND, self.SCHEMA, values)

    def sign(self, key: IdentityKey) -> tuple[bytes, bytes]:
        """(the encoded verdict, the auditor's signature over it).

        Security: the signature covers the session and the group instance (members,
        survivors, input digests), so a verdict cannot be replayed to another session
        or to another instance of the same session."""
        data = self.encode()
        return data, key.sign(bind(_DOMAIN + b"verdict", data), label=LABEL_VERDICT)

    @classmethod
    def verified(
        cls, data: bytes, signature: bytes, *, auditor: bytes, session: str
    ) -> MaskVerdict:
        """Check the auditor's signature and the session, then decode.

        Security: InvalidSignature unless the holder of ``auditor``'s key signed exactly
        ``data``; StageError for another session's verdict; MessageError if malformed.
        The session alone does not fix the group instance: a caller about to act on the
        verdict also calls :meth:`require_instance` with its own view.
        """
        if not data or not signature:
            raise InvalidSignature("no auditor verdict")
        verify_signature(auditor, bind(_DOMAIN + b"verdict", data), signature, label=LABEL_VERDICT)
        reader = Reader(data, magic=MAGIC, version=VERSION, name="binding verdict")
        if reader.kind != cls.KIND:
            raise MessageError(f"binding message kind {reader.kind} is not a verdict")
        raw: dict[str, Any] = decode_fields(reader, cls.SCHEMA)
        if raw["session"] != session:
            raise StageError(f"verdict of session {raw['session']!r}, not {session!r}")

        def text(m: dict[str, bytes]) -> dict[str, str]:
            try:
                return {p: why.decode("utf-8") for p, why in m.items()}
            except UnicodeDecodeError:
                raise MessageError("a verdict's reason is not UTF-8") from None

        pairs = Reader(raw["disputes"], magic=MAGIC, version=VERSION, name="verdict disputes")
        if pairs.kind != KIND_PAIRS:
            raise MessageError("a verdict's disputes are not a list of pairs")
        n = pairs.u32()
        if n > MAX_PARTICIPANTS * MAX_PARTICIPANTS:
            raise MessageError(f"a verdict with {n} disputes")
        disputes = tuple((pairs.ident(), pairs.ident()) for _ in range(n))
        pairs.end()
        try:
            trusted = raw["trusted"].decode("ascii")
            if trusted:
                require_identifier("trusted", trusted)
        except (UnicodeDecodeError, CryptoError):
            raise MessageError("a verdict's trusted participant is not an id") from None
        return cls(
            session,
            text(raw["flagged"]),
            text(raw["excluded"]),
            dict(raw["commitments"]),
            disputes,
            trusted,
            raw["threshold"],
            frozenset(raw["members"]),
            frozenset(raw["survivors"]),
            dict(raw["digests"]),
        )


# --- the commitments the post-check is run against ----------------------------------

KIND_PAIRS = 3
KIND_COMMITMENT = 4


def commit(session: str, owner: str, peer: str, seed: bytes) -> bytes:
    """SHA-256 commitment to one mask seed of ``owner``'s report: ``b`` (``peer``
    empty) or ``s_{owner,peer}``.

    Security: binding (collision resistance) and hiding: every seed is a 256-bit
    secret, so its hash reveals nothing; unmasking reveals to the coordinator exactly
    the seeds the post-check compares."""
    return hashlib.sha256(bind(_DOMAIN + b"commitment", session, owner, peer, seed)).digest()


def encode_commitments(session: str, owner: str, report: OpenedReport) -> bytes:
    """The auditor's commitments to one report's seeds (the verdict carries them, so
    the post-check needs no second message to the auditor).

    Security: hashes only (:func:`commit`); never the seeds themselves, so the
    coordinator cannot remove a member's masks from y_i."""
    w = Writer(MAGIC, VERSION, KIND_COMMITMENT)
    w.blob(commit(session, owner, "", report.self_seed), size=32)
    w.id_bytes(
        {peer: commit(session, owner, peer, seed) for peer, seed in report.seeds.items()},
        size=32,
        limit=MAX_PARTICIPANTS,
    )
    return w.finish()


def decode_commitments(data: bytes) -> tuple[bytes, dict[str, bytes]]:
    """(commitment to b, {peer: commitment to s_{owner,peer}}).

    Security: MessageError for anything malformed (checked lengths, exact 32-byte
    hashes, canonical maps), so a bad commitment can only count as absent."""
    r = Reader(data, magic=MAGIC, version=VERSION, name="commitments")
    if r.kind != KIND_COMMITMENT:
        raise MessageError(f"binding message kind {r.kind} is not a commitment")
    q = r.blob(size=32)
    pairs = r.id_bytes(size=32, limit=MAX_PARTICIPANTS)
    r.end()
    return q, pairs


# --- the post-check (after unmasking) ----------------------------------------------


@dataclass(frozen=True)
class PostCheck:
    """Outcome of :func:`post_check`: liars found (``flagged``) and whether the group's
    aggregate must be discarded (a liar's input is already in it).

    Security: ``discard`` must be honoured: the aggregate then holds a liar's input."""

    flagged: Mapping[str, str]
    discard: bool
    unresolved: tuple[tuple[str, str], ...] = ()


def post_check(request: PostCheckRequest) -> PostCheck:
    """Check what unmasking revealed against the commitments in the auditor's verdict.

    ``self_seeds[i]``: b_i of each contributor; ``mask_keys[j]``: the rebuilt X25519 mask
    key of non-contributors; ``s_public``: every member's advertised (signed) mask key.
    The true seeds are derived here from those, and compared with the seeds the auditor
    committed to before unmasking (:func:`encode_commitments`): a pure function of public
    values, so whoever holds the transcript can re-run it; the coordinator runs it (it
    rebuilt the seeds), the auditor is not asked twice.

    Security: a contributor whose reported ``b_i``, or seed towards a non-contributor,
    is not the one it shared is flagged and the aggregate discarded (its masked input
    holds a mask unmasking did not remove). In a dispute each side's seed is compared
    with the truth and the false side(s) flagged. A pair whose mask keys could not be
    rebuilt stays ``unresolved``: excluded once, nobody flagged. A rebuilt key must match
    the advertised public key, so a coordinator cannot frame a participant with a
    convenient key; commitments that do not decode count as absent (nobody is flagged
    on them).
    """
    session = request.session
    committed: dict[str, tuple[bytes, dict[str, bytes]]] = {}
    for pid, raw in request.verdict.commitments.items():
        try:
            committed[pid] = decode_commitments(raw)
        except MessageError:
            continue
    flagged: dict[str, str] = {}
    discard = False
    keys: dict[str, AgreementKey] = {}
    for pid, raw in request.mask_keys.items():
        try:
            key = AgreementKey.from_private_bytes(raw)
        except (CryptoError, ValueError):
            continue
        if key.public_bytes() == request.s_public.get(pid):
            keys[pid] = key

    def true_pair(i: str, j: str) -> bytes | None:
        """The commitment the true s_ij would have, if a mask key of i or j is known."""
        key, other = (keys.get(j), i) if j in keys else (keys.get(i), j)
        if key is None or other not in request.s_public:
            return None
        seed = key.derive(request.s_public[other], label=mask_label(session, i, j))
        return commit(session, i, j, seed)

    for i in sorted(request.contributors):
        if i not in committed:
            continue
        b_commit, pairs = committed[i]
        seed_i = request.self_seeds.get(i)
        if seed_i is not None and commit(session, i, "", seed_i) != b_commit:
            flagged[i] = proven(
                "reported a self-mask seed it did not share (found after unmasking)"
            )
            discard = True
            continue
        for j, p_commit in sorted(pairs.items()):
            if j in request.contributors:
                continue  # compared with j's own seed by (b)
            truth = true_pair(i, j)
            if truth is not None and truth != p_commit:
                flagged[i] = proven(f"false mask seed towards {j} (found after unmasking)")
                discard = True
                break
    unresolved: list[tuple[str, str]] = []
    for i, j in request.verdict.disputes:
        blamed = False
        for one, other in ((i, j), (j, i)):
            side = committed.get(one)
            truth = true_pair(one, other)
            if truth is None:
                continue
            if side is None or side[1].get(other) != truth:
                flagged.setdefault(one, proven(f"false mask seed in the dispute with {other}"))
                blamed = True
        if not blamed:
            unresolved.append((i, j))
    return PostCheck(flagged, discard, tuple(unresolved))


# --- how the coordinator reaches the auditor -----------------------------------------


@dataclass(frozen=True)
class BindingKeys:
    """What every client must know of the auditor: its HPKE key (reports are sealed to
    it), its identity key (verdicts are signed by it), and the sketch dimension.

    Security: public keys, from the PKI; a client trusts no verdict under another key."""

    auditor_public: bytes
    auditor_identity: bytes
    dim: int


@dataclass(frozen=True)
class JudgeRequest:
    """What the coordinator hands the auditor for one group before unmasking.

    ``members`` is the group, ``survivors`` its survivor list and ``digests`` the
    SHA-256 of every masked input received (the survivor list's digests): the verdict
    names all three, and clients accept it only for their own instance.

    Security: the reports are sealed; R y_i is the coordinator's (trusted for
    integrity, threat_model.md); nothing here reveals an individual input."""

    session: str
    members: frozenset[str]
    joint_seed: bytes
    spec: FixedPointSpec
    length: int  # words of a masked input (update + weight)
    digests: Mapping[str, bytes]  # every masked input received
    survivors: frozenset[str]
    projected: Mapping[str, Words]  # R y_i, computed by the coordinator
    reports: Mapping[str, bytes]  # sealed
    neighbours: Mapping[str, frozenset[str]]  # who shared keys with whom: the masks

    def check_instance(self) -> None:
        """Refuse a request that does not describe one consistent group instance.

        Security: MessageError unless the survivors are members, every digest is of a
        member's input and covers every survivor, and the reports, projections and
        neighbour lists are of survivors (neighbours being members): the instance the
        auditor then signs in its verdict is the one it judged.
        """
        members = self.members
        if not members or len(members) > MAX_PARTICIPANTS:
            raise MessageError(f"a judge request names {len(members)} members")
        problems = []
        if not self.survivors <= members:
            problems.append("survivors that are not members")
        if not set(self.digests) <= members:
            problems.append("digests of non-members")
        if not self.survivors <= set(self.digests):
            problems.append("survivors without an input digest")
        for name, keys in (
            ("reports", self.reports),
            ("projections", self.projected),
            ("neighbour lists", self.neighbours),
        ):
            if not set(keys) <= self.survivors:
                problems.append(f"{name} of non-survivors")
        if any(not nbrs <= members for nbrs in self.neighbours.values()):
            problems.append("neighbours that are not members")
        if problems:
            raise MessageError(f"judge request of {self.session!r}: " + "; ".join(problems))


@dataclass(frozen=True)
class PostCheckRequest:
    """What :func:`post_check` runs on after unmasking: the auditor's verified verdict
    (its commitments and disputes) and what unmasking rebuilt.

    Security: only secrets unmasking rebuilt anyway; keys are checked against the
    advertised public keys by :func:`post_check`."""

    session: str
    verdict: MaskVerdict
    contributors: frozenset[str]
    self_seeds: Mapping[str, bytes]
    mask_keys: Mapping[str, bytes]
    s_public: Mapping[str, bytes]


def discarded(check: PostCheck) -> str:
    """The reason a discarded aggregate names.

    Security: names the liars and their reasons only (no secret)."""
    who = ", ".join(f"{p}: {why}" for p, why in sorted(check.flagged.items()))
    return f"aggregate discarded: a contributor's binding report was false ({who})"


__all__ = [
    "BindingKeys",
    "BindingReport",
    "JudgeRequest",
    "Judgement",
    "MaskVerdict",
    "OpenedReport",
    "PostCheck",
    "PostCheckRequest",
    "Projection",
    "check_reports",
    "commit",
    "decode_commitments",
    "decode_sketch",
    "encode_commitments",
    "input_digest",
    "open_report",
    "post_check",
    "projection",
    "projection_seed",
    "report_masks",
    "seal_report",
]
