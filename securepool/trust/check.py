"""The trust check's count-sketch seeds in plaintext mode.

:func:`plain_projection_seed` is the projection plaintext mode judges: drawn from every
update the group's coordinator received, so it is fixed only once all of them are (as
mask and HE modes draw theirs after the inputs: protocols/secagg/binding.py,
protocols/he/fold.py). The coordinator, which sees every update in the clear in this
mode, summarises each with it (:meth:`securepool.coordinator.trust.TrustRelay.judge_plain`)
and the auditor judges those summaries.

:func:`public_projection_seed` is the projection plaintext mode used before: public,
known to every participant before it trains. No trust check judges it any more; it
stays for the ``kernel`` attacker, which builds its perturbation in the projection it
can know, and for the pre-binding baseline of ``securepool bench mask_binding``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import numpy as np
from numpy.typing import NDArray

from crypto.encoding import bind, require_identifier
from protocols.plaintext import encode_plain_update

_DOMAIN = b"securepool/trust/plain-projection-seed/v1"


def plain_projection_seed(
    *,
    run_seed: int,
    session: str,
    updates: Mapping[str, tuple[NDArray[np.float32], float]],
) -> bytes:
    """The count-sketch seed of a plaintext session: SHA-256 over a domain label, the
    session, the run seed and the sorted ``(pid, SHA-256(wire form of (update, weight)))``
    of every update the group received (:func:`protocols.plaintext.encode_plain_update`).

    Security: injective in (session, run seed, the sorted (pid, digest) pairs)
    (:func:`crypto.encoding.bind`); ids are validated (CryptoError otherwise). A change
    of any byte of any update or weight, or a member more or less, changes the seed; the
    order of ``updates`` does not. As long as one honest member's update is among them
    (a participant never sees its peers' updates before its own is sent), nobody can
    predict the projection while choosing its update, so a perturbation in its kernel
    cannot be planned. The coordinator knows the seed (it sees every update anyway:
    plaintext mode trusts it for integrity); a coordinator colluding with a participant
    is outside what this gives."""
    items: list[bytes | str | int] = [require_identifier("session", session), str(run_seed)]
    items.append(len(updates))
    for pid in sorted(updates):
        vec, weight = updates[pid]
        digest = hashlib.sha256(encode_plain_update(vec, weight)).digest()
        items += [require_identifier("participant", pid), digest]
    return hashlib.sha256(bind(_DOMAIN, *items)).digest()


def public_projection_seed(run_seed: int, session: str) -> bytes:
    """The session's public count-sketch seed, known to every participant before it
    trains. No trust check judges it any more (plaintext mode judges
    :func:`plain_projection_seed`, drawn after every update is fixed); the ``kernel``
    attacker (:meth:`securepool.node.attacker.AttackerNode._kernel`) still builds on it,
    as the projection an attacker can know, and fails; ``securepool bench mask_binding``
    times its pre-binding baseline with it.

    Security: not a secret and not meant to be; nothing rests on it."""
    return hashlib.sha256(f"securepool/sketch/{run_seed}/{session}".encode()).digest()
