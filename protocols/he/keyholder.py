"""The key holder (the auditor role): the only party that can decrypt, and only aggregates.

What the key holder checks before it releases anything (``decrypt_aggregate``):

1. **One decryption per session.** A session id is spent by its first request, whether
   it passes or not, so no two aggregates of one session can be differenced. (A request
   whose receipts do not parse or name different models, point 2, is refused before the
   session is spent: that reads only what the coordinator itself relayed and decrypts
   nothing, like the mask auditor's refusal of an inconsistent group instance.)
2. **One model.** Every receipt names the digest of the model its participant was sent
   (computed by the participant); a request whose receipts name two different digests
   is refused (:func:`require_one_model`), so members a coordinator sent different
   global models (Pasquini et al., CCS 2022) are never aggregated together.
3. **At least ``min_group_size`` distinct, registered contributors.** Each claimed
   contribution comes with a receipt signed by that participant's identity key (the PKI
   of threat_model.md) over (session, participant, context, d, chunk count, upload
   digest, model digest, sealed tag seed). The coordinator cannot forge one, and a
   receipt of another session is refused.
4. **The aggregate is the sum of exactly those contributions** — checked through
   *contribution tags*: every participant puts secret random tags, drawn from a fresh
   seed sealed to the key holder inside its signed receipt, into the last
   ``tag_slots`` slots of every ciphertext chunk. After decrypting, the key holder
   requires every chunk's tag slots to equal the sum of the claimed contributors' tags
   (and the padding slots to be zero) within ``tag_tolerance``. A coordinator that
   submits one participant's ciphertext, a multiple of it, or any combination other
   than "each claimed ciphertext exactly once" (plus ciphertexts it encrypted itself,
   whose tags it must guess) fails this check except with probability about
   ``(2 * tag_tolerance) ** tag_slots`` per chunk.

Only then does it release the weighted sum and the total weight (never the tags).
threat_model.md (HE section) states what this does *not* verify.

With the HE binding (``fold_dim > 0``, protocols/he/fold.py) the key holder also answers
one :class:`FoldRequest` per session (``open_folds``): it decrypts one fold per
receipted participant, never an update, after checking the fold seed, the receipts (one
model, as above, before the session is judged) and each fold (periodic: at most
``fold_dim`` values; the participant's own tags). The participants it opened and the
trust check did not flag (``restrict``) are then the only ones an aggregate of that
session may contain, and no aggregate of a session is decrypted before that verdict (a
coordinator cannot skip the trust check).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from crypto.agreement import AgreementKey
from crypto.ckks.context import SecretCKKSContext
from crypto.ckks.fold import decrypt_complex, fold_steps, galois_keys_for
from crypto.ckks.sealbox import open_sealed
from crypto.ckks.tags import SEED_BYTES, expand_tags
from crypto.ckks.vectors import decrypt_chunks
from crypto.encoding import require_identifier
from crypto.errors import (
    CiphertextError,
    DecryptionError,
    InvalidSignature,
    KeyMaterialError,
    SecurityViolation,
    ThresholdNotMet,
)
from crypto.signing import IdentityKey, verify_signature
from protocols.he.fold import FoldProjection, fold_seed, open_fold
from protocols.he.layout import SlotLayout
from protocols.he.messages import (
    OFFER_LABEL,
    AggregateRelease,
    ContextOffer,
    ContributionReceipt,
    DecryptRequest,
    FoldRequest,
)
from protocols.he.participant import RECEIPT_LABEL
from protocols.he.settings import HESettings
from protocols.summaries import Summary
from protocols.trust_offer import check_epoch
from protocols.verdict import proven


@dataclass(frozen=True)
class FoldOpening:
    """What :meth:`HEKeyHolder.open_folds` takes from a fold request: per participant,
    the weight-normalised summary to judge, or the reason it cannot be judged."""

    session: str
    summaries: Mapping[str, Summary]
    flagged: Mapping[str, str] = field(default_factory=dict)


#: how far a CKKS-decrypted weight may be from 1 (per contribution) under equal
#: weighting: CKKS error is ~1e-7 at the default scale; a claim inside it gains <= 0.1%
EQUAL_WEIGHT_TOLERANCE = 1e-3


def require_one_model(session: str, receipts: Sequence[bytes]) -> bytes:
    """The model digest every one of ``receipts`` names (the empty string for none).

    Security: raises :class:`SecurityViolation` when two receipts name different model
    digests (members sent different global models, or a receipt from elsewhere), and
    :class:`MessageError` for a receipt that does not parse. It reads only what the
    coordinator relayed (and could read itself) and verifies no signature: the key
    holder runs it before a session is spent and verifies every receipt afterwards, so
    the digest it acts on is the signed one.
    """
    named: dict[bytes, list[str]] = {}
    for raw in receipts:
        rec = ContributionReceipt.from_bytes(raw)
        named.setdefault(rec.model_digest, []).append(rec.participant)
    if len(named) > 1:
        views = "; ".join(
            f"{digest.hex()[:12]}: {', '.join(sorted(pids))}"
            for digest, pids in sorted(named.items(), key=lambda kv: sorted(kv[1]))
        )
        raise SecurityViolation(
            f"session {session}: the receipts name {len(named)} different models ({views}): "
            "members were sent different global models, so none is aggregated"
        )
    return next(iter(named), b"")


def make_galois_keys(secret: SecretCKKSContext, settings: HESettings) -> bytes:
    """The serialized Galois keys of the fold (public; part of the signed offer).

    Security: public key material (rotations and conjugation of ``fold_dim``'s steps);
    it lets the coordinator fold, never decrypt."""
    return galois_keys_for(secret, fold_steps(settings.params, settings.fold_dim))


class HEKeyHolder:
    """Creates the CKKS key pair and decrypts only checked per-group aggregates.

    Security: the :class:`SecretCKKSContext` never leaves this object (its type refuses
    pickling and hides its repr); only :meth:`context_offer` (public key + sealbox key)
    is ever sent.
    """

    def __init__(
        self,
        settings: HESettings,
        *,
        registry: Mapping[str, bytes] | None = None,
        identity: IdentityKey | None = None,
        epoch: int = 1,
    ) -> None:
        settings.check()
        self.settings = settings
        self.epoch = check_epoch(epoch)
        self._identity = identity or IdentityKey.generate()
        self._secret = SecretCKKSContext.generate(settings.params)
        self._sealbox = AgreementKey.generate()
        self._registry: dict[str, bytes] = dict(registry or {})
        self._spent: set[str] = set()
        self._folded: set[str] = set()
        self._allowed: dict[str, frozenset[str]] = {}
        self._galois = make_galois_keys(self._secret, settings) if settings.fold_dim else b""

    @classmethod
    def from_keys(
        cls,
        settings: HESettings,
        *,
        identity: IdentityKey,
        secret: SecretCKKSContext,
        sealbox: AgreementKey,
        registry: Mapping[str, bytes],
        spent: set[str],
        galois: bytes = b"",
        folded: set[str] | None = None,
        allowed: dict[str, frozenset[str]] | None = None,
        epoch: int = 1,
    ) -> HEKeyHolder:
        """A key holder over keys an auditor node keeps in its own files.

        ``spent``: the sessions it already decrypted (shared with the caller, who stores
        it after every :meth:`decrypt_aggregate`): a replayed session stays refused
        across restarts. With the binding (``fold_dim > 0``): ``galois`` the serialized
        Galois keys of the fold (made once, :func:`make_galois_keys`, and stored: the offer
        the participants and the coordinator hold must not change), ``folded`` the
        sessions judged and ``allowed`` their cleared sets (shared the same way).
        ``epoch``: the number of this key pair (the auditor's persisted counter), signed
        into every offer so participants can refuse an older key pair's offer.
        """
        settings.check()
        if secret.params != settings.params:
            raise KeyMaterialError("the stored CKKS context has other parameters")
        if settings.fold_dim and not galois:
            raise KeyMaterialError("a key holder that folds needs its stored Galois keys")
        holder = cls.__new__(cls)
        holder.settings = settings
        holder.epoch = check_epoch(epoch)
        holder._identity = identity
        holder._secret = secret
        holder._sealbox = sealbox
        holder._registry = dict(registry)
        holder._spent = spent
        holder._folded = set() if folded is None else folded
        holder._allowed = {} if allowed is None else allowed
        holder._galois = galois if settings.fold_dim else b""
        return holder

    def register(self, participant: str, identity_public: bytes) -> None:
        """Record a participant's identity public key (out of band: the PKI)."""
        if len(identity_public) != 32:
            raise KeyMaterialError("an Ed25519 public key is exactly 32 bytes")
        known = self._registry.get(participant)
        if known is not None and known != identity_public:
            raise SecurityViolation(f"{participant!r} is already registered with another key")
        self._registry[participant] = identity_public

    @property
    def identity_public(self) -> bytes:
        """The auditor's Ed25519 identity public key (what the PKI hands every role)."""
        return self._identity.public_bytes()

    def context_offer(self, *, session: str) -> bytes:
        """The public material every other role receives (tested: no secret key in it),
        signed with the auditor's identity key for ``session``.

        Security: participants accept only an offer that verifies under the auditor's
        known identity key for the session they expect
        (:func:`~protocols.he.messages.verify_context_offer`), so
        a coordinator cannot hand them another key holder's public context; the offer
        carries :attr:`epoch`, so a participant that has accepted a newer key pair's
        offer refuses this one's (:mod:`protocols.offer_epochs`).
        """
        session = require_identifier("session", session)
        offer = ContextOffer(
            session,
            self._secret.public_bytes(),
            self._sealbox.public_bytes(),
            b"",
            self._galois,
            epoch=self.epoch,
        )
        signature = self._identity.sign(offer.signed_part(), label=OFFER_LABEL)
        return dataclasses.replace(offer, signature=signature).to_bytes()

    @property
    def fingerprint(self) -> bytes:
        return self._secret.fingerprint

    def decrypt_aggregate(self, request: bytes) -> bytes:
        """Check a :class:`DecryptRequest` and release the aggregate, or refuse.

        Security: raises :class:`ThresholdNotMet` for fewer than ``min_group_size``
        valid distinct receipts and :class:`SecurityViolation` for a replayed session,
        receipts naming different models (:func:`require_one_model`), a foreign context,
        an invalid receipt, or an aggregate whose contribution tags do not match its
        receipts. A refused request spends the session, unless its receipts do not parse
        or name different models (refused before anything is decrypted).
        """
        req = DecryptRequest.from_bytes(request)
        if req.session in self._spent:
            raise SecurityViolation(f"session {req.session!r} was already decrypted once")
        require_one_model(req.session, req.receipts)
        self._spent.add(req.session)
        if req.context_fingerprint != self.fingerprint:
            raise SecurityViolation("aggregate claims another CKKS context")
        s = self.settings
        layout = self._layout(req.d)
        seeds = self._check_receipts(req, layout)
        allowed = self._allowed.get(req.session)
        if s.fold_dim and allowed is None:
            raise SecurityViolation(
                f"session {req.session}: no trust verdict on its folds yet: with the binding "
                "an aggregate is decrypted only after the auditor judged the group"
            )
        if allowed is not None and not set(seeds) <= allowed:
            outside = sorted(set(seeds) - allowed)
            raise SecurityViolation(
                f"session {req.session}: the aggregate claims {outside}, who the trust "
                "check did not clear"
            )
        if len(req.chunks) != layout.n_chunks:
            raise SecurityViolation(
                f"aggregate has {len(req.chunks)} chunks, receipts say {layout.n_chunks}"
            )
        if s.fold_dim:  # the binding judges real parts: an aggregate must be real too
            values = np.stack([decrypt_complex(self._secret, c) for c in req.chunks])
            imaginary = float(np.max(np.abs(values.imag)))
            if not imaginary <= s.tag_tolerance:
                raise SecurityViolation(
                    f"session {req.session}: the aggregate has imaginary parts up to "
                    f"{imaginary:.3g}: a contribution encrypted complex values"
                )
            rows = values.real.copy()
        else:
            rows = decrypt_chunks(self._secret, req.chunks)
        weighted, weight, tags, padding = layout.unpack(rows)
        expected = np.zeros((layout.n_chunks, s.tag_slots), dtype=np.float64)
        for seed in seeds.values():
            expected += expand_tags(seed, n_chunks=layout.n_chunks, per_chunk=s.tag_slots)
        tag_error = float(np.max(np.abs(tags - expected)))
        pad_error = float(np.max(np.abs(padding))) if padding.size else 0.0
        if not tag_error <= s.tag_tolerance or not pad_error <= s.tag_tolerance:
            raise SecurityViolation(
                f"session {req.session}: the aggregate is not the sum of the {len(seeds)} "
                f"receipted contributions (tag error {tag_error:.3g}, padding {pad_error:.3g})"
            )
        if not weight > 0:
            raise SecurityViolation(f"session {req.session}: aggregate weight {weight:.3g} <= 0")
        total = weight * s.weight_unit
        if s.equal_weights and not abs(total - len(seeds)) <= EQUAL_WEIGHT_TOLERANCE * len(seeds):
            raise SecurityViolation(
                f"session {req.session}: total weight {total:.6g} for {len(seeds)} "
                "contributions under equal weighting: one of them claimed another weight"
            )
        release = AggregateRelease(
            session=req.session,
            contributors=tuple(sorted(seeds)),
            total_weight=weight * s.weight_unit,
            weighted_sum=weighted * s.weight_unit,
        )
        return release.to_bytes()

    def _layout(self, d: int) -> SlotLayout:
        s = self.settings
        return SlotLayout(
            d=d, slots=self._secret.params.slots, tag_slots=s.tag_slots, fold_dim=s.fold_dim
        )

    def open_folds(self, request: bytes) -> FoldOpening:
        """Check a :class:`FoldRequest` and open one fold per receipted participant.

        Security: refuses (:class:`SecurityViolation`) a second request of a session,
        receipts naming different models (:func:`require_one_model`: refused before the
        session is judged, nothing opened), a foreign context, an invalid or duplicate
        receipt, a fold seed that is not
        :func:`~protocols.he.fold.fold_seed` of the session, the joint seed and the
        receipted upload digests, and any fold that is not a fold of that participant's
        ciphertext (:func:`~protocols.he.fold.open_fold`: more than ``fold_dim`` values,
        or not its tags); :class:`ThresholdNotMet` for fewer than ``min_group_size``
        receipts. It never decrypts more than one fold per receipt. A valid fold whose
        weight slot is not positive flags that participant instead.
        """
        s = self.settings
        if not s.fold_dim:
            raise SecurityViolation("fold requests need settings with fold_dim > 0")
        req = FoldRequest.from_bytes(request)
        if req.session in self._folded:
            raise SecurityViolation(f"session {req.session!r} was already judged once")
        require_one_model(req.session, req.receipts)
        self._folded.add(req.session)
        if req.context_fingerprint != self.fingerprint:
            raise SecurityViolation("fold request claims another CKKS context")
        layout = self._layout(req.d)
        receipts = [ContributionReceipt.from_bytes(raw) for raw in req.receipts]
        seeds = self._check_receipts(
            DecryptRequest(req.session, req.context_fingerprint, req.d, req.receipts, ()),
            layout,
        )
        digests = {rec.participant: rec.upload_digest for rec in receipts}
        if fold_seed(req.session, req.joint_seed, digests) != req.seed:
            raise SecurityViolation(
                f"session {req.session}: the fold seed is not the one the receipted uploads "
                "and the joint seed give"
            )
        projection = FoldProjection.derive(req.seed, layout, self._secret.params)
        summaries: dict[str, Summary] = {}
        flagged: dict[str, str] = {}
        for rec, blob in zip(receipts, req.folds, strict=True):
            pid = rec.participant
            tags = expand_tags(seeds[pid], n_chunks=layout.n_chunks, per_chunk=s.tag_slots)
            try:
                opened = open_fold(
                    self._secret, projection, blob, tags=tags, tolerance=s.tag_tolerance
                )
            except CiphertextError as exc:
                raise SecurityViolation(f"fold of {pid!r} does not load: {exc}") from exc
            except SecurityViolation as exc:
                raise SecurityViolation(f"fold of {pid!r}: {exc}") from exc
            if not (np.isfinite(opened.weight) and opened.weight > 0):
                flagged[pid] = proven(f"fold weight {opened.weight:.3g} is not positive")
                continue
            claimed = opened.weight * s.weight_unit
            if s.equal_weights and not abs(claimed - 1.0) <= EQUAL_WEIGHT_TOLERANCE:
                flagged[pid] = proven(
                    f"fold weight {claimed:.4g}: equal weighting weighs every update 1 "
                    "(a claimed weight)"
                )
                continue
            summaries[pid] = Summary(opened.norm, opened.sketch)
        return FoldOpening(req.session, summaries, flagged)

    def folded_sessions(self) -> frozenset[str]:
        """The sessions whose folds were judged (or refused): never judged again."""
        return frozenset(self._folded)

    def restrict(self, session: str, allowed: frozenset[str]) -> None:
        """After the trust check: an aggregate of ``session`` may contain only ``allowed``.

        Security: set once per session (a second call raises :class:`SecurityViolation`)
        by the auditor's own verdict, never by the coordinator.
        """
        if session in self._allowed:
            raise SecurityViolation(f"session {session!r} already has its cleared set")
        self._allowed[session] = frozenset(allowed)

    def _check_receipts(self, req: DecryptRequest, layout: SlotLayout) -> dict[str, bytes]:
        seeds: dict[str, bytes] = {}
        for raw in req.receipts:
            rec = ContributionReceipt.from_bytes(raw)
            key = self._registry.get(rec.participant)
            if key is None:
                raise SecurityViolation(f"receipt from unregistered {rec.participant!r}")
            try:
                verify_signature(key, rec.signed_part(), rec.signature, label=RECEIPT_LABEL)
            except InvalidSignature as exc:
                raise SecurityViolation(f"receipt of {rec.participant!r}: {exc}") from exc
            if rec.session != req.session:
                raise SecurityViolation(f"receipt of {rec.participant!r} is for another session")
            if rec.context_fingerprint != self.fingerprint:
                raise SecurityViolation(f"receipt of {rec.participant!r} names another context")
            if rec.d != req.d or rec.n_chunks != layout.n_chunks:
                raise SecurityViolation(f"receipt of {rec.participant!r} has another shape")
            if rec.participant in seeds:
                raise SecurityViolation(f"two receipts from {rec.participant!r}")
            try:
                seed = open_sealed(self._sealbox, rec.sealed_tag_seed, aad=rec.header())
            except DecryptionError as exc:
                raise SecurityViolation(f"tag seed of {rec.participant!r}: {exc}") from exc
            if len(seed) != SEED_BYTES:
                raise SecurityViolation(f"tag seed of {rec.participant!r} has the wrong size")
            seeds[rec.participant] = seed
        need = self.settings.min_group_size
        if len(seeds) < need:
            raise ThresholdNotMet(
                f"session {req.session}: aggregate of {len(seeds)} contributions, need {need}",
                survivors=len(seeds),
                threshold=need,
            )
        return seeds
