"""One beacon outcome for everyone: endorsements, quorum certificates, the omission bound.

The beacon (:mod:`protocols.beacon`) makes the joint seed unpredictable, but alone it
cannot stop a coordinator from *equivocating*: showing a target and two colluders an
outcome that holds only their three reveals (so they form a group of three) and
everyone else the honest one. The target would then run a whole SecAgg+ session with
colluders only. This module closes that:

1. Every participant that accepts an outcome signs its :class:`Statement` (round, pool
   digest, the universe of registered participants, every accepted reveal, the ids
   left out, the announced groups, and a 32-byte ``context`` the caller binds: the
   models sent this round). An honest participant signs **one** statement per round:
   the beacon's state machine takes one outcome per round and persists that it did.
2. The coordinator collects the :class:`Endorsement` s and relays a
   :class:`QuorumCertificate`: valid signatures of at least ``q`` distinct registered
   participants on one statement digest. Nothing derived from a participant's data
   leaves it (mask mode: before its first SecAgg+ message after training), and no
   aggregate is decrypted (HE: by the key holder), without a certificate on the
   statement that participant endorsed.
3. ``q = floor((N + f) / 2) + 1`` for ``N`` registered participants and a corruption
   budget ``f = ceil(gamma * N)``. Two certificates on different digests would need
   ``2q - N > f`` common signers, so at least one honest participant signed both, which
   an honest participant never does: **no two honest participants act on different
   outcomes of one round**. The universe is the PKI, not the coordinator's invited
   list, so the coordinator cannot shrink ``N`` for a fake view.
4. Omissions. The coordinator can leave out reveals it received (claiming a dropout);
   participants refuse to endorse an outcome that leaves out more than ``w`` of the
   ``N`` registered participants (an omitted honest participant refuses anyway: its
   own reveal is missing). Its choice is then among at most
   ``2^f * sum_{j<=w} C(N, j)`` outcomes (colluders withholding or not, times the
   omission sets), and :func:`omission_bound` turns that into a bound on the
   probability that its best choice leaves some group with fewer than
   ``min_honest`` honest members.

Liveness cost: a round needs ``q`` endorsements and at most ``w`` registered
participants missing from the beacon; otherwise no group of that round aggregates (the
coordinator can always stall: availability is not protected).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar, Final

from crypto.encoding import bind, require_identifier
from crypto.errors import CryptoError, InvalidSignature, MessageError, SecurityViolation
from crypto.signing import IdentityKey, VerifiedSignatures, verify_maybe_memo
from protocols.framing import Reader, Writer

MAGIC: Final = b"BQ"
DIGEST_BYTES: Final = 32
SIGNATURE_BYTES: Final = 64
NONCE_BYTES: Final = 32
MAX_PARTICIPANTS: Final = 1 << 16
MAX_GROUPS: Final = 1 << 12
MAX_ROUND: Final = (1 << 62) - 1
_ID_LIMIT: Final = 128

ENDORSE_LABEL: Final = b"securepool/beacon/endorse-outcome/v1"
_STATEMENT_DOMAIN: Final = b"securepool/beacon/outcome-statement/v1"
_ENDORSE_DOMAIN: Final = b"securepool/beacon/endorsement/v1"


# --- sizes -----------------------------------------------------------------------------


def corrupt_budget(universe: int, corrupt_fraction: float) -> int:
    """``f = ceil(gamma * N)``: how many of ``N`` registered participants may collude."""
    if universe < 1 or not 0 <= corrupt_fraction < 0.5:
        raise CryptoError("a quorum needs N >= 1 participants and gamma in [0, 0.5)")
    return math.ceil(corrupt_fraction * universe - 1e-12)


def quorum_size(universe: int, corrupt: int) -> int:
    """``q = floor((N + f) / 2) + 1``: the smallest q with ``2q - N > f``, so that two
    quorums always share an honest signer (see the module docstring)."""
    if not 0 <= corrupt < universe:
        raise CryptoError(f"a corruption budget of {corrupt} of {universe} leaves no honest node")
    return (universe + corrupt) // 2 + 1


def max_left_out(universe: int, fraction: float) -> int:
    """``w = floor(fraction * N)``: the most registered participants an endorsable
    outcome may leave out."""
    if universe < 1 or not 0 <= fraction < 1:
        raise CryptoError(f"max_left_out must be in [0, 1) of N >= 1, got {fraction} of {universe}")
    return math.floor(fraction * universe + 1e-12)


def log2_choices(universe: int, corrupt: int, left_out: int) -> float:
    """log2 of the number of outcomes a coordinator with ``corrupt`` colluders can choose
    among when at most ``left_out`` of ``universe`` may be left out: ``2^f *
    sum_{j<=w} C(N, j)``.

    Security: exact integer sums, so no overflow for any N; CryptoError unless
    ``N >= 1``, ``0 <= corrupt <= N`` and ``0 <= left_out <= N``."""
    if universe < 1 or not 0 <= corrupt <= universe or not 0 <= left_out <= universe:
        raise CryptoError(
            f"log2_choices: corrupt {corrupt} and left_out {left_out} must be in "
            f"[0, N = {universe}]"
        )
    total = sum(math.comb(universe, j) for j in range(left_out + 1))
    return corrupt + math.log2(total)


def omission_bound(
    *, universe: int, corrupt: int, left_out: int, group_size: int, groups: int, min_honest: int
) -> float:
    """An upper bound on P[the coordinator's best choice of outcome leaves some group
    with fewer than ``min_honest`` honest members].

    Union bound: every choice (:func:`log2_choices`) times every group times the chance
    that a group of ``group_size`` drawn uniformly from the ``universe - left_out``
    revealers (the fewest it may keep; all ``corrupt`` among them, the worst case) holds
    more than ``group_size - min_honest`` corrupt members (hypergeometric tail). Each
    group of :func:`securepool.assignment.assign` is a uniformly random subset of the
    active participants given its size, which is what the tail assumes.

    Security: 0.0 only when no choice can leave a group short (``group_size - min_honest
    + 1`` exceeds the colluders among the revealers); the tail is taken in log2 of exact
    integers, so a tail below the smallest float never turns a vacuous bound into 0.
    CryptoError for arguments out of range.
    """
    m = universe - left_out
    if not 0 <= corrupt <= universe or left_out < 0:
        raise CryptoError("omission bound: corrupt or left_out out of range")
    if not 0 < group_size <= m or not 0 < min_honest <= group_size or groups < 1:
        raise CryptoError("omission bound: group size, groups or min_honest out of range")
    kept = min(corrupt, m)  # colluders among the m revealers: at most all of them
    need = group_size - min_honest + 1  # corrupt members that leave < min_honest honest
    favourable = sum(
        math.comb(kept, x) * math.comb(m - kept, group_size - x)
        for x in range(need, min(kept, group_size) + 1)
    )
    if favourable == 0:
        return 0.0
    log2_tail = math.log2(favourable) - math.log2(math.comb(m, group_size))
    log2_bound = log2_choices(universe, corrupt, left_out) + math.log2(groups) + log2_tail
    return 1.0 if log2_bound >= 0 else 2.0**log2_bound


# --- the statement ---------------------------------------------------------------------


def _ident(name: str, value: str) -> str:
    try:
        return require_identifier(name, value)
    except CryptoError as exc:
        raise MessageError(str(exc)) from None


Groups = tuple[tuple[str, tuple[str, ...]], ...]


def write_groups(w: Writer, groups: Groups) -> Writer:
    """``u32 count | (model id | members)*``: the announced groups, as the beacon's
    Outcome and the quorum's Statement carry them."""
    w.u32(len(groups))
    for model_id, members in groups:
        w.text(model_id).texts(members)
    return w


def read_groups(r: Reader, name: str) -> Groups:
    """The groups :func:`write_groups` wrote; MessageError for more than
    ``MAX_GROUPS`` groups or an id that is not an identifier."""
    n_groups = r.u32()
    if n_groups > MAX_GROUPS:
        raise MessageError(f"{name}: {n_groups} groups, at most {MAX_GROUPS}")
    groups = []
    for _ in range(n_groups):
        model_id = _ident("model id", r.text(limit=_ID_LIMIT))
        members = tuple(
            _ident("member", m) for m in r.texts(max_count=MAX_PARTICIPANTS, limit=_ID_LIMIT)
        )
        groups.append((model_id, members))
    return tuple(groups)


def _sorted_unique(name: str, ids: Sequence[str]) -> tuple[str, ...]:
    if list(ids) != sorted(set(ids)):
        raise MessageError(f"{name}: ids not sorted or repeated")
    return tuple(ids)


@dataclass(frozen=True)
class Statement:
    """What an endorser vouches for: one round's whole beacon outcome, canonically.

    ``universe`` is every registered participant (the PKI, sorted); ``reveals`` the
    accepted ``(pid, nonce)`` pairs sorted by id; ``groups`` the announced ``(model id,
    members)`` sorted; ``context`` 32 bytes the caller binds (SecurePool: the digest
    of every model sent this round). ``left_out`` is derived: the universe minus the
    revealers.
    """

    KIND: ClassVar[int] = 1
    round: int
    pool_digest: bytes
    universe: tuple[str, ...]
    reveals: tuple[tuple[str, bytes], ...]
    groups: tuple[tuple[str, tuple[str, ...]], ...]
    context: bytes

    def __post_init__(self) -> None:
        if not 1 <= self.round <= MAX_ROUND:
            raise MessageError(f"Statement: round {self.round} out of range")
        if len(self.pool_digest) != DIGEST_BYTES or len(self.context) != DIGEST_BYTES:
            raise MessageError("Statement: pool digest and context are 32 bytes each")
        _sorted_unique("Statement universe", self.universe)
        revealers = _sorted_unique("Statement reveals", [p for p, _ in self.reveals])
        if not set(revealers) <= set(self.universe):
            raise MessageError("Statement: a revealer outside the universe")
        if any(len(n) != NONCE_BYTES for _, n in self.reveals):
            raise MessageError("Statement: a nonce that is not 32 bytes")
        _sorted_unique("Statement groups", [m for m, _ in self.groups])
        for _, members in self.groups:
            _sorted_unique("Statement group members", members)
            if not set(members) <= set(revealers):
                raise MessageError("Statement: a group member that did not reveal")

    @property
    def revealers(self) -> tuple[str, ...]:
        return tuple(p for p, _ in self.reveals)

    @property
    def left_out(self) -> tuple[str, ...]:
        revealed = set(self.revealers)
        return tuple(p for p in self.universe if p not in revealed)

    def group_map(self) -> dict[str, tuple[str, ...]]:
        return dict(self.groups)

    def digest(self) -> bytes:
        """SHA-256 of the injective encoding of every field (counts included)."""
        fields: list[bytes | str | int] = [self.round, self.pool_digest, len(self.universe)]
        fields += list(self.universe)
        fields.append(len(self.reveals))
        for pid, nonce in self.reveals:
            fields += [pid, nonce]
        fields.append(len(self.left_out))
        fields += list(self.left_out)
        fields.append(len(self.groups))
        for model_id, members in self.groups:
            fields += [model_id, len(members), *members]
        fields.append(self.context)
        return hashlib.sha256(bind(_STATEMENT_DOMAIN, *fields)).digest()

    def to_bytes(self) -> bytes:
        w = Writer(self.KIND, magic=MAGIC).u64(self.round).blob(self.pool_digest)
        w.texts(self.universe).texts([p for p, _ in self.reveals])
        w.blobs([n for _, n in self.reveals])
        return write_groups(w, self.groups).blob(self.context).finish()

    @classmethod
    def from_bytes(cls, data: bytes) -> Statement:
        """Decode and check; Security: raises only MessageError, in time and memory
        linear in ``len(data)`` (plus sorting the ids)."""
        r = Reader(data, kind=cls.KIND, name="Statement", magic=MAGIC)
        rnd, pool = r.u64(), r.blob(exact=DIGEST_BYTES)
        universe = [
            _ident("universe", p) for p in r.texts(max_count=MAX_PARTICIPANTS, limit=_ID_LIMIT)
        ]
        pids = [_ident("revealer", p) for p in r.texts(max_count=MAX_PARTICIPANTS, limit=_ID_LIMIT)]
        nonces = r.blobs(max_count=MAX_PARTICIPANTS, limit=NONCE_BYTES)
        if len(nonces) != len(pids):
            raise MessageError("Statement: reveals and nonces differ in number")
        groups = read_groups(r, "Statement")
        context = r.blob(exact=DIGEST_BYTES)
        r.end()
        return cls(
            rnd,
            pool,
            tuple(universe),
            tuple(zip(pids, nonces, strict=True)),
            groups,
            context,
        )


# --- endorsements and certificates -----------------------------------------------------


def _endorsed_part(round_: int, participant: str, digest: bytes) -> bytes:
    return bind(_ENDORSE_DOMAIN, round_, participant, digest)


@dataclass(frozen=True)
class Endorsement:
    """One participant's signature on one round's statement digest."""

    KIND: ClassVar[int] = 2
    round: int
    participant: str
    digest: bytes
    signature: bytes

    @classmethod
    def sign(cls, identity: IdentityKey, *, participant: str, statement: Statement) -> Endorsement:
        digest = statement.digest()
        part = _endorsed_part(statement.round, participant, digest)
        return cls(statement.round, participant, digest, identity.sign(part, label=ENDORSE_LABEL))

    def signed_part(self) -> bytes:
        return _endorsed_part(self.round, self.participant, self.digest)

    def to_bytes(self) -> bytes:
        w = Writer(self.KIND, magic=MAGIC).u64(self.round).text(self.participant)
        return w.blob(self.digest).blob(self.signature).finish()

    @classmethod
    def from_bytes(cls, data: bytes) -> Endorsement:
        """Decode and check; Security: raises only MessageError."""
        r = Reader(data, kind=cls.KIND, name="Endorsement", magic=MAGIC)
        rnd = r.u64()
        pid = _ident("participant", r.text(limit=_ID_LIMIT))
        digest, sig = r.blob(exact=DIGEST_BYTES), r.blob(exact=SIGNATURE_BYTES)
        r.end()
        return cls(rnd, pid, digest, sig)


@dataclass(frozen=True)
class QuorumCertificate:
    """Endorsements of one statement digest by distinct participants (sorted by id)."""

    KIND: ClassVar[int] = 3
    round: int
    digest: bytes
    signatures: tuple[tuple[str, bytes], ...]

    @property
    def signers(self) -> tuple[str, ...]:
        return tuple(p for p, _ in self.signatures)

    def to_bytes(self) -> bytes:
        w = Writer(self.KIND, magic=MAGIC).u64(self.round).blob(self.digest)
        w.texts(list(self.signers)).blobs([s for _, s in self.signatures])
        return w.finish()

    @classmethod
    def from_bytes(cls, data: bytes) -> QuorumCertificate:
        """Decode and check; Security: raises only MessageError."""
        r = Reader(data, kind=cls.KIND, name="QuorumCertificate", magic=MAGIC)
        rnd, digest = r.u64(), r.blob(exact=DIGEST_BYTES)
        pids = [_ident("signer", p) for p in r.texts(max_count=MAX_PARTICIPANTS, limit=_ID_LIMIT)]
        sigs = r.blobs(max_count=MAX_PARTICIPANTS, limit=SIGNATURE_BYTES)
        r.end()
        _sorted_unique("QuorumCertificate signers", pids)
        if len(sigs) != len(pids) or any(len(s) != SIGNATURE_BYTES for s in sigs):
            raise MessageError("QuorumCertificate: one 64-byte signature per signer")
        return cls(rnd, digest, tuple(zip(pids, sigs, strict=True)))


def verify_certificate(
    data: bytes,
    *,
    round_: int,
    digest: bytes,
    registry: Mapping[str, bytes],
    universe: Sequence[str],
    quorum: int,
    verified: VerifiedSignatures | None = None,
) -> QuorumCertificate:
    """The certificate ``data`` if it holds ``quorum`` valid signatures of distinct
    participants of ``universe`` on ``(round_, digest)``; SecurityViolation otherwise.

    Security: this is the check that protects the caller (a participant before its
    data-derived messages leave, the key holder before it decrypts): a certificate for
    another round or digest, a signer outside the universe or without a key, a bad
    signature or too few signers is refused. Malformed bytes raise MessageError.
    """
    cert = QuorumCertificate.from_bytes(data)
    if cert.round != round_ or cert.digest != digest:
        raise SecurityViolation(
            f"quorum certificate for round {cert.round} on another statement, expected "
            f"round {round_} on the statement endorsed"
        )
    members = set(universe)
    for pid, sig in cert.signatures:
        key = registry.get(pid)
        if pid not in members or key is None:
            raise SecurityViolation(f"quorum certificate signed by {pid!r}, not a participant")
        try:
            verify_maybe_memo(
                verified, key, _endorsed_part(round_, pid, digest), sig, label=ENDORSE_LABEL
            )
        except InvalidSignature as exc:
            raise SecurityViolation(f"quorum certificate: {pid!r}'s signature: {exc}") from exc
    if len(cert.signatures) < quorum:
        raise SecurityViolation(
            f"quorum certificate with {len(cert.signatures)} endorsements, {quorum} needed"
        )
    return cert


class QuorumCollector:
    """The coordinator's side: files endorsements, certifies the digest that reaches a
    quorum. It checks each signature (a bad endorsement is dropped and named, never
    raised), so it relays only certificates its receivers will accept."""

    def __init__(
        self,
        *,
        round_: int,
        registry: Mapping[str, bytes],
        universe: Sequence[str],
        quorum: int,
        verified: VerifiedSignatures | None = None,
    ) -> None:
        self.round = round_
        self._registry = registry
        self._universe = frozenset(universe)
        self.quorum = quorum
        self._verified = verified
        self._by_digest: dict[bytes, dict[str, bytes]] = {}
        self.rejected: dict[str, str] = {}

    def add(self, sender: str, data: bytes) -> None:
        try:
            e = Endorsement.from_bytes(data)
            key = self._registry.get(sender)
            if e.participant != sender or e.round != self.round:
                raise SecurityViolation(f"endorsement from {sender!r} for another round or id")
            if sender not in self._universe or key is None:
                raise SecurityViolation(f"endorsement from unregistered {sender!r}")
            verify_maybe_memo(
                self._verified, key, e.signed_part(), e.signature, label=ENDORSE_LABEL
            )
        except (MessageError, SecurityViolation, InvalidSignature) as exc:
            self.rejected[sender] = str(exc)
            return
        for sigs in self._by_digest.values():
            sigs.pop(sender, None)  # one endorsement per sender: its last
        self._by_digest.setdefault(e.digest, {})[sender] = e.signature

    def certificate(self) -> tuple[bytes, bytes] | None:
        """(digest, certificate bytes) for the digest with the most endorsements if
        they reach the quorum (the first q signers by id), else None."""
        if not self._by_digest:
            return None
        digest, sigs = max(self._by_digest.items(), key=lambda kv: (len(kv[1]), kv[0]))
        if len(sigs) < self.quorum:
            return None
        # q signers suffice (each receiver checks every signature it is given)
        cert = QuorumCertificate(self.round, digest, tuple(sorted(sigs.items())[: self.quorum]))
        return digest, cert.to_bytes()

    @property
    def endorsed(self) -> int:
        return max((len(s) for s in self._by_digest.values()), default=0)


__all__ = [
    "Endorsement",
    "QuorumCertificate",
    "QuorumCollector",
    "Statement",
    "corrupt_budget",
    "log2_choices",
    "max_left_out",
    "omission_bound",
    "quorum_size",
    "verify_certificate",
]
