"""Joint randomness for S403: a commit-reveal beacon no single party controls.

Every iteration, before models are selected and participants assigned (P1/P2), the
invited participants run one commit round and one reveal round through the coordinator:

=================  =========================  ==========================================
message            route                      carries
=================  =========================  ==========================================
``BeaconStart``    coordinator -> invited     iteration, pool-state digest, invited ids
``Commit``         participant -> coordinator SHA-256(bind(nonce domain, iteration, pid,
                                              nonce)), signed with the identity key over
                                              (iteration, pool digest, pid, commitment)
``CommitList``     coordinator -> committed   every signed commitment it received
``Reveal``         participant -> coordinator the 32-byte nonce
``Outcome``        coordinator -> revealed    every valid reveal, the announced groups
=================  =========================  ==========================================

The joint seed is ``SHA-256(bind(seed domain, iteration, pool digest, pid_1, nonce_1,
..., pid_m, nonce_m))`` over the valid reveals sorted by participant id. Each participant
checks everything it is shown (signatures against the identity keys of the PKI, its own
commitment and reveal present and unchanged, every reveal matching its signed
commitment, no duplicates, the current iteration), recomputes the joint seed and the
assignment with the same deterministic function the coordinator must use
(``securepool.assignment.assign_from_seed``), and raises :class:`SecurityViolation` if
the announced groups differ. A participant that commits but does not reveal, or
reveals a nonce that does not open its commitment, is dropped for the iteration and
named (``BeaconResult.withheld``). :func:`group_joint_seed` derives one group's seed
(for the SecAgg+ neighbour graph) from the joint seed.

Security — what the beacon guarantees, and the residual bias:

* The seed is fixed by the commitments: once the commit list is out, no party can
  change its nonce (SHA-256 binding), and a participant that reveals is certain its
  own uniformly random nonce is in the seed, so with one honest revealer the seed is
  uniform to everyone who committed before seeing it. The coordinator cannot choose
  the seed, replay commitments of another iteration (signatures bind the iteration and
  the pool digest) or forge/swap reveals (a reveal must open the commitment signed for
  that participant id).
* **Withholding.** The last revealers (or the coordinator, which sees every reveal
  before it publishes the outcome) can see the seed that would result and decide to
  withhold. A participant that withholds is dropped, which changes the seed. ``c``
  colluding withholders who see the others' reveals first can choose among at most
  ``2^c`` seeds (each of them reveals or not), so any event of probability ``p`` under a
  uniform seed (say, "target t is grouped with two colluders") happens with probability
  at most ``2^c * p``. Withholding is visible: the withholders are named every time, so
  a participant that withholds often marks itself.
* **Suppression by the coordinator.** The coordinator can also pretend an honest
  participant withheld (drop its reveal). That participant detects it (its own reveal is
  missing from the outcome) and refuses with :class:`SecurityViolation`; the bound above
  then counts those ``d`` detected suppressions too (``2^(c + d)``).
* **Equivocation** (different commit lists or outcomes to different participants) is
  not detected by the beacon alone: :mod:`protocols.quorum` makes every participant
  endorse the outcome it accepted (:meth:`BeaconResult.statement`) and act on it only
  under a quorum certificate, so no two honest participants act on different outcomes
  of one round.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import ClassVar, Final

from crypto.encoding import bind, require_identifier
from crypto.errors import (
    CryptoError,
    InvalidSignature,
    MessageError,
    SecurityViolation,
    StageError,
)
from crypto.signing import IdentityKey, VerifiedSignatures, verify_maybe_memo, verify_signature
from protocols.framing import Reader, Writer
from protocols.quorum import Statement, read_groups, write_groups

MAGIC: Final = b"BC"
NONCE_BYTES: Final = 32
DIGEST_BYTES: Final = 32
SIGNATURE_BYTES: Final = 64
MAX_PARTICIPANTS: Final = 1 << 16
MAX_ITERATION: Final = (1 << 62) - 1
_MAX_COMMIT_BYTES: Final = 512
_MAX_REVEAL_BYTES: Final = 256
_ID_LIMIT: Final = 128

COMMIT_LABEL: Final = b"securepool/beacon/commit/v1"
_NONCE_DOMAIN: Final = b"securepool/beacon/nonce-commitment/v1"
_COMMIT_DOMAIN: Final = b"securepool/beacon/commit-payload/v1"
_SEED_DOMAIN: Final = b"securepool/beacon/joint-seed/v1"
_GROUP_DOMAIN: Final = b"securepool/beacon/group-seed/v1"

#: The deterministic assignment: (joint seed, participants sorted) -> model id -> members.
AssignFn = Callable[[bytes, Sequence[str]], Mapping[str, tuple[str, ...]]]


# --- primitives ------------------------------------------------------------------------


def nonce_commitment(*, iteration: int, participant: str, nonce: bytes) -> bytes:
    """SHA-256 of ``bind(nonce domain, iteration, participant, nonce)``.

    Security: binding under SHA-256 collision resistance (the nonce cannot be changed
    after the commitment is out); hiding because the nonce is 32 uniformly random bytes.
    Binding the participant id means one participant's reveal never opens another's
    commitment.
    """
    return hashlib.sha256(bind(_NONCE_DOMAIN, iteration, participant, nonce)).digest()


def joint_seed(*, iteration: int, pool_digest: bytes, reveals: Mapping[str, bytes]) -> bytes:
    """The iteration's 32-byte joint seed from the valid reveals (``pid -> nonce``).

    Security: an injective encoding of (iteration, pool digest, sorted (pid, nonce)
    pairs) under SHA-256: uniform as long as one revealed nonce is uniform and was
    committed before the others were revealed; see the module docstring for the bias
    withholding allows.
    """
    fields: list[bytes | str | int] = [iteration, pool_digest]
    for pid in sorted(reveals):
        fields += [pid, reveals[pid]]
    return hashlib.sha256(bind(_SEED_DOMAIN, *fields)).digest()


def seeded_insecure_nonces(seed: int, participant: str) -> Callable[[int], bytes]:
    """A nonce source anyone who knows ``seed`` can compute (iteration -> 32 bytes).

    Security: NONE: the joint seed becomes a function of the run's config, so whoever
    holds it can predict (and, choosing the seed, steer) the assignment. Only for tests
    and benchmarks that must replay a run (``assignment.beacon = "seeded-insecure"``).
    """

    def nonce(iteration: int) -> bytes:
        label = b"securepool/beacon/seeded-INSECURE-test-only/v1"
        return hashlib.sha256(bind(label, seed, iteration, participant)).digest()

    return nonce


def group_joint_seed(joint_seed: bytes, *, model_id: str) -> bytes:
    """The 32-byte seed of one model group (e.g. its SecAgg+ neighbour graph).

    Security: a domain-separated hash of the joint seed and the model id, so no single
    party chooses it and the groups of one iteration get independent-looking seeds.
    Raises CryptoError for a joint seed that is not 32 bytes or an invalid model id.
    """
    if not isinstance(joint_seed, bytes) or len(joint_seed) != DIGEST_BYTES:
        raise CryptoError("a joint seed is exactly 32 bytes")
    require_identifier("model_id", model_id)
    return hashlib.sha256(bind(_GROUP_DOMAIN, joint_seed, model_id)).digest()


def _commit_payload(
    iteration: int, pool_digest: bytes, participant: str, commitment: bytes
) -> bytes:
    return bind(_COMMIT_DOMAIN, iteration, pool_digest, participant, commitment)


# --- messages --------------------------------------------------------------------------


def _ident(name: str, value: str) -> str:
    try:
        return require_identifier(name, value)
    except CryptoError as exc:
        raise MessageError(str(exc)) from None


def _iteration(r: Reader, name: str) -> int:
    it = r.u64()
    if not 1 <= it <= MAX_ITERATION:
        raise MessageError(f"{name}: iteration {it} out of range")
    return it


def _unique(name: str, ids: Sequence[str]) -> None:
    if len(set(ids)) != len(ids):
        raise MessageError(f"{name}: a participant id appears twice")


@dataclass(frozen=True)
class BeaconStart:
    """The coordinator opens an iteration's beacon for the invited (eligible) participants."""

    KIND: ClassVar[int] = 1
    iteration: int
    pool_digest: bytes
    invited: tuple[str, ...]

    def to_bytes(self) -> bytes:
        w = Writer(self.KIND, magic=MAGIC).u64(self.iteration).blob(self.pool_digest)
        return w.texts(self.invited).finish()

    @classmethod
    def from_bytes(cls, data: bytes) -> BeaconStart:
        """Decode and check; Security: raises only MessageError (bad framing, version,
        kind, length, identifier, duplicate or range), in time and memory linear in
        ``len(data)``."""
        r = Reader(data, kind=cls.KIND, name="BeaconStart", magic=MAGIC)
        it, digest = _iteration(r, "BeaconStart"), r.blob(exact=DIGEST_BYTES)
        invited = tuple(
            _ident("invited", p) for p in r.texts(max_count=MAX_PARTICIPANTS, limit=_ID_LIMIT)
        )
        r.end()
        _unique("BeaconStart", invited)
        return cls(it, digest, invited)


@dataclass(frozen=True)
class Commit:
    """A participant's signed commitment to its nonce for one iteration and pool state."""

    KIND: ClassVar[int] = 2
    iteration: int
    pool_digest: bytes
    participant: str
    commitment: bytes
    signature: bytes

    def signed_part(self) -> bytes:
        return _commit_payload(self.iteration, self.pool_digest, self.participant, self.commitment)

    def to_bytes(self) -> bytes:
        w = Writer(self.KIND, magic=MAGIC).u64(self.iteration).blob(self.pool_digest)
        w.text(self.participant).blob(self.commitment).blob(self.signature)
        return w.finish()

    @classmethod
    def from_bytes(cls, data: bytes) -> Commit:
        """Decode and check; Security: raises only MessageError (bad framing, version,
        kind, length, identifier, duplicate or range), in time and memory linear in
        ``len(data)``."""
        r = Reader(data, kind=cls.KIND, name="Commit", magic=MAGIC)
        it, digest = _iteration(r, "Commit"), r.blob(exact=DIGEST_BYTES)
        pid = _ident("participant", r.text(limit=_ID_LIMIT))
        commitment, signature = r.blob(exact=DIGEST_BYTES), r.blob(exact=SIGNATURE_BYTES)
        r.end()
        return cls(it, digest, pid, commitment, signature)


@dataclass(frozen=True)
class CommitList:
    """Every commitment the coordinator received, published before anyone reveals."""

    KIND: ClassVar[int] = 3
    iteration: int
    pool_digest: bytes
    commits: tuple[Commit, ...]

    def to_bytes(self) -> bytes:
        w = Writer(self.KIND, magic=MAGIC).u64(self.iteration).blob(self.pool_digest)
        return w.blobs([c.to_bytes() for c in self.commits]).finish()

    @classmethod
    def from_bytes(cls, data: bytes) -> CommitList:
        """Decode and check; Security: raises only MessageError (bad framing, version,
        kind, length, identifier, duplicate or range), in time and memory linear in
        ``len(data)``."""
        r = Reader(data, kind=cls.KIND, name="CommitList", magic=MAGIC)
        it, digest = _iteration(r, "CommitList"), r.blob(exact=DIGEST_BYTES)
        raw = r.blobs(max_count=MAX_PARTICIPANTS, limit=_MAX_COMMIT_BYTES)
        r.end()
        commits = tuple(Commit.from_bytes(c) for c in raw)
        _unique("CommitList", [c.participant for c in commits])
        return cls(it, digest, commits)


@dataclass(frozen=True)
class Reveal:
    """A participant's nonce (it opens the participant's commitment)."""

    KIND: ClassVar[int] = 4
    iteration: int
    participant: str
    nonce: bytes

    def to_bytes(self) -> bytes:
        w = Writer(self.KIND, magic=MAGIC).u64(self.iteration).text(self.participant)
        return w.blob(self.nonce).finish()

    @classmethod
    def from_bytes(cls, data: bytes) -> Reveal:
        """Decode and check; Security: raises only MessageError (bad framing, version,
        kind, length, identifier, duplicate or range), in time and memory linear in
        ``len(data)``."""
        r = Reader(data, kind=cls.KIND, name="Reveal", magic=MAGIC)
        it = _iteration(r, "Reveal")
        pid = _ident("participant", r.text(limit=_ID_LIMIT))
        nonce = r.blob(exact=NONCE_BYTES)
        r.end()
        return cls(it, pid, nonce)


@dataclass(frozen=True)
class Outcome:
    """The valid reveals and the groups the coordinator announces for them."""

    KIND: ClassVar[int] = 5
    iteration: int
    reveals: tuple[Reveal, ...]
    groups: tuple[tuple[str, tuple[str, ...]], ...]

    def to_bytes(self) -> bytes:
        w = Writer(self.KIND, magic=MAGIC).u64(self.iteration)
        w.blobs([rv.to_bytes() for rv in self.reveals])
        return write_groups(w, self.groups).finish()

    @classmethod
    def from_bytes(cls, data: bytes) -> Outcome:
        """Decode and check; Security: raises only MessageError (bad framing, version,
        kind, length, identifier, duplicate or range), in time and memory linear in
        ``len(data)``."""
        r = Reader(data, kind=cls.KIND, name="Outcome", magic=MAGIC)
        it = _iteration(r, "Outcome")
        raw = r.blobs(max_count=MAX_PARTICIPANTS, limit=_MAX_REVEAL_BYTES)
        groups = read_groups(r, "Outcome")
        r.end()
        reveals = tuple(Reveal.from_bytes(x) for x in raw)
        _unique("Outcome reveals", [rv.participant for rv in reveals])
        _unique("Outcome groups", [m for m, _ in groups])
        return cls(it, reveals, groups)

    def group_map(self) -> dict[str, tuple[str, ...]]:
        return dict(self.groups)


def _canonical(groups: Mapping[str, Sequence[str]]) -> tuple[tuple[str, tuple[str, ...]], ...]:
    return tuple(sorted((m, tuple(sorted(g))) for m, g in groups.items()))


# --- results and stages ----------------------------------------------------------------


@dataclass(frozen=True)
class BeaconResult:
    """What an iteration's beacon fixed: the seed, who is in, who was dropped and why."""

    iteration: int
    joint_seed: bytes
    participants: tuple[str, ...]  # valid revealers, sorted
    withheld: Mapping[str, str]  # pid -> reason (no commitment, no reveal, bad reveal)
    groups: Mapping[str, tuple[str, ...]]
    pool_digest: bytes = bytes(DIGEST_BYTES)
    nonces: Mapping[str, bytes] = field(default_factory=dict)  # pid -> revealed nonce

    def statement(self, *, universe: Sequence[str], context: bytes) -> Statement:
        """The :class:`~protocols.quorum.Statement` an endorser of this outcome signs:
        this result over the registered ``universe`` (sorted here), with ``context``."""
        return Statement(
            self.iteration,
            self.pool_digest,
            tuple(sorted(universe)),
            tuple((p, self.nonces[p]) for p in self.participants),
            _canonical(self.groups),
            context,
        )


class Stage(Enum):
    IDLE = "idle"
    COMMITTED = "committed"
    REVEALED = "revealed"


# --- the participant's state machine ---------------------------------------------------


def os_nonces(iteration: int) -> bytes:
    """The default nonce source: 32 bytes from the OS CSPRNG (``iteration`` unused)."""
    return os.urandom(NONCE_BYTES)


class BeaconParticipant:
    """One participant's side of the beacon; it trusts nothing the coordinator says.

    ``registry`` maps participant ids to Ed25519 identity public keys (the PKI).
    ``nonce_source(iteration)`` returns the 32-byte nonce; the default draws it from the
    OS CSPRNG (anything else makes the seed predictable: tests and benchmarks only).
    ``verified``: see :class:`VerifiedSignatures` (in-process runtimes only).
    """

    def __init__(
        self,
        pid: str,
        *,
        identity: IdentityKey,
        registry: Mapping[str, bytes],
        nonce_source: Callable[[int], bytes] | None = None,
        verified: VerifiedSignatures | None = None,
    ) -> None:
        self.pid = require_identifier("participant", pid)
        self._verified = verified
        self.identity = identity
        self._registry = registry
        self._nonce_source = nonce_source or os_nonces
        self.stage = Stage.IDLE
        self.last_iteration = 0
        self._start: BeaconStart | None = None
        self._nonce = b""
        self._commit: Commit | None = None
        self._commits: dict[str, Commit] = {}

    def on_start(self, data: bytes) -> bytes:
        """Answer a :class:`BeaconStart` with a signed :class:`Commit`.

        Security: refuses (StageError) an iteration not after the last one it took part
        in, so an old iteration's beacon cannot be replayed to it; draws a fresh nonce.
        """
        start = BeaconStart.from_bytes(data)
        if start.iteration <= self.last_iteration:
            raise StageError(
                f"{self.pid}: beacon for iteration {start.iteration}, already past "
                f"{self.last_iteration} (replayed or out of order)"
            )
        if self.pid not in start.invited:
            raise StageError(f"{self.pid}: not invited to iteration {start.iteration}")
        nonce = self._nonce_source(start.iteration)
        if not isinstance(nonce, bytes) or len(nonce) != NONCE_BYTES:
            raise CryptoError("a beacon nonce is exactly 32 bytes")
        commitment = nonce_commitment(iteration=start.iteration, participant=self.pid, nonce=nonce)
        payload = _commit_payload(start.iteration, start.pool_digest, self.pid, commitment)
        signature = self.identity.sign(payload, label=COMMIT_LABEL)
        commit = Commit(start.iteration, start.pool_digest, self.pid, commitment, signature)
        self._start, self._nonce, self._commit = start, nonce, commit
        self.last_iteration = start.iteration
        self.stage = Stage.COMMITTED
        return commit.to_bytes()

    def on_commits(self, data: bytes) -> bytes:
        """Check the published :class:`CommitList`; answer with this participant's Reveal.

        Security: reveals only if the list is for this iteration and pool digest, holds
        this participant's own commitment unchanged, and every other commitment is signed
        by the identity key of an invited participant for this iteration: so the seed's
        inputs are fixed before this nonce leaves. Raises SecurityViolation otherwise.
        """
        if self.stage is not Stage.COMMITTED or self._start is None or self._commit is None:
            raise StageError(f"{self.pid}: commit list outside the commit stage")
        clist = CommitList.from_bytes(data)
        start = self._start
        if clist.iteration != start.iteration or clist.pool_digest != start.pool_digest:
            raise SecurityViolation(
                f"{self.pid}: commit list for iteration {clist.iteration} or another pool "
                f"state, expected iteration {start.iteration}"
            )
        commits: dict[str, Commit] = {}
        for c in clist.commits:
            if c.participant not in start.invited:
                raise SecurityViolation(f"{self.pid}: commitment of uninvited {c.participant!r}")
            if c.iteration != start.iteration or c.pool_digest != start.pool_digest:
                raise SecurityViolation(
                    f"{self.pid}: commitment of {c.participant!r} is for another iteration"
                )
            self._verify(c)
            commits[c.participant] = c
        if commits.get(self.pid) != self._commit:
            raise SecurityViolation(f"{self.pid}: own commitment missing or altered in the list")
        self._commits = commits
        self.stage = Stage.REVEALED
        return Reveal(start.iteration, self.pid, self._nonce).to_bytes()

    def on_outcome(self, data: bytes, *, assign: AssignFn) -> BeaconResult:
        """Check the :class:`Outcome`, recompute the joint seed and the assignment.

        Security: raises SecurityViolation if a reveal does not open the commitment signed
        for its participant (forged or swapped), this participant's own reveal is
        missing (suppressed), or the announced groups differ from ``assign(joint seed,
        revealers)``: the coordinator cannot steer the assignment without being refused.
        """
        if self.stage is not Stage.REVEALED or self._start is None:
            raise StageError(f"{self.pid}: outcome outside the reveal stage")
        out = Outcome.from_bytes(data)
        start = self._start
        if out.iteration != start.iteration:
            raise SecurityViolation(
                f"{self.pid}: outcome for iteration {out.iteration}, expected {start.iteration}"
            )
        reveals: dict[str, bytes] = {}
        for rv in out.reveals:
            c = self._commits.get(rv.participant)
            if c is None:
                raise SecurityViolation(f"{self.pid}: reveal of uncommitted {rv.participant!r}")
            if rv.iteration != start.iteration or not _opens(rv, c):
                raise SecurityViolation(
                    f"{self.pid}: the reveal of {rv.participant!r} does not open its signed "
                    "commitment (forged or swapped)"
                )
            reveals[rv.participant] = rv.nonce
        if reveals.get(self.pid) != self._nonce:
            raise SecurityViolation(f"{self.pid}: own reveal missing from the outcome (suppressed)")
        seed = joint_seed(iteration=start.iteration, pool_digest=start.pool_digest, reveals=reveals)
        members = tuple(sorted(reveals))
        expected = _canonical(assign(seed, members))
        if _canonical(out.group_map()) != expected:
            raise SecurityViolation(
                f"{self.pid}: the announced groups of iteration {start.iteration} are not the "
                "assignment of the joint seed (steered assignment refused)"
            )
        self.stage = Stage.IDLE
        self._commits = {}
        self._nonce = b""
        return BeaconResult(
            iteration=start.iteration,
            joint_seed=seed,
            participants=members,
            withheld={p: "no valid reveal" for p in start.invited if p not in reveals},
            groups=dict(expected),
            pool_digest=start.pool_digest,
            nonces=reveals,
        )

    def _verify(self, c: Commit) -> None:
        key = self._registry.get(c.participant)
        if key is None:
            raise SecurityViolation(f"{self.pid}: {c.participant!r} has no registered key")
        try:
            verify_maybe_memo(self._verified, key, c.signed_part(), c.signature, label=COMMIT_LABEL)
        except InvalidSignature as exc:
            raise SecurityViolation(
                f"{self.pid}: commitment of {c.participant!r} is not signed by it: {exc}"
            ) from exc


def _opens(rv: Reveal, c: Commit) -> bool:
    return (
        nonce_commitment(iteration=c.iteration, participant=c.participant, nonce=rv.nonce)
        == c.commitment
    )


# --- the coordinator's state machine ---------------------------------------------------


@dataclass
class BeaconCoordinator:
    """The coordinator's side: collects, checks and relays; names the dropped.

    It holds no secret and chooses nothing: the outcome is a deterministic function of
    the valid reveals, which each participant recomputes.
    """

    registry: Mapping[str, bytes]
    _start: BeaconStart | None = None
    _commits: dict[str, Commit] = field(default_factory=dict)
    _reveals: dict[str, Reveal] = field(default_factory=dict)
    dropped: dict[str, str] = field(default_factory=dict)

    def start(self, *, iteration: int, pool_digest: bytes, invited: Sequence[str]) -> bytes:
        """Open the beacon of ``iteration`` for ``invited``; the :class:`BeaconStart` bytes.

        Security: the pool digest is fixed here, before any commitment, so it cannot be
        ground against revealed nonces.
        """
        ids = tuple(sorted(require_identifier("participant", p) for p in invited))
        if not 1 <= iteration <= MAX_ITERATION:
            raise StageError(f"iteration {iteration} out of range")
        if len(pool_digest) != DIGEST_BYTES:
            raise CryptoError("the pool digest is exactly 32 bytes")
        self._start = BeaconStart(iteration, pool_digest, ids)
        self._commits, self._reveals, self.dropped = {}, {}, {}
        return self._start.to_bytes()

    def receive_commit(self, sender: str, data: bytes) -> None:
        """Accept one participant's commitment, or drop and name it (never raises for it).

        Security: the sender, iteration, pool digest and signature are checked; a
        duplicate, malformed or foreign commitment drops its sender only.
        """
        start = self._need_start()
        try:
            c = Commit.from_bytes(data)
            if c.participant != sender or sender not in start.invited:
                raise SecurityViolation(f"commitment from {sender!r} names {c.participant!r}")
            if c.iteration != start.iteration or c.pool_digest != start.pool_digest:
                raise StageError(f"commitment of {sender!r} is for another iteration")
            if sender in self._commits:
                raise StageError(f"second commitment from {sender!r}")
            key = self.registry.get(sender)
            if key is None:
                raise SecurityViolation(f"{sender!r} has no registered key")
            verify_signature(key, c.signed_part(), c.signature, label=COMMIT_LABEL)
        except (MessageError, StageError, SecurityViolation, InvalidSignature) as exc:
            self.dropped[sender] = f"bad commitment: {exc}"
            self._commits.pop(sender, None)
            return
        self._commits[sender] = c

    def commit_list(self) -> bytes:
        """Publish every accepted commitment (the :class:`CommitList` bytes).

        Security: the same list must go to every participant; the beacon does not detect
        a coordinator that sends different lists (see the module docstring).
        """
        start = self._need_start()
        commits = tuple(self._commits[p] for p in sorted(self._commits))
        return CommitList(start.iteration, start.pool_digest, commits).to_bytes()

    @property
    def committed(self) -> tuple[str, ...]:
        return tuple(sorted(self._commits))

    @property
    def revealed(self) -> tuple[str, ...]:
        """The participants whose valid reveal this beacon holds."""
        return tuple(sorted(p for p in self._reveals if p not in self.dropped))

    def receive_reveal(self, sender: str, data: bytes) -> None:
        """Accept a reveal that opens its sender's commitment, or drop and name the sender.

        Security: a reveal that does not open the sender's own signed commitment (or
        names someone else) drops the sender only.
        """
        start = self._need_start()
        try:
            rv = Reveal.from_bytes(data)
            c = self._commits.get(sender)
            if c is None or rv.participant != sender or rv.iteration != start.iteration:
                raise SecurityViolation(f"reveal from {sender!r} does not match a commitment")
            if not _opens(rv, c):
                raise SecurityViolation(f"reveal of {sender!r} does not open its commitment")
        except (MessageError, SecurityViolation) as exc:
            self.dropped[sender] = f"bad reveal: {exc}"
            self._reveals.pop(sender, None)
            return
        self._reveals[sender] = rv

    def finish(self, *, assign: AssignFn) -> tuple[bytes, BeaconResult]:
        """The :class:`Outcome` bytes and the result; everyone invited without a valid
        reveal is named in ``withheld``.

        Security: deterministic in the valid reveals; participants recompute it.
        """
        start = self._need_start()
        reveals = {p: rv.nonce for p, rv in self._reveals.items() if p not in self.dropped}
        seed = joint_seed(iteration=start.iteration, pool_digest=start.pool_digest, reveals=reveals)
        members = tuple(sorted(reveals))
        groups = _canonical(assign(seed, members))
        outcome = Outcome(start.iteration, tuple(self._reveals[p] for p in members), groups)
        withheld = {
            pid: self.dropped.get(pid, "no reveal" if pid in self._commits else "no commitment")
            for pid in start.invited
            if pid not in reveals
        }
        result = BeaconResult(
            start.iteration, seed, members, withheld, dict(groups), start.pool_digest, reveals
        )
        return outcome.to_bytes(), result

    def _need_start(self) -> BeaconStart:
        if self._start is None:
            raise StageError("the beacon has not been started")
        return self._start


__all__ = [
    "BeaconCoordinator",
    "BeaconParticipant",
    "BeaconResult",
    "BeaconStart",
    "Commit",
    "CommitList",
    "Outcome",
    "Reveal",
    "VerifiedSignatures",
    "group_joint_seed",
    "joint_seed",
    "nonce_commitment",
]
