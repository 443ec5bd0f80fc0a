"""The participant's side of SecAgg+, as an explicit state machine.

``SecAggClient.handle(message) -> reply`` is the step function: it checks that the
message belongs to this session and to the current stage, computes the reply, and only
then moves to the next stage, so a refused message changes nothing.

Security (what a client guarantees whatever the coordinator does, with up to
``corrupt_fraction`` of its group colluding; see :mod:`protocols.secagg.graph`):

* its group is its own ``members`` view; the degree k, Shamir threshold t and
  consistency threshold T come from ``session_parameters(len(members), settings)``, the
  fixed-point encoding from ``encoding_spec(settings, group_size=len(members))`` and
  the neighbour graph from ``graph_seed_from(joint_seed, session)``: a directory with
  another seed, another scale or with non-members is refused
  (StageError/SecurityViolation);
* it verifies every peer's advertisement against the peer's identity key (PKI) and
  aborts, before sending anything, if any peer advertises another model digest
  (Pasquini et al., CCS 2022: model inconsistency);
* a peer whose public key duplicates another advertised key is excluded (the copier
  of this client's own keys for certain; for two other peers both, since nobody can
  tell the original), and a peer with a low-order X25519 key is excluded; only that
  peer, the session goes on;
* it sends its masked input only if it holds verified shares from >= t neighbours,
  and masks with every neighbour whose shares were delivered (the set the server
  unmasks for and the binding checks);
* it refuses a directory or survivor list smaller than ``min_group_size``, and signs a
  survivor list only if it is on it;
* it answers exactly one unmask request, only with >= T valid signatures of members on
  the list it signed itself, and never reveals both the self-mask share and the key
  share of one peer;
* it takes part in a session string once (``history``): a replayed session is refused;
* with binding (``binding``, :mod:`protocols.secagg.binding`): it refuses a survivor
  list whose digest of its masked input is not the hash of what it sent, reports
  r, p_ij, q sealed to the auditor, and answers an unmask request only with the
  auditor's valid signed verdict of this session and of this group instance (its
  members, survivors and masked-input digests must be this client's own view: a
  verdict the auditor signed for another group under the same session string is
  refused), treating its flagged and excluded members as dropped (key share, never
  the self-mask share) and refusing a verdict that leaves fewer than
  max(min_group_size, T) contributors.

Every signed, MACed or AAD-bound byte string is ``crypto.encoding.bind`` under a
versioned domain.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from crypto.aead import aead_open, aead_seal
from crypto.agreement import AgreementKey
from crypto.encoding import bind, require_identifier
from crypto.errors import (
    CryptoError,
    InvalidSignature,
    KeyMaterialError,
    MessageError,
    SecurePoolError,
    SecurityViolation,
    StageError,
    ThresholdNotMet,
)
from crypto.fixedpoint import FixedPointSpec, encode
from crypto.prg import expand_mask
from crypto.shamir import shamir_split
from crypto.signing import IdentityKey, VerifiedSignatures, verify_maybe_memo
from protocols.secagg.binding import (
    BindingKeys,
    BindingReport,
    MaskVerdict,
    input_digest,
    projection,
    projection_seed,
    seal_report,
)
from protocols.secagg.graph import (
    SessionParameters,
    graph_seed_from,
    neighbours_of,
    session_parameters,
)
from protocols.secagg.labels import (
    NO_DIGEST,
    PAIR_MASK_LABEL,
    SELF_MASK_LABEL,
    mask_label,
    pair_sign,
    prekey_label,
)
from protocols.secagg.messages import (
    AdvertiseKeys,
    ConsistencySignature,
    KeyDirectory,
    MaskedInput,
    ShareDelivery,
    ShareKeys,
    SurvivorList,
    UnmaskRequest,
    UnmaskResponse,
    decode_message,
    encode_message,
)
from protocols.secagg.settings import MaskSettings, encoding_spec

if TYPE_CHECKING:
    from protocols.secagg.prekeys import PreKeys

LABEL_ADVERTISE = b"secagg/advertise"
LABEL_SURVIVORS = b"secagg/survivors"
LABEL_DIGEST = b"secagg/model-digest"
_DOMAIN = b"securepool/secagg/v2/"
MIN_GROUP_SIZE = 3


class ClientStage(Enum):
    ADVERTISE = 0  # will send keys
    SHARE = 1  # waiting for the key directory
    INPUT = 2  # waiting for the share delivery
    CONSISTENCY = 3  # waiting for the survivor list
    UNMASK = 4  # waiting for the unmask request
    DONE = 5


def advertise_payload(
    session: str, sender: str, c_pk: bytes, s_pk: bytes, model_digest: bytes
) -> bytes:
    """What a participant signs when it advertises its keys (and its model digest)."""
    return bind(_DOMAIN + b"advertise", session, sender, c_pk, s_pk, model_digest)


def survivors_payload(
    session: str,
    model_digest: bytes,
    survivors: Iterable[str],
    digests: Mapping[str, bytes] | None = None,
) -> bytes:
    """What a participant signs in the consistency round: the exact survivor set, and
    (when the list carries them) the digest of every masked input, so that all signers
    agree on the inputs the binding projection is drawn from."""
    if not digests:
        return bind(_DOMAIN + b"survivors", session, model_digest, *sorted(survivors))
    ids = sorted(survivors)
    pairs: list[bytes | str | int] = []
    for pid in sorted(digests):
        pairs += [pid, digests[pid]]
    return bind(_DOMAIN + b"survivors+digests", session, model_digest, len(ids), *ids, *pairs)


def digest_payload(session: str, sender: str, model_digest: bytes) -> bytes:
    """What a client whose keys were advertised in advance signs in its ShareKeys: the
    model digest it was sent (:mod:`protocols.secagg.prekeys`)."""
    return bind(_DOMAIN + b"model-digest", session, sender, model_digest)


def share_key_label(session: str, u: str, v: str) -> bytes:
    """HKDF label of the key that encrypts shares between u and v (order-independent)."""
    lo, hi = sorted((u, v))
    return bind(_DOMAIN + b"sharekey", session, lo, hi)


def share_aad(session: str, sender: str, receiver: str) -> bytes:
    return bind(_DOMAIN + b"share", session, sender, receiver)


def default_model_digest(session: str) -> bytes:
    """A placeholder digest for callers that do not yet hash their global model: it
    binds only the session, so it detects nothing about the model."""
    return hashlib.sha256(bind(_DOMAIN + b"default-model-digest", session)).digest()


def x_coordinates(ids: Iterable[str]) -> dict[str, int]:
    return {pid: i + 1 for i, pid in enumerate(sorted(ids))}


# X25519 reads a public key as a little-endian u-coordinate, bit 255 ignored, mod
# p = 2^255 - 19 (RFC 7748). With any clamped scalar (a multiple of 8 below 2^255, so
# never a multiple of the large prime factor of the curve's or the twist's order) the
# shared secret is zero exactly for the points of order dividing 8: u = 0, 1, p - 1
# and the two u-coordinates of order 8 (libsodium's blocklist, RFC 7748 section 7).
_X25519_P = 2**255 - 19
_X25519_LOW_ORDER_U = frozenset(
    {
        0,
        1,
        _X25519_P - 1,
        325606250916557431795983626356110631294008115727848805560023387167927233504,
        39382357235489614581723060781553021112529911719440698176882885853963445705823,
    }
)


def valid_x25519(public: bytes, probe: AgreementKey) -> bool:
    """Whether ``public`` is a usable X25519 key (32 bytes, not of low order).

    A 32-byte key whose u-coordinate (as X25519 reads it) is none of the five of low
    order is usable as it is, with no key agreement (the coordinator checks every
    advertised key: two agreements per participant were a tenth of its session time).
    Anything else, a listed u-coordinate among them, is decided by an agreement with
    ``probe``: refused when it fails.

    Security: the same answer as an agreement with ``probe`` for every input (with a
    clamped scalar X25519 gives zero exactly for the 14 encodings of those five
    u-coordinates, bit 255 set or not, u or u + p); a key passing here still goes
    through each neighbour's own agreement, which refuses a low-order key by itself.
    """
    if isinstance(public, bytes) and len(public) == 32:
        u = int.from_bytes(public, "little") & ((1 << 255) - 1)
        if u % _X25519_P not in _X25519_LOW_ORDER_U:
            return True
    try:
        probe.derive(public, label=_DOMAIN + b"probe", length=16)
    except KeyMaterialError:
        return False
    return True


def encode_input(
    update: NDArray[np.float32],
    weight: float,
    spec: FixedPointSpec,
    *,
    clip: float,
    max_weight: float,
) -> NDArray[np.unsignedinteger]:
    """The plaintext the client masks: weight x clipped update, then the weight itself.

    Each element is clipped to [-clip, clip] and the weight capped at ``max_weight``, so
    every encoded value lies within ``spec.clip = max_weight * max(clip, 1)``.
    """
    w = min(float(weight), max_weight)
    flat = np.asarray(update).reshape(-1)
    values = np.empty(flat.size + 1, dtype=np.float64)  # one buffer, filled in place
    body = values[:-1]
    np.copyto(body, flat, casting="unsafe")  # float32 -> float64 is exact
    np.clip(body, -clip, clip, out=body)
    body *= w
    values[-1] = w
    return encode(values, spec, seed=os.urandom(32))


@dataclass
class SessionHistory:
    """The sessions one participant has taken part in (kept across sessions by its node).

    Security: :meth:`claim` refuses a session string seen before, and, when iterations
    are given, any iteration not above the last one, so a coordinator cannot replay an
    old session (its old global model, its old group) to a participant.
    """

    sessions: set[str] = field(default_factory=set)
    last_iteration: int = -1

    def claim(self, session: str, *, iteration: int | None = None) -> None:
        if session in self.sessions:
            raise StageError(f"session {session!r} was already taken part in (replay)")
        if iteration is not None and iteration <= self.last_iteration:
            raise StageError(
                f"session {session!r} is iteration {iteration}, not after {self.last_iteration}"
            )
        self.sessions.add(session)
        if iteration is not None:
            self.last_iteration = iteration


class SecAggClient:
    """One participant in one session. Holds its own keys; sees only its messages.

    ``members`` is the participant's own view of its group (from the verifiable
    assignment), ``joint_seed`` the session's 32-byte joint randomness, ``model_digest``
    the caller's hash of the global model and session parameters it was sent.
    """

    def __init__(
        self,
        *,
        pid: str,
        session: str,
        identity: IdentityKey,
        directory: Mapping[str, bytes],
        settings: MaskSettings,
        update: NDArray[np.float32],
        weight: float,
        members: Iterable[str],
        joint_seed: bytes,
        model_digest: bytes,
        min_group_size: int = MIN_GROUP_SIZE,
        sealed_summary: bytes = b"",
        history: SessionHistory | None = None,
        iteration: int | None = None,
        binding: BindingKeys | None = None,
        verified: VerifiedSignatures | None = None,
        prekeys: PreKeys | None = None,
    ) -> None:
        try:
            self.pid = require_identifier("pid", pid)
            self.session = require_identifier("session", session)
            group = frozenset(require_identifier("member", m) for m in members)
        except SecurePoolError as exc:
            raise MessageError(str(exc)) from None
        if pid not in group:
            raise SecurityViolation(f"{pid}: not a member of its own group view")
        if min_group_size < MIN_GROUP_SIZE:
            raise SecurityViolation(f"min_group_size must be >= {MIN_GROUP_SIZE}")
        if len(group) < min_group_size:
            raise ThresholdNotMet(
                f"{pid}: a group of {len(group)} is below min_group_size {min_group_size}",
                survivors=len(group),
                threshold=min_group_size,
            )
        missing = group - set(directory)
        if missing:
            raise SecurityViolation(f"{pid}: members {sorted(missing)} have no identity key")
        if not isinstance(model_digest, bytes) or len(model_digest) != 32:
            raise MessageError(f"{pid}: model_digest must be 32 bytes")
        self.members = group
        self.params: SessionParameters = session_parameters(
            len(group),
            dropout=settings.expected_dropout,
            corrupt=settings.corrupt_fraction,
            correctness_bits=settings.correctness_bits,
            security_bits=settings.security_bits,
            degree=settings.degree,
        )
        self.min_group_size = min_group_size
        self._graph_seed = graph_seed_from(joint_seed, session=session)
        self._digest = model_digest
        self._history = history if history is not None else SessionHistory()
        self._iteration = iteration
        self.stage = ClientStage.ADVERTISE
        self._identity = identity
        self._directory = dict(directory)  # identity public keys (PKI)
        self._settings = settings
        self._update = update
        self._weight = weight
        self._summary = sealed_summary
        self._binding = binding
        self._verified = verified  # the in-process runtime's memo (crypto.signing)
        self._joint_seed = joint_seed
        if binding is not None and binding.dim < 0:
            raise MessageError(f"{pid}: sketch dimension {binding.dim} < 0")
        # keys advertised in advance (protocols.secagg.prekeys): the adverts were signed
        # under the round's label, the model digest is signed in ShareKeys instead
        self._advert_session = session
        if prekeys is None:
            self._c = AgreementKey.generate()
            self._s = AgreementKey.generate()
        else:
            self._c, self._s = prekeys.c, prekeys.s
            self._advert_session = prekey_label(prekeys.round)
        self._prekeyed = prekeys is not None
        self._b = os.urandom(32)
        # set by the directory
        self.excluded: dict[str, str] = {}  # peer -> why this client left it out
        self._nbrs: frozenset[str] = frozenset()
        self._graph_nbrs: frozenset[str] = frozenset()  # neighbours in the member graph
        self._peers: frozenset[str] = frozenset()  # directory minus the excluded
        self._share_keys: dict[str, bytes] = {}
        self._mask_seeds: dict[str, bytes] = {}
        self._spec: FixedPointSpec | None = None
        # set by the delivery
        self._held: dict[str, tuple[bytes, bytes]] = {}  # peer -> (b share, s share)
        self._survivors: tuple[str, ...] = ()
        self._signature = b""
        self._digests: dict[str, bytes] = {}
        # kept for the binding report (the masks already expanded, never expanded twice)
        self._encoded: NDArray[np.unsignedinteger] | None = None
        self._masked_with: tuple[str, ...] = ()  # the neighbours its input is masked with
        self._input_digest = b""
        self.verdict: MaskVerdict | None = None
        if prekeys is not None:  # advertised already: this session starts at the directory
            self._history.claim(self.session, iteration=self._iteration)
            self.stage = ClientStage.SHARE

    # --- the step function -------------------------------------------------------------

    def start(self) -> bytes:
        """Stage 0: advertise two fresh public keys and the model digest, signed."""
        if self.stage is not ClientStage.ADVERTISE:
            raise StageError(f"{self.pid}: keys already advertised (or made in advance)")
        self._history.claim(self.session, iteration=self._iteration)
        c_pk, s_pk = self._c.public_bytes(), self._s.public_bytes()
        payload = advertise_payload(self.session, self.pid, c_pk, s_pk, self._digest)
        sig = self._identity.sign(payload, label=LABEL_ADVERTISE)
        self.stage = ClientStage.SHARE
        return encode_message(AdvertiseKeys(self.session, self.pid, c_pk, s_pk, self._digest, sig))

    def handle(self, data: bytes) -> bytes:
        """Consume one server message, return the reply. Refusals change nothing."""
        msg = decode_message(data)
        if msg.session != self.session:
            raise StageError(
                f"{self.pid}: message of session {msg.session!r}, not {self.session!r}"
            )
        expected = {
            ClientStage.SHARE: KeyDirectory,
            ClientStage.INPUT: ShareDelivery,
            ClientStage.CONSISTENCY: SurvivorList,
            ClientStage.UNMASK: UnmaskRequest,
        }.get(self.stage)
        if expected is None or not isinstance(msg, expected):
            raise StageError(
                f"{self.pid}: {type(msg).__name__} not expected in stage {self.stage.name}"
            )
        if isinstance(msg, KeyDirectory):
            return self._on_directory(msg)
        if isinstance(msg, ShareDelivery):
            return self._on_delivery(msg)
        if isinstance(msg, SurvivorList):
            return self._on_survivors(msg)
        if isinstance(msg, UnmaskRequest):
            return self._on_unmask(msg)
        raise StageError(f"{self.pid}: unexpected {type(msg).__name__}")

    # --- stages ----------------------------------------------------------------------

    def _on_directory(self, msg: KeyDirectory) -> bytes:
        if msg.graph_seed != self._graph_seed:
            raise SecurityViolation(
                f"{self.pid}: the directory's graph seed is not the one derived from the "
                "joint seed (a seed chosen by the coordinator is refused)"
            )
        if self.pid not in msg.keys:
            raise SecurityViolation(f"{self.pid}: the directory omits this participant")
        strangers = set(msg.keys) - self.members
        if strangers:
            raise SecurityViolation(
                f"{self.pid}: the directory lists non-members {sorted(strangers)[:5]}"
            )
        if msg.length != self._update.size:
            raise MessageError(
                f"{self.pid}: session length {msg.length} != update {self._update.size}"
            )
        # the encoding is derived here, like (k, t, T): the directory's scale is only
        # compared with it (EncodingError if the agreed settings fit no scale)
        spec = encoding_spec(self._settings, group_size=len(self.members))
        if msg.scale != spec.scale:
            raise SecurityViolation(
                f"{self.pid}: the directory's fixed-point field 'scale' is {msg.scale!r}, "
                f"the agreed settings and this group of {len(self.members)} give "
                f"{spec.scale!r} (an encoding chosen by the coordinator is refused)"
            )
        advertised_digest = NO_DIGEST if self._prekeyed else self._digest
        own = (self._c.public_bytes(), self._s.public_bytes(), advertised_digest)
        if msg.keys[self.pid][:3] != own:
            raise SecurityViolation(f"{self.pid}: the directory altered this participant's keys")
        # every advertisement is checked: a forged one is the coordinator's doing (abort)
        for peer in sorted(msg.keys):
            if peer == self.pid:
                continue
            c_pk, s_pk, digest, sig = msg.keys[peer]
            verify_maybe_memo(
                self._verified,
                self._directory[peer],
                advertise_payload(self._advert_session, peer, c_pk, s_pk, digest),
                sig,
                label=LABEL_ADVERTISE,
            )
        # advance adverts carry no digest: it is checked at the delivery (_check_digests)
        other = sorted(p for p, rec in msg.keys.items() if rec[2] != advertised_digest)
        if other:
            raise SecurityViolation(
                f"{self.pid}: model digest mismatch: {other[:5]} (of {len(other)}) were "
                "sent another global model or other session parameters; aborting before "
                "anything derived from this participant's data is sent"
            )
        excluded = self._duplicate_keys(msg.keys)
        k, t = self.params.degree, self.params.threshold
        graph_nbrs = neighbours_of(self.pid, sorted(self.members), k, seed=self._graph_seed)
        share_keys: dict[str, bytes] = {}
        mask_seeds: dict[str, bytes] = {}
        for v in sorted(graph_nbrs & set(msg.keys)):
            if v in excluded:
                continue
            c_pk, s_pk = msg.keys[v][0], msg.keys[v][1]
            try:
                share_keys[v] = self._c.derive(
                    c_pk, label=share_key_label(self.session, self.pid, v)
                )
                mask_seeds[v] = self._s.derive(s_pk, label=mask_label(self.session, self.pid, v))
            except KeyMaterialError:
                excluded[v] = "invalid X25519 public key (low order)"
                share_keys.pop(v, None)
        peers = frozenset(msg.keys) - set(excluded)
        if len(peers) < self.min_group_size:
            raise ThresholdNotMet(
                f"{self.pid}: {len(peers)} usable participants, min_group_size "
                f"{self.min_group_size}",
                survivors=len(peers),
                threshold=self.min_group_size,
            )
        nbrs = frozenset(share_keys)
        if len(nbrs) < t:
            raise ThresholdNotMet(
                f"{self.pid}: {len(nbrs)} usable neighbours, threshold {t}",
                survivors=len(nbrs),
                threshold=t,
            )
        xs = x_coordinates(self.members)
        order = sorted(nbrs)
        shares = shamir_split(
            [self._b, self._s.private_bytes()], threshold=t, xs=[xs[v] for v in order]
        )
        cts = {}
        for v, (b_share, s_share) in zip(order, shares, strict=True):
            plain = struct.pack(">H", len(b_share)) + b_share + s_share
            cts[v] = aead_seal(share_keys[v], plain, aad=share_aad(self.session, self.pid, v))
        self.excluded = excluded
        self._nbrs, self._peers, self._graph_nbrs = nbrs, peers, graph_nbrs
        self._share_keys, self._mask_seeds = share_keys, mask_seeds
        self._spec = spec
        self.stage = ClientStage.INPUT
        if not self._prekeyed:
            return encode_message(ShareKeys(self.session, self.pid, cts))
        digest_sig = self._identity.sign(
            digest_payload(self.session, self.pid, self._digest), label=LABEL_DIGEST
        )
        return encode_message(ShareKeys(self.session, self.pid, cts, self._digest, digest_sig))

    def _duplicate_keys(
        self, keys: Mapping[str, tuple[bytes, bytes, bytes, bytes]]
    ) -> dict[str, str]:
        """Peers to exclude because a public key of theirs is advertised twice."""
        holders: dict[bytes, list[str]] = {}
        for pid, rec in keys.items():
            holders.setdefault(rec[0], []).append(pid)
            holders.setdefault(rec[1], []).append(pid)
        out: dict[str, str] = {}
        for pk, who in holders.items():
            if len(who) < 2:
                continue
            pids = set(who)
            if self.pid in pids:  # this client knows its own keys are its own
                for p in pids - {self.pid}:
                    out[p] = "re-advertised this participant's public key"
            else:
                for p in pids:
                    out[p] = f"public key {pk[:4].hex()}... advertised {len(who)} times"
        return out

    def _plain_input(self, spec: FixedPointSpec) -> NDArray[np.unsignedinteger]:
        """The encoded input this client masks: :func:`encode_input` of its update and
        weight (clipped and capped; an attacker's subclass lies here)."""
        s = self._settings
        return encode_input(self._update, self._weight, spec, clip=s.clip, max_weight=s.max_weight)

    def _check_digests(self, msg: ShareDelivery) -> None:
        """Keys made in advance: every sharer's signed model digest must be this client's
        own (model consistency, Pasquini et al.), checked before the masked input leaves.

        Security: the digests must cover every neighbour whose shares are delivered
        (whose masks this input would carry) and each signature must verify under the
        sharer's PKI key; one other digest aborts the session (SecurityViolation)."""
        if not self._prekeyed:
            if msg.digests:
                raise SecurityViolation(f"{self.pid}: digests in a delivery of advertised keys")
            return
        missing = sorted(set(msg.ciphertexts) - set(msg.digests))
        if missing or not set(msg.digests) <= set(self._peers):
            raise SecurityViolation(
                f"{self.pid}: the delivery's model digests do not cover its sharers "
                f"{missing[:5]}, or name non-members"
            )
        other = []
        for peer in sorted(msg.digests):
            digest, sig = msg.digests[peer]
            verify_maybe_memo(
                self._verified,
                self._directory[peer],
                digest_payload(self.session, peer, digest),
                sig,
                label=LABEL_DIGEST,
            )
            if digest != self._digest:
                other.append(peer)
        if other:
            raise SecurityViolation(
                f"{self.pid}: model digest mismatch: {other[:5]} (of {len(other)}) were "
                "sent another global model or other session parameters; aborting before "
                "anything derived from this participant's data is sent"
            )

    def _on_delivery(self, msg: ShareDelivery) -> bytes:
        unknown = set(msg.ciphertexts) - self._graph_nbrs
        if unknown:
            raise SecurityViolation(f"{self.pid}: shares from non-neighbours {sorted(unknown)}")
        self._check_digests(msg)
        held: dict[str, tuple[bytes, bytes]] = {}
        for u, ct in msg.ciphertexts.items():
            key = self._share_keys.get(u)
            if key is None:
                continue  # a neighbour this client excluded
            try:
                plain = aead_open(key, ct, aad=share_aad(self.session, u, self.pid))
                (blen,) = struct.unpack_from(">H", plain)
            except (CryptoError, struct.error):
                continue  # a tampered share: this client cannot help recover u's secrets
            if 2 + blen >= len(plain):
                continue
            held[u] = (plain[2 : 2 + blen], plain[2 + blen :])
        t = self.params.threshold
        if len(held) < t:
            raise SecurityViolation(
                f"{self.pid}: verified shares from only {len(held)} neighbour(s), threshold "
                f"{t}: refusing to send a masked input the coordinator could unmask alone"
            )
        if self._spec is None:
            raise StageError(f"{self.pid}: no key directory seen")
        y = self._plain_input(self._spec)
        dtype = self._spec.dtype
        if self._binding is not None:
            self._encoded = y.copy()
        y += expand_mask(self._b, label=SELF_MASK_LABEL, length=y.size, dtype=dtype)
        # every neighbour whose shares were delivered, held or not (a share that does not
        # open only means this client cannot help rebuild that neighbour's secrets): the
        # server's unmasking and the binding's check assume exactly this set
        masked = tuple(sorted(set(msg.ciphertexts) & set(self._mask_seeds)))
        for v in masked:
            m = expand_mask(self._mask_seeds[v], label=PAIR_MASK_LABEL, length=y.size, dtype=dtype)
            if pair_sign(self.pid, v) > 0:
                y += m
            else:
                y -= m
        self._masked_with = masked
        if self._binding is not None:
            self._input_digest = input_digest(y)
        self._held = held
        self.stage = ClientStage.CONSISTENCY
        return encode_message(MaskedInput(self.session, self.pid, self._summary, y))

    def _on_survivors(self, msg: SurvivorList) -> bytes:
        survivors = set(msg.survivors)
        if len(survivors) != len(msg.survivors) or not survivors <= self._peers:
            raise SecurityViolation(f"{self.pid}: survivor list names unknown participants")
        if self.pid not in survivors:
            raise SecurityViolation(f"{self.pid}: survivor list omits this participant")
        if not set(msg.digests) <= self._peers or not survivors <= set(msg.digests):
            if msg.digests or self._binding is not None:
                raise SecurityViolation(
                    f"{self.pid}: the input digests do not cover the survivors, or name "
                    "unknown participants"
                )
        need = max(self.min_group_size, self.params.consistency)
        if len(survivors) < need:
            raise ThresholdNotMet(
                f"{self.pid}: {len(survivors)} survivors, need {need} (min_group_size "
                f"{self.min_group_size}, consistency threshold {self.params.consistency})",
                survivors=len(survivors),
                threshold=need,
            )
        report = b"" if self._binding is None else self._report(msg.digests)
        self._survivors = tuple(sorted(survivors))
        self._digests = dict(msg.digests)
        sig = self._identity.sign(
            survivors_payload(self.session, self._digest, self._survivors, self._digests),
            label=LABEL_SURVIVORS,
        )
        self._signature = sig
        self.stage = ClientStage.UNMASK
        return encode_message(ConsistencySignature(self.session, self.pid, sig, report))

    def _report(self, digests: Mapping[str, bytes]) -> bytes:
        """The binding report (:mod:`protocols.secagg.binding`), sealed to the auditor.

        Security: refuses a digest list whose entry for this client is not the hash of
        the masked input it sent (the coordinator could otherwise choose the projection).
        """
        binding = self._binding
        if binding is None:
            raise StageError(f"{self.pid}: this session runs without binding")
        if digests.get(self.pid) != self._input_digest:
            raise SecurityViolation(
                f"{self.pid}: the survivor list's digest of this participant's masked input "
                "is not the hash of what it sent"
            )
        seed = projection_seed(session=self.session, joint_seed=self._joint_seed, digests=digests)
        report = self._report_body(seed, binding.dim)
        self._encoded = None
        return seal_report(report, auditor_public=binding.auditor_public)

    def _report_body(self, seed: bytes, dim: int) -> BindingReport:
        """r = R e, and the seeds of the masks its input carries (b and each s_v)."""
        if self._encoded is None:
            raise StageError(f"{self.pid}: no masked input to report on")
        proj = projection(seed, length=self._encoded.size, dim=dim)
        return BindingReport(
            self.session,
            self.pid,
            proj.apply(self._encoded),
            self._b,
            {v: self._mask_seeds[v] for v in self._masked_with},
        )

    def _on_unmask(self, msg: UnmaskRequest) -> bytes:
        survivors, dropped = set(msg.survivors), set(msg.dropped)
        both = survivors & dropped
        if both:
            raise SecurityViolation(
                f"{self.pid}: server lists {sorted(both)} as both surviving and dropped"
            )
        if tuple(sorted(survivors)) != self._survivors:
            raise SecurityViolation(f"{self.pid}: survivor list changed after signing")
        if not dropped <= self._peers:
            raise SecurityViolation(f"{self.pid}: unknown participants listed as dropped")
        if not set(msg.signatures) <= survivors:
            raise SecurityViolation(f"{self.pid}: consistency signatures from non-survivors")
        need = self.params.consistency
        if len(msg.signatures) < need:
            raise SecurityViolation(
                f"{self.pid}: only {len(msg.signatures)} consistency signatures, threshold {need}"
            )
        left_out: frozenset[str] = frozenset()
        if self._binding is not None:
            # verdict-gated unmasking: the auditor's signed verdict for this session, or
            # nothing is revealed; its flagged and excluded members count as dropped
            try:
                verdict = MaskVerdict.verified(
                    msg.verdict,
                    msg.verdict_signature,
                    auditor=self._binding.auditor_identity,
                    session=self.session,
                )
            except (CryptoError, MessageError, StageError) as exc:
                raise SecurityViolation(
                    f"{self.pid}: unmask request without a valid auditor verdict for this "
                    f"session ({type(exc).__name__}: {exc})"
                ) from None
            # bound to this group instance, not only to the session string: the members
            # of this client's view, the list it signed and the digests it signed with it
            try:
                verdict.require_instance(
                    members=self.members, survivors=self._survivors, digests=self._digests
                )
            except SecurityViolation as exc:
                raise SecurityViolation(f"{self.pid}: {exc}") from None
            left_out = verdict.left_out
            if not left_out <= survivors:
                raise SecurityViolation(f"{self.pid}: the verdict names non-survivors")
            self.verdict = verdict
        # T valid signatures by distinct members on this exact list, session and digest:
        # with at most C colluders no other list can have T too (graph.py)
        payload = survivors_payload(self.session, self._digest, self._survivors, self._digests)
        valid = 1 if msg.signatures.get(self.pid) == self._signature else 0
        for signer in sorted(msg.signatures):
            if valid >= need:
                break
            if signer == self.pid:
                continue
            try:
                verify_maybe_memo(
                    self._verified,
                    self._directory[signer],
                    payload,
                    msg.signatures[signer],
                    label=LABEL_SURVIVORS,
                )
            except InvalidSignature:
                continue
            valid += 1
        if valid < need:
            raise SecurityViolation(
                f"{self.pid}: {valid} valid consistency signatures on this survivor list, "
                f"threshold {need}"
            )
        contributors = survivors - left_out
        need = max(self.min_group_size, self.params.consistency)
        if len(contributors) < need:
            # the verdict shrinks the aggregate like a coordinator dropping survivors
            # after the consistency check: never below what a survivor list needs, so a
            # coordinator colluding with the auditor unmasks no smaller sum than before
            raise ThresholdNotMet(
                f"{self.pid}: the verdict leaves {len(contributors)} contributors, need "
                f"{need} (min_group_size, consistency threshold)",
                survivors=len(contributors),
                threshold=need,
            )
        dropped |= left_out
        b_shares = {v: self._held[v][0] for v in contributors if v in self._held}
        # a key share only for a peer that was in the key-sharing stage and did not survive
        # (or that the auditor's verdict left out): never both shares of one peer
        s_shares = {v: self._held[v][1] for v in dropped if v in self._held}
        self.stage = ClientStage.DONE
        return encode_message(UnmaskResponse(self.session, self.pid, b_shares, s_shares))


__all__ = ["ClientStage", "SecAggClient", "SessionHistory"]
