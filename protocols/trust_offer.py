"""The auditor's signed opening key: how a participant in its own process learns where to
seal its binding report (mask mode) so that only the auditor opens it.

The auditor's identity key comes from the PKI; its HPKE opening key lives in the
auditor's own files, and it publishes the public half in a :class:`TrustOffer` signed for
one setup session and one *epoch*: the number of the opening key, which the auditor
persists and increments every time it makes a new one. The coordinator relays the offer
as is; every participant verifies it under the auditor's PKI key before it seals
anything to the key inside, and refuses an epoch older than the newest it has accepted
(:mod:`protocols.offer_epochs`).

Security: a coordinator (or a SuperLink operator) that swapped the key for its own would
open every report; the signature under the PKI key of the auditor makes that a refused
offer (InvalidSignature), and the session binds the offer to its deployment's setup.
The epoch is signed with the key, so an offer of a key the auditor has retired cannot be
passed off as current to a participant that has seen its successor.
"""

from __future__ import annotations

from dataclasses import dataclass

from crypto.encoding import bind, require_identifier
from crypto.errors import InvalidSignature, MessageError, StageError
from crypto.signing import IdentityKey, verify_signature
from protocols.codec import Field, Kind, Reader, Schema, decode_fields, encode

MAGIC = b"TO"
VERSION = 2  # 2: the epoch of the opening key, signed with it
KIND = 1
LABEL = b"securepool/trust/offer/v2"
_DOMAIN = b"securepool/trust/offer/v2/"
#: the session every auditor's trust offer is signed for
TRUST_SETUP_SESSION = "trust-setup"
#: epochs are numbered from 1 (the auditor's first opening key) and fit a u32
MAX_EPOCH = (1 << 32) - 1
_SCHEMA: Schema = (
    Field("session", Kind.ID),
    Field("epoch", Kind.U32),
    Field("opening_public", Kind.BYTES, limit=4096),
    Field("signature", Kind.BYTES, size=64),
)


def _signed_part(session: str, epoch: int, opening_public: bytes) -> bytes:
    return bind(_DOMAIN, session, epoch, opening_public)


def check_epoch(epoch: object) -> int:
    """``epoch`` if it is an int in [1, 2^32); MessageError otherwise.

    Security: an offer's epoch is a counter the auditor starts at 1; 0, negatives,
    non-integers (bool included) and anything a u32 cannot hold are refused, typed."""
    if isinstance(epoch, bool) or not isinstance(epoch, int) or not 1 <= epoch <= MAX_EPOCH:
        raise MessageError(f"an offer's epoch must be an integer in [1, {MAX_EPOCH}]: {epoch!r}")
    return epoch


@dataclass(frozen=True)
class TrustOffer:
    """A decoded, verified trust offer (see :func:`open_trust_offer`)."""

    session: str
    epoch: int
    opening_public: bytes
    signature: bytes

    @classmethod
    def signed(
        cls, identity: IdentityKey, *, opening_public: bytes, session: str, epoch: int = 1
    ) -> bytes:
        """The auditor's offer of ``opening_public`` (its opening key number ``epoch``)
        for ``session``, as bytes.

        Security: signs (session, epoch, key) under the auditor's identity key; the
        caller must give every new opening key a larger epoch than the last one."""
        session = require_identifier("session", session)
        epoch = check_epoch(epoch)
        sig = identity.sign(_signed_part(session, epoch, opening_public), label=LABEL)
        values = {
            "session": session,
            "epoch": epoch,
            "opening_public": opening_public,
            "signature": sig,
        }
        return encode(MAGIC, VERSION, KIND, _SCHEMA, values)


def open_trust_offer(data: bytes, *, auditor_public: bytes, session: str) -> TrustOffer:
    """The offer in ``data`` (with its epoch) if the auditor signed it for ``session``.

    Security: MessageError (malformed, epoch 0), StageError (another session),
    InvalidSignature (not signed by the holder of ``auditor_public``, or any signed
    field changed, the epoch included). Whether the epoch is current is the caller's
    check (:class:`protocols.offer_epochs.OfferEpochs`)."""
    if not data:
        raise InvalidSignature("no trust offer from the auditor")
    reader = Reader(data, magic=MAGIC, version=VERSION, name="trust offer")
    if reader.kind != KIND:
        raise MessageError(f"trust offer of kind {reader.kind}")
    raw = decode_fields(reader, _SCHEMA)
    if raw["session"] != session:
        raise StageError(f"trust offer for session {raw['session']!r}, not {session!r}")
    epoch = check_epoch(raw["epoch"])
    verify_signature(
        auditor_public,
        _signed_part(raw["session"], epoch, raw["opening_public"]),
        raw["signature"],
        label=LABEL,
    )
    return TrustOffer(raw["session"], epoch, bytes(raw["opening_public"]), raw["signature"])


def verify_trust_offer(data: bytes, *, auditor_public: bytes, session: str) -> bytes:
    """The opening public key in ``data`` if the auditor signed it for ``session``.

    Security: as :func:`open_trust_offer`, whose key it returns; it does not say which
    epoch the key is (a participant uses :func:`open_trust_offer` and refuses old ones).
    """
    return open_trust_offer(data, auditor_public=auditor_public, session=session).opening_public


__all__ = [
    "TRUST_SETUP_SESSION",
    "TrustOffer",
    "check_epoch",
    "open_trust_offer",
    "verify_trust_offer",
]
