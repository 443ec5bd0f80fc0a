"""What every member of a group must agree on before sending anything derived from its
data (model consistency; Pasquini et al., CCS 2022).

:func:`session_digest` hashes the global model a member was sent with the session, the
model's id and layout, the agreed local-training settings and the group's seed from the
joint beacon. SecAgg+ clients sign it in their adverts and abort on any peer's
mismatch, so a coordinator that sends members different models — or shows them
different beacon outcomes — is caught before any masked input leaves.
"""

from __future__ import annotations

import hashlib

import numpy as np
from numpy.typing import NDArray

from crypto.encoding import bind
from securepool.models import Layout
from securepool.training import TrainSettings

DOMAIN = b"securepool/session-digest/v1"


def session_digest(
    *,
    session: str,
    model_id: str,
    group_seed: bytes,
    layout: Layout,
    training: TrainSettings,
    params: NDArray[np.float32],
) -> bytes:
    """SHA-256 over the injective encoding of everything a member was sent."""
    return hashlib.sha256(
        bind(
            DOMAIN,
            session,
            model_id,
            group_seed,
            repr((layout.names, layout.shapes)),
            repr((training.epochs, training.batch_size, training.lr, training.momentum)),
            np.ascontiguousarray(params, dtype="<f4").tobytes(),
        )
    ).digest()
