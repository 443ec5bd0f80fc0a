"""The auditor's signed opening key: how a participant in its own process learns where to
seal its binding report (mask mode) so that only the auditor opens it.

The auditor's identity key comes from the PKI; its HPKE opening key lives in the
auditor's own files, and it publishes the public half in a :class:`TrustOffer` signed for
one setup session. The coordinator relays the offer as is; every participant verifies it
under the auditor's PKI key before it seals anything to the key inside.

Security: a coordinator (or a SuperLink operator) that swapped the key for its own would
open every report; the signature under the PKI key of the auditor makes that a refused
offer (InvalidSignature), and the session binds the offer to its deployment's setup.
"""

from __future__ import annotations

from dataclasses import dataclass

from crypto.encoding import bind, require_identifier
from crypto.errors import InvalidSignature, MessageError, StageError
from crypto.signing import IdentityKey, verify_signature
from protocols.codec import Field, Kind, Reader, Schema, decode_fields, encode

MAGIC = b"TO"
VERSION = 1
KIND = 1
LABEL = b"securepool/trust/offer/v1"
_DOMAIN = b"securepool/trust/offer/v1/"
#: the session every auditor's trust offer is signed for
TRUST_SETUP_SESSION = "trust-setup"
_SCHEMA: Schema = (
    Field("session", Kind.ID),
    Field("opening_public", Kind.BYTES, limit=4096),
    Field("signature", Kind.BYTES, size=64),
)


@dataclass(frozen=True)
class TrustOffer:
    session: str
    opening_public: bytes
    signature: bytes

    @classmethod
    def signed(cls, identity: IdentityKey, *, opening_public: bytes, session: str) -> bytes:
        """The auditor's offer of ``opening_public`` for ``session``, as bytes."""
        session = require_identifier("session", session)
        sig = identity.sign(bind(_DOMAIN, session, opening_public), label=LABEL)
        values = {"session": session, "opening_public": opening_public, "signature": sig}
        return encode(MAGIC, VERSION, KIND, _SCHEMA, values)


def verify_trust_offer(data: bytes, *, auditor_public: bytes, session: str) -> bytes:
    """The opening public key in ``data`` if the auditor signed it for ``session``.

    Security: MessageError (malformed), StageError (another session), InvalidSignature
    (not signed by the holder of ``auditor_public``)."""
    if not data:
        raise InvalidSignature("no trust offer from the auditor")
    reader = Reader(data, magic=MAGIC, version=VERSION, name="trust offer")
    if reader.kind != KIND:
        raise MessageError(f"trust offer of kind {reader.kind}")
    raw = decode_fields(reader, _SCHEMA)
    if raw["session"] != session:
        raise StageError(f"trust offer for session {raw['session']!r}, not {session!r}")
    verify_signature(
        auditor_public,
        bind(_DOMAIN, raw["session"], raw["opening_public"]),
        raw["signature"],
        label=LABEL,
    )
    return bytes(raw["opening_public"])


__all__ = ["TRUST_SETUP_SESSION", "TrustOffer", "verify_trust_offer"]
