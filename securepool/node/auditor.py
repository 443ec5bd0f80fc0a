"""AuditorNode: the auditor's side of every stage, as a NodeApp.

The auditor holds what only it may hold: its identity key, the CKKS secret key and the
sealbox key of HE mode, the HPKE opening key of the trust check, and what it decided:
the sessions it decrypted, judged and post-checked. It is reached through the
coordinator like any node; what it receives and sends is signed or checked end to end:

* ``he/offer``: its signed CKKS context offer (with the fold's Galois keys when the
  trust check is on); ``trust/offer``: its signed HPKE opening key
  (:mod:`protocols.trust_offer`), which participants verify before sealing to it;
* ``he/fold`` (HE with the trust check): one fold request per group -> its signed fold
  verdict (:mod:`securepool.trust.he_binding`); only the participants it cleared can be
  in that session's aggregate;
* ``he/decrypt``: per-group aggregates whose contribution tags match the receipts
  signed by at least ``min_group_size`` participants of the PKI, once per session;
  on ``he/fold`` and ``he/decrypt`` alike, a group whose receipts name different model
  digests (members sent different global models) is refused before its session is
  spent (:func:`protocols.he.keyholder.require_one_model`);
* ``mask/judge`` (mask with the trust check): one judge request per group
  (:mod:`protocols.secagg.binding_wire`; one that is not a consistent group instance
  is refused before the session is spent) -> the signed
  :class:`~protocols.secagg.binding.MaskVerdict` (one per session, ever, naming the
  members, survivors and masked-input digests it judged) that clients require before
  unmasking, for their own group instance only; its commitments let the coordinator
  run the post-check after unmasking without asking the auditor again;
* ``plain/judge`` (plaintext with the trust check): each group's summaries of the
  updates the coordinator received, under the projection drawn after all of them were
  fixed (:func:`securepool.trust.check.plain_projection_seed`), and, under the
  validation vote, the voters' sealed ballots -> a signed verdict (a ballot that does
  not open flags its voter).

Everything lives in its own state directory, owner-only, so an auditor that lives one
message at a time (Flower) and a restarted one keep the same keys and refuse what they
refused before: ``ckks.secret``, ``sealbox.key``, ``galois.keys``, ``opening.key``,
``spent.json`` (decrypted sessions), ``folded.json`` (judged HE sessions and their
cleared sets) and ``mask.json`` (the mask and plaintext sessions it judged). Keys are
created on first use; the identity key comes from ``securepool keygen``.

Key epochs: ``opening.epoch`` and ``he.epoch`` count the opening keys and the CKKS key
pairs this directory has made (the first is epoch 1). Each new key gets the next epoch,
written before the key itself, and every offer is signed with its key's epoch, so a
participant that has accepted an offer refuses an older one
(:mod:`protocols.offer_epochs`). Rotating a key (:meth:`AuditorNode.rotate_opening_key`,
:meth:`AuditorNode.rotate_he_keys`, or deleting the key file: the next use makes a new
one) is therefore done in the same state directory; an auditor moved to a new one must
take its epoch files along, or participants that know the old keys refuse its offers
(another key under an epoch they accepted).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from crypto.agreement import AgreementKey
from crypto.ckks.context import SecretCKKSContext
from crypto.errors import SecurePoolError, StageError
from crypto.hpke import SummaryOpeningKey
from crypto.signing import IdentityKey
from protocols.aggregation import Weighting
from protocols.he.keyholder import HEKeyHolder, make_galois_keys
from protocols.he.messages import ContributionReceipt, DecryptRequest, FoldRequest
from protocols.he.settings import HESettings
from protocols.secagg.binding_wire import decode_judge_request
from protocols.trust_offer import TRUST_SETUP_SESSION, TrustOffer, check_epoch
from securepool.node.agreement import AUDITOR_ID as AUDITOR_ID  # the auditor's PKI id
from securepool.node.agreement import CertifiedOutcomes
from securepool.node.wire import (
    NodeStage,
    PlainJudgeRequest,
    Reply,
    decode_bundle,
    pack_list,
    refusal,
    unpack_list,
)
from securepool.outputs import private_dir, write_private
from securepool.trust.auditor import Auditor
from securepool.trust.config import TrustConfig

#: the session the auditor's context offer is signed for (one offer per deployment)
HE_SETUP_SESSION = "he-setup"
SECRET_FILE = "ckks.secret"
SEALBOX_FILE = "sealbox.key"
GALOIS_FILE = "galois.keys"
OPENING_FILE = "opening.key"
OPENING_EPOCH_FILE = "opening.epoch"
HE_EPOCH_FILE = "he.epoch"
SPENT_FILE = "spent.json"
FOLDED_FILE = "folded.json"
MASK_FILE = "mask.json"


def _read_json(path: Path, default: Any) -> Any:
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else default


def _write_json(path: Path, value: Any) -> None:
    write_private(path, json.dumps(value, sort_keys=True).encode())


def key_epoch(path: Path, *, keys: Sequence[Path]) -> int:
    """The epoch of the keys in ``keys`` as counted in ``path`` (0: none made yet; a
    directory whose keys predate epoch files is at epoch 1). StageError for a file that
    is not an epoch (refused rather than restarted at 1: a lower epoch is a replay)."""
    if path.exists():
        try:
            return check_epoch(json.loads(path.read_text(encoding="utf-8")))
        except (ValueError, SecurePoolError) as exc:
            raise StageError(f"{path.name} holds no valid key epoch: {exc}") from None
    return 1 if any(k.exists() for k in keys) else 0


def _recorded_epoch(path: Path, *, keys: Sequence[Path]) -> int:
    """:func:`key_epoch` of existing keys, written down if it was not (keys made before
    epoch files: epoch 1), so that deleting the keys later counts on from it."""
    epoch = key_epoch(path, keys=keys)
    if not path.exists():
        _write_json(path, epoch)
    return epoch


def _next_epoch(path: Path, *, keys: Sequence[Path]) -> int:
    """Count a new key in ``path`` (before the key is written: a crash in between leaves
    a higher epoch for the old key, never the old epoch for a new key)."""
    epoch = check_epoch(key_epoch(path, keys=keys) + 1)
    _write_json(path, epoch)
    return epoch


def load_keyholder(
    settings: HESettings,
    *,
    state_dir: Path,
    identity: IdentityKey,
    registry: Mapping[str, bytes],
) -> tuple[HEKeyHolder, set[str], dict[str, frozenset[str]]]:
    """The auditor's key holder from its state directory (keys created on first use),
    with the sets it shares with its caller: spent sessions, folded sessions' cleared
    sets (the folded sessions are their keys and ``folded.json``'s)."""
    private_dir(state_dir)
    secret_path, sealbox_path = state_dir / SECRET_FILE, state_dir / SEALBOX_FILE
    epoch_path, pair = state_dir / HE_EPOCH_FILE, (secret_path, sealbox_path)
    if secret_path.exists() and sealbox_path.exists():
        secret = SecretCKKSContext.from_secret_bytes(
            secret_path.read_bytes(), params=settings.params
        )
        sealbox = AgreementKey.from_private_bytes(sealbox_path.read_bytes())
        epoch = _recorded_epoch(epoch_path, keys=pair)
    else:
        epoch = _next_epoch(epoch_path, keys=pair)
        secret = SecretCKKSContext.generate(settings.params)
        sealbox = AgreementKey.generate()
        (state_dir / GALOIS_FILE).unlink(missing_ok=True)  # the old secret's rotations
        write_private(sealbox_path, sealbox.private_bytes())
        write_private(secret_path, secret.export_secret())
    galois = b""
    if settings.fold_dim:
        galois_path = state_dir / GALOIS_FILE
        galois = galois_path.read_bytes() if galois_path.exists() else b""
        if not galois:  # made once: the offer every other role holds must not change
            galois = make_galois_keys(secret, settings)
            write_private(galois_path, galois)
    spent = set(_read_json(state_dir / SPENT_FILE, []))
    folded_doc: dict[str, list[str]] = _read_json(state_dir / FOLDED_FILE, {})
    allowed = {k: frozenset(v) for k, v in folded_doc.items()}
    holder = HEKeyHolder.from_keys(
        settings,
        identity=identity,
        secret=secret,
        sealbox=sealbox,
        registry={p: k for p, k in registry.items() if p != AUDITOR_ID},
        spent=spent,
        galois=galois,
        folded=set(allowed),
        allowed=allowed,
        epoch=epoch,
    )
    return holder, spent, allowed


def load_opening_key(trust: TrustConfig, state_dir: Path) -> SummaryOpeningKey:
    """The trust check's HPKE opening key from the state directory (made on first use,
    as the next epoch: :func:`opening_epoch`)."""
    private_dir(state_dir)
    path = state_dir / OPENING_FILE
    if path.exists():
        _recorded_epoch(state_dir / OPENING_EPOCH_FILE, keys=(path,))
        return SummaryOpeningKey.from_private_bytes(path.read_bytes(), trust.kem)
    _next_epoch(state_dir / OPENING_EPOCH_FILE, keys=(path,))
    key = SummaryOpeningKey(trust.kem)
    write_private(path, key.private_bytes())
    return key


def opening_epoch(state_dir: Path) -> int:
    """The epoch of the opening key in ``state_dir`` (its trust offers are signed with it)."""
    return key_epoch(state_dir / OPENING_EPOCH_FILE, keys=(state_dir / OPENING_FILE,))


class AuditorNode:
    """The auditor's NodeApp (see the module docstring). ``trust``: the run's trust
    config (None or disabled: the auditor is HE mode's key holder only)."""

    def __init__(
        self,
        *,
        settings: HESettings,
        identity: IdentityKey,
        registry: Mapping[str, bytes] | Callable[[], Mapping[str, bytes]],
        state_dir: Path,
        corrupt_fraction: float,
        weighting: Weighting,
        trust: TrustConfig | None = None,
    ) -> None:
        self._settings = settings
        #: the run's corruption budget: the beacon quorum it checks before it folds or
        #: decrypts a group (securepool.node.agreement.CertifiedOutcomes)
        self._corrupt_fraction = corrupt_fraction
        #: the run's weighting: under equal the trust check flags any other weight
        self._weighting = weighting
        self._outcomes = CertifiedOutcomes()
        self._identity = identity
        self._registry_source = registry
        self._state_dir = Path(state_dir)
        self._trust = trust if trust is not None and trust.enabled else None
        self._holder: HEKeyHolder | None = None
        self._spent: set[str] = set()
        self._allowed: dict[str, frozenset[str]] = {}
        self._auditor: Auditor | None = None

    def _keyholder(self) -> HEKeyHolder:
        if self._holder is None:
            src = self._registry_source
            registry = src() if callable(src) else src
            self._holder, self._spent, self._allowed = load_keyholder(
                self._settings,
                state_dir=self._state_dir,
                identity=self._identity,
                registry=registry,
            )
        return self._holder

    def _trust_auditor(self) -> Auditor:
        if self._trust is None:
            raise StageError("the trust check is off: the auditor judges nothing")
        if self._auditor is None:
            self._auditor = Auditor.from_keys(
                self._trust,
                identity=self._identity,
                opening_key=load_opening_key(self._trust, self._state_dir),
                equal_weights=self._weighting is Weighting.EQUAL,
            )
        return self._auditor

    def rotate_opening_key(self) -> int:
        """Retire the trust check's opening key for a new one, of the next epoch (the
        new epoch). Reports sealed to the old key no longer open; participants that
        accept the new offer refuse the old one from then on."""
        self._trust_auditor()  # the current key exists, so the new one counts after it
        (self._state_dir / OPENING_FILE).unlink()
        self._auditor = None
        self._trust_auditor()
        return opening_epoch(self._state_dir)

    def rotate_he_keys(self) -> int:
        """Retire the CKKS key pair and sealbox key (and the fold's Galois keys) for new
        ones, of the next epoch (the new epoch). Aggregates under the old context no
        longer decrypt; participants that accept the new offer refuse the old one."""
        self._keyholder()
        for name in (SECRET_FILE, SEALBOX_FILE, GALOIS_FILE):
            (self._state_dir / name).unlink(missing_ok=True)
        self._holder = None
        return self._keyholder().epoch

    def handle(self, stage: str, payload: bytes) -> bytes:
        """Answer one stage; a refusal is a typed reply, never an exception."""
        try:
            return self._dispatch(stage, payload).to_bytes()
        except SecurePoolError as exc:
            return refusal(exc)

    def _dispatch(self, stage: str, payload: bytes) -> Reply:
        if stage == NodeStage.BUNDLE.value:
            replies = [self.handle(st, part) for st, part in decode_bundle(payload)]
            return Reply(True, pack_list(replies))
        if stage == NodeStage.HELLO.value:
            return Reply(True, self._identity.public_bytes(), {"participant": AUDITOR_ID})
        if stage == NodeStage.HE_OFFER.value:
            return Reply(True, self._keyholder().context_offer(session=HE_SETUP_SESSION))
        if stage == NodeStage.TRUST_OFFER.value:
            key = self._trust_auditor().public_key()
            offer = TrustOffer.signed(
                self._identity,
                opening_public=key,
                session=TRUST_SETUP_SESSION,
                epoch=opening_epoch(self._state_dir),
            )
            return Reply(True, offer)
        if stage == NodeStage.BEACON_QUORUM.value:
            statement, certificate = unpack_list(payload, what="certified outcome", expected=2)
            src = self._registry_source
            self._outcomes.accept(
                statement,
                certificate,
                registry=src() if callable(src) else src,
                corrupt_fraction=self._corrupt_fraction,
            )
            return Reply(True)
        if stage == NodeStage.HE_FOLD.value:
            return Reply(True, self._each(payload, "fold requests", self._fold))
        if stage == NodeStage.HE_DECRYPT.value:
            return Reply(True, self._each(payload, "decrypt requests", self._decrypt))
        if stage == NodeStage.MASK_JUDGE.value:
            return Reply(True, self._each(payload, "judge requests", self._judge))
        if stage == NodeStage.PLAIN_JUDGE.value:
            return Reply(True, self._each(payload, "judge requests", self._judge_plain))
        raise StageError(f"the auditor does not answer stage {stage!r}")

    @staticmethod
    def _each(payload: bytes, what: str, answer: Callable[[bytes], bytes]) -> bytes:
        """Each group's request in turn: its answer, or a refusal for that group alone."""
        out = []
        for request in unpack_list(payload, what=what):
            try:
                out.append(Reply(True, answer(request)).to_bytes())
            except SecurePoolError as exc:
                out.append(refusal(exc))
        return pack_list(out)

    # --- HE --------------------------------------------------------------------------

    def _certified(self, session: str, receipts: Sequence[bytes]) -> None:
        """The quorum check before a fold or a decryption: the round is certified and
        every receipt's participant is in the certified group (SecurityViolation)."""
        contributors = [ContributionReceipt.from_bytes(r).participant for r in receipts]
        self._outcomes.check_group(session, contributors)

    def _decrypt(self, request: bytes) -> bytes:
        holder = self._keyholder()
        ask = DecryptRequest.from_bytes(request)
        self._certified(ask.session, ask.receipts)
        try:
            return holder.decrypt_aggregate(request)
        finally:  # a decrypted (or refused) session is spent, across restarts too
            _write_json(self._state_dir / SPENT_FILE, sorted(self._spent))

    def _fold(self, request: bytes) -> bytes:
        from securepool.trust.he_binding import answer_fold_request

        holder, auditor = self._keyholder(), self._trust_auditor()
        ask = FoldRequest.from_bytes(request)
        self._certified(ask.session, ask.receipts)
        try:
            return answer_fold_request(holder, auditor, request)
        finally:  # a judged (or refused) session stays judged, with its cleared set
            doc = {k: sorted(v) for k, v in self._allowed.items()}
            for session in holder.folded_sessions():
                doc.setdefault(session, [])
            _write_json(self._state_dir / FOLDED_FILE, doc)

    # --- mask ------------------------------------------------------------------------

    def _once(self, session: str) -> None:
        """Record ``session`` as judged before its verdict leaves; StageError if it was:
        never two verdicts for one session, across restarts too."""
        judged = set(_read_json(self._state_dir / MASK_FILE, []))
        if session in judged:
            raise StageError(f"session {session!r} already has a verdict (one per session)")
        _write_json(self._state_dir / MASK_FILE, sorted(judged | {session}))

    def _judge(self, raw: bytes) -> bytes:
        auditor = self._trust_auditor()
        assert self._trust is not None
        request = decode_judge_request(raw)
        self._once(request.session)
        _verdict, data, signature = auditor.judge_mask(request, dim=self._trust.sketch_dim)
        return pack_list([data, signature])

    def _judge_plain(self, raw: bytes) -> bytes:
        """Plaintext mode: the coordinator's summaries of the updates it received (under
        the projection drawn after all of them were fixed), the validation vote's ballots
        opened (one that does not open flags its voter), judged; the signed verdict."""
        from protocols.summaries import decode_summary
        from securepool.trust.he_binding import signed_verdict

        auditor = self._trust_auditor()
        request = PlainJudgeRequest.from_bytes(raw)
        summaries = {
            pid: decode_summary(blob, expected_dim=request.dim)
            for pid, blob in request.summaries.items()
        }
        self._once(request.session)
        verdict, signature = auditor.vet_opened(
            request.session, summaries, ballots=request.ballots or None
        )
        return signed_verdict(verdict, signature)
