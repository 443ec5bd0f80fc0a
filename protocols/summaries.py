"""Per-participant update summaries for the trust check, sealed to the auditor.

A summary is the update's L2 norm and a count-sketch of it: element i goes to bucket
h(i) with sign s(i), both from a PUBLIC seed (every participant of a session uses the
same projection, so sketches are comparable). O(d) time. ``dim = 0`` means the raw
vector (the patent's P6 baseline on plaintext parameters).

The sealed summary binds the session and the participant in HPKE's ``info`` (an
injective :func:`crypto.encoding.bind` encoding under a versioned domain; both ids are
checked by :func:`crypto.encoding.require_identifier`), so the coordinator that relays it
can neither read it, replay it into another session, nor attribute it to another
participant.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from crypto.encoding import bind, require_identifier
from crypto.errors import DecryptionError, MessageError
from crypto.hpke import SummaryOpeningKey, hpke_seal
from crypto.prg import expand_mask

_VERSION = 1
_HEADER = struct.Struct(">BdI")


@dataclass(frozen=True)
class Summary:
    norm: float
    sketch: NDArray[np.float64]


def sketch_projection(
    d: int, *, dim: int, seed: bytes
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """The public count-sketch: bucket of each coordinate, and its sign."""
    words = expand_mask(seed, label=b"summary/countsketch", length=d, dtype=np.uint64)
    buckets = (words % np.uint64(dim)).astype(np.int64)
    signs = np.where((words >> np.uint64(63)) == 1, -1.0, 1.0)
    return buckets, signs


def summarize(update: NDArray[np.float32], *, dim: int, seed: bytes) -> Summary:
    """Norm + count-sketch of ``dim`` buckets (``dim = 0``: the raw vector)."""
    v = update.astype(np.float64)
    norm = float(np.linalg.norm(v))
    if dim == 0:
        return Summary(norm, v)
    buckets, signs = sketch_projection(v.size, dim=dim, seed=seed)
    sketch = np.bincount(buckets, weights=signs * v, minlength=dim).astype(np.float64)
    return Summary(norm, sketch)


INFO_DOMAIN = b"securepool/summary/hpke-info/v2"


def summary_info(session: str, participant: str) -> bytes:
    """The HPKE ``info`` a summary is sealed under.

    Security: injective in (session, participant) (:func:`crypto.encoding.bind`), and
    both are validated identifiers (CryptoError otherwise), so no other pair of ids gives
    the same ``info``.
    """
    return bind(
        INFO_DOMAIN,
        require_identifier("session", session),
        require_identifier("participant", participant),
    )


def encode_summary(summary: Summary) -> bytes:
    body = summary.sketch.astype("<f8").tobytes()
    return _HEADER.pack(_VERSION, summary.norm, summary.sketch.size) + body


def decode_summary(data: bytes, *, expected_dim: int) -> Summary:
    """Parse and check a summary; only MessageError, in time linear in ``len(data)``."""
    if not isinstance(data, bytes):
        raise MessageError(f"summary must be bytes, got {type(data).__name__}")
    if len(data) < _HEADER.size:
        raise MessageError("summary shorter than its header")
    version, norm, dim = _HEADER.unpack_from(data)
    if version != _VERSION:
        raise MessageError(f"summary version {version}, expected {_VERSION}")
    if dim != expected_dim or len(data) != _HEADER.size + 8 * dim:
        raise MessageError(f"summary has dimension {dim}, expected {expected_dim}")
    sketch = np.frombuffer(data[_HEADER.size :], dtype="<f8").astype(np.float64)
    if not (np.isfinite(norm) and np.all(np.isfinite(sketch))):
        raise MessageError("summary contains NaN or infinity")
    return Summary(float(norm), sketch)


def seal_summary(
    summary: Summary, *, auditor_public: bytes, session: str, participant: str
) -> bytes:
    """Seal to the auditor. Security: only the auditor's key opens it; the context is bound."""
    info = summary_info(session, participant)
    return hpke_seal(auditor_public, encode_summary(summary), info=info)


def open_summary(
    key: SummaryOpeningKey, sealed: bytes, *, session: str, participant: str, expected_dim: int
) -> Summary:
    """Open and check a sealed summary; DecryptionError or MessageError on any problem."""
    if not isinstance(sealed, bytes) or not sealed:
        raise DecryptionError("empty sealed summary")
    return decode_summary(
        key.open(sealed, info=summary_info(session, participant)), expected_dim=expected_dim
    )
