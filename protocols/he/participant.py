"""The participant's side of HE mode: weight, tag, encrypt, sign.

A participant holds its identity signing key and the key holder's *public* material
(a :class:`ContextOffer`). For each session it encrypts ``[(w/u) x, w/u]`` with fresh
contribution tags in every chunk, and signs a receipt binding the upload's digest, the
digest of the model it was sent (which the key holder requires to be the same in every
receipt of an aggregate) and its tag seed (sealed to the key holder).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import replace

import numpy as np
from numpy.typing import NDArray

from crypto.ckks.context import PublicCKKSContext
from crypto.ckks.parallel import CKKSWorkerPool
from crypto.ckks.sealbox import seal_to
from crypto.ckks.tags import SEED_BYTES, expand_tags
from crypto.ckks.vectors import encrypt_chunks
from crypto.errors import EncodingError, MessageError, StageError
from crypto.signing import IdentityKey
from protocols.he.layout import SlotLayout
from protocols.he.messages import (
    DIGEST,
    ContextOffer,
    ContributionReceipt,
    HEUpload,
    checked_id,
    verify_context_offer,
)
from protocols.he.settings import HESettings

RECEIPT_LABEL = b"securepool/he/receipt/v3"  # v3: the model digest


def upload_digest(upload: bytes) -> bytes:
    """SHA-256 of an upload's exact bytes (what a receipt signs)."""
    h = hashlib.sha256(b"securepool/he/upload/v1\x00")
    h.update(upload)
    return h.digest()


class HEParticipant:
    """One agency in HE mode.

    Security: sees only the public context; never holds a key that can decrypt, so it
    cannot read other participants' ciphertexts (unlike NVFlare, where every client holds
    the shared secret key).
    """

    def __init__(
        self, pid: str, settings: HESettings, *, identity: IdentityKey | None = None
    ) -> None:
        settings.check()
        self.pid = checked_id("participant", pid)
        self.settings = settings
        self.identity = identity or IdentityKey.generate()
        self._public: PublicCKKSContext | None = None
        self._sealbox_public = b""

    def accept_context(self, offer: bytes, *, auditor_public: bytes, session: str) -> ContextOffer:
        """Load the key holder's offer (refused if it carries a secret key); the
        verified offer (its ``epoch`` is for the caller's record of offers).

        Security: refused (:class:`SecurityViolation`) unless signed by
        ``auditor_public`` (the auditor's identity key from the PKI) for ``session``.
        """
        msg = verify_context_offer(offer, auditor_public=auditor_public, session=session)
        params = self.settings.params
        self._public = PublicCKKSContext.from_bytes(msg.public_context, params=params)
        self._sealbox_public = msg.sealbox_public
        return msg

    @property
    def public(self) -> PublicCKKSContext:
        if self._public is None:
            raise StageError(f"participant {self.pid} has no public context yet")
        return self._public

    def upload(
        self,
        *,
        session: str,
        update: NDArray[np.float32],
        weight: float,
        model_digest: bytes,
        pool: CKKSWorkerPool | None = None,
    ) -> tuple[bytes, bytes]:
        """Encrypt one weighted update; return ``(upload, receipt)`` wire bytes.

        ``model_digest`` (32 bytes) names what the update was trained from; the caller
        computes it from what it was sent, never takes it from the coordinator (a pool
        node: :func:`securepool.consistency.session_digest`).

        Security: the sample count travels only inside the ciphertext (the weight slot);
        the receipt reveals the update's length and chunk count, which the coordinator
        knows anyway, and signs ``model_digest``, so the key holder refuses an aggregate
        whose receipts name different models (a coordinator that sent group members
        different global models: Pasquini et al., CCS 2022). Raises
        :class:`EncodingError` if a normalised value exceeds ``max_abs_value`` (the
        aggregate could wrap), :class:`MessageError` for a digest that is not 32 bytes.
        """
        session = checked_id("session", session)
        if not isinstance(model_digest, bytes) or len(model_digest) != DIGEST:
            raise MessageError(f"{self.pid}: model_digest must be {DIGEST} bytes")
        s = self.settings
        public = self.public
        scaled_weight = float(weight) / s.weight_unit
        weighted = update.astype(np.float64) * scaled_weight
        peak = max(float(np.max(np.abs(weighted))) if weighted.size else 0.0, scaled_weight)
        if not np.isfinite(peak) or peak > s.max_abs_value:
            raise EncodingError(
                f"normalised value {peak:.3g} exceeds max_abs_value {s.max_abs_value:g}: "
                "raise weight_unit or max_abs_value"
            )
        layout = SlotLayout(
            d=update.size, slots=public.params.slots, tag_slots=s.tag_slots, fold_dim=s.fold_dim
        )
        seed = os.urandom(SEED_BYTES)
        tags = expand_tags(seed, n_chunks=layout.n_chunks, per_chunk=s.tag_slots)
        rows = layout.pack(weighted, scaled_weight, tags)
        chunks = pool.encrypt(rows) if pool is not None else encrypt_chunks(public, rows)
        upload = HEUpload(session, self.pid, public.fingerprint, update.size, tuple(chunks))
        upload_bytes = upload.to_bytes()
        unsigned = ContributionReceipt(
            session=session,
            participant=self.pid,
            context_fingerprint=public.fingerprint,
            d=update.size,
            n_chunks=layout.n_chunks,
            upload_digest=upload_digest(upload_bytes),
            model_digest=model_digest,
            sealed_tag_seed=b"",
            signature=b"",
        )
        sealed = seal_to(self._sealbox_public, seed, aad=unsigned.header())
        body = replace(unsigned, sealed_tag_seed=sealed)
        signature = self.identity.sign(body.signed_part(), label=RECEIPT_LABEL)
        receipt = replace(body, signature=signature)
        if len(chunks) != layout.n_chunks:
            raise EncodingError("encryption returned the wrong number of chunks")
        return upload_bytes, receipt.to_bytes()
