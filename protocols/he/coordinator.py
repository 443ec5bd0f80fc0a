"""The coordinator's side of HE mode: check uploads, add ciphertexts, ask for decryption.

The coordinator holds the public context only. It checks each upload against its signed
receipt (a registered participant, this session, this context, the signed digest), adds
the ciphertexts of the group's valid, unflagged contributions, and sends the key holder
the aggregate with the receipts it claims to contain. Anything wrong with one upload
raises a typed error for that participant only; the caller excludes it and goes on.
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from crypto.ckks.coefficients import ChunkCodec, CoefficientSum
from crypto.ckks.context import PublicCKKSContext
from crypto.ckks.fold import FoldKeys
from crypto.ckks.vectors import chunk_codec
from crypto.errors import (
    CiphertextError,
    KeyMaterialError,
    SecurePoolError,
    SecurityViolation,
    StageError,
    ThresholdNotMet,
)
from crypto.signing import verify_signature
from protocols.aggregation import group_length
from protocols.he.fold import FoldProjection, fold_seed, fold_upload
from protocols.he.layout import SlotLayout
from protocols.he.messages import (
    ContributionReceipt,
    DecryptRequest,
    FoldRequest,
    HEUpload,
    verify_context_offer,
)
from protocols.he.participant import RECEIPT_LABEL, upload_digest
from protocols.he.settings import HESettings


@dataclass(frozen=True)
class Contribution:
    """An upload whose framing, signature, sender, session and context have been checked.

    Its digest and ciphertexts are checked when the group is added up
    (:meth:`HECoordinator.build_request`), possibly in worker processes.
    """

    participant: str
    d: int
    n_chunks: int
    upload: bytes
    digest: bytes
    receipt: bytes


def upload_chunks(upload: bytes, digest: bytes, n_chunks: int) -> tuple[bytes, ...]:
    """The chunk blobs of an upload whose bytes match its signed digest; typed errors."""
    if upload_digest(upload) != digest:
        raise CiphertextError("upload bytes do not match the signed digest (corrupted)")
    chunks = HEUpload.from_bytes(upload).chunks
    if len(chunks) != n_chunks:
        raise CiphertextError(f"upload has {len(chunks)} chunks, expected {n_chunks}")
    return chunks


class HECoordinator:
    """Sums ciphertexts per group. Never holds a key that can decrypt.

    ``registry`` maps participant ids to their Ed25519 identity public keys (the PKI).
    """

    def __init__(self, settings: HESettings, *, registry: Mapping[str, bytes]) -> None:
        settings.check()
        self.settings = settings
        self._registry = registry
        self._public: PublicCKKSContext | None = None
        self._codec: ChunkCodec | None = None
        self._fold_keys: FoldKeys | None = None

    def accept_context(self, offer: bytes, *, auditor_public: bytes, session: str) -> None:
        """Load the auditor's signed offer (see :func:`verify_context_offer`)."""
        msg = verify_context_offer(offer, auditor_public=auditor_public, session=session)
        params = self.settings.params
        self._public = PublicCKKSContext.from_bytes(msg.public_context, params=params)
        self._codec = chunk_codec(self._public)
        if self.settings.fold_dim:
            if not msg.galois_keys:
                raise KeyMaterialError("the offer carries no Galois keys for the fold")
            self._fold_keys = FoldKeys(self._public, msg.galois_keys, dim=self.settings.fold_dim)

    @property
    def public(self) -> PublicCKKSContext:
        if self._public is None:
            raise StageError("coordinator has no public context yet")
        return self._public

    @property
    def codec(self) -> ChunkCodec:
        """The chunk layout of the public context, learned once from a fresh encryption."""
        if self._codec is None:
            raise StageError("coordinator has no public context yet")
        return self._codec

    def check_upload(
        self, *, session: str, sender: str, upload: bytes, receipt: bytes
    ) -> Contribution:
        """Check one participant's upload against its receipt.

        Security: raises :class:`MessageError` (malformed), :class:`SecurityViolation`
        (unregistered sender, sender/session mismatch), :class:`InvalidSignature` (receipt
        not signed by the sender) or :class:`CiphertextError` (bytes changed after
        signing, another context, chunk count wrong). Ciphertexts are loaded in
        :meth:`build_request`.
        """
        up_session, up_sender, fingerprint, d, n_chunks = HEUpload.peek(upload)
        rec = ContributionReceipt.from_bytes(receipt)
        if up_sender != sender or rec.participant != sender:
            raise SecurityViolation(f"upload from {sender!r} names {up_sender!r}")
        if up_session != session or rec.session != session:
            raise StageError(f"upload for session {up_session!r}, expected {session!r}")
        public_key = self._registry.get(sender)
        if public_key is None:
            raise SecurityViolation(f"{sender!r} is not a registered participant")
        verify_signature(public_key, rec.signed_part(), rec.signature, label=RECEIPT_LABEL)
        if fingerprint != self.public.fingerprint or rec.context_fingerprint != fingerprint:
            raise CiphertextError("upload is encrypted under another CKKS context")
        slots, tag_slots = self.public.params.slots, self.settings.tag_slots
        layout = SlotLayout(d=d, slots=slots, tag_slots=tag_slots, fold_dim=self.settings.fold_dim)
        n = layout.n_chunks
        if n_chunks != n or rec.n_chunks != n or rec.d != d:
            raise CiphertextError(f"upload has {n_chunks} chunks for d = {d}, expected {n}")
        return Contribution(sender, d, n, upload, rec.upload_digest, receipt)

    def build_request(
        self,
        *,
        session: str,
        contributions: Mapping[str, Contribution],
        threads: int = 1,
    ) -> tuple[bytes, dict[str, str]]:
        """Add the group's ciphertexts; return the decrypt request and the exclusions.

        The group's length ``d`` is the one most contributions share; others are
        excluded as "wrong size" (:func:`protocols.aggregation.group_length`). Each upload's
        bytes are checked against the signed digest and every chunk against a fresh
        chunk of this context (:class:`crypto.ckks.coefficients.ChunkCodec`); an upload
        with any bad chunk is excluded as "bad upload" and none of it is added. The rest
        are added as coefficient arrays modulo the data primes, split over ``threads``
        threads (hashing, zstd and numpy release the GIL; each thread keeps its own
        partial sum, merged at the end).

        Security: additions only. Raises :class:`ThresholdNotMet` if fewer than
        ``min_group_size`` contributions remain (the key holder would refuse anyway).
        """
        if not contributions:
            raise self._too_few(session, 0)
        d, excluded = group_length({pid: c.d for pid, c in contributions.items()})
        valid = {pid: c for pid, c in sorted(contributions.items()) if pid not in excluded}
        if len(valid) < self.settings.min_group_size:
            raise self._too_few(session, len(valid))
        n_chunks = next(iter(valid.values())).n_chunks
        order = sorted(valid)
        shares = [order[i :: max(threads, 1)] for i in range(max(threads, 1))]
        shares = [share for share in shares if share]

        def add_up(pids: list[str]) -> tuple[CoefficientSum, list[str], dict[str, str]]:
            acc = CoefficientSum(self.codec, n_chunks=n_chunks)
            scratch = acc.scratch()
            ok: list[str] = []
            bad: dict[str, str] = {}
            for pid in pids:
                c = valid[pid]
                try:
                    acc.read_all(upload_chunks(c.upload, c.digest, n_chunks), scratch)
                except SecurePoolError as exc:
                    bad[pid] = f"bad upload: {type(exc).__name__}: {exc}"
                else:
                    acc.add_checked(scratch)
                    ok.append(pid)
            return acc, ok, bad

        if len(shares) == 1:
            partials = [add_up(shares[0])]
        else:
            with ThreadPoolExecutor(max_workers=len(shares)) as pool:
                partials = list(pool.map(add_up, shares))
        total = partials[0][0]
        added: list[str] = []
        for acc, ok, bad in partials:
            if acc is not total:
                total.merge(acc)
            added.extend(ok)
            excluded.update(bad)
        if len(added) < self.settings.min_group_size:
            raise self._too_few(session, len(added))
        added.sort()
        request = DecryptRequest(
            session=session,
            context_fingerprint=self.public.fingerprint,
            d=d,
            receipts=tuple(valid[p].receipt for p in added),
            chunks=tuple(total.to_bytes()),
        )
        return request.to_bytes(), excluded

    def build_fold_request(
        self,
        *,
        session: str,
        contributions: Mapping[str, Contribution],
        joint_seed: bytes = b"",
    ) -> tuple[bytes, dict[str, str]]:
        """Fold each valid contribution's own ciphertext; return the fold request and the
        exclusions (wrong size, bad upload: the same rules as :meth:`build_request`).

        The fold seed (:func:`~protocols.he.fold.fold_seed`) is computed once the set of
        valid uploads is final, so it depends on every upload that is folded.

        Security: public operations on ciphertexts; raises :class:`ThresholdNotMet` if
        fewer than ``min_group_size`` contributions remain.
        """
        keys = self._fold_keys
        if keys is None:
            raise StageError("coordinator has no fold keys (fold_dim = 0 or no context)")
        if not contributions:
            raise self._too_few(session, 0)
        d, excluded = group_length({pid: c.d for pid, c in contributions.items()})
        chunks: dict[str, tuple[bytes, ...]] = {}
        for pid, c in sorted(contributions.items()):
            if pid in excluded:
                continue
            try:
                blobs = upload_chunks(c.upload, c.digest, c.n_chunks)
                for blob in blobs:
                    self.codec.read(blob)
            except SecurePoolError as exc:
                excluded[pid] = f"bad upload: {type(exc).__name__}: {exc}"
            else:
                chunks[pid] = blobs
        layout = SlotLayout(
            d=d,
            slots=self.public.params.slots,
            tag_slots=self.settings.tag_slots,
            fold_dim=self.settings.fold_dim,
        )
        while True:
            if len(chunks) < self.settings.min_group_size:
                raise self._too_few(session, len(chunks))
            digests = {pid: contributions[pid].digest for pid in chunks}
            seed = fold_seed(session, joint_seed, digests)
            projection = FoldProjection.derive(seed, layout, self.public.params)
            plaintexts = projection.plaintexts(self.public)
            folds: dict[str, bytes] = {}
            failed = ""
            for pid in sorted(chunks):
                try:
                    folds[pid] = fold_upload(keys, plaintexts, chunks[pid])
                except SecurePoolError as exc:  # the seed must not cover it: start again
                    excluded[pid] = f"bad upload: {type(exc).__name__}: {exc}"
                    failed = pid
                    break
            if not failed:
                break
            del chunks[failed]
        order = sorted(folds)
        request = FoldRequest(
            session=session,
            context_fingerprint=self.public.fingerprint,
            d=d,
            joint_seed=joint_seed,
            seed=seed,
            receipts=tuple(contributions[p].receipt for p in order),
            folds=tuple(folds[p] for p in order),
        )
        return request.to_bytes(), excluded

    def _too_few(self, session: str, survivors: int) -> ThresholdNotMet:
        need = self.settings.min_group_size
        return ThresholdNotMet(
            f"session {session}: {survivors} valid HE contributions, need {need}",
            survivors=survivors,
            threshold=need,
        )
