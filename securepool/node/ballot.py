"""The validation vote on a participant node: what it remembers to vote, and the scoring.

Under ``trust.voting = "validation"`` (plaintext mode only) a group member that has
sent its update keeps a :class:`BallotContext` until the ``plain/ballot`` stage: its
session, model, group, a digest of the global model it trained on and the auditor's
opening key it verified at train. :func:`check_ballot_request` lets it vote only in that
session, once, on that global model and on updates of its own group's members, each of
the model's size and finite; :func:`candidate_losses` scores them on its own records.

Privacy: the node sees its peers' individual updates (the coordinator sees them anyway
in plaintext mode, which is why the config allows the vote there only). Its losses
leave it sealed to the auditor (:mod:`protocols.ballots`), not to the coordinator.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from crypto.errors import MessageError, SecurityViolation
from securepool.node.wire import BallotRequest

if TYPE_CHECKING:
    from securepool.models import Layout


#: the score of a candidate whose model's loss is not finite (it overflowed)
WORST_LOSS = float(np.finfo(np.float64).max)


def params_digest(params: NDArray[np.float32]) -> bytes:
    """SHA-256 of a model vector as little-endian float32 (what a ballot binds to)."""
    return hashlib.sha256(np.ascontiguousarray(params, dtype="<f4").tobytes()).digest()


@dataclass(frozen=True)
class BallotContext:
    """What a member remembers from its train stage to cast its ballot (see module)."""

    session: str
    model_id: str
    members: tuple[str, ...]
    digest: bytes  # params_digest of the global model it was sent
    opening_key: bytes  # the auditor's opening key, verified against its PKI key

    def to_json(self) -> dict[str, Any]:
        """A JSON object for the node's session file."""
        return {
            "session": self.session,
            "model_id": self.model_id,
            "members": list(self.members),
            "digest": self.digest.hex(),
            "opening_key": self.opening_key.hex(),
        }

    @classmethod
    def from_json(cls, doc: Any) -> BallotContext:
        """The context a session file holds; MessageError if it is not one."""
        try:
            return cls(
                str(doc["session"]),
                str(doc["model_id"]),
                tuple(str(m) for m in doc["members"]),
                bytes.fromhex(doc["digest"]),
                bytes.fromhex(doc["opening_key"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise MessageError(f"ballot context: {exc}") from None


def check_ballot_request(
    ctx: BallotContext, req: BallotRequest, *, voter: str, size: int
) -> dict[str, NDArray[np.float32]]:
    """The candidates ``voter`` is to score (every peer in ``req`` but itself).

    Security: raises :class:`SecurityViolation` for another session or model, a global
    model other than the one the voter trained on, a candidate outside its group, or a
    candidate update that is not a finite vector of the model's ``size``.
    """
    if req.session != ctx.session or req.model_id != ctx.model_id:
        raise SecurityViolation(
            f"{voter}: ballot request for {req.session!r} / {req.model_id!r}, its session "
            f"is {ctx.session!r} / {ctx.model_id!r}"
        )
    if params_digest(req.params) != ctx.digest:
        raise SecurityViolation(f"{voter}: ballot request with another global model")
    outsiders = sorted(set(req.candidates) - set(ctx.members))
    if outsiders:
        raise SecurityViolation(f"{voter}: ballot request names non-members {outsiders}")
    out = {}
    for pid, update in req.candidates.items():
        if update.shape != (size,) or not np.all(np.isfinite(update)):
            raise SecurityViolation(
                f"{voter}: candidate {pid}'s update has {update.size} values, the model "
                f"{size} (or is non-finite)"
            )
        if pid != voter:
            out[pid] = update
    return out


def candidate_losses(
    model: Any,
    layout: Layout,
    params: NDArray[np.float32],
    candidates: Mapping[str, NDArray[np.float32]],
    *,
    x: Any,
    y: Any,
) -> dict[str, float]:
    """The mean cross-entropy of each candidate's model (``params`` + its update) on
    the records ``x``, ``y`` (lower is better; :data:`WORST_LOSS` where it is not
    finite, so a peer's huge update cannot make an honest ballot unreadable)."""
    import torch
    import torch.nn.functional as F

    from securepool.models import load_flat

    scores: dict[str, float] = {}
    was_training = model.training
    model.eval()
    try:
        for cid, update in sorted(candidates.items()):
            load_flat(model, (params + update).astype(np.float32), layout)
            with torch.no_grad():
                loss = float(F.cross_entropy(model(x), y))
            # a model that overflows scores worst, but finite: a ballot carries no NaN
            scores[cid] = loss if math.isfinite(loss) else WORST_LOSS
    finally:
        model.train(was_training)
    return scores
