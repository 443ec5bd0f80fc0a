"""INSECURE BASELINE: the wire form of a plaintext update.

In ``plaintext`` mode every participant node sends its raw update and sample count to
the coordinator (securepool/node/app.py), which decodes and sums them
(securepool/coordinator/loop.py): the coordinator sees each one. It exists only to
compare against the secure modes (``mask``, ``he``) and to run the P6 trust check on
raw parameters. Never use it where any participant's update is sensitive.
"""

from __future__ import annotations

import struct

import numpy as np
from numpy.typing import NDArray

from crypto.errors import MessageError

_VERSION = 1
_HEADER = struct.Struct(">BdI")  # version, weight, length


def encode_plain_update(update: NDArray[np.float32], weight: float) -> bytes:
    """Wire form of a plaintext update: version, weight, length, float32 LE values."""
    return _HEADER.pack(_VERSION, weight, update.size) + update.astype("<f4").tobytes()


def decode_plain_update(payload: bytes) -> tuple[NDArray[np.float32], float]:
    """The (update, weight) of a plaintext update's wire form.

    Raises :class:`MessageError` for a short or truncated payload, another version, a
    non-finite value or a non-positive weight.
    """
    if len(payload) < _HEADER.size:
        raise MessageError("plaintext update shorter than its header")
    version, weight, length = _HEADER.unpack_from(payload)
    if version != _VERSION:
        raise MessageError(f"plaintext update version {version}, expected {_VERSION}")
    body = payload[_HEADER.size :]
    if len(body) != 4 * length:
        raise MessageError(f"plaintext update body has {len(body)} bytes, expected {4 * length}")
    vec = np.frombuffer(body, dtype="<f4").astype(np.float32)
    if not (np.isfinite(weight) and weight > 0) or not np.all(np.isfinite(vec)):
        raise MessageError("plaintext update has a non-finite value or a non-positive weight")
    return vec, weight
