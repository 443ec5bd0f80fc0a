"""The trust check's public count-sketch projection: one seed per session.

Every participant of a session sketches its update with the same projection, derived
from the run seed and the session name, so it is public: known to every participant
(an attacker too) before it trains. Plaintext mode seals the sketch of its update to
the auditor with it, and the coordinator recomputes it from the update it received
(:meth:`securepool.trust.auditor.Auditor.vet` binds the two); mask and HE modes judge a
projection drawn only after the inputs are fixed instead (protocols/secagg/binding.py,
protocols/he/fold.py).
"""

from __future__ import annotations

import hashlib


def public_projection_seed(run_seed: int, session: str) -> bytes:
    """The session's count-sketch seed: public, known to every participant before it
    trains (so also to an attacker: the ``kernel`` attack builds on it).

    Security: not a secret and not meant to be; what rests on it is only that the
    coordinator and the participant compute the same sketch of one update."""
    return hashlib.sha256(f"securepool/sketch/{run_seed}/{session}".encode()).digest()
