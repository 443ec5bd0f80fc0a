"""Validation-vote ballots (P6): a voter's losses of its peers' models, sealed to the auditor.

Wire format (before sealing), version 1, big-endian:

    version (1 byte) | entry count (2 bytes) | entries
    entry = name length (2 bytes) | UTF-8 candidate name | loss (8-byte IEEE double)

Sealed with HPKE to the auditor with the session and the voter bound into ``info`` (an
injective :func:`crypto.encoding.bind` encoding under a versioned domain, both ids
validated), like summaries (protocols.summaries): the coordinator relays a ballot it
cannot read, move to another session or attribute to another voter. Decoding refuses a
wrong version, a truncated or overlong message, a duplicated, empty or invalid candidate
id and a non-finite loss.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping

from crypto.encoding import bind, require_identifier
from crypto.errors import CryptoError, DecryptionError, MessageError
from crypto.hpke import SummaryOpeningKey, hpke_seal

_VERSION = 1
_HEADER = struct.Struct(">BH")
_NAME = struct.Struct(">H")
_LOSS = struct.Struct(">d")
MAX_ENTRIES = 4096


INFO_DOMAIN = b"securepool/ballot/hpke-info/v2"


def ballot_info(session: str, voter: str) -> bytes:
    """The HPKE ``info`` a ballot is sealed under.

    Security: injective in (session, voter) and both validated identifiers (CryptoError
    otherwise), so a ballot opens only for the exact pair it was sealed for.
    """
    return bind(
        INFO_DOMAIN, require_identifier("session", session), require_identifier("voter", voter)
    )


def encode_ballot(scores: Mapping[str, float]) -> bytes:
    """Serialise ``{candidate: loss}`` (any float, so a voter can send what it likes)."""
    if len(scores) > MAX_ENTRIES:
        raise MessageError(f"ballot has {len(scores)} entries, at most {MAX_ENTRIES}")
    out = [_HEADER.pack(_VERSION, len(scores))]
    for candidate, loss in scores.items():
        name = candidate.encode()
        out.append(_NAME.pack(len(name)) + name + _LOSS.pack(float(loss)))
    return b"".join(out)


def decode_ballot(data: bytes) -> dict[str, float]:
    """Parse and check a ballot; MessageError names the problem (and is the only error),
    in time linear in ``len(data)``."""
    if not isinstance(data, bytes):
        raise MessageError(f"ballot must be bytes, got {type(data).__name__}")
    if len(data) < _HEADER.size:
        raise MessageError("ballot shorter than its header")
    version, count = _HEADER.unpack_from(data)
    if version != _VERSION:
        raise MessageError(f"ballot version {version}, expected {_VERSION}")
    if count > MAX_ENTRIES:
        raise MessageError(f"ballot has {count} entries, at most {MAX_ENTRIES}")
    pos, scores = _HEADER.size, {}
    for _ in range(count):
        if pos + _NAME.size > len(data):
            raise MessageError("ballot truncated")
        (n,) = _NAME.unpack_from(data, pos)
        pos += _NAME.size
        if n == 0 or pos + n + _LOSS.size > len(data):
            raise MessageError("ballot truncated or has an empty candidate name")
        try:
            candidate = data[pos : pos + n].decode()
        except UnicodeDecodeError as exc:
            raise MessageError(f"ballot candidate name is not UTF-8: {exc}") from exc
        try:
            require_identifier("candidate", candidate)
        except CryptoError as exc:
            raise MessageError(f"ballot: {exc}") from None
        pos += n
        (loss,) = _LOSS.unpack_from(data, pos)
        pos += _LOSS.size
        if candidate in scores:
            raise MessageError(f"ballot names {candidate!r} twice")
        if not math.isfinite(loss):
            raise MessageError(f"ballot loss for {candidate!r} is {loss} (NaN or infinite)")
        scores[candidate] = loss
    if pos != len(data):
        raise MessageError(f"ballot has {len(data) - pos} trailing bytes")
    return scores


def seal_ballot(
    scores: Mapping[str, float], *, auditor_public: bytes, session: str, voter: str
) -> bytes:
    """Seal to the auditor. Security: only the auditor's key opens it; the context is bound."""
    return hpke_seal(auditor_public, encode_ballot(scores), info=ballot_info(session, voter))


def open_ballot(
    key: SummaryOpeningKey, sealed: bytes, *, session: str, voter: str
) -> dict[str, float]:
    """Open and check a sealed ballot; DecryptionError or MessageError on any problem."""
    if not isinstance(sealed, bytes) or not sealed:
        raise DecryptionError("empty sealed ballot")
    return decode_ballot(key.open(sealed, info=ballot_info(session, voter)))
