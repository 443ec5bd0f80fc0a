"""What a participant remembers of the auditor's offers: the newest epoch it accepted.

The auditor numbers its keys: every new HPKE opening key (the trust check's
:mod:`protocols.trust_offer`) and every new CKKS context (HE mode's
:class:`protocols.he.messages.ContextOffer`) gets the next epoch, signed inside its
offer. A participant records, per kind of offer, the auditor (its identity key's hash),
the newest epoch it accepted and the hash of the key offered under it, and keeps that
record across restarts (the node's durable state).

Security: a coordinator that kept an offer of a key the auditor has since retired (and
may have lost: an old disk, a decommissioned host) cannot get a participant that has
accepted the successor to seal or encrypt anything to the old key: :meth:`OfferEpochs.
admit` refuses an older epoch, and a different key under the epoch it holds (an auditor
whose state was reset, or an equivocating one), with SecurityViolation, before the
caller uses the key. What it cannot do: protect a participant that has never seen the
newer offer (it has no way to know one exists), or an auditor whose identity key itself
leaked (replace that key in the PKI: offers signed by the old one no longer verify, and
the record of another auditor identity is replaced by the first offer of the new one).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from crypto.encoding import bind
from crypto.errors import MessageError, SecurityViolation
from protocols.trust_offer import check_epoch

#: the kinds of offer a participant keeps a record of
TRUST_OFFER: Final = "trust-offer"
HE_CONTEXT: Final = "he-context"
KINDS: Final = (TRUST_OFFER, HE_CONTEXT)
_DOMAIN = b"securepool/offer-epochs/v1/"


def key_digest(kind: str, key: bytes) -> bytes:
    """The SHA-256 a participant keeps of the key material offered under an epoch.

    Security: domain-separated by ``kind``; a collision-resistant name for the key,
    nothing secret (the offered key is public)."""
    return hashlib.sha256(bind(_DOMAIN + b"key", kind, key)).digest()


def auditor_digest(auditor_public: bytes) -> bytes:
    """The SHA-256 a participant keeps of the auditor identity key an offer verified under.

    Security: public; it only tells records of one auditor identity from another's."""
    return hashlib.sha256(bind(_DOMAIN + b"auditor", auditor_public)).digest()


@dataclass(frozen=True)
class AcceptedOffer:
    """The newest offer of one kind a participant accepted: whose, which epoch, which key.

    Security: hashes of public values only."""

    auditor: bytes
    epoch: int
    key: bytes


@dataclass
class OfferEpochs:
    """A participant's record of the auditor's offers (see the module docstring)."""

    newest: dict[str, AcceptedOffer] = field(default_factory=dict)

    def admit(self, kind: str, *, auditor_public: bytes, epoch: int, key: bytes) -> bool:
        """Check an offer that verified under ``auditor_public`` against the record, and
        record it; True if the record changed (the caller persists it before use).

        Security: SecurityViolation, and no change, for an epoch older than the newest
        accepted of this auditor and kind (a replayed offer of a retired key) and for
        another key under the newest epoch; MessageError for an unknown kind or an epoch
        outside [1, 2^32). An offer under another auditor identity than the recorded one
        (the PKI's key changed) starts a new record: only the PKI's current key can have
        signed it."""
        if kind not in KINDS:
            raise MessageError(f"unknown kind of auditor offer {kind!r}")
        epoch = check_epoch(epoch)
        offer = AcceptedOffer(auditor_digest(auditor_public), epoch, key_digest(kind, key))
        known = self.newest.get(kind)
        if known is not None and known.auditor == offer.auditor:
            if epoch < known.epoch:
                raise SecurityViolation(
                    f"stale auditor {kind}: epoch {epoch}, but epoch {known.epoch} was "
                    "accepted before (a replayed offer of a retired key is refused)"
                )
            if epoch == known.epoch and offer.key != known.key:
                raise SecurityViolation(
                    f"auditor {kind}: another key under epoch {epoch} than the one accepted "
                    "(an auditor's epoch never goes back; refused)"
                )
            if epoch == known.epoch:
                return False
        self.newest[kind] = offer
        return True

    def to_json(self) -> dict[str, dict[str, object]]:
        """The record as JSON-ready values (for the node's durable state).

        Security: public hashes and counters only."""
        return {
            kind: {"auditor": o.auditor.hex(), "epoch": o.epoch, "key": o.key.hex()}
            for kind, o in sorted(self.newest.items())
        }

    @classmethod
    def from_json(cls, doc: object) -> OfferEpochs:
        """The record :meth:`to_json` wrote; MessageError for anything else.

        Security: every field is checked (known kind, 32-byte hex hashes, epoch in
        range); nothing but MessageError escapes, whatever ``doc`` is."""
        if not isinstance(doc, Mapping):
            raise MessageError("offer epochs: not a map")
        out: dict[str, AcceptedOffer] = {}
        for kind, entry in doc.items():
            if kind not in KINDS or not isinstance(entry, Mapping):
                raise MessageError(f"offer epochs: bad entry {str(kind)[:40]!r}")
            if set(entry) != {"auditor", "epoch", "key"}:
                raise MessageError(f"offer epochs: {kind} has fields {sorted(map(str, entry))}")
            out[kind] = AcceptedOffer(
                _hash(entry["auditor"]), check_epoch(entry["epoch"]), _hash(entry["key"])
            )
        return cls(out)


def _hash(value: object) -> bytes:
    if not isinstance(value, str) or len(value) != 64:
        raise MessageError("offer epochs: a hash is 64 hex digits")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise MessageError("offer epochs: a hash is 64 hex digits") from None


__all__ = [
    "HE_CONTEXT",
    "KINDS",
    "TRUST_OFFER",
    "AcceptedOffer",
    "OfferEpochs",
    "auditor_digest",
    "key_digest",
]
