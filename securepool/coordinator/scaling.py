"""The coordinator's statistics round (``data.scaling = "federated"``).

Two SecAgg+ sessions over every participant of the PKI (:mod:`securepool.scaling_round`
says what they sum and why the nodes' own checks keep it an aggregate): the coordinator
holds one :class:`~protocols.secagg.server.SecAggServer` per session and sees only the
sums. From them it derives the standardisation (:func:`securepool.preprocessing.
standardisation`), sends it to every node, applies it to its own held-out records and
writes it into the pool's manifest. Costs: 2 x 5 round trips and one more, once per run.
"""

from __future__ import annotations

import contextlib
import json
from typing import TYPE_CHECKING

import numpy as np

from crypto.errors import SecurePoolError
from crypto.fixedpoint import decode
from protocols.secagg.server import SecAggServer
from securepool.data import numeric_inputs
from securepool.node.auditor import AUDITOR_ID
from securepool.node.wire import NodeStage
from securepool.preprocessing import Standardisation, magnitudes, standardisation
from securepool.scaling_round import (
    JOINT_SEED,
    ScalingRequest,
    members_of,
    round_settings,
    session_of,
)

if TYPE_CHECKING:
    from securepool.coordinator.loop import PoolCoordinator

#: the SecAgg+ steps after the adverts, then the unmasking
_STEPS = 4


class ScalingRoundFailed(SecurePoolError):
    """The statistics round did not give the federation's scaling (the run stops)."""


def agree_scaling(coord: PoolCoordinator) -> Standardisation:
    """Run both statistics rounds and send the result to every participant; the nodes
    that refuse it are reported in ``coord.unreachable`` and take no further part."""
    members = members_of(coord.registry, auditor=AUDITOR_ID)
    n = coord.n_features
    total, _participants = _secure_sum(coord, ScalingRequest("magnitude"), members)
    exponents = magnitudes(total)
    total, weight = _secure_sum(coord, ScalingRequest("moments", exponents), members)
    result = standardisation(total, weight, exponents, numeric_inputs(coord.cfg.data, n_features=n))
    body = json.dumps(result.to_json()).encode()
    replies = coord.send(NodeStage.SCALING_RESULT, {p: body for p in coord.participants})
    kept = []
    for pid in coord.participants:
        reply, why = coord.open_reply(replies.get(pid))
        if reply is None:
            coord.unreachable[pid] = f"{NodeStage.SCALING_RESULT.value}: {why}"
        else:
            kept.append(pid)
    coord.participants = tuple(kept)
    return result


def _secure_sum(
    coord: PoolCoordinator, req: ScalingRequest, members: tuple[str, ...]
) -> tuple[np.ndarray, float]:
    """One round's SecAgg+ session over ``members``: (the sum of the statistics, the
    sum of the weights); ScalingRoundFailed naming the step and the reason."""
    server = SecAggServer(
        session=session_of(req.round),
        settings=round_settings(coord.cfg, members=len(members)),
        directory={p: coord.registry[p] for p in members},
        length=req.length(coord.n_features),
        min_contributors=coord.cfg.assignment.min_group_size,
        joint_seed=JOINT_SEED,
        members=members,
    )
    payload = req.to_bytes()
    asked = {p: payload for p in coord.participants if p in server.members}
    stage = NodeStage.SCALING_START
    try:
        for step in range(_STEPS + 1):
            replies = coord.send(stage, asked)
            for pid, raw in sorted(replies.items()):
                reply, _why = coord.open_reply(raw)
                # a refusal, no reply or a message the server refuses: a dropout of
                # this session (SecAgg+ completes without it if enough remain)
                with contextlib.suppress(SecurePoolError):
                    if reply is not None:
                        server.receive(reply.body, sender=pid)
            if step == _STEPS:
                break
            asked, stage = server.close_step(), NodeStage.SCALING_SECAGG
        total = server.close_unmask()
    except SecurePoolError as exc:  # ThresholdNotMet among them
        raise ScalingRoundFailed(
            f"data.scaling = 'federated': the {req.round} round failed at "
            f"{server.stage.name.lower()}: {exc}"
        ) from None
    if server.spec is None:
        raise ScalingRoundFailed(f"the {req.round} round fixed no encoding")
    values = decode(total, server.spec)
    return values[:-1].astype(np.float64), float(values[-1])
